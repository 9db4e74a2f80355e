"""Many simulated agents in one asyncio process: start-up spread, progress, stop, node-key file.

Why one process: a 2-core machine also runs the server under test, so the simulator must stay
light; asyncio lets one core drive thousands of mostly-sleeping agents. The building blocks
(``build_agents``, ``enroll_all``) are public so the benchmark reuses the exact enrolment code.
With ``mdm``, some macOS hosts are also Apple MDM devices (``apple_sim``): each Mac runs beside
its osquery agent, and the APNs stand-in that wakes them runs in this process too.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from agentapi.simulator import apple_sim
from agentapi.simulator.agent import AgentSettings, SimulatedAgent
from agentapi.simulator.identity import DEFAULT_TEMPLATES, make_identities, parse_templates
from agentapi.simulator.orbit import OrbitSettings, SimulatedOrbit, save_tokens
from agentapi.simulator.stats import Progress, Stats
from agentapi.simulator.transport import HttpTransport, Transport


@dataclass
class SimulationConfig:
    url: str
    enroll_secret: str
    count: int
    seed: int = 0
    start_period: float = 10.0
    templates: str = DEFAULT_TEMPLATES
    agent: AgentSettings = field(default_factory=AgentSettings)
    insecure: bool = False
    ca_file: str | None = None
    duration: float | None = None
    node_key_file: str | None = None
    only_enroll: bool = False
    connections: int = 64
    progress_interval: float = 5.0
    stats_after: float = 0.0  # count only from this many seconds after the start (a warm-up)
    orbit: OrbitSettings | None = None  # also simulate orbit (fleetd) on every host
    mdm: apple_sim.MdmSettings | None = None  # some macOS hosts are also Apple MDM devices


def load_node_keys(path: str | None) -> dict[str, str]:
    """``{host_identifier: node_key}`` saved by an earlier run (empty when there is none)."""
    if not path or not Path(path).exists():
        return {}
    data = json.loads(Path(path).read_text() or "{}")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of host identifier to node key")
    return {str(k): str(v) for k, v in data.items() if v}


def save_node_keys(path: str, agents: list[SimulatedAgent]) -> None:
    """Merge the agents' current keys into ``path`` (written atomically)."""
    keys = load_node_keys(path)
    keys.update({a.identity.host_identifier: a.node_key for a in agents if a.node_key})
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(keys, indent=0, sort_keys=True))
    os.replace(tmp, path)


def build_agents(
    transport: Transport, config: SimulationConfig, stats: Stats, stop: asyncio.Event
) -> list[SimulatedAgent]:
    """Agents ``0..count-1`` of ``config.seed``, with any node keys from ``config.node_key_file``."""
    keys = load_node_keys(config.node_key_file)
    identities = make_identities(config.seed, config.count, parse_templates(config.templates))
    if config.mdm is not None:
        identities, _ = apple_sim.with_macs(identities, config.mdm)
    return [
        SimulatedAgent(
            identity,
            transport,
            config.enroll_secret,
            config.agent,
            stats,
            node_key=keys.get(identity.host_identifier),
            stop=stop,
        )
        for identity in identities
    ]


async def enroll_all(
    agents: list[SimulatedAgent], concurrency: int = 32, start_period: float = 0.0, max_attempts: int = 3
) -> int:
    """Enroll every agent without a key, ``concurrency`` at a time; returns how many hold a key."""
    semaphore = asyncio.Semaphore(concurrency)
    step = start_period / len(agents) if agents else 0.0

    async def one(position: int, agent: SimulatedAgent) -> None:
        if agent.node_key:
            return
        if step:
            await asyncio.sleep(position * step)
        async with semaphore:
            await agent.ensure_node_key(max_attempts)

    await asyncio.gather(*(one(i, a) for i, a in enumerate(agents)))
    return sum(1 for a in agents if a.node_key)


async def _report(
    agents: list[SimulatedAgent], progress: Progress, every: float, out: Callable[[str], None]
) -> None:
    while True:
        await asyncio.sleep(every)
        out(progress.line(sum(1 for a in agents if a.node_key), len(agents)))


async def _watch_loop_lag(stats: Stats, every: float = 0.1) -> None:
    """How late this process's event loop wakes up: time the simulator itself adds to every
    latency it reports."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + every
        await asyncio.sleep(every)
        stats.note_loop_lag(max(loop.time() - due, 0.0))


async def _keep_the_heap_out_of_gc(every: float = 10.0) -> None:
    """Move what the agents hold (their tables, identities, sessions) out of the collector's reach
    every ``every`` seconds (``gc.freeze``, O(1)). Five thousand agents hold millions of objects,
    and each full collection walked them all: the simulator's loop stalled for up to 0.8 s, which
    it then reported as the server's latency. Short-lived garbage is still collected."""
    while True:
        gc.freeze()
        await asyncio.sleep(every)


@contextlib.contextmanager
def _gc_pauses_noted(stats: Stats) -> Iterator[None]:
    started: list[float] = []

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started:
            stats.note_gc_pause(time.perf_counter() - started[0])

    gc.callbacks.append(callback)
    try:
        yield
    finally:
        gc.callbacks.remove(callback)


async def _every(seconds: float, action: Callable[[], None]) -> None:
    while True:
        await asyncio.sleep(seconds)
        action()


async def _start_later(
    agent: SimulatedAgent,
    delay: float,
    orbit: SimulatedOrbit | None = None,
    mac: apple_sim.MacRunner | None = None,
) -> None:
    await asyncio.sleep(delay)
    await asyncio.gather(agent.run(), *(c.run() for c in (orbit, mac) if c is not None))


def build_orbits(
    agents: list[SimulatedAgent], config: SimulationConfig, tokens: dict[str, str]
) -> list[SimulatedOrbit]:
    """One orbit per agent when the simulation includes orbit, sharing the agent's identity."""
    if config.orbit is None:
        return []
    return [SimulatedOrbit(agent, config.enroll_secret, config.orbit, tokens) for agent in agents]


async def simulate(
    config: SimulationConfig, stop: asyncio.Event | None = None, out: Callable[[str], None] = print
) -> Stats:
    """Run the simulation until ``stop`` is set or ``config.duration`` passes; returns the counters."""
    stop = stop or asyncio.Event()
    stats = Stats()
    async with (
        HttpTransport(
            config.url, connections=config.connections, insecure=config.insecure, ca_file=config.ca_file
        ) as transport,
        contextlib.AsyncExitStack() as exit_stack,
    ):
        agents = build_agents(transport, config, stats, stop)
        tokens: dict[str, str] = {}
        orbits = build_orbits(agents, config, tokens)
        macs: dict[int, apple_sim.MacRunner] = {}
        if config.mdm is not None and not config.only_enroll:
            macs = await _start_macs(agents, config, stats, stop, exit_stack, out)
        token_file = config.orbit.token_file if config.orbit is not None else ""

        written: dict[str, str] = {}

        def write_tokens() -> None:
            if token_file and tokens and tokens != written:
                save_tokens(token_file, tokens)
                written.clear()
                written.update(tokens)

        progress = Progress(stats)
        # The token file follows rotations within seconds (make run prints My device links from it).
        reporter = asyncio.create_task(_report(agents, progress, config.progress_interval, out))
        token_writer = asyncio.create_task(_every(2.0, write_tokens)) if token_file else None
        lag_watcher = asyncio.create_task(_watch_loop_lag(stats))
        gc_freezer = asyncio.create_task(_keep_the_heap_out_of_gc())
        exit_stack.enter_context(_gc_pauses_noted(stats))
        if config.stats_after > 0:
            loop = asyncio.get_running_loop()
            loop.call_later(config.stats_after, stats.reset)
        if config.only_enroll:
            work = [asyncio.create_task(enroll_all(agents, config.connections, config.start_period))]
        else:
            step = config.start_period / max(len(agents), 1)
            work = [
                asyncio.create_task(_start_later(a, i * step, orbits[i] if orbits else None, macs.get(i)))
                for i, a in enumerate(agents)
            ]
        waiter = asyncio.create_task(stop.wait())
        pending = {*work, waiter} if config.only_enroll else {waiter}
        timeout = config.duration if config.duration and config.duration > 0 else None
        done, _ = await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        helpers = [reporter, waiter, lag_watcher, gc_freezer]
        if token_writer is not None:
            helpers.append(token_writer)
        for task in [*work, *helpers]:
            task.cancel()
        await asyncio.gather(*work, *helpers, return_exceptions=True)
        out(progress.line(sum(1 for a in agents if a.node_key), len(agents)))
        if stats.last_errors:
            out("last errors: " + " | ".join(stats.last_errors))
        if config.node_key_file:
            save_node_keys(config.node_key_file, agents)
        write_tokens()
    return stats


async def _start_macs(
    agents: list[SimulatedAgent],
    config: SimulationConfig,
    stats: Stats,
    stop: asyncio.Event,
    stack: contextlib.AsyncExitStack,
    out: Callable[[str], None],
) -> dict[int, apple_sim.MacRunner]:
    """The simulated Macs (by agent position) and, for their pushes, the APNs stand-in; both are
    closed by ``stack``."""
    assert config.mdm is not None
    _, positions = apple_sim.with_macs([a.identity for a in agents], config.mdm)
    http = await stack.enter_async_context(
        apple_sim.MdmHttp(insecure=config.insecure, ca_file=config.ca_file)
    )
    runners = apple_sim.build_runners(
        agents,
        positions,
        config.mdm,
        base_url=config.url,
        enroll_secret=config.enroll_secret,
        send=http.send,
        stats=stats,
        stop=stop,
    )
    out(f"MDM: {len(runners)} of the hosts are Macs enrolling in Apple MDM")
    if runners:
        router = apple_sim.PushRouter(runners, asyncio.get_running_loop(), stats)
        standin = await asyncio.to_thread(apple_sim.start_standin, config.mdm, router, out)
        if standin is not None:
            stack.push_async_callback(asyncio.to_thread, standin.stop)
    return dict(zip(positions, runners, strict=True))


def run_simulation(config: SimulationConfig, out: Callable[[str], None] = print) -> Stats:
    """Blocking entry point: stops cleanly on Ctrl-C / SIGTERM."""

    async def main() -> Stats:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        return await simulate(config, stop, out)

    try:
        with asyncio.Runner(loop_factory=_fast_loop_factory()) as runner:
            return runner.run(main())
    except KeyboardInterrupt:  # a second Ctrl-C before the handlers were installed
        sys.stderr.write("interrupted\n")
        return Stats()


def _fast_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when installed (it is, with uvicorn[standard]), for this run only: at 5,000
    hosts over TLS the default loop kept the simulator's core busy, and a saturated load generator
    reports its own lag as the server's latency."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
