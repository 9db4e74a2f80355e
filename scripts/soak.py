"""Soak the production shape: agents through a Redis outage, and a live-query WebSocket held open.

What it answers:

1. **Redis outage.** granian (``fleet.web_server``) + MariaDB + Redis, with Redis reached through a
   fault proxy (``tests/faultproxy.py``). ``--hosts`` simulated osquery agents (the simulator's own
   code, real osquery timings and retries) check in continuously: config, ``distributed/read``,
   ``distributed/write`` of detail and label answers (their intervals are shortened to 60 s so
   writes keep coming), result logs from the simulator's built-in schedule and a status line per
   host every 10 s. Redis is up, then down (connections reset and refused) for
   ``--outage-seconds``, up again, then hung (connections accepted, nothing answered) as long, then
   up again. Every agent request is classified (ok, 5xx, error body, ``node_invalid``, transport
   error, timeout past osquery's 16 s) per phase with its latency, and the log lines the agents had
   accepted are compared with the lines in the server's result and status log files. The goal:
   agents keep checking in and logging with no failure, and never re-enroll.
2. **A WebSocket held open.** daphne (production settings, channels-redis on the real Redis)
   beside the same granian. A campaign targets a few quiet hosts (enrolled, not running); a
   watcher holds ``/ws/campaigns/<id>/`` with ``Authorization: Token``; every 30 s one quiet host
   answers through granian's ``distributed/write``, and the time until that host's ``result``
   message arrives is recorded. The other hosts keep checking in meanwhile. The goal: every
   answer arrives, the socket never closes, for ``--ws-minutes``.

It prints a table and rewrites docs/resilience.md; exit 1 when an agent request failed, a log
line went missing, or the socket closed or missed an answer. Everything it starts (granian,
daphne, the proxy) is stopped in ``finally``, by PID. Django-side steps (API token, campaign)
run in a one-shot child process, ``soak.py --django OP JSON``, with daphne's environment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from servers import (  # noqa: E402  (scripts/servers.py, beside this file)
    DaphneServer,
    Server,
    mariadb_available,
    redis_available,
    tail_of,
)

from agentapi.simulator import protocol  # noqa: E402
from agentapi.simulator.agent import AgentSettings, SimulatedAgent  # noqa: E402
from agentapi.simulator.runner import SimulationConfig, build_agents, enroll_all  # noqa: E402
from agentapi.simulator.stats import Stats  # noqa: E402
from agentapi.simulator.transport import HttpTransport, TransportError  # noqa: E402
from tests.faultproxy import FaultProxy  # noqa: E402

PY = sys.executable
MYSQL_DB = "fleet_soak"
REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 9
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
SECRET = "soak-enroll-secret"
WORKERS = 2
CONNECTIONS = 64  # the agents' shared connection pool (requests beyond it wait in the client)
STARTUP_SECONDS = 15.0  # agents start spread over 10 s, then fetch their config and detail queries
START_SPREAD = 10.0
HEARTBEAT_SECONDS = 10.0  # a status line per host this often, so status logs flow in every phase
ANSWER_EVERY = 30.0  # seconds between answers during the WebSocket hold
ANSWER_WAIT = 10.0  # an answer not on the socket this long after its write is missed
DRAIN_SECONDS = 30.0
LIVE_SQL = "SELECT * FROM os_version"
LIVE_PREFIX = "fleet_distributed_query_"
ANSWER_ROW = {"name": "macOS", "version": "14.5", "major": "14", "minor": "5", "platform": "darwin"}
# The server's intervals for this run: detail and label queries come back every minute (plus
# jitter), so distributed/write carries detail answers in every phase, not only at enrolment.
SERVER_ENV = {
    "OSQUERY_DETAIL_UPDATE_INTERVAL": "60",
    "OSQUERY_LABEL_UPDATE_INTERVAL": "60",
}
CLASSES = ("ok", "5xx", "error body", "node_invalid", "4xx", "transport", "timeout")


def _log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", flush=True)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


def _ms(seconds: float) -> str:
    if seconds != seconds:  # NaN: nothing measured
        return "-"
    return f"{seconds * 1000:.0f}" if seconds >= 0.1 else f"{seconds * 1000:.1f}"


# --- per-phase accounting of every agent request ------------------------------------------------


@dataclass
class Phase:
    name: str
    redis: str  # what the proxy does: up, down, hang
    started: float = 0.0
    ended: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    endpoints: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    lines_accepted: Counter[str] = field(default_factory=Counter)  # in log requests answered OK
    lines_refused: Counter[str] = field(default_factory=Counter)  # in log requests that failed
    lines_written: int = 0  # growth of the server's log files over the phase
    errors: list[str] = field(default_factory=list)
    slowest: tuple[float, str, float] = (0.0, "", 0.0)  # seconds, endpoint, when (s into the phase)

    @property
    def requests(self) -> int:
        return sum(self.outcomes.values())

    @property
    def failures(self) -> int:
        return self.requests - self.outcomes["ok"]

    @property
    def seconds(self) -> float:
        return self.ended - self.started


class Recorder:
    """The current phase, and the server's log files (result + status, rotated ones included)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.phases: list[Phase] = []
        self.current: Phase | None = None
        self._lines_at_start = 0
        self.in_flight = 0

    def file_lines(self) -> int:
        total = 0
        for path in self.log_dir.glob("osquery_*.log*"):
            with contextlib.suppress(OSError), open(path, "rb") as f:
                total += sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        return total

    def begin(self, name: str, redis: str) -> Phase:
        self.end()
        self.current = Phase(name, redis, started=time.monotonic())
        self._lines_at_start = self.file_lines()
        self.phases.append(self.current)
        return self.current

    def end(self) -> None:
        if self.current is not None:
            self.current.ended = self.current.ended or time.monotonic()
            self.current.lines_written = self.file_lines() - self._lines_at_start
            self.current = None


class RecordingTransport:
    """The simulator's HTTP transport, recording each request's outcome and latency in its phase."""

    def __init__(self, inner: HttpTransport, recorder: Recorder) -> None:
        self.inner, self.recorder = inner, recorder

    async def post(
        self, path: str, body: dict[str, Any], headers: dict[str, str], compress: bool = False
    ) -> tuple[int, bytes]:
        phase = self.recorder.current
        started = time.monotonic()
        self.recorder.in_flight += 1
        try:
            status, raw = await self.inner.post(path, body, headers, compress)
        except TransportError as exc:
            elapsed = time.monotonic() - started
            kind = "timeout" if elapsed >= protocol.REQUEST_TIMEOUT - 0.5 else "transport"
            self._record(phase, path, body, kind, elapsed, str(exc))
            raise
        finally:
            self.recorder.in_flight -= 1
        elapsed = time.monotonic() - started
        outcome = protocol.read_response(raw) if not path.endswith("/enroll") else None
        if status >= 500:
            kind = "5xx"
        elif outcome is not None and outcome.node_invalid:
            kind = "node_invalid"
        elif outcome is not None and not outcome.ok:
            kind = "error body"
        elif status >= 400:
            kind = "4xx"
        else:
            kind = "ok"
        detail = "" if kind == "ok" else f"HTTP {status}: {raw[:200]!r}"
        self._record(phase, path, body, kind, elapsed, detail)
        return status, raw

    @staticmethod
    def _record(
        phase: Phase | None, path: str, body: dict[str, Any], kind: str, elapsed: float, detail: str
    ) -> None:
        if phase is None:
            return
        endpoint = path.rsplit("/osquery/", 1)[-1]
        phase.outcomes[kind] += 1
        phase.endpoints[endpoint] += 1
        phase.latencies.append(elapsed)
        if elapsed > phase.slowest[0]:
            phase.slowest = (elapsed, endpoint, time.monotonic() - elapsed - phase.started)
        if endpoint == "log":
            lines = len(body.get("data") or [])
            (phase.lines_accepted if kind == "ok" else phase.lines_refused)[str(body.get("log_type"))] += (
                lines
            )
        if kind != "ok" and len(phase.errors) < 5:
            phase.errors.append(f"{endpoint}: {kind} after {elapsed:.1f} s: {detail}")


# --- the fleet of simulated agents --------------------------------------------------------------


class Fleet:
    """Enrolled agents, run (and stopped) as a group, with a status heartbeat."""

    def __init__(self, agents: list[SimulatedAgent], recorder: Recorder) -> None:
        self.agents, self.recorder = agents, recorder
        self.running: list[SimulatedAgent] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    def start(self, agents: list[SimulatedAgent]) -> None:
        self._stop = asyncio.Event()
        self.running = agents
        step = START_SPREAD / max(len(agents), 1)

        async def later(agent: SimulatedAgent, delay: float) -> None:
            await asyncio.sleep(delay)
            await agent.run(self._stop)

        self._tasks = [asyncio.create_task(later(a, i * step)) for i, a in enumerate(agents)]
        self._tasks.append(asyncio.create_task(self._heartbeat()))

    async def _heartbeat(self) -> None:
        beat = 0
        while not self._stop.is_set():
            await asyncio.sleep(HEARTBEAT_SECONDS)
            beat += 1
            for agent in self.running:
                agent.status(0, "soak.cpp", 1, f"soak heartbeat {beat}")

    async def stop(self) -> None:
        """Stop the loops once no request is in flight, so every answered log line is accounted for.

        Stopped agents start no new loop iteration, but a cycle under way may still send its
        write after its read: wait until nothing has been in flight for a second, then cancel
        the loops (they are sleeping by then)."""
        self._stop.set()
        deadline = time.monotonic() + DRAIN_SECONDS
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            if self.recorder.in_flight:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= 1.0:
                break
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []


async def progress(recorder: Recorder, every: float = 10.0) -> None:
    while True:
        await asyncio.sleep(every)
        phase = recorder.current
        if phase is not None:
            _log(
                f"  {phase.name}: {time.monotonic() - phase.started:4.0f} s, {phase.requests} requests, "
                f"{phase.failures} failed, in flight {recorder.in_flight}"
            )


async def hold_phase(recorder: Recorder, proxy: FaultProxy, name: str, redis: str, seconds: float) -> None:
    _log(f"phase {name!r}: Redis {redis} for {seconds:g} s")
    getattr(proxy, redis)()
    recorder.begin(name, redis)
    await asyncio.sleep(seconds)


# --- Django-side steps (token, campaign) in a child process ---------------------------------------


def django_step(env: dict[str, str], op: str, **kwargs: Any) -> Any:
    done = subprocess.run(
        [PY, str(Path(__file__).resolve()), "--django", op, json.dumps(kwargs)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"django step {op} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _django_main(op: str, kwargs: dict[str, Any]) -> int:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
    django.setup()
    replies, sys.stdout = sys.stdout, sys.stderr  # only the answer goes to stdout
    from django.contrib.auth import get_user_model
    from knox.models import AuthToken

    from campaigns import services
    from campaigns.models import Campaign, CampaignResult

    admin, _ = get_user_model().objects.get_or_create(
        username="soak-admin", defaults={"is_superuser": True, "is_staff": True}
    )
    if op == "campaign":
        campaign = services.create_campaign(admin, LIVE_SQL, {"hosts": kwargs["hosts"]})
        token = AuthToken.objects.create(user=admin)[1]
        result: Any = {"token": token, "campaign_id": campaign.id, "targeted": campaign.targeted_count}
    elif op == "finish":
        campaign = Campaign.objects.get(pk=kwargs["campaign_id"])
        stored = CampaignResult.objects.filter(campaign=campaign).count()
        status = campaign.status
        services.stop_campaign(campaign)
        result = {"stored": stored, "status_before_stop": str(status)}
    else:
        raise ValueError(f"unknown django step {op!r}")
    replies.write(json.dumps(result) + "\n")
    return 0


# --- the WebSocket hold --------------------------------------------------------------------------


@dataclass
class SocketRun:
    minutes: float
    campaign_id: int = 0
    targeted: int = 0
    opened_seconds: float = 0.0
    closed: str = ""  # why and when, if the server closed it
    answers: list[tuple[int, float | None]] = field(default_factory=list)  # (seq, latency or None)
    late: int = 0  # arrived after ANSWER_WAIT
    errors: list[str] = field(default_factory=list)
    stored: int = 0
    status_messages: int = 0
    pings: int = 0

    @property
    def latencies(self) -> list[float]:
        return [latency for _, latency in self.answers if latency is not None]

    @property
    def missed(self) -> int:
        return sum(1 for _, latency in self.answers if latency is None)

    @property
    def ok(self) -> bool:
        return not self.closed and not self.missed and not self.errors and bool(self.answers)


async def hold_websocket(
    web: Server, daphne: DaphneServer, quiet: list[SimulatedAgent], run: SocketRun
) -> None:
    setup = await asyncio.to_thread(
        django_step, daphne.env, "campaign", hosts=[a.identity.uuid for a in quiet]
    )
    run.campaign_id, run.targeted = setup["campaign_id"], setup["targeted"]
    name = f"{LIVE_PREFIX}{run.campaign_id}"
    _log(
        f"campaign {run.campaign_id} over {run.targeted} quiet hosts; "
        f"holding its WebSocket {run.minutes:g} min"
    )
    arrived: dict[str, asyncio.Future[float]] = {}
    ws_url = f"{daphne.url.replace('http', 'ws', 1)}/ws/campaigns/{run.campaign_id}/"
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        ws = await session.ws_connect(
            ws_url, headers={"Authorization": f"Token {setup['token']}"}, autoping=True, heartbeat=None
        )
        opened = time.monotonic()
        closing = asyncio.Event()
        closed_at = [0.0]

        async def reader() -> None:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(message.data)
                if data.get("type") == "result":
                    rows = data["data"].get("rows") or [{}]
                    seq = str(rows[0].get("soak_seq", ""))
                    future = arrived.get(seq)
                    if future is not None and not future.done():
                        future.set_result(time.monotonic())
                elif data.get("type") == "status":
                    run.status_messages += 1
                elif data.get("type") == "error":
                    run.errors.append(
                        f"error message at {time.monotonic() - opened:.0f} s: {data.get('data')}"
                    )
            if not closing.is_set():
                closed_at[0] = time.monotonic()
                run.closed = (
                    f"closed by the server after {closed_at[0] - opened:.0f} s (code {ws.close_code})"
                )

        reading = asyncio.create_task(reader())
        try:
            total = run.minutes * 60
            seq = 0
            while True:
                due = opened + (seq + 1) * ANSWER_EVERY
                if due - opened > total + 0.001 or seq >= len(quiet) - 1:
                    break
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if reading.done():
                    break
                agent = quiet[seq]
                key = str(seq)
                arrived[key] = asyncio.get_running_loop().create_future()
                body = {"node_key": agent.node_key, "queries": {name: [{**ANSWER_ROW, "soak_seq": key}]},
                        "statuses": {name: 0}}  # fmt: skip
                started = time.monotonic()
                try:
                    async with session.post(
                        web.url + "/api/osquery/distributed/write", json=body,
                        timeout=aiohttp.ClientTimeout(total=protocol.REQUEST_TIMEOUT),
                    ) as response:  # fmt: skip
                        text = await response.text()
                        if response.status != 200 or text.strip() not in ("{}", ""):
                            run.errors.append(f"answer {seq}: HTTP {response.status} {text[:200]}")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    run.errors.append(f"answer {seq}: {type(exc).__name__}: {exc}")
                try:
                    got = await asyncio.wait_for(asyncio.shield(arrived[key]), timeout=ANSWER_WAIT)
                    latency: float | None = got - started
                except TimeoutError:
                    latency = None
                run.answers.append((seq, latency))
                _log(
                    f"  answer {seq + 1} at {started - opened:.0f} s: "
                    + (f"on the socket after {_ms(latency)} ms" if latency is not None else "MISSED")
                )
                seq += 1
        finally:
            run.opened_seconds = (closed_at[0] or time.monotonic()) - opened
            closing.set()
            await ws.close()
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
    # Answers that came after the wait still count as arrived late (not missed).
    for seq, latency in list(run.answers):
        future = arrived.get(str(seq))
        if latency is None and future is not None and future.done():
            run.late += 1
    finish = await asyncio.to_thread(django_step, daphne.env, "finish", campaign_id=run.campaign_id)
    run.stored = finish["stored"]


# --- the run ---------------------------------------------------------------------------------------


@dataclass
class Outcome:
    args: argparse.Namespace
    phases: list[Phase] = field(default_factory=list)
    ws_phase: Phase | None = None
    socket: SocketRun | None = None
    notes: list[str] = field(default_factory=list)
    stats: Stats | None = None
    lines_total_accepted: int = 0
    lines_total_written: int = 0
    server_log: dict[str, int] = field(default_factory=dict)


async def soak(args: argparse.Namespace, web: Server, proxy: FaultProxy, out: Outcome) -> None:
    recorder = Recorder(web.tmp / "logs")
    stats = Stats()
    out.stats = stats
    ticker = asyncio.create_task(progress(recorder))
    try:
        async with HttpTransport(web.url, connections=CONNECTIONS) as http:
            transport = RecordingTransport(http, recorder)
            config = SimulationConfig(
                url=web.url, enroll_secret=SECRET, count=args.hosts, seed=7, agent=AgentSettings()
            )
            agents = build_agents(transport, config, stats, asyncio.Event())
            started = time.monotonic()
            enrolled = await enroll_all(agents, concurrency=8)
            out.notes.append(f"Enrolled {enrolled} hosts in {time.monotonic() - started:.1f} s.")
            _log(out.notes[-1])
            if enrolled < args.hosts:
                raise RuntimeError(f"only {enrolled}/{args.hosts} hosts enrolled: {stats.last_errors}")
            fleet = Fleet(agents, recorder)
            lines_before = recorder.file_lines()
            if args.only in (None, "outage"):
                await outage(args, fleet, recorder, proxy, out)
            if args.only in (None, "websocket"):
                await websocket(args, web, fleet, recorder, out)
            recorder.end()
            out.lines_total_written = recorder.file_lines() - lines_before
            out.lines_total_accepted = sum(sum(p.lines_accepted.values()) for p in recorder.phases)
    finally:
        ticker.cancel()
        await asyncio.gather(ticker, return_exceptions=True)


async def outage(
    args: argparse.Namespace, fleet: Fleet, recorder: Recorder, proxy: FaultProxy, out: Outcome
) -> None:
    fleet.start(fleet.agents)
    seconds = args.outage_seconds
    plan = [
        ("start-up", "up", STARTUP_SECONDS),
        ("Redis up", "up", args.up_seconds),
        ("Redis down", "down", seconds),
        ("Redis back after down", "up", args.up_seconds),
        ("Redis hung", "hang", seconds),
        ("Redis back after hang", "up", args.up_seconds),
    ]
    try:
        for name, redis, duration in plan:
            await hold_phase(recorder, proxy, name, redis, duration)
    finally:
        proxy.up()
        if recorder.current is not None:
            recorder.current.ended = time.monotonic()  # the drain below is not part of the phase
        _log("stopping the agents (each finishes its request in flight)")
        await fleet.stop()
        recorder.end()
    out.phases = [p for p in recorder.phases if p.name in {n for n, _, _ in plan}]


async def websocket(
    args: argparse.Namespace, web: Server, fleet: Fleet, recorder: Recorder, out: Outcome
) -> None:
    answers = int(args.ws_minutes * 60 // ANSWER_EVERY)
    quiet, busy = fleet.agents[: answers + 1], fleet.agents[answers + 1 :]
    daphne = DaphneServer(
        "mariadb", "redis", web.tmp / "daphne", mysql_db=MYSQL_DB, redis_url=REDIS_URL, secret=SECRET
    )
    run = SocketRun(args.ws_minutes)
    out.socket = run
    await asyncio.to_thread(daphne.start)
    try:
        fleet.start(busy)
        out.ws_phase = recorder.begin("WebSocket hold (background check-ins)", "up")
        await hold_websocket(web, daphne, quiet, run)
    finally:
        if out.ws_phase is not None:
            out.ws_phase.ended = time.monotonic()
        await fleet.stop()
        recorder.end()
        out.server_log["daphne errors"] = _count_errors(daphne.log_path)
        await asyncio.to_thread(daphne.stop)
        if out.server_log["daphne errors"]:
            out.notes.append(f"daphne log (tail):\n{tail_of(daphne.log_path, 10)}")


def _count_errors(path: Path) -> int:
    with contextlib.suppress(OSError):
        text = path.read_text(errors="replace")
        return len(re.findall(r"Traceback|\bERROR\b|CRITICAL", text))
    return 0


def _server_log_figures(path: Path) -> dict[str, int]:
    text = ""
    with contextlib.suppress(OSError):
        text = path.read_text(errors="replace")
    return {
        "granian workers exited unexpectedly": text.count("Unexpected exit from worker"),
        "granian tracebacks": text.count("Traceback"),
        "cache outage warnings": text.count("cache (Redis) unavailable"),
        "live-query store warnings": text.count("live-query store unavailable"),
    }


# --- report --------------------------------------------------------------------------------------


def machine() -> str:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError, IndexError, ValueError):
        kib = int(Path("/proc/meminfo").read_text().splitlines()[0].split()[1])
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    return (
        f"{os.cpu_count()} CPU ({model}), {memory} RAM, {platform.platform()}, "
        f"Python {platform.python_version()}"
    )


def phase_table(phases: list[Phase]) -> list[str]:
    rows = [
        "| phase | Redis | s | requests | ok | 5xx | error body | node_invalid | transport error "
        "| timeout > 16 s | p50 ms | p99 ms | max ms | log lines accepted | log lines written | refused |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in phases:
        o = p.outcomes
        rows.append(
            f"| {p.name} | {p.redis} | {p.seconds:.0f} | {p.requests} | {o['ok']} | {o['5xx']} | "
            f"{o['error body']} | {o['node_invalid']} | {o['transport']} | {o['timeout']} | "
            f"{_ms(percentile(p.latencies, 50))} | {_ms(percentile(p.latencies, 99))} | "
            f"{_ms(max(p.latencies, default=float('nan')))} | {sum(p.lines_accepted.values())} | "
            f"{p.lines_written} | {sum(p.lines_refused.values())} |"
        )
    return rows


def socket_lines(run: SocketRun) -> list[str]:
    latencies = run.latencies
    worst = max(latencies, default=float("nan"))
    return [
        "| figure | value |",
        "|---|---:|",
        f"| held open | {run.opened_seconds:.0f} s ({run.opened_seconds / 60:.1f} min; "
        f"goal {run.minutes:g} min) |",
        f"| closed by the server | {run.closed or 'never'} |",
        f"| answers written (one every {ANSWER_EVERY:g} s) | {len(run.answers)} |",
        f"| answers on the socket within {ANSWER_WAIT:g} s | {len(latencies)} |",
        f"| missed | {run.missed} (of which arrived late: {run.late}) |",
        f"| write -> result latency p50 / max | {_ms(percentile(latencies, 50))} ms / {_ms(worst)} ms |",
        f"| status messages received | {run.status_messages} |",
        f"| answers stored for the campaign | {run.stored} |",
        f"| errors | {'; '.join(run.errors) or 'none'} |",
    ]


def verdicts(out: Outcome) -> tuple[list[str], bool]:
    lines, ok = [], True
    if out.phases:
        failed = sum(p.failures for p in out.phases)
        invalid = sum(p.outcomes["node_invalid"] for p in out.phases)
        reenrolled = out.stats.reenrollments if out.stats else 0
        verdict = "meets" if failed == 0 and reenrolled == 0 else "**misses**"
        ok &= failed == 0 and reenrolled == 0
        lines.append(
            f"- **Redis outage: {failed} failed agent requests of {sum(p.requests for p in out.phases)}, "
            f"{invalid} node_invalid, {reenrolled} re-enrolments** ({verdict} the goal of none)."
        )
    # The baseline is the phase before any fault (the phases after one include the recovery).
    by_redis = {
        mode: [x for p in out.phases if p.name == name for x in p.latencies]
        for mode, name in (("up", "Redis up"), ("down", "Redis down"))
    }
    hung = [x for p in out.phases if p.redis == "hang" for x in p.latencies]
    if hung and by_redis["up"]:
        lines.append(
            f"- Latency p50 / p99: {_ms(percentile(by_redis['up'], 50))} / "
            f"{_ms(percentile(by_redis['up'], 99))} ms with Redis up (before any fault), "
            f"{_ms(percentile(by_redis['down'], 50))} / {_ms(percentile(by_redis['down'], 99))} ms down, "
            f"**{_ms(percentile(hung, 50))} / {_ms(percentile(hung, 99))} ms hung** "
            "(no failure, but each request waits on the server's Redis timeouts or behind one queued "
            "in the server)."
        )
    phases = [*out.phases, *([out.ws_phase] if out.ws_phase else [])]
    if phases:
        written, accepted = out.lines_total_written, out.lines_total_accepted
        same = written == accepted
        ok &= same
        lines.append(
            f"- **Log lines: {accepted} accepted by the server, {written} in its log files** "
            f"({'every accepted line written, none twice' if same else '**lines lost or doubled**'})."
        )
    if out.ws_phase is not None and out.ws_phase.failures:
        ok = False
        lines.append(f"- **{out.ws_phase.failures} agent requests failed during the WebSocket hold.**")
    if out.socket is not None:
        run = out.socket
        ok &= run.ok
        lines.append(
            f"- **WebSocket: open {run.opened_seconds / 60:.1f} min, {len(run.latencies)}/{len(run.answers)} "
            f"answers arrived, {'never closed' if not run.closed else run.closed}** "
            f"({'meets' if run.ok else '**misses**'} the goal)."
        )
    return lines, ok


def write_report(path: Path, out: Outcome, command: str) -> None:
    args = out.args
    verdict_lines, _ = verdicts(out)
    outage_section = (
        [
            "## Redis outage",
            "",
            f"{args.hosts} hosts checking in throughout; Redis up {args.up_seconds:g} s, down "
            f"{args.outage_seconds:g} s, up {args.up_seconds:g} s, hung {args.outage_seconds:g} s, up "
            f"{args.up_seconds:g} s (after {STARTUP_SECONDS:g} s of start-up).",
            "",
            *phase_table(out.phases),
            "",
            "Requests by endpoint: "
            + "; ".join(
                f"{p.name}: " + ", ".join(f"{k} {v}" for k, v in sorted(p.endpoints.items()))
                for p in out.phases
            )
            + ".",
            "",
            "Slowest request per phase: "
            + "; ".join(
                f"{p.name}: {p.slowest[1]} {_ms(p.slowest[0])} ms, {p.slowest[2]:.0f} s in"
                for p in out.phases
                if p.slowest[1]
            )
            + ".",
            "",
        ]
        if out.phases
        else []
    )
    errors = [f"- {p.name}: {e}" for p in out.phases for e in p.errors]
    if errors:
        outage_section += ["First failures per phase:", "", *errors, ""]
    socket_section = (
        [
            "## A live-query WebSocket held open",
            "",
            *socket_lines(out.socket),
            "",
            *(phase_table([out.ws_phase]) if out.ws_phase else []),
            "",
        ]
        if out.socket
        else []
    )
    lines = [
        "# Resilience",
        "",
        "Generated by `scripts/soak.py` (run by `make soak`); the whole file is rewritten on each run.",
        "",
        f"- **Date:** {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- **Machine:** {machine()} (shared with other work while it ran)",
        f"- **Configuration:** granian (`fleet.web_server`) {WORKERS} worker processes, one request "
        "thread each (`fleet.wsgi`, production settings) on 127.0.0.1, MariaDB (socket), Redis through "
        "a fault proxy (cache, node-key cache, live-query store, channel layer); daphne (`fleet.asgi`) "
        f"on the real Redis for the WebSocket; {args.hosts} simulated hosts; detail and label queries "
        "every 60 s; filesystem log destination",
        f"- **Command:** `{command}`",
        "",
        "## Verdicts",
        "",
        *verdict_lines,
        "",
        *outage_section,
        *socket_section,
        "## Server logs",
        "",
        *[f"- {k}: {v}" for k, v in out.server_log.items()],
        *[f"- {note}" for note in out.notes],
        "",
        "## Method",
        "",
        "- The agents are the project's simulator (`agentapi/simulator`), one asyncio process on the same "
        "machine, with osquery's own timings (distributed every 10 s, logs every 10 s, config every 60 s) "
        "and retry rules (3 attempts with 1 s and 4 s waits; logs back off). Every HTTP request they send "
        "is counted once, retries included, in the phase in which it *started*.",
        "- Classes: *5xx* by HTTP status; *error body*, *node_invalid* as osquery reads the body "
        "(any `error` key, `node_invalid: true`); *transport error*: reset or refused; *timeout*: no "
        "answer within osquery's 16 s. Latency is the client's, from send to full response, so it "
        "includes queueing in the server.",
        "- Redis faults come from a TCP proxy (`tests/faultproxy.py`) in the soak process between the "
        "server and Redis: *down* resets open connections and closes new ones at once (a crashed "
        "Redis); *hung* accepts connections and reads requests but never answers (a stuck Redis or a "
        "network dropping packets): only the server's socket timeouts end the wait.",
        "- Detail and label queries are due every 60 s (plus up to 10 % jitter), so `distributed/write` and "
        "`config` requests come in waves a minute apart; a 30 s phase may hold none.",
        "- Status lines: besides what the simulator logs itself, each host logs a heartbeat status "
        f"line every {HEARTBEAT_SECONDS:g} s, so both log kinds flow in every phase. *Log lines accepted* "
        "are the lines in log requests the server answered OK; *written* is the growth of "
        "`osquery_result.log` + `osquery_status.log` over the phase; *refused* lines stay in the agent's "
        "buffer and are sent again later. A request in flight at a phase boundary can move a few lines "
        "to the next phase; the totals in the verdict are exact (the agents finish their requests in "
        "flight before the last count).",
        "- WebSocket: the campaign targets quiet hosts (enrolled, not running, so only the script "
        f"answers for them); the other hosts keep checking in. Every {ANSWER_EVERY:g} s one quiet host "
        "posts an `os_version` row to granian's `distributed/write`; the latency runs from sending it "
        "to the `result` message on the socket (granian -> channels-redis -> daphne). An answer not "
        f"there within {ANSWER_WAIT:g} s is missed. The socket is opened with `Authorization: Token` "
        "(a knox token) and closed by the script at the end; aiohttp answers daphne's pings.",
        "",
        "## Reproduce",
        "",
        "`make soak` (needs MariaDB and Redis: `.ci/run` starts them; the MySQL driver comes from "
        "`make setup-mysql`). Options through `SOAK_ARGS`, e.g. `make soak SOAK_ARGS='--hosts 100 "
        "--outage-seconds 20 --ws-minutes 2 --only outage'`; `scripts/soak.py --help` lists them. It "
        f"uses the MariaDB database `{MYSQL_DB}` and Redis database {REDIS_DB}, both emptied, and takes "
        "about 4 minutes plus `--ws-minutes` with the defaults.",
        "",
    ]
    path.write_text("\n".join(lines))


# --- main ------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument(
        "--outage-seconds", type=float, default=60.0, help="Redis down, then hung, this long."
    )
    parser.add_argument(
        "--up-seconds", type=float, default=30.0, help="Redis up before and after each fault."
    )
    parser.add_argument("--ws-minutes", type=float, default=10.0, help="How long the WebSocket is held.")
    parser.add_argument("--only", choices=("outage", "websocket"), help="Run one of the two measurements.")
    parser.add_argument(
        "--report",
        default=str(ROOT / "docs" / "resilience.md"),
        help="Markdown file to rewrite ('' to skip).",
    )
    args = parser.parse_args(argv)
    if not 10 <= args.hosts <= 5000:
        parser.error("--hosts must be 10..5000")
    if not 1 <= args.outage_seconds <= 600 or not 1 <= args.up_seconds <= 300:
        parser.error("--outage-seconds must be 1..600 and --up-seconds 1..300 (runs are bounded)")
    if not 0.5 <= args.ws_minutes <= 120:
        parser.error("--ws-minutes must be 0.5..120")
    if args.ws_minutes * 60 // ANSWER_EVERY + 2 > args.hosts:
        parser.error("--hosts must exceed the number of answers (one per 30 s of --ws-minutes) + 1")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--django"] and len(argv) == 3:  # the one-shot Django step, in daphne's environment
        return _django_main(argv[1], json.loads(argv[2]))
    args = parse_args(argv)
    if not mariadb_available() or not redis_available(REDIS_URL):
        _log("needs MariaDB (and its driver: make setup-mysql) and Redis on 127.0.0.1:6379")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="fleet-soak-"))
    proxy = FaultProxy(REDIS_HOST, REDIS_PORT)
    web = Server(WORKERS, "mariadb", "redis", tmp, mysql_db=MYSQL_DB, redis_url=REDIS_URL, secret=SECRET)
    web.env["REDIS_URL"] = f"redis://127.0.0.1:{proxy.port}/{REDIS_DB}"  # Redis through the proxy
    web.env.update(SERVER_ENV)
    out = Outcome(args)
    _log(f"granian ({WORKERS} workers) at {web.url}, Redis through the proxy on port {proxy.port}")
    try:
        web.prepare()
        web.start()
        asyncio.run(soak(args, web, proxy, out))
    except Exception as exc:
        _log(f"failed: {exc}")
        if tail := web.log_tail():
            _log(f"granian log:\n{tail}")
        return 1
    finally:
        proxy.up()
        web.stop()
        out.server_log = {**_server_log_figures(web.log_path), **out.server_log}
        proxy.close()
        web.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    verdict_lines, ok = verdicts(out)
    print()
    if out.phases:
        print("\n".join(phase_table(out.phases)))
        print()
    if out.socket:
        print("\n".join(socket_lines(out.socket)))
        print()
    print("\n".join(verdict_lines))
    for key, value in out.server_log.items():
        print(f"- {key}: {value}")
    if args.report:
        command = "make soak" + (f" SOAK_ARGS='{' '.join(argv)}'" if argv else "")
        write_report(Path(args.report), out, command)
        _log(f"wrote {args.report}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
