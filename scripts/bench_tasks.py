"""Task agent sessions on one daphne process: how many idle agents it holds, and how fast a task
change reaches them (``make bench-tasks``).

The goal (docs/tasks.md, "Capacity"): 10,000 idle agent sessions on one daphne process, and a
change reaching 1,000 agents in under 2 s.

Production shape: a fresh MariaDB database (``fleet_bench_tasks``) and Redis database 2 (flushed)
for the cache and the channel layer, ONE daphne process serving ``fleet.asgi`` on 127.0.0.1. This
process is the load generator (asyncio + aiohttp, beside daphne on the same two cores): it opens
``--agents`` sessions on ``/ws/agent/`` as the real agent does (``Authorization: Bearer <key>``,
name ``bench-00001``..., tags ``a`` or ``b``, and ``fanout`` on ``--fanout`` of them spread over
the ramp), at most ``--concurrency`` handshakes at a time (and ``--rate`` per second if given),
each answering with a heartbeat every 10 s (jittered). Then it measures:

1. the ramp: time until every session has its ``task_list``, and the server CPU per connect;
2. idle: over ``--duration`` s with every session open, daphne's CPU (the heartbeat cost), its
   RSS, MariaDB's and Redis' CPU and what they were asked, the heartbeats both ways, and any
   session that closed;
3. fan-out: a task routed ``byTags ["fanout"]`` is created, then changed ``--changes`` times, one
   at a time, through REST on the same daphne process (``POST``/``PATCH /api/v1/tasks/``); for each,
   the time from sending the request until each fanout agent received its ``task_add`` or
   ``task_update`` (every change carries its own marker in the task's settings);
4. burst: ``--burst`` changes of that task fired through REST ``--burst-concurrency`` at a time;
   the change rate and the frames per second delivered until the last agent had the last one.

Results go to docs/bench-tasks.json and the "Task agent sessions" section of docs/benchmarks.md
(``--no-write``: print only). ``--profile [PY_SPY]`` records daphne with py-spy (``pip install
py-spy`` in a venv of its own) during the idle window and the burst, and prints where the time goes.
``--server-env NAME=VALUE`` runs daphne with a setting changed, to measure its effect. Everything started
here is stopped by PID in ``finally``; the database is dropped and Redis 2 flushed at the end
(``--keep`` leaves them).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import heapq
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchdoc import replace_section  # scripts/benchdoc.py, beside this file

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SECTION = "## Task agent sessions"
RESULTS = ROOT / "docs" / "bench-tasks.json"  # the last run, which bench.py renders too
MYSQL_DB = "fleet_bench_tasks"
REDIS_URL = "redis://127.0.0.1:6379/2"
HEARTBEAT = 10.0  # the agent's interval (the server's welcome says the same)
GOAL_AGENTS = 10_000
GOAL_FANOUT_AGENTS = 1_000
GOAL_FANOUT_SECONDS = 2.0


# --- the section of docs/benchmarks.md ------------------------------------------------------------


def report_lines(path: Path = RESULTS) -> list[str]:
    """The "Task agent sessions" section of docs/benchmarks.md, from the last recorded run."""
    if not path.exists():
        return [SECTION, "", "Not measured yet (`make bench-tasks`).", ""]
    return report_lines_from(json.loads(path.read_text()))


def _verdict(met: bool | None) -> str:
    return "" if met is None else ("meets" if met else "**misses**")


def report_lines_from(r: dict[str, Any]) -> list[str]:
    ramp, idle, fan, burst = r["ramp"], r["idle"], r["fanout"], r["burst"]
    n, f = r["agents"], r["fanout_agents"]
    held = ramp["established"] - idle["closed"]
    rows = [
        (
            "Idle sessions held (established / asked; failed connects; closed while measured)",
            f"{ramp['established']:,} / {n:,}; {ramp['failed']:,}; {idle['closed']:,}"
            + (f" (the ramp stopped: {ramp['stop_reason']})" if ramp.get("stop_reason") else ""),
            f"{GOAL_AGENTS:,}, none lost",
            (held >= GOAL_AGENTS and ramp["failed"] == 0 and idle["closed"] == 0)
            if n >= GOAL_AGENTS
            else None,
        ),
        (
            "Time to connect them all (connects/s); handshake to `task_list` p50 / p99",
            f"{ramp['seconds']:.1f} s ({ramp['per_second']:.0f}/s); "
            f"{ramp['p50_ms']:.0f} / {ramp['p99_ms']:.0f} ms",
            "",
            None,
        ),
        (
            "Server CPU during the ramp per session opened (first connection: the agent registers; "
            "includes the open sessions' heartbeats); DB statements / new DB connections per session",
            f"{ramp['server_cpu_ms']:.1f} ms; {ramp.get('db_statements_per_connect', 0):.0f} / "
            f"{ramp.get('db_connections_per_connect', 0):.1f}",
            "",
            None,
        ),
        (
            f"Server RSS: before agents / with {held:,} sessions (per session)",
            f"{r['rss_mib_before']:.0f} / {idle['rss_mib']:.0f} MiB "
            f"({(idle['rss_mib'] - r['rss_mib_before']) * 1024 / max(held, 1):.0f} KiB)",
            "",
            None,
        ),
        (
            f"Server CPU at idle with {held:,} sessions (of one core); per heartbeat pair",
            f"{idle['server_cpu_pct']:.0f} %; {idle['server_cpu_ms_per_beat']:.2f} ms",
            "",
            None,
        ),
        (
            "MariaDB + Redis CPU at idle (of one core); statements / new connections / Redis commands per s",
            f"{idle['services_cpu_pct']:.0f} %; {idle['db_statements_per_s']:.0f} / "
            f"{idle['db_connections_per_s']:.0f} / {idle['redis_commands_per_s']:.0f}",
            "",
            None,
        ),
        (
            "Heartbeats at idle, agents -> server / server -> agents (per s; expected)",
            f"{idle['beats_out_per_s']:.0f} / {idle['beats_in_per_s']:.0f} ({held / HEARTBEAT:.0f})",
            "",
            None,
        ),
        (
            f"Create a task -> `task_add` on all {fan['expected']:,} fanout agents",
            f"{fan['create']['last_ms']:.0f} ms (REST answered in {fan['create']['rest_ms']:.0f} ms)",
            "",
            None,
        ),
        (
            f"Change -> `task_update` on all {fan['expected']:,}: median / max of {fan['changes']}",
            f"{fan['last_ms_median']:.0f} / {fan['last_ms_max']:.0f} ms",
            f"< {GOAL_FANOUT_SECONDS:g} s for {GOAL_FANOUT_AGENTS:,}",
            (
                fan["expected"] >= GOAL_FANOUT_AGENTS
                and fan["last_ms_max"] < GOAL_FANOUT_SECONDS * 1000
                and fan["missing"] == 0
            )
            if f >= GOAL_FANOUT_AGENTS
            else None,
        ),
        (
            "Per agent, request sent -> frame received: p50 / p99 / max; REST answer median; frames missing; "
            "deepest channel-layer queue",
            f"{fan['p50_ms']:.0f} / {fan['p99_ms']:.0f} / {fan['max_ms']:.0f} ms; "
            f"{fan['rest_ms_median']:.0f} ms; {fan['missing']}; {fan.get('queue_max', '-')}",
            "",
            None,
        ),
        (
            f"Burst of {burst['changes']} changes x {fan['expected']:,} agents ({burst['concurrency']} REST "
            "requests at a time): changes/s, frames/s, until the last frame",
            f"{burst['changes_per_s']:.1f}/s, {burst['frames_per_s']:,.0f}/s, {burst['seconds']:.1f} s",
            "",
            None,
        ),
        (
            "Burst: frames missing; deepest channel-layer queue (channels-redis drops what exceeds its "
            "capacity, 2,000); server CPU",
            f"{burst['missing']:,} of {burst['expected_frames']:,}; {burst.get('queue_max', '-')}; "
            f"{burst['server_cpu_pct']:.0f} %",
            "0",
            burst["missing"] == 0,
        ),
        (
            "Load client (this machine's other core): CPU at idle / in the burst; event-loop lag p99 at idle",
            f"{idle['client_cpu_pct']:.0f} % / {burst['client_cpu_pct']:.0f} %; "
            f"{idle['client_lag_p99_ms']:.0f} ms",
            "",
            None,
        ),
        (
            "Other processes on the machine (CPU, % of one core): ramp / idle / burst",
            " / ".join(f"{x.get('others_cpu_pct', float('nan')):.0f} %" for x in (ramp, idle, burst)),
            "",
            None,
        ),
    ]
    lines = [
        SECTION,
        "",
        f"Recorded {r['date']} with `{r['command']}` on {r['tree']}: MariaDB (socket) and Redis (cache and "
        f"channel layer), ONE daphne process (`fleet.asgi`, open-files limit {r['server_nofile']:,}), "
        f"{n:,} agents ({f:,} tagged `fanout`) from one asyncio process (aiohttp) on the same 2 cores, "
        f"{r['concurrency']} handshakes at a time; idle measured over {idle['seconds']:g} s"
        + (
            f"; daphne's environment plus {', '.join(f'`{e}`' for e in r['server_env'])}"
            if r.get("server_env")
            else ""
        )
        + ".",
        "",
        "| figure | value | goal | |",
        "|---|---:|---|---|",
        *(f"| {what} | {value} | {goal} | {_verdict(met)} |" for what, value, goal, met in rows),
        "",
        "Each agent connects as `fleet-task-agent` does (`Authorization: Bearer <key>`, its name and tags "
        "in headers), reads `welcome`, `destinations` and `task_list`, then sends a heartbeat every 10 s "
        "(jittered +-10 %) and reads everything the server sends. *Server CPU* is daphne's user+system time "
        "(`/proc/<pid>/stat`) over the window, in % of one core; MariaDB and Redis are whole processes "
        "(anything else they served meanwhile counts too), their statements and new connections from "
        "`SHOW GLOBAL STATUS`. A *heartbeat pair* is one heartbeat each way. Fan-out: the task is "
        "created, then changed one change at a time (the next after the last agent has the previous "
        "one), through REST on the same daphne process (in production REST is granian's and the push "
        "crosses Redis the same way); latency runs from sending the request to each agent's frame, "
        "measured in the client, so it includes the client's own event-loop lag. The burst fires its "
        "changes without waiting for delivery.",
        "",
        *([f"Analysis of the run of {r.get('notes_date', r['date'])}:", ""] if r.get("notes") else []),
        *[f"- {note}" for note in r.get("notes", [])],
        *([""] if r.get("notes") else []),
        "Reproduce: `make bench-tasks` (defaults: `--agents 10000 --fanout 1000 --changes 10 --burst 50`); "
        "a quick run: `make bench-tasks BENCH_ARGS='--agents 500 --fanout 100'` (under a minute). "
        "`scripts/bench_tasks.py --help` lists the options (`--duration`, `--concurrency`, `--rate`, "
        "`--profile`, `--server-env`, `--no-write`).",
        "",
    ]
    return lines


def write_section(text: str, path: Path = ROOT / "docs" / "benchmarks.md") -> None:
    """Put the section in docs/benchmarks.md in place of the previous one (else before "Fuzzing")."""
    replace_section(text.split("\n"), path)


# --- small helpers ---------------------------------------------------------------------------------


class BenchError(RuntimeError):
    """A step failed: the run stops with this message (and daphne's last log lines)."""


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def raise_nofile(wanted: int) -> int:
    """Raise this process's open-files limit (children inherit it): to ``wanted`` if root may, else
    to the hard limit. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, wanted)
    with contextlib.suppress(ValueError, OSError):  # above the hard limit needs CAP_SYS_RESOURCE
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(hard, target)))
        return target
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def nofile_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    return 0


def machine_busy() -> float:
    """CPU seconds every process on the machine has used (all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # less idle, iowait


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def mariadb_status() -> dict[str, int]:
    out = subprocess.run(
        ["mariadb", "-uroot", "-N", "-B", "-e",
         "SHOW GLOBAL STATUS WHERE Variable_name IN ('Questions','Connections','Com_update','Com_select')"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    return {name: int(value) for name, value in (line.split("\t") for line in out.splitlines() if line)}


def redis_commands(url: str) -> int:
    """Commands Redis has run (0 when it refuses us, e.g. with every client slot taken)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        return int(client.info("stats")["total_commands_processed"])
    except redis.RedisError as exc:
        _log(f"  Redis did not answer INFO: {exc}")
        return 0
    finally:
        client.close()


def log_counts(path: Path) -> dict[str, Any]:
    """What daphne logged (at INFO): messages channels-redis dropped, warnings, errors, the last lines."""
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    dropped = 0
    for line in lines:  # fleet.logformat's rate limit folds repeats into "[N similar messages suppressed]"
        if "over capacity" in line:
            found = re.search(r"\[(\d+) similar messages suppressed\]", line)
            dropped += 1 + (int(found.group(1)) if found else 0)
    return {
        "over_capacity": dropped,
        "warnings": sum("WARNING" in line for line in lines),
        "errors": sum("ERROR" in line or "Traceback" in line for line in lines),
        "tail": lines[-15:],
    }


def tree_state() -> str:
    """The commit measured, and whether taskserver/ had changes not committed yet."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "taskserver", "fleet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    commit = head.stdout.strip() or "unknown"
    return f"commit {commit}" + (
        " + uncommitted changes in taskserver/ or fleet/" if dirty.stdout.strip() else ""
    )


# --- Django-side set-up, in a child process with the server's environment -------------------------


def _django_setup() -> int:
    """An admin's REST token and a global agent key, printed as JSON (nothing else on stdout)."""
    import django

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
    django.setup()
    replies, sys.stdout = sys.stdout, sys.stderr
    from django.contrib.auth import get_user_model
    from knox.models import AuthToken

    from taskserver import services

    admin, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_superuser": True, "is_staff": True}
    )
    _, key = services.create_agent_key(name="bench", team_id=None)
    replies.write(json.dumps({"token": AuthToken.objects.create(user=admin)[1], "key": key}) + "\n")
    return 0


def django_setup(env: dict[str, str]) -> dict[str, str]:
    done = subprocess.run(
        [PY, str(Path(__file__).resolve()), "--django-setup"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if done.returncode != 0 or not done.stdout.strip():
        raise BenchError(f"creating the agent key and API token failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- profiling with py-spy (optional) -------------------------------------------------------------


# Frames every sample passes through (the reactor, the executor's threads): left out of "inclusive".
WRAPPERS = (
    "(<frozen runpy>)", "(daphne/__main__.py)", "(daphne/cli.py)", "(daphne/server.py)",
    "(twisted/internet/asyncioreactor.py)", "(asyncio/base_events.py)", "(asyncio/events.py)",
    "(threading.py)", "(concurrent/futures/thread.py)", "(asgiref/sync.py)",
    "(asgiref/current_thread_executor.py)", "(twisted/python/log.py)", "(twisted/python/context.py)",
)  # fmt: skip


def _frame_name(frame: str) -> str:
    """``function (path:line)`` -> ``function (path)``: one entry per function."""
    function, _, where = frame.partition(" (")
    return f"{function} ({where.rsplit(':', 1)[0].rstrip(')')})"


class Profiler:
    """py-spy recording daphne (every thread) for a while, in the background; collapsed stacks."""

    def __init__(self, pid: int, tmp: Path, binary: str | None) -> None:
        self.pid, self.tmp = pid, tmp
        self.binary = shutil.which(binary) if binary else None
        self.procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}

    def start(self, name: str, seconds: float) -> None:
        if not self.binary:
            return
        out = self.tmp / f"pyspy-{name}.txt"
        self.procs[name] = (
            subprocess.Popen(
                [self.binary, "record", "-p", str(self.pid), "-d", str(max(1, round(seconds))), "-r", "100",
                 "-f", "raw", "-o", str(out), "--nonblocking", "--gil"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ),
            out,
        )  # fmt: skip

    def finish(self, name: str, top: int = 40) -> list[str]:
        """Wait for the recording and summarise it: the functions most often on the stack."""
        if name not in self.procs:
            return []
        proc, out = self.procs.pop(name)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if not out.exists():
            return [f"py-spy wrote nothing for {name}"]
        inclusive: collections.Counter[str] = collections.Counter()
        own: collections.Counter[str] = collections.Counter()
        total = 0
        for line in out.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            frames = [_frame_name(f) for f in stack.split(";")]
            total += n
            own[frames[-1]] += n
            for frame in {f for f in frames if not f.endswith(WRAPPERS)}:
                inclusive[frame] += n
        if not total:
            return [f"py-spy, {name}: no sample (out: {out})"]
        lines = [f"py-spy, {name}: {total} samples of daphne holding the GIL (out: {out})", "  inclusive:"]
        lines += [f"    {100 * c / total:5.1f} %  {f}" for f, c in inclusive.most_common(top)]
        lines += ["  self:"] + [f"    {100 * c / total:5.1f} %  {f}" for f, c in own.most_common(top // 2)]
        return lines

    def stop(self) -> None:
        for proc, _ in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.kill()


# --- the simulated agents -------------------------------------------------------------------------


@dataclass
class Agent:
    index: int
    name: str
    tags: list[str]
    ws: Any = None
    agent_id: int | None = None


@dataclass
class Change:
    """One task change, tracked from its request to the frame each agent receives."""

    marker: str
    expected: int
    sent: float = 0.0
    rest_seconds: float = 0.0
    task_id: int | None = None
    latencies: list[float] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, now: float) -> None:
        self.latencies.append(now - self.sent)
        if len(self.latencies) >= self.expected:
            self.done.set()

    @property
    def last(self) -> float:
        return max(self.latencies) if self.latencies else float("nan")


class Fleet:
    """``--agents`` agent sessions in this process, their heartbeats, and what they receive."""

    def __init__(self, args: argparse.Namespace, base_url: str, key: str) -> None:
        import aiohttp

        self.aiohttp = aiohttp
        self.args = args
        self.ws_url = base_url.replace("http://", "ws://") + "/ws/agent/"
        self.key = key
        every = max(1, args.agents // max(1, args.fanout))
        self.agents = []
        for i in range(args.agents):
            tags = ["a" if i % 2 == 0 else "b"]
            if args.fanout and i % every == 0 and i // every < args.fanout:
                tags.append("fanout")
            self.agents.append(Agent(i, f"bench-{i + 1:05d}", tags))
        self.fanout = [a for a in self.agents if "fanout" in a.tags]
        self.session: Any = None
        self.stopping = False
        self.beats: list[tuple[float, int]] = []  # heap of (due, agent index)
        self.beats_out = 0
        self.beats_in = 0
        self.other_frames = 0
        self.unknown_frames = 0
        self.closed: list[tuple[int, Any]] = []  # (agent index, close code) of sessions lost after connecting
        self.failures: collections.Counter[str] = collections.Counter()
        self.connect_seconds: list[float] = []
        self.established = 0
        self.stop_reason = ""  # why the ramp stopped before every agent was connected
        self.changes: dict[str, Change] = {}
        self.lags: list[float] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._readers: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> Fleet:
        aiohttp = self.aiohttp
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, force_close=False),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.args.handshake_timeout),
        )
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._heartbeats()), loop.create_task(self._lag_probe())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stopping = True
        for task in [*self._tasks, *self._readers]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._readers, return_exceptions=True)
        for agent in self.agents:  # abort, not close: no goodbye storm against a server being stopped
            if agent.ws is not None and not agent.ws.closed:
                with contextlib.suppress(Exception):
                    agent.ws._response.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.session.close(), 10)

    # connecting

    async def connect_all(self) -> float:
        """Open every session; returns the seconds it took."""
        sem = asyncio.Semaphore(self.args.concurrency)
        interval = 1.0 / self.args.rate if self.args.rate else 0.0
        slots = {"next": time.monotonic()}
        loop = asyncio.get_running_loop()

        async def admitted() -> None:
            if interval:
                now = time.monotonic()
                wait = max(0.0, slots["next"] - now)
                slots["next"] = max(now, slots["next"]) + interval
                await asyncio.sleep(wait)

        async def one(agent: Agent) -> None:
            async with sem:
                for attempt in range(self.args.retries + 1):
                    await admitted()
                    if await self._connect(agent):
                        return
                    await asyncio.sleep(min(30.0, 2**attempt) * random.uniform(0.5, 1.0))

        async def progress(ramp: asyncio.Future[Any]) -> None:
            count, changed = 0, time.monotonic()
            while True:
                await asyncio.sleep(5)
                now = time.monotonic()
                if self.established != count:
                    count, changed = self.established, now
                _log(
                    f"  {self.established:,} connected ({self.alive():,} open), "
                    f"{sum(self.failures.values())} failed attempts"
                )
                if now - changed > self.args.ramp_stall:
                    _log(f"  no new session for {now - changed:.0f} s: the ramp stops")
                    self.stop_reason = f"no new session for {self.args.ramp_stall:g} s"
                    ramp.cancel()
                    return

        started = time.monotonic()
        ramp = asyncio.ensure_future(asyncio.gather(*(one(a) for a in self.agents)))
        ticker = loop.create_task(progress(ramp))
        try:
            await asyncio.wait({ramp}, timeout=self.args.ramp_timeout)
            if not ramp.done():
                _log(f"  the ramp stopped after --ramp-timeout {self.args.ramp_timeout:g} s")
                self.stop_reason = f"--ramp-timeout {self.args.ramp_timeout:g} s"
                ramp.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ramp
        finally:
            ticker.cancel()
        return time.monotonic() - started

    async def _connect(self, agent: Agent) -> bool:
        aiohttp = self.aiohttp
        headers = {
            "Authorization": f"Bearer {self.key}",
            "X-Fleet-Agent-Name": agent.name,
            "X-Fleet-Agent-Tags": ",".join(agent.tags),
            "X-Fleet-Agent-Version": "bench",
        }
        started = time.monotonic()
        ws = None
        try:
            async with asyncio.timeout(self.args.handshake_timeout):
                ws = await self.session.ws_connect(
                    self.ws_url, headers=headers, autoping=True, heartbeat=None, max_msg_size=2 * 1024 * 1024
                )
                for wanted in ("welcome", "destinations", "task_list"):
                    msg = await ws.receive()
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        raise BenchError(f"closed with {ws.close_code} before {wanted}")
                    content = json.loads(msg.data)
                    if content.get("type") != wanted:
                        raise BenchError(f"{content.get('type')} instead of {wanted}")
                    if wanted == "welcome":
                        agent.agent_id = content["data"]["agent_id"]
        except asyncio.CancelledError:  # the ramp's deadline
            if ws is not None:
                with contextlib.suppress(Exception):
                    ws._response.close()  # drop the socket, no closing handshake
            raise
        except (TimeoutError, aiohttp.ClientError, OSError, BenchError, ValueError) as exc:
            if isinstance(exc, TimeoutError):
                reason = f"no task_list within {self.args.handshake_timeout:g} s"
            elif isinstance(exc, aiohttp.WSServerHandshakeError):
                reason = f"handshake HTTP {exc.status}"
            elif isinstance(exc, BenchError | OSError):
                reason = str(exc)[:120] or type(exc).__name__
            else:
                reason = type(exc).__name__
            self.failures[reason] += 1
            if ws is not None:
                with contextlib.suppress(Exception):
                    await ws.close()
            return False
        self.connect_seconds.append(time.monotonic() - started)
        agent.ws = ws
        self.established += 1
        reader = asyncio.get_running_loop().create_task(self._read(agent))
        self._readers.add(reader)
        reader.add_done_callback(self._readers.discard)
        heapq.heappush(self.beats, (time.monotonic() + random.uniform(0, HEARTBEAT), agent.index))
        return True

    # while connected

    async def _read(self, agent: Agent) -> None:
        aiohttp = self.aiohttp
        ws = agent.ws
        text = aiohttp.WSMsgType.TEXT
        try:
            while True:
                msg = await ws.receive()
                if msg.type == text:
                    data = msg.data
                    if '"heartbeat"' in data[:40]:
                        self.beats_in += 1
                    else:
                        self._frame(data)
                elif msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.PONG):
                    continue
                else:  # CLOSE, CLOSING, CLOSED, ERROR
                    break
        finally:
            if not self.stopping:
                self.closed.append((agent.index, ws.close_code))
                _log(f"  session {agent.name} closed by the server (code {ws.close_code})")

    def _frame(self, data: str) -> None:
        now = time.monotonic()
        try:
            content = json.loads(data)
            kind = content["type"]
            if kind in ("task_add", "task_update"):
                marker = content["data"]["task"]["settings"]["url"].rsplit("=", 1)[1]
                change = self.changes.get(marker)
                if change is not None:
                    change.record(now)
                    return
            self.other_frames += 1
        except (ValueError, KeyError, TypeError, IndexError):
            self.unknown_frames += 1

    async def _heartbeats(self) -> None:
        """Every session's heartbeats from one loop: each agent every 10 s (+-10 %), as it would."""
        beat = '{"v":1,"type":"heartbeat","data":{"time":%d}}'
        while True:
            now = time.monotonic()
            while self.beats and self.beats[0][0] <= now:
                due, index = heapq.heappop(self.beats)
                ws = self.agents[index].ws
                if ws is None or ws.closed:
                    continue
                try:
                    await ws.send_str(beat % time.time())
                except Exception:  # noqa: BLE001 (the reader reports the closed session)
                    continue
                self.beats_out += 1
                heapq.heappush(self.beats, (due + HEARTBEAT * random.uniform(0.9, 1.1), index))
            await asyncio.sleep(0.05)

    async def _lag_probe(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.1)
            self.lags.append(time.monotonic() - before - 0.1)

    def alive(self, agents: list[Agent] | None = None) -> int:
        return sum(1 for a in (agents or self.agents) if a.ws is not None and not a.ws.closed)


# --- the run -------------------------------------------------------------------------------------


class Sampler:
    """CPU, memory and the services' counters of one window."""

    def __init__(self, server_pid: int, service_pids: list[int], redis_url: str) -> None:
        self.server_pid, self.service_pids, self.redis_url = server_pid, service_pids, redis_url

    def snapshot(self, fleet: Fleet | None = None) -> dict[str, Any]:
        from servers import cpu_seconds, rss_bytes

        snap = {
            "t": time.monotonic(),
            "server": cpu_seconds([self.server_pid]),
            "services": cpu_seconds(self.service_pids),
            "client": self_cpu(),
            "rss": rss_bytes([self.server_pid]),
            "machine": machine_busy(),
            "db": mariadb_status(),
            "redis": redis_commands(self.redis_url),
        }
        if fleet is not None:
            snap.update(beats_out=fleet.beats_out, beats_in=fleet.beats_in, lags=len(fleet.lags))
        return snap

    @staticmethod
    def pct(a: dict[str, Any], b: dict[str, Any], what: str) -> float:
        return 100 * (b[what] - a[what]) / max(b["t"] - a["t"], 1e-9)

    @staticmethod
    def others(a: dict[str, Any], b: dict[str, Any]) -> float:
        """CPU of every other process on the machine (other people's tests), % of one core."""
        ours = sum(Sampler.pct(a, b, what) for what in ("server", "services", "client"))
        return max(0.0, Sampler.pct(a, b, "machine") - ours)


class QueueWatch:
    """The depth of daphne's inbound channel-layer queue in Redis (channels-redis keeps one sorted set
    per process, ``<prefix>specific.<id>!``), sampled while changes are pushed."""

    def __init__(self, url: str) -> None:
        import redis.asyncio

        self.redis = redis.asyncio.Redis.from_url(url, socket_timeout=5)
        self.depths: list[tuple[float, int]] = []
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        while True:
            depth = 0
            async for key in self.redis.scan_iter(match="fleet:chspecific.*", count=1000):
                depth += await self.redis.zcard(key)
            self.depths.append((time.monotonic(), depth))
            await asyncio.sleep(0.25)

    def start(self) -> None:
        self.depths = []
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> int:
        """Stop sampling; the deepest the queue was."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        return max((d for _, d in self.depths), default=0)

    async def close(self) -> None:
        await self.stop()
        with contextlib.suppress(Exception):
            await self.redis.aclose()


async def run_change(
    fleet: Fleet, rest: Any, api: str, marker: str, body: dict[str, Any], method: str
) -> Change:
    """Send one change through REST; the Change then collects the agents' frames."""
    change = Change(marker, expected=fleet.alive(fleet.fanout))
    fleet.changes[marker] = change
    body = {**body, "settings": {"url": f"http://127.0.0.1:9/bench?c={marker}"}}
    change.sent = time.monotonic()
    async with rest.request(method, api, json=body) as response:
        text = await response.text()
        change.rest_seconds = time.monotonic() - change.sent
        if response.status not in (200, 201):
            raise BenchError(f"{method} {api}: HTTP {response.status}: {text[:500]}")
    change.task_id = json.loads(text)["id"]
    return change


async def wait_delivered(changes: list[Change], timeout: float, stall: float) -> None:
    """Until every agent has every change, ``timeout`` passed, or no frame came for ``stall`` s
    (the rest were dropped: waiting longer only makes the run slower)."""
    started = last_progress = time.monotonic()
    received = -1
    while not all(c.done.is_set() for c in changes):
        now = time.monotonic()
        count = sum(len(c.latencies) for c in changes)
        if count != received:
            received, last_progress = count, now
        if now - started > timeout or now - last_progress > stall:
            return
        await asyncio.sleep(0.05)


async def measure(
    args: argparse.Namespace, server: Any, secrets: dict[str, str], tmp: Path
) -> dict[str, Any]:
    import aiohttp
    from servers import rss_bytes, service_pids

    pid = server.proc.pid
    sampler = Sampler(pid, service_pids("mariadb", "redis", REDIS_URL), REDIS_URL)
    profiler = Profiler(pid, tmp, args.profile)
    if args.profile and not profiler.binary:
        _log(f"--profile: no {args.profile} (pip install py-spy, in a venv of its own); not profiling")
    result: dict[str, Any] = {"rss_mib_before": rss_bytes([pid]) / 2**20, "profile": {}}
    async with Fleet(args, server.url, secrets["key"]) as fleet:
        result["fanout_agents"] = len(fleet.fanout)
        # 1. the ramp
        _log(
            f"opening {args.agents:,} agent sessions ({args.concurrency} handshakes at a time"
            + (f", at most {args.rate:g}/s)" if args.rate else ")")
        )
        before = sampler.snapshot(fleet)
        seconds = await fleet.connect_all()
        after = sampler.snapshot(fleet)
        failed = args.agents - fleet.established
        result["ramp"] = {
            "seconds": round(seconds, 2),
            "established": fleet.established,
            "failed": failed,
            "stop_reason": fleet.stop_reason,
            "closed_during_ramp": len(fleet.closed),
            "others_cpu_pct": Sampler.others(before, after),
            "failed_attempts": sum(fleet.failures.values()),
            "failure_reasons": dict(fleet.failures),
            "per_second": fleet.established / max(seconds, 1e-9),
            "p50_ms": percentile(fleet.connect_seconds, 50) * 1000,
            "p99_ms": percentile(fleet.connect_seconds, 99) * 1000,
            "max_ms": max(fleet.connect_seconds, default=0) * 1000,
            "server_cpu_ms": 1000 * (after["server"] - before["server"]) / max(fleet.established, 1),
            "server_cpu_pct": Sampler.pct(before, after, "server"),
            "client_cpu_pct": Sampler.pct(before, after, "client"),
            "db_statements_per_connect": (after["db"]["Questions"] - before["db"]["Questions"])
            / max(fleet.established, 1),
            "db_connections_per_connect": (after["db"]["Connections"] - before["db"]["Connections"])
            / max(fleet.established, 1),
        }
        _log(
            f"  {fleet.established:,} sessions in {seconds:.1f} s ({result['ramp']['per_second']:.0f}/s), "
            f"{failed} failed ({dict(fleet.failures)}); server CPU {result['ramp']['server_cpu_ms']:.1f} ms "
            "per connect"
        )
        if fleet.established == 0:
            raise BenchError("no agent session could be opened")

        # 2. idle
        await asyncio.sleep(args.settle)
        closed_before = len(fleet.closed)
        _log(f"idle: measuring {args.duration:g} s with {fleet.alive():,} sessions open")
        profiler.start("idle", args.duration)
        lag_from = len(fleet.lags)
        a = sampler.snapshot(fleet)
        await asyncio.sleep(args.duration)
        b = sampler.snapshot(fleet)
        held = fleet.alive()
        span = b["t"] - a["t"]
        beats = (b["beats_out"] - a["beats_out"]) + (b["beats_in"] - a["beats_in"])
        server_cpu = b["server"] - a["server"]
        result["idle"] = {
            "seconds": round(span, 1),
            "sessions": held,
            "closed": len(fleet.closed) - closed_before,
            "closed_total": len(fleet.closed),
            "close_codes": dict(collections.Counter(str(code) for _, code in fleet.closed)),
            "rss_mib": b["rss"] / 2**20,
            "server_cpu_pct": Sampler.pct(a, b, "server"),
            "server_cpu_ms_per_beat": 1000 * server_cpu / max(beats / 2, 1),
            "services_cpu_pct": Sampler.pct(a, b, "services"),
            "client_cpu_pct": Sampler.pct(a, b, "client"),
            "others_cpu_pct": Sampler.others(a, b),
            "client_lag_p99_ms": percentile(fleet.lags[lag_from:], 99) * 1000,
            "client_lag_max_ms": max(fleet.lags[lag_from:], default=0) * 1000,
            "beats_out_per_s": (b["beats_out"] - a["beats_out"]) / span,
            "beats_in_per_s": (b["beats_in"] - a["beats_in"]) / span,
            "db_statements_per_s": (b["db"]["Questions"] - a["db"]["Questions"]) / span,
            "db_updates_per_s": (b["db"]["Com_update"] - a["db"]["Com_update"]) / span,
            "db_selects_per_s": (b["db"]["Com_select"] - a["db"]["Com_select"]) / span,
            "db_connections_per_s": (b["db"]["Connections"] - a["db"]["Connections"]) / span,
            "redis_commands_per_s": (b["redis"] - a["redis"]) / span,
        }
        i = result["idle"]
        _log(
            f"  server CPU {i['server_cpu_pct']:.0f} % of a core, RSS {i['rss_mib']:.0f} MiB; heartbeats "
            f"{i['beats_out_per_s']:.0f}/s in, {i['beats_in_per_s']:.0f}/s out; MariaDB "
            f"{i['db_statements_per_s']:.0f} statements/s, {i['db_connections_per_s']:.0f} connections/s; "
            f"{i['closed']} closed"
        )
        result["profile"]["idle"] = profiler.finish("idle")

        # 3. fan-out, one change at a time
        api = server.url + "/api/v1/tasks/"
        headers = {"Authorization": f"Token {secrets['token']}"}
        async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=120)) as rest:
            _log(
                f"fan-out: a task for the {fleet.alive(fleet.fanout):,} fanout agents, "
                f"then {args.changes} changes"
            )
            create = {
                "name": "bench fanout", "plugin": "http", "team_id": None, "interval": 60,
                "route": {"type": "byTags", "config": {"tags": ["fanout"]}}, "enabled": True,
            }  # fmt: skip
            watch = QueueWatch(REDIS_URL)
            watch.start()
            created = await run_change(fleet, rest, api, "create", create, "POST")
            await wait_delivered([created], args.timeout, args.stall)
            task_url = f"{api}{created.task_id}/"
            changes = []
            for k in range(args.changes):
                await asyncio.sleep(args.pause)
                change = await run_change(fleet, rest, task_url, f"u{k}", {}, "PATCH")
                await wait_delivered([change], args.timeout, args.stall)
                changes.append(change)
                _log(
                    f"  change {k + 1}: last of {change.expected} agents after {change.last * 1000:.0f} ms, "
                    f"REST answered after {change.rest_seconds * 1000:.0f} ms, "
                    f"{change.expected - len(change.latencies)} missing"
                )
            latencies = [x for c in changes for x in c.latencies]
            lasts = [c.last for c in changes]
            fanout_depth = await watch.stop()
            result["fanout"] = {
                "queue_max": fanout_depth,
                "expected": created.expected,
                "changes": len(changes),
                "create": {
                    "last_ms": created.last * 1000,
                    "rest_ms": created.rest_seconds * 1000,
                    "received": len(created.latencies),
                },
                "last_ms_each": [round(x * 1000, 1) for x in lasts],
                "last_ms_median": percentile(lasts, 50) * 1000,
                "last_ms_max": max(lasts, default=float("nan")) * 1000,
                "p50_ms": percentile(latencies, 50) * 1000,
                "p99_ms": percentile(latencies, 99) * 1000,
                "max_ms": max(latencies, default=0) * 1000,
                "rest_ms_median": percentile([c.rest_seconds for c in changes], 50) * 1000,
                "missing": sum(c.expected - len(c.latencies) for c in changes)
                + created.expected
                - len(created.latencies),
            }

            # 4. a burst of changes
            await asyncio.sleep(args.pause)
            _log(f"burst: {args.burst} changes, {args.burst_concurrency} REST requests at a time")
            profiler.start("burst", 15)
            sem = asyncio.Semaphore(args.burst_concurrency)

            async def fire(k: int) -> Change:
                async with sem:
                    return await run_change(fleet, rest, task_url, f"b{k}", {}, "PATCH")

            a = sampler.snapshot(fleet)
            watch.start()
            started = time.monotonic()
            burst = await asyncio.gather(*(fire(k) for k in range(args.burst)))
            answered = time.monotonic() - started
            await wait_delivered(burst, args.timeout, args.stall)
            ends = [c.sent + c.last for c in burst if c.latencies]
            last = (max(ends) if ends else time.monotonic()) - started
            b = sampler.snapshot(fleet)
            burst_depth = await watch.stop()
            series = [(round(t - started, 1), d) for t, d in watch.depths[::4]]
            await watch.close()
            frames = sum(len(c.latencies) for c in burst)
            expected = sum(c.expected for c in burst)
            result["burst"] = {
                "changes": args.burst,
                "concurrency": args.burst_concurrency,
                "seconds": last,
                "rest_seconds": answered,
                "changes_per_s": args.burst / last,
                "frames_per_s": frames / last,
                "expected_frames": expected,
                "missing": expected - frames,
                "queue_max": burst_depth,
                "queue_series": series,
                "server_cpu_pct": Sampler.pct(a, b, "server"),
                "services_cpu_pct": Sampler.pct(a, b, "services"),
                "client_cpu_pct": Sampler.pct(a, b, "client"),
                "others_cpu_pct": Sampler.others(a, b),
            }
            _log(
                f"  {args.burst} changes answered in {answered:.1f} s, all frames in {last:.1f} s: "
                f"{result['burst']['changes_per_s']:.1f} changes/s, {result['burst']['frames_per_s']:,.0f} "
                f"frames/s, {expected - frames} of {expected} missing; daphne's channel-layer queue "
                f"reached {burst_depth} messages"
            )
            result["profile"]["burst"] = profiler.finish("burst")
        result["idle"]["closed_total"] = len(fleet.closed)
        result["other_frames"] = fleet.other_frames
        result["unknown_frames"] = fleet.unknown_frames
    profiler.stop()
    return result


# --- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=10_000, help="agent sessions to open (10000)")
    parser.add_argument(
        "--fanout", type=int, default=1_000, help="agents tagged fanout, the changes' audience (1000)"
    )
    parser.add_argument("--changes", type=int, default=10, help="changes timed one at a time (10)")
    parser.add_argument("--burst", type=int, default=50, help="changes fired at once for the rate (50)")
    parser.add_argument(
        "--burst-concurrency", type=int, default=4, help="REST requests in flight in the burst (4)"
    )
    parser.add_argument(
        "--duration", type=float, default=None,
        help="seconds of idle measurement (default: agents/100, between 10 and 60)",
    )  # fmt: skip
    parser.add_argument(
        "--settle", type=float, default=3.0, help="seconds between the ramp and the idle window"
    )
    parser.add_argument("--concurrency", type=int, default=50, help="handshakes in flight at once (50)")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="at most this many new connections per second"
    )
    parser.add_argument(
        "--retries", type=int, default=3, help="attempts after a failed connect, with backoff"
    )
    parser.add_argument(
        "--ramp-timeout", type=float, default=1200.0, help="stop opening sessions after this many seconds"
    )
    parser.add_argument(
        "--ramp-stall", type=float, default=60.0, help="stop the ramp when no session opened for this long"
    )
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="NAME=VALUE",
        help="an environment variable for daphne (an experiment, e.g. DATABASE_CONN_MAX_AGE=60); repeatable",
    )  # fmt: skip
    parser.add_argument("--handshake-timeout", type=float, default=30.0, help="seconds to get the task_list")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a change to arrive")
    parser.add_argument(
        "--stall", type=float, default=5.0, help="stop waiting for a change when no frame came for this long"
    )
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between two timed changes")
    parser.add_argument(
        "--profile", nargs="?", const="py-spy", default=None, metavar="PY_SPY",
        help="record daphne with py-spy (this binary; default: py-spy on the PATH) at idle and in the burst",
    )  # fmt: skip
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    parser.add_argument("--keep", action="store_true", help="keep the database and Redis 2 afterwards")
    parser.add_argument("--django-setup", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = min(60.0, max(10.0, args.agents / 100))
    if args.fanout > args.agents:
        parser.error("--fanout cannot exceed --agents")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.django_setup:
        return _django_setup()
    from servers import DaphneServer, mariadb_available, redis_available, rss_bytes

    if not mariadb_available():
        raise SystemExit("MariaDB is needed (its socket answers and `make setup-mysql` installed the driver)")
    if not redis_available(REDIS_URL):
        raise SystemExit(f"Redis is needed at {REDIS_URL}")
    nofile = raise_nofile(args.agents + 1024)
    if nofile < args.agents + 256:
        raise SystemExit(f"the open-files limit is {nofile}: too low for {args.agents} sessions")
    given = " ".join(sys.argv[1:] if argv is None else argv)
    command = f"make bench-tasks BENCH_ARGS='{given}'" if given else "make bench-tasks"
    tmp = Path(tempfile.mkdtemp(prefix="bench-tasks-"))
    server = DaphneServer("mariadb", "redis", tmp, mysql_db=MYSQL_DB, redis_url=REDIS_URL, log_level="INFO")
    server.env["TASKSERVER_CHANGE_STAMP_FILE"] = str(tmp / "taskserver.stamp")
    for item in args.server_env:
        name, _, value = item.partition("=")
        server.env[name] = value
    stopped = {"signal": False}

    def on_signal(signum: int, _frame: Any) -> None:  # SIGTERM: stop as on Ctrl-C, cleaning up
        stopped["signal"] = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        _log(f"database {MYSQL_DB} (fresh), Redis {REDIS_URL} (flushed), migrating")
        server.prepare()
        secrets = django_setup(server.env)
        server.start()
        server_nofile = nofile_of(server.proc.pid)
        _log(
            f"daphne pid {server.proc.pid} on {server.url}, open-files limit {server_nofile}, "
            f"RSS {rss_bytes([server.proc.pid]) / 2**20:.0f} MiB"
        )
        try:
            result = asyncio.run(measure(args, server, secrets, tmp))
        except BenchError as exc:
            raise BenchError(f"{exc}\n--- daphne's last lines:\n{server.log_tail()}") from None
        if server.proc.poll() is not None:
            raise BenchError(f"daphne exited ({server.proc.returncode}):\n{server.log_tail()}")
        result.update(
            date=f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            command=command,
            tree=tree_state(),
            agents=args.agents,
            concurrency=args.concurrency,
            rate=args.rate,
            server_nofile=server_nofile,
            server_env=args.server_env,
            server_log=log_counts(server.log_path),
        )
    except BenchError as exc:
        _log(f"FAILED: {exc}")
        return 1
    except Exception as exc:  # noqa: BLE001 (anything else: said clearly, with daphne's last lines)
        traceback.print_exc()
        _log(f"FAILED: {type(exc).__name__}: {exc}\n--- daphne's last lines:\n{server.log_tail()}")
        return 1
    except KeyboardInterrupt:
        _log("interrupted" + (" (SIGTERM)" if stopped["signal"] else ""))
        return 130
    finally:
        server.stop()
        if not args.keep:
            server.cleanup()
        if not args.profile:  # the recordings stay for a look
            shutil.rmtree(tmp, ignore_errors=True)
    for name, lines in result.pop("profile", {}).items():
        if lines:
            print("\n".join(lines), file=sys.stderr)
        result.setdefault("profile_top", {})[name] = lines[:40]
    text = "\n".join(report_lines_from(result))
    print(text)
    if not args.no_write:
        previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        # The analysis written by hand beside the figures stays, dated: it may describe an older run.
        result["notes"] = previous.get("notes", [])
        result["notes_date"] = previous.get("notes_date", previous.get("date", ""))
        RESULTS.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
        write_section("\n".join(report_lines_from(result)))
        _log(f"wrote {RESULTS.relative_to(ROOT)} and the section of docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
