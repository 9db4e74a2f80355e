"""Benchmark the agent API as production runs it: gunicorn + MariaDB + Redis (else SQLite).

What it answers: how much server CPU does one osquery check-in (``distributed/read``) cost,
compared with the cheapest request the stack can serve (``/healthz``, the floor)? The goal is a
check-in at most 2x the floor. CPU per request (user+system time of the gunicorn master and
workers, from /proc, divided by the requests served in the window) is the figure that matters on
this 2-core machine: requests/s is capped by the load client sharing the same cores.

Steps: create a throwaway database, migrate, add an enroll secret, start gunicorn on 127.0.0.1,
enroll ``--hosts`` simulated agents (the simulator's own code), let every host answer its detail
queries once (steady state: a check-in then has nothing to do), measure each scenario for a fixed
time after a warm-up, print a table and rewrite docs/benchmarks.md. Everything it starts is
stopped by PID in ``finally``.

Adding a scenario (e.g. live-query campaigns): write a ``Scenario`` whose ``prepare`` sets up
state through ``BenchContext`` and whose ``request`` returns the request for a given sequence
number, then add it to ``SCENARIOS``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agentapi.simulator.agent import AgentSettings, SimulatedAgent  # noqa: E402
from agentapi.simulator.runner import SimulationConfig, build_agents, enroll_all  # noqa: E402
from agentapi.simulator.stats import Stats  # noqa: E402
from agentapi.simulator.transport import HttpTransport  # noqa: E402

PY = sys.executable
MYSQL_DB = "fleet_bench"
REDIS_URL = "redis://127.0.0.1:6379/5"
SECRET = "bench-enroll-secret"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- the server under test ------------------------------------------------------------------


@dataclass
class BenchContext:
    """What scenarios can use: the server URL, enrolled agents, and the environment."""

    url: str
    env: dict[str, str]
    agents: list[SimulatedAgent] = field(default_factory=list)
    node_keys: list[str] = field(default_factory=list)
    db: str = ""
    cache: str = ""
    notes: list[str] = field(default_factory=list)


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def mariadb_available() -> bool:
    """MariaDB answers on its socket and the MySQL driver is installed (``make setup-mysql``)."""
    if importlib.util.find_spec("MySQLdb") is None or not shutil.which("mariadb-admin"):
        return False
    ping = subprocess.run(["mariadb-admin", "--silent", "ping"], capture_output=True, timeout=10)
    return ping.returncode == 0


def redis_available() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping())
    except Exception:
        return False


def mysql(statement: str) -> None:
    """Run SQL as root over the socket (root has no password and cannot use TCP here)."""
    subprocess.run(["mariadb", "-uroot", "-e", statement], check=True, capture_output=True, timeout=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([PY, str(ROOT / "manage.py"), *args], env=env, check=True, cwd=ROOT, timeout=300)


def children_of(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (gunicorn's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes, in seconds (a process that vanished counts 0)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)
    return total / CLK_TCK


def service_pids(db: str, cache: str) -> list[int]:
    """mariadbd and redis-server when the server uses them, to report their CPU too (not ours to stop)."""
    pids = []
    if db == "mariadb":
        with contextlib.suppress(OSError, ValueError):
            pids.append(int(Path("/run/mysqld/mysqld.pid").read_text().strip()))
    if cache == "redis":
        with contextlib.suppress(Exception):
            import redis

            pids.append(int(redis.Redis.from_url(REDIS_URL, socket_timeout=1).info("server")["process_id"]))
    return pids


class Server:
    """gunicorn serving ``fleet.wsgi`` on 127.0.0.1, against MariaDB+Redis or the embedded default."""

    def __init__(self, workers: int, db: str, cache: str, tmp: Path) -> None:
        self.workers, self.db, self.cache, self.tmp = workers, db, cache, tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = tmp / "gunicorn.log"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "fleet.settings",
            "DJANGO_SECRET_KEY": "bench-" + "x" * 40,
            "FLEET_VAR_DIR": str(tmp),
            "STATIC_ROOT": str(tmp / "static"),
            "LOG_LEVEL": "WARNING",
            "DJANGO_DEBUG": "false",
        }
        for name in ("DATABASE_URL", "REDIS_URL", "SQLITE_PATH"):
            self.env.pop(name, None)
        if db == "mariadb":
            self.env["DATABASE_URL"] = f"mysql://root@localhost/{MYSQL_DB}"
        else:
            self.env["SQLITE_PATH"] = str(tmp / "db.sqlite3")
        if cache == "redis":
            self.env["REDIS_URL"] = REDIS_URL

    def prepare(self) -> None:
        if self.db == "mariadb":
            mysql(
                f"DROP DATABASE IF EXISTS {MYSQL_DB}; CREATE DATABASE {MYSQL_DB} "
                "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
        if self.cache == "redis":
            import redis

            redis.Redis.from_url(REDIS_URL).flushdb()
        manage(self.env, "migrate", "--noinput", "-v0")
        code = f"from hosts.models import EnrollSecret; EnrollSecret.objects.get_or_create(secret={SECRET!r})"
        manage(self.env, "shell", "-v0", "-c", code)

    def start(self) -> None:
        gunicorn = str(Path(PY).parent / "gunicorn")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    gunicorn,
                    "fleet.wsgi:application",
                    "-b",
                    f"127.0.0.1:{self.port}",
                    "-w",
                    str(self.workers),
                    "--log-level",
                    "warning",
                ],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited ({self.proc.returncode}):\n{self.log_tail()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                if r.status == 200:
                    return
            time.sleep(0.3)
        raise RuntimeError(f"gunicorn did not answer /healthz within 60 s:\n{self.log_tail()}")

    def pids(self) -> list[int]:
        return [self.proc.pid, *children_of(self.proc.pid)] if self.proc else []

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
        return ""

    def stop(self) -> None:
        """SIGTERM the master (it stops its workers); SIGKILL whatever is left, by PID."""
        if self.proc is None or self.proc.poll() is not None:
            return
        workers = children_of(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def cleanup(self) -> None:
        if self.db == "mariadb":
            with contextlib.suppress(Exception):
                mysql(f"DROP DATABASE IF EXISTS {MYSQL_DB}")
        if self.cache == "redis":
            with contextlib.suppress(Exception):
                import redis

                redis.Redis.from_url(REDIS_URL).flushdb()


# --- scenarios ------------------------------------------------------------------------------------

Request = tuple[str, str, bytes | None]  # method, path, body


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    request: Callable[[BenchContext, int], Request]
    check: Callable[[int, bytes], bool] = lambda status, raw: status == 200
    prepare: Callable[[BenchContext], Awaitable[None]] | None = None
    floor: bool = False  # the reference the others are compared with


def _checkin(ctx: BenchContext, i: int) -> Request:
    key = ctx.node_keys[i % len(ctx.node_keys)]
    return "POST", "/api/osquery/distributed/read", json.dumps({"node_key": key}).encode()


def _checkin_ok(status: int, raw: bytes) -> bool:
    """osquery's verdict: a JSON object without ``error``/``node_invalid``."""
    try:
        body = json.loads(raw)
    except ValueError:
        return False
    return isinstance(body, dict) and "error" not in body and body.get("node_invalid") is not True


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "healthz",
            "GET /healthz: liveness, no I/O (the floor)",
            lambda ctx, i: ("GET", "/healthz", None),
            floor=True,
        ),
        Scenario(
            "checkin",
            "POST /api/osquery/distributed/read, rotating node keys, hosts in steady state",
            _checkin,
            _checkin_ok,
        ),
    )
}


# --- load generation ---------------------------------------------------------------------------


@dataclass
class Measurement:
    scenario: str
    requests: int
    seconds: float
    errors: int
    latencies: list[float]
    server_cpu: float
    service_cpu: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000

    @property
    def cpu_ms_per_request(self) -> float:
        return self.server_cpu / self.requests * 1000 if self.requests else float("nan")

    @property
    def service_ms_per_request(self) -> float:
        return self.service_cpu / self.requests * 1000 if self.requests else float("nan")


async def measure(
    scenario: Scenario, ctx: BenchContext, server: Server, concurrency: int, warmup: float, duration: float
) -> Measurement:
    """Closed-loop load: ``concurrency`` clients, counting only requests finished inside the window."""
    counter = itertools.count()
    window: dict[str, float] = {"start": float("inf"), "end": float("inf")}
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + warmup + duration
    connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=30)
    headers = {"Content-Type": "application/json", "User-Agent": "osquery/5.23.1"}

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            method, path, body = scenario.request(ctx, next(counter))
            started = time.perf_counter()
            try:
                async with session.request(method, ctx.url + path, data=body, headers=headers) as response:
                    ok = scenario.check(response.status, await response.read())
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            finished = time.perf_counter()
            if window["start"] <= finished <= window["end"]:
                latencies.append(finished - started)
                errors += not ok

    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        clients = [asyncio.create_task(client(session)) for _ in range(concurrency)]
        await asyncio.sleep(warmup)
        pids, services = server.pids(), service_pids(server.db, server.cache)
        cpu0, svc0 = cpu_seconds(pids), cpu_seconds(services)
        window["start"] = time.perf_counter()
        window["end"] = window["start"] + duration
        await asyncio.sleep(duration)
        cpu1, svc1 = cpu_seconds(pids), cpu_seconds(services)
        elapsed = time.perf_counter() - window["start"]
        await asyncio.gather(*clients)
    return Measurement(scenario.name, len(latencies), elapsed, errors, latencies, cpu1 - cpu0, svc1 - svc0)


async def enroll_and_prime(ctx: BenchContext, hosts: int, concurrency: int, prime: bool) -> None:
    """Enroll ``hosts`` simulated agents, then let each answer its detail queries once."""
    config = SimulationConfig(
        url=ctx.url,
        enroll_secret=SECRET,
        count=hosts,
        seed=1,
        agent=AgentSettings(retry_scale=0.05),
        connections=concurrency,
    )
    stats = Stats()
    async with HttpTransport(ctx.url, connections=concurrency) as transport:
        agents = build_agents(transport, config, stats, asyncio.Event())
        started = time.perf_counter()
        enrolled = await enroll_all(agents, concurrency)
        took = time.perf_counter() - started
        ctx.notes.append(f"Enrolled {enrolled} hosts in {took:.1f} s ({enrolled / took:.0f} enrolls/s).")
        _log(ctx.notes[-1])
        if enrolled < hosts:
            raise RuntimeError(f"only {enrolled}/{hosts} hosts enrolled; last errors: {stats.last_errors}")
        if prime:
            semaphore = asyncio.Semaphore(concurrency)

            async def cycle(agent: SimulatedAgent) -> None:
                async with semaphore:
                    await agent.distributed_cycle()

            started = time.perf_counter()
            await asyncio.gather(*(cycle(a) for a in agents))
            took = time.perf_counter() - started
            ctx.notes.append(
                f"First check-in with detail queries (read + {stats.queries_run} query results "
                f"written) for {hosts} hosts in {took:.1f} s ({hosts / took:.0f} hosts/s)."
            )
            _log(ctx.notes[-1])
        if stats.total_failures:
            ctx.notes.append(
                f"{stats.total_failures} agent requests failed during set-up: {stats.last_errors}"
            )
    ctx.agents = agents
    ctx.node_keys = [a.node_key for a in agents if a.node_key]


async def steady_state_share(ctx: BenchContext, sample: int = 200) -> float:
    """Share of sampled check-ins that came back with nothing to do (no queries)."""
    empty = 0
    async with aiohttp.ClientSession() as session:
        for key in ctx.node_keys[:sample]:
            async with session.post(ctx.url + "/api/osquery/distributed/read", json={"node_key": key}) as r:
                body = json.loads(await r.read())
                empty += not body.get("queries")
    return empty / max(min(sample, len(ctx.node_keys)), 1)


# --- report ------------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
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
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "memory": memory,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def table(results: list[Measurement]) -> list[str]:
    rows = [
        "| scenario | requests | req/s | p50 ms | p99 ms | errors | server CPU ms/req "
        "| MariaDB+Redis CPU ms/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in results:
        rows.append(
            f"| {m.scenario} | {m.requests} | {m.rps:.0f} | {m.percentile(50):.1f} | "
            f"{m.percentile(99):.1f} | {m.errors} | {m.cpu_ms_per_request:.3f} | "
            f"{m.service_ms_per_request:.3f} |"
        )
    return rows


def verdicts(results: list[Measurement]) -> list[str]:
    floor = next((m for m in results if SCENARIOS[m.scenario].floor), None)
    if floor is None or not floor.requests:
        return []
    lines = []
    for m in results:
        if m is floor or not m.requests:
            continue
        ratio = m.cpu_ms_per_request / floor.cpu_ms_per_request
        verdict = "meets" if ratio <= 2.0 else "misses"
        lines.append(
            f"- **{m.scenario} / {floor.scenario} server CPU per request: {ratio:.2f}x** "
            f"({verdict} the goal of at most 2x)."
        )
    return lines


def write_report(
    path: Path, args: argparse.Namespace, ctx: BenchContext, results: list[Measurement], command: str
) -> None:
    info = machine()
    lines = [
        "# Benchmarks",
        "",
        "Generated by `scripts/bench.py` (run by `make bench`); the whole file is rewritten on each run.",
        "",
        f"- **Date:** {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- **Machine:** {info['nproc']} CPU ({info['cpu']}), {info['memory']} RAM, {info['os']}, "
        f"Python {info['python']}",
        f"- **Configuration:** database {ctx.db}, cache {ctx.cache}, gunicorn {args.workers} sync workers on "
        f"127.0.0.1, {args.hosts} enrolled hosts",
        f"- **Load:** {args.concurrency} concurrent clients (aiohttp, one process on the same machine), "
        f"{args.warmup:g} s warm-up then {args.duration:g} s measured per scenario",
        f"- **Command:** `{command}`",
        "",
        "## Results",
        "",
        *table(results),
        "",
        *verdicts(results),
        "",
        "## Set-up figures",
        "",
        *[f"- {note}" for note in ctx.notes],
        "",
        "## Method",
        "",
        "- *Server CPU ms/req* is the user+system CPU time of the gunicorn master and workers "
        "(`/proc/<pid>/stat`) consumed during the measured window, divided by the requests completed in it. "
        "It does not depend on the load client, which shares the two cores and caps requests/s.",
        "- *MariaDB+Redis CPU ms/req* is the same for the `mariadbd` and `redis-server` processes when the "
        "server uses them (whole processes, so anything else they serve meanwhile counts too; 0 when "
        "not used: SQLite's work happens inside the workers).",
        '- The check-in scenario sends `{"node_key": ...}` rotating over every enrolled host, after '
        "each host answered its detail queries once, so a check-in has nothing to do (the steady state "
        "of a fleet). Its share of empty responses is in the set-up figures.",
        "- Latencies are closed-loop (each client sends its next request when the previous one "
        "returns), so p99 includes queueing in gunicorn's backlog. gunicorn's sync workers close the "
        "connection after each response, so every request includes a TCP connect (for both scenarios).",
        "- Requests/s is the load client's limit as much as the server's: both share the same cores.",
        "",
        "## Reproduce",
        "",
        "`make bench` (MariaDB and Redis are used when they answer, else SQLite and local memory). "
        "Options through `BENCH_ARGS`, e.g. `make bench BENCH_ARGS='--hosts 2000 --duration 10 "
        "--scenarios checkin'`; `scripts/bench.py --help` lists them. New scenarios (live-query "
        "campaigns, ...) are added to `SCENARIOS` in `scripts/bench.py`.",
        "",
    ]
    path.write_text("\n".join(lines))


# --- main ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"from: {', '.join(SCENARIOS)}")
    parser.add_argument("--db", choices=("auto", "mariadb", "sqlite"), default="auto")
    parser.add_argument("--cache", choices=("auto", "redis", "none"), default="auto")
    parser.add_argument("--no-prime", action="store_true", help="Measure check-ins with detail queries due.")
    parser.add_argument(
        "--report",
        default=str(ROOT / "docs" / "benchmarks.md"),
        help="Markdown file to rewrite ('' to skip).",
    )
    args = parser.parse_args(argv)
    unknown = set(args.scenarios.split(",")) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if not 1 <= args.duration <= 120 or not 0 <= args.warmup <= 60:
        parser.error("--duration must be 1..120 s and --warmup 0..60 s (runs are bounded)")
    return args


async def run(args: argparse.Namespace, server: Server, ctx: BenchContext) -> list[Measurement]:
    names = args.scenarios.split(",")
    if "checkin" in names:
        await enroll_and_prime(ctx, args.hosts, args.concurrency, prime=not args.no_prime)
        share = await steady_state_share(ctx)
        ctx.notes.append(f"{share:.0%} of sampled check-ins returned no queries before measuring.")
        _log(ctx.notes[-1])
    results = []
    for name in names:
        scenario = SCENARIOS[name]
        if scenario.prepare:
            await scenario.prepare(ctx)
        _log(f"measuring {name}: {scenario.description}")
        m = await measure(scenario, ctx, server, args.concurrency, args.warmup, args.duration)
        _log(
            f"  {m.rps:.0f} req/s, p50 {m.percentile(50):.1f} ms, p99 {m.percentile(99):.1f} ms, "
            f"{m.cpu_ms_per_request:.3f} ms server CPU/req, {m.errors} errors"
        )
        results.append(m)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    db = ("mariadb" if mariadb_available() else "sqlite") if args.db == "auto" else args.db
    cache = ("redis" if redis_available() else "none") if args.cache == "auto" else args.cache
    tmp = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    server = Server(args.workers, db, cache, tmp)
    ctx = BenchContext(
        url=server.url,
        env=server.env,
        db="MariaDB (socket)" if db == "mariadb" else "SQLite",
        cache="Redis" if cache == "redis" else "local memory (per process)",
    )
    _log(f"database {ctx.db}, cache {ctx.cache}, {args.workers} gunicorn workers at {server.url}")
    try:
        server.prepare()
        server.start()
        results = asyncio.run(run(args, server, ctx))
    except Exception as exc:
        _log(f"failed: {exc}")
        tail = server.log_tail()
        if tail:
            _log("gunicorn log:\n" + tail)
        return 1
    finally:
        server.stop()
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print("\n".join(table(results)))
    print("\n".join(verdicts(results)))
    if args.report:
        command = "make bench" + (f" BENCH_ARGS='{' '.join(sys.argv[1:])}'" if sys.argv[1:] else "")
        write_report(Path(args.report), args, ctx, results, command)
        _log(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
