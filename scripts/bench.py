"""Benchmark the agent API as production runs it: granian + MariaDB + Redis (else SQLite).

What it answers: how much server CPU does one osquery check-in (``distributed/read``) cost,
compared with the cheapest view Django can serve through this project's middleware (``floor``: a
constant JSON answer at ``/bench/floor``, which only a server started with ``FLEET_BENCH=1``
has)? The goal is a check-in at most 1.5x the floor at any check-in interval, cache misses
included: ``checkin-10s`` and ``checkin-60s`` pace a population of hosts at osquery's intervals
and report the node-key misses the server had (bench mode adds an ``X-Fleet-Node-Key-Cache``
header to agent replies). CPU per request (user+system time of the granian master and
workers, from /proc, divided by the requests served in the window) is the figure that matters on
this 2-core machine: requests/s is capped by the load client sharing the same cores.

Steps: create a throwaway database, migrate, add an enroll secret, start granian on 127.0.0.1,
enroll ``--hosts`` simulated agents (the simulator's own code), let every host answer its detail
queries once (steady state: a check-in then has nothing to do), measure each scenario for a fixed
time after a warm-up, print a table and rewrite docs/benchmarks.md. Everything it starts is
stopped by PID in ``finally``.

Live queries (need Redis, the production store and channel layer): check-ins with 1 and 10
campaigns pending for every host (the hosts never answer them); the wall time to create a
campaign over 10,000 hosts (``services.create_campaign`` in a Django process of its own against
the same database and Redis, as a REST request would run it, minus HTTP); from
``distributed/write`` (to granian) to the ``result`` message on a WebSocket held on a daphne
process; and answers per second one granian worker process ingests. Django-side steps (create and stop
campaigns) run in one long-lived child process, ``bench.py --django``, with the server's
environment.

The software inventory has its own run, ``bench.py --software [options]`` (scripts/bench_software.py:
ingest of 2,000 hosts' software lists, first and unchanged); this page keeps its last figures.

Adding a scenario: write a ``Scenario`` whose ``prepare`` sets up state through ``BenchContext``
and whose ``request`` returns the request for a given sequence number (or whose ``run`` measures
something other than a request rate), then add it to ``SCENARIOS``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import platform
import plistlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bench_console  # noqa: E402  (scripts/bench_console.py: the console at 100,000 hosts)
import bench_embedded  # noqa: E402  (scripts/bench_embedded.py: make run at 5,000 hosts)
import bench_load  # noqa: E402  (scripts/bench_load.py: the load report, issue 13)
import bench_software  # noqa: E402  (scripts/bench_software.py: the software inventory's figures)
import bench_tasks  # noqa: E402  (scripts/bench_tasks.py: task agent sessions on one daphne)
import fuzzrecord  # noqa: E402  (scripts/fuzzrecord.py, beside this file)
from servers import (  # noqa: E402  (scripts/servers.py, beside this file)
    SECRET,
    DaphneServer,
    Server,
    cpu_seconds,
    mariadb_available,
    redis_available,
    service_pids,
    tail_of,
)

from agentapi.simulator.agent import AgentSettings, SimulatedAgent  # noqa: E402
from agentapi.simulator.orbit import OrbitSettings, SimulatedOrbit  # noqa: E402
from agentapi.simulator.runner import SimulationConfig, build_agents, enroll_all  # noqa: E402
from agentapi.simulator.stats import Stats  # noqa: E402
from agentapi.simulator.transport import HttpTransport  # noqa: E402

PY = sys.executable
PACED_LONGEST = 60.0  # the longest interval paced: it sets the request rate of every paced scenario
LIVE_SQL = "SELECT * FROM os_version"
LIVE_PREFIX = "fleet_distributed_query_"
# One os_version row as osquery returns it (all values are strings).
ANSWER_ROW = {
    "name": "macOS", "version": "14.5", "major": "14", "minor": "5", "patch": "0", "build": "23F79",
    "platform": "darwin", "platform_like": "darwin", "codename": "Sonoma", "arch": "arm64",
}  # fmt: skip


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
    # Live-query figures: (what, value, goal, met?) for the report's table.
    figures: list[tuple[str, str, str, bool | None]] = field(default_factory=list)
    # orbit node keys and Fleet Desktop tokens of the same hosts (the orbit scenarios set them up).
    orbit_keys: list[str] = field(default_factory=list)
    device_tokens: list[str] = field(default_factory=list)
    # Each enrolled Mac's signed Idle (body, headers) (the mdm-idle scenario sets them up).
    mdm_idle: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    # When the hosts answered their detail queries (perf_counter), and where each paced
    # scenario's schedule started (it carries on from round to round).
    primed_at: float = 0.0
    paced_origin: dict[str, float] = field(default_factory=dict)
    args: argparse.Namespace | None = None
    server: Server | None = None
    django: DjangoHelper = field(default=None)  # type: ignore[assignment]  # set by main()

    @property
    def live(self) -> bool:
        """Live-query scenarios need the shared store and channel layer (Redis)."""
        return "REDIS_URL" in self.env


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- Django-side steps, in a child process with the server's environment -----------------------


class DjangoHelper:
    """One long-lived Django process (``bench.py --django``) that runs the live-query set-up steps.

    Requests and answers are JSON lines on its stdin/stdout; its stderr goes to a log file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env, self.log_path = env, log_path
        self.proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def call(self, op: str, **kwargs: Any) -> Any:
        with self._lock:
            if self.proc is None:
                with open(self.log_path, "ab") as log:
                    self.proc = subprocess.Popen(
                        [PY, str(Path(__file__).resolve()), "--django"],
                        env=self.env, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                        text=True,
                    )  # fmt: skip
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(json.dumps({"op": op, "kwargs": kwargs}) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the Django helper exited:\n{self.log_tail()}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"django step {op} failed:\n{reply['error']}")
        return reply["result"]

    async def __call__(self, op: str, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self.call, op, **kwargs)

    def log_tail(self) -> str:
        return tail_of(self.log_path)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


def _django_serve() -> int:
    """The helper's side: set Django up once, then answer one JSON line per request."""
    import traceback

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
    django.setup()
    replies, sys.stdout = sys.stdout, sys.stderr  # nothing else may write to the reply channel
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply = {"result": _django_op(request["op"], request["kwargs"])}
        except Exception:
            reply = {"error": traceback.format_exc()}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
    return 0


def _django_op(op: str, kwargs: dict[str, Any]) -> Any:
    """The Django side of the live-query scenarios (in the helper process)."""
    from django.contrib.auth import get_user_model

    from campaigns import services
    from campaigns.models import ACTIVE_STATUSES, Campaign, CampaignResult
    from hosts.models import Host

    admin, created = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_superuser": True, "is_staff": True}
    )

    def stop_all() -> int:
        active = list(Campaign.objects.filter(status__in=ACTIVE_STATUSES))
        for campaign in active:
            services.stop_campaign(campaign)
        return len(active)

    if op == "token":
        from knox.models import AuthToken

        return AuthToken.objects.create(user=admin)[1]  # knox keeps only its digest: a new one each time
    if op == "stop_all":
        return stop_all()
    if op == "start":  # campaigns nobody answers unless the bench does
        if kwargs.get("stop_others", True):
            stop_all()
        return [
            services.create_campaign(admin, LIVE_SQL, kwargs["targets"]).id for _ in range(kwargs["count"])
        ]
    if op == "mdm_setup":  # the dev MDM (CA and stand-in push certificate) the Macs enroll with
        from mdm import services as mdm_services

        mdm_services.setup(dev=True)
        return True
    if op == "results":
        return CampaignResult.objects.filter(campaign_id__in=kwargs["ids"]).count()
    if op == "time_create":
        stop_all()
        host_ids = list(Host.objects.order_by("id").values_list("id", flat=True)[: kwargs["hosts"]])
        forms = {"all hosts": {"all": True}, f"{len(host_ids)} host ids": {"hosts": host_ids}}
        timings: dict[str, list[float]] = {}
        targeted = {}
        for name, targets in forms.items():
            services.stop_campaign(services.create_campaign(admin, LIVE_SQL, targets))  # warm-up
            timings[name] = []
            for _ in range(kwargs["repeat"]):
                started = time.perf_counter()
                campaign = services.create_campaign(admin, LIVE_SQL, targets)
                timings[name].append(time.perf_counter() - started)
                targeted[name] = campaign.targeted_count
                services.stop_campaign(campaign)
        return {"timings": timings, "targeted": targeted}
    raise ValueError(f"unknown django step {op!r}")


# --- scenarios ------------------------------------------------------------------------------------

# method, path, body (and, for Apple MDM, the request's own headers)
Request = tuple[str, str, bytes | None] | tuple[str, str, bytes | None, dict[str, str]]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    request: Callable[[BenchContext, int], Request] | None = None
    check: Callable[[int, bytes], bool] = lambda status, raw: status == 200
    prepare: Callable[[BenchContext], Awaitable[None]] | None = None
    floor: bool = False  # the reference the others are compared with
    within_2x_floor: bool = False  # the goal: server CPU per request at most 2x the floor's
    goal: float | None = None  # a tighter goal than 2x, as a ratio to the floor's CPU per request
    # Paced load instead of closed-loop: each host of a population sends one request every
    # ``interval`` seconds (the request function gets the host's index).
    interval: float = 0.0
    # The floor scenario the goal compares with, when not the main one (paced: the paced floor).
    reference: str = ""
    # Something other than the main server's request rate: returns a row for the table, or None.
    run: Callable[[BenchContext], Awaitable[Measurement | None]] | None = None
    live: bool = False  # needs Redis (skipped with a note without it)
    agents: bool = True  # needs the enrolled hosts


def _checkin(ctx: BenchContext, i: int) -> Request:
    key = ctx.node_keys[i % len(ctx.node_keys)]
    return "POST", "/api/osquery/distributed/read", json.dumps({"node_key": key}).encode()


def _config_request(ctx: BenchContext, i: int) -> Request:
    key = ctx.node_keys[i % len(ctx.node_keys)]
    return "POST", "/api/osquery/config", json.dumps({"node_key": key}).encode()


def _config_ok(status: int, raw: bytes) -> bool:
    return _checkin_ok(status, raw) and "options" in json.loads(raw)


# What osquery's logger sends every logger_tls_period when a scheduled query changed: two
# event-format result lines of a pack query (unknown here, so forwarded as they are).
def _log_lines(key: str, i: int) -> list[dict[str, Any]]:
    return [
        {
            "name": "pack/Global/listening_ports", "hostIdentifier": key[:12], "calendarTime":
            "Mon Dec  1 12:00:00 2026 UTC", "unixTime": 1_796_126_400 + i, "epoch": 0, "counter": i,
            "numerics": False, "decorations": {"host_uuid": key[:12], "hostname": "bench"},
            "columns": {"pid": str(1000 + n), "port": str(8000 + n), "address": "0.0.0.0"}, "action": "added",
        }
        for n in range(2)
    ]  # fmt: skip


def _log_request(ctx: BenchContext, i: int) -> Request:
    key = ctx.node_keys[i % len(ctx.node_keys)]
    body = {"node_key": key, "log_type": "result", "data": _log_lines(key, i)}
    return "POST", "/api/osquery/log", json.dumps(body).encode()


def _checkin_ok(status: int, raw: bytes) -> bool:
    """osquery's verdict: a JSON object without ``error``/``node_invalid``."""
    try:
        body = json.loads(raw)
    except ValueError:
        return False
    return isinstance(body, dict) and "error" not in body and body.get("node_invalid") is not True


def _checkin_with(campaigns: int) -> Callable[[int, bytes], bool]:
    """A good check-in that also carries exactly ``campaigns`` live queries."""

    def check(status: int, raw: bytes) -> bool:
        if not _checkin_ok(status, raw):
            return False
        queries = json.loads(raw).get("queries") or {}
        return sum(name.startswith(LIVE_PREFIX) for name in queries) == campaigns

    return check


def _campaigns_pending(count: int) -> Callable[[BenchContext], Awaitable[None]]:
    """Exactly ``count`` campaigns running over every host (which never answer them)."""

    async def prepare(ctx: BenchContext) -> None:
        if not ctx.live:
            if count:
                raise RuntimeError("live-query scenarios need Redis")
            return
        if count:
            ids = await ctx.django("start", count=count, targets={"all": True})
            _log(f"  {count} campaign(s) pending for all {len(ctx.node_keys)} hosts: ids {ids}")
        else:
            await ctx.django("stop_all")

    return prepare


async def _orbit_enrolled(ctx: BenchContext) -> None:
    """Every host also runs orbit with a Desktop token (once; later scenarios reuse them)."""
    if ctx.orbit_keys:
        return
    stats = Stats()
    async with HttpTransport(ctx.url, connections=32) as transport:
        orbits = []
        for agent in ctx.agents:
            agent.transport, agent.stats = transport, stats
            orbits.append(SimulatedOrbit(agent, SECRET, OrbitSettings()))
        semaphore = asyncio.Semaphore(32)

        async def one(orbit: SimulatedOrbit) -> None:
            async with semaphore:
                await orbit.enroll()
                await orbit.rotate_token()

        await asyncio.gather(*(one(o) for o in orbits))
    ctx.orbit_keys = [o.node_key for o in orbits if o.node_key]
    ctx.device_tokens = [o.token for o in orbits if o.token]
    if len(ctx.device_tokens) < len(ctx.agents):
        raise RuntimeError(f"orbit set-up failed for some hosts: {stats.last_errors}")
    _log(f"  orbit enrolled with a Desktop token on {len(ctx.orbit_keys)} hosts")
    await _rewarm_host_states(ctx)


# hosts.nodekeys.SETTLE_SECONDS: a forgotten state is cached briefly first, for good after this.
NODE_KEY_SETTLE_SECONDS = 30.0


async def _rewarm_host_states(ctx: BenchContext) -> None:
    """orbit's enrolment forgets its host's cached check-in state (it may change the host), as it
    should; in a real fleet that happens once per host, here to all 10,000 at once. Without this,
    the scenarios after it measured those first misses (10 % of the closed-loop check-ins, most of
    the first campaign round): two check-ins per host, a settle period apart, cache them again."""
    semaphore = asyncio.Semaphore(32)
    async with aiohttp.ClientSession() as session:

        async def one(key: str) -> None:
            async with semaphore, session.post(
                ctx.url + "/api/osquery/distributed/read", json={"node_key": key}
            ) as response:
                await response.read()

        for attempt in range(2):
            if attempt:
                await asyncio.sleep(NODE_KEY_SETTLE_SECONDS + 1)
            await asyncio.gather(*(one(key) for key in ctx.node_keys))
    _log(f"  host states cached again after orbit's enrolment ({len(ctx.node_keys)} hosts, twice)")


def _orbit_config(ctx: BenchContext, i: int) -> Request:
    key = ctx.orbit_keys[i % len(ctx.orbit_keys)]
    return "POST", "/api/fleet/orbit/config", json.dumps({"orbit_node_key": key}).encode()


def _device_desktop(ctx: BenchContext, i: int) -> Request:
    token = ctx.device_tokens[i % len(ctx.device_tokens)]
    return "GET", f"/api/latest/fleet/device/{token}/desktop", None


MDM_MACS = 100


def _sync_send(
    method: str, url: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    """A simulated Mac's transport for the set-up (plain HTTP to the bench server)."""
    request = urllib.request.Request(url, data=body or None, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


async def _mdm_enrolled(ctx: BenchContext) -> None:
    """MDM_MACS Macs enrolled through SCEP, their first commands answered, and each one's signed
    Idle message ready (a device signs every message; the server verifies every one)."""
    if ctx.mdm_idle:
        return
    from agentapi.simulator.apple import MacInfo, SimulatedMac

    await ctx.django("mdm_setup")

    def enroll_one(i: int) -> tuple[bytes, dict[str, str]]:
        mac = SimulatedMac(MacInfo.example(), _sync_send, base_url=ctx.url, enroll_secret=SECRET)
        mac.enroll()
        mac.poll()  # DeviceInformation, asked at enrollment
        body = plistlib.dumps({"Status": "Idle", "UDID": mac.udid}, fmt=plistlib.FMT_XML)
        return body, {
            "Content-Type": "application/x-apple-aspen-mdm-command",
            "Mdm-Signature": mac.sign(body),
        }

    semaphore = asyncio.Semaphore(8)

    async def one(i: int) -> tuple[bytes, dict[str, str]]:
        async with semaphore:
            return await asyncio.to_thread(enroll_one, i)

    ctx.mdm_idle = await asyncio.gather(*(one(i) for i in range(MDM_MACS)))
    _log(f"  {len(ctx.mdm_idle)} Macs enrolled in MDM (SCEP, Authenticate, TokenUpdate)")


def _mdm_idle(ctx: BenchContext, i: int) -> Request:
    body, headers = ctx.mdm_idle[i % len(ctx.mdm_idle)]
    return "PUT", "/mdm/apple/mdm", body, headers


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "floor",
            "GET /bench/floor: a constant JSON answer through every middleware (bench mode only)",
            lambda ctx, i: ("GET", "/bench/floor", None),
            floor=True,
        ),
        Scenario(
            "healthz",
            "GET /healthz: liveness, no I/O",
            lambda ctx, i: ("GET", "/healthz", None),
        ),
        Scenario(
            "checkin",
            "POST /api/osquery/distributed/read, rotating node keys, hosts in steady state",
            _checkin,
            _checkin_with(0),
            prepare=_campaigns_pending(0),
            goal=1.5,
        ),
        Scenario(
            "config",
            "POST /api/osquery/config, rotating node keys (the cached config's JSON)",
            _config_request,
            _config_ok,
            prepare=_campaigns_pending(0),
        ),
        Scenario(
            "log",
            "POST /api/osquery/log, rotating node keys: two result lines to the filesystem destination",
            _log_request,
            lambda status, raw: status == 200 and raw.strip() == b"{}",
            prepare=_campaigns_pending(0),
        ),
        Scenario(
            "orbit-config",
            "POST /api/fleet/orbit/config (scripts queue included), rotating orbit node keys",
            _orbit_config,
            _checkin_ok,
            prepare=_orbit_enrolled,
            within_2x_floor=True,
        ),
        Scenario(
            "device-desktop",
            "GET /api/latest/fleet/device/<token>/desktop: Fleet Desktop's tray poll, rotating tokens",
            _device_desktop,
            prepare=_orbit_enrolled,
            within_2x_floor=True,
        ),
        Scenario(
            "mdm-idle",
            f"PUT /mdm/apple/mdm Idle from {MDM_MACS} enrolled Macs: CMS signature verified, empty queue",
            _mdm_idle,
            lambda status, raw: status == 200 and not raw.strip(),
            prepare=_mdm_enrolled,
        ),
        Scenario(
            "checkin-1-campaign",
            "the same check-ins while 1 live-query campaign is pending for every host",
            _checkin,
            _checkin_with(1),
            prepare=_campaigns_pending(1),
            live=True,
        ),
        Scenario(
            "checkin-10-campaigns",
            "the same check-ins while 10 live-query campaigns are pending for every host",
            _checkin,
            _checkin_with(10),
            prepare=_campaigns_pending(10),
            live=True,
        ),
        Scenario(
            "floor-paced",
            "GET /bench/floor at the paced scenarios' request rate (their reference)",
            lambda ctx, i: ("GET", "/bench/floor", None),
            interval=PACED_LONGEST,
        ),
        Scenario(
            "checkin-10s",
            "the same check-ins paced: each host of a population checks in every 10 s (osquery's flagfile)",
            _checkin,
            _checkin_with(0),
            prepare=_campaigns_pending(0),
            goal=1.5,
            interval=10.0,
            reference="floor-paced",
        ),
        Scenario(
            "checkin-60s",
            "the same check-ins paced: each host checks in every 60 s (osquery's default interval)",
            _checkin,
            _checkin_with(0),
            prepare=_campaigns_pending(0),
            goal=1.5,
            interval=PACED_LONGEST,
            reference="floor-paced",
        ),
        Scenario(
            "campaign-create",
            "wall time of services.create_campaign over 10,000 hosts (in-process, same DB and Redis)",
            run=lambda ctx: campaign_create(ctx),
            live=True,
        ),
        Scenario(
            "write-to-ws",
            "distributed/write to granian -> result message on a WebSocket held on daphne",
            run=lambda ctx: write_to_ws(ctx),
            live=True,
        ),
        Scenario(
            "ingest",
            "distributed/write answers to a running campaign, one granian worker process",
            run=lambda ctx: ingest(ctx),
            live=True,
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
    # Agent replies that said whether the node key was cached (bench mode), and how many missed.
    lookups: int = 0
    misses: int = 0
    hosts: int = 0  # paced scenarios: the population that checked in

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

    @property
    def miss_rate(self) -> float:
        return self.misses / self.lookups if self.lookups else float("nan")


NODE_KEY_CACHE_HEADER = "X-Fleet-Node-Key-Cache"  # agentapi.endpoint, bench mode only


def paced_hosts(ctx: BenchContext, interval: float) -> int:
    """How many hosts a paced scenario drives so that every paced scenario runs at one request rate:
    every host at the longest interval (at most ``--paced-rate`` requests/s), fewer at shorter ones.
    One rate, because CPU per request depends on the load itself (a lightly loaded server
    spends more per request than a busy one): the paced floor is measured at that same rate."""
    assert ctx.args is not None
    rate = min(ctx.args.paced_rate, len(ctx.node_keys) / PACED_LONGEST) if ctx.node_keys else 1.0
    return max(1, min(len(ctx.node_keys) or 1, round(rate * interval)))


async def measure(
    scenario: Scenario, ctx: BenchContext, server: Server, concurrency: int, warmup: float, duration: float
) -> Measurement:
    """Load for ``warmup + duration`` seconds, counting only requests finished inside the window.

    Closed loop (``concurrency`` clients, each sending its next request when the previous one
    returned), or paced (``scenario.interval``): every host of a population sends one request each
    interval, on a fixed schedule that carries on from round to round, with at most
    ``concurrency`` requests in flight.
    """
    counter = itertools.count()
    window: dict[str, float] = {"start": float("inf"), "end": float("inf")}
    latencies: list[float] = []
    tally = {"errors": 0, "lookups": 0, "misses": 0}
    stop_at = time.perf_counter() + warmup + duration
    connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=30)
    headers = {"Content-Type": "application/json", "User-Agent": "osquery/5.23.1"}

    async def send(session: aiohttp.ClientSession, i: int) -> None:
        method, path, body, *extra = scenario.request(ctx, i)
        sent_headers = {**headers, **extra[0]} if extra else headers
        started = time.perf_counter()
        cached = None
        try:
            async with session.request(method, ctx.url + path, data=body, headers=sent_headers) as response:
                ok = scenario.check(response.status, await response.read())
                cached = response.headers.get(NODE_KEY_CACHE_HEADER)
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        finished = time.perf_counter()
        if window["start"] <= finished <= window["end"]:
            latencies.append(finished - started)
            tally["errors"] += not ok
            if cached is not None:
                tally["lookups"] += 1
                tally["misses"] += cached == "miss"

    async def client(session: aiohttp.ClientSession) -> None:
        while time.perf_counter() < stop_at:
            await send(session, next(counter))

    population = paced_hosts(ctx, scenario.interval) if scenario.interval else 0

    async def paced(session: aiohttp.ClientSession) -> None:
        """Request n goes at origin + n * spacing to host n % population: each host every interval."""
        spacing = scenario.interval / population
        origin = ctx.paced_origin.setdefault(scenario.name, time.perf_counter())
        n = max(0, math.ceil((time.perf_counter() - origin) / spacing))
        in_flight = asyncio.Semaphore(concurrency)
        pending: set[asyncio.Task[None]] = set()

        async def one(host: int) -> None:
            async with in_flight:
                await send(session, host)

        while (due := origin + n * spacing) < stop_at:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(n % population))
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
        await asyncio.gather(*pending)

    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        if scenario.interval:
            clients = [asyncio.create_task(paced(session))]
        else:
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
    return Measurement(
        scenario.name, len(latencies), elapsed, tally["errors"], latencies, cpu1 - cpu0, svc1 - svc0,
        tally["lookups"], tally["misses"], population,
    )  # fmt: skip


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
        ctx.primed_at = time.perf_counter()
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


# --- live queries --------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.1 else f"{seconds * 1000:.1f} ms"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


async def campaign_create(ctx: BenchContext) -> None:
    """Wall time of ``create_campaign`` over 10,000 hosts: ``all`` targets and an explicit id list."""
    assert ctx.args is not None
    hosts = min(10_000, len(ctx.node_keys))
    repeat = 5
    timed = await ctx.django("time_create", hosts=hosts, repeat=repeat)
    for form, timings in timed["timings"].items():
        targeted = timed["targeted"][form]
        median, worst = percentile(timings, 50), max(timings)
        ctx.figures.append(
            (
                f"Create a campaign targeting {targeted:,} hosts ({form}), median / max of {repeat}",
                f"{_ms(median)} / {_ms(worst)}",
                "< 1 s",
                worst < 1.0 if targeted >= 10_000 else None,
            )
        )
        _log(f"  create over {targeted} hosts ({form}): median {_ms(median)}, max {_ms(worst)}")


async def write_to_ws(ctx: BenchContext) -> None:
    """One answer at a time: send ``distributed/write`` to granian, time the ws ``result`` on daphne."""
    assert ctx.server is not None
    answering = ctx.agents[: min(2000, len(ctx.agents))]
    token = await ctx.django("token")
    targets = {"hosts": [a.identity.uuid for a in answering]}
    (campaign_id,) = await ctx.django("start", count=1, targets=targets)
    name = f"{LIVE_PREFIX}{campaign_id}"
    daphne = DaphneServer(ctx.server.db, ctx.server.cache, ctx.server.tmp / "daphne").share_data_with(
        ctx.server
    )
    await asyncio.to_thread(daphne.start)
    latencies: list[float] = []
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            ws_url = f"{daphne.url.replace('http', 'ws')}/ws/campaigns/{campaign_id}/"
            async with session.ws_connect(ws_url, headers={"Authorization": f"Token {token}"}) as ws:
                while (await ws.receive_json(timeout=10))["type"] != "status":
                    pass  # totals, then status: the watcher is subscribed
                arrived: dict[str, asyncio.Future[float]] = {}

                async def reader() -> None:
                    async for message in ws:
                        data = json.loads(message.data)
                        if data["type"] == "result":
                            seq = data["data"]["rows"][0]["bench_seq"]
                            arrived[seq].set_result(time.perf_counter())

                reading = asyncio.create_task(reader())
                url = ctx.url + "/api/osquery/distributed/write"
                for seq, agent in enumerate(answering):
                    key = str(seq)
                    arrived[key] = asyncio.get_running_loop().create_future()
                    body = {"node_key": agent.node_key, "queries": {name: [{**ANSWER_ROW, "bench_seq": key}]},
                            "statuses": {name: 0}}  # fmt: skip
                    started = time.perf_counter()
                    async with session.post(url, json=body) as response:
                        assert response.status == 200, await response.text()
                    latencies.append(await asyncio.wait_for(arrived[key], timeout=10) - started)
                reading.cancel()
    finally:
        await asyncio.to_thread(daphne.stop)
        await ctx.django("stop_all")
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    ctx.figures.append(
        (f"distributed/write -> WebSocket result, p50 ({len(latencies)} answers, one at a time)", _ms(p50),
         "", None)
    )  # fmt: skip
    ctx.figures.append(("distributed/write -> WebSocket result, p99", _ms(p99), "< 50 ms", p99 < 0.050))
    _log(f"  write -> ws: p50 {_ms(p50)}, p99 {_ms(p99)}, max {_ms(max(latencies))} over {len(latencies)}")


async def ingest(ctx: BenchContext) -> Measurement:
    """Closed-loop answers against a one-worker granian; every answer is a host's first for a campaign."""
    assert ctx.server is not None and ctx.args is not None
    args, hosts = ctx.args, len(ctx.node_keys)
    ids = await ctx.django("start", count=4, targets={"all": True})
    single = Server(1, ctx.server.db, ctx.server.cache, ctx.server.tmp / "ingest").share_data_with(ctx.server)
    await asyncio.to_thread(single.start)
    capacity = hosts * len(ids)

    def answer(c: BenchContext, i: int) -> Request:
        if i >= capacity:  # every host answered every campaign: repeats would be ignored answers
            raise RuntimeError(f"ingest ran out of pending answers ({capacity}); lower --duration")
        name = f"{LIVE_PREFIX}{ids[i // hosts]}"
        body = {"node_key": c.node_keys[i % hosts], "queries": {name: [ANSWER_ROW]}, "statuses": {name: 0}}
        return "POST", "/api/osquery/distributed/write", json.dumps(body).encode()

    scenario = Scenario("ingest", "", answer, lambda status, raw: status == 200 and raw.strip() == b"{}")
    view = BenchContext(url=single.url, env=single.env, agents=ctx.agents, node_keys=ctx.node_keys)
    try:
        m = await measure(scenario, view, single, args.concurrency, args.warmup, args.duration)
    finally:
        await asyncio.to_thread(single.stop)
    stored = await ctx.django("results", ids=ids)
    await ctx.django("stop_all")
    ctx.figures.append(
        (f"Answers ingested per second, one granian worker ({args.concurrency} clients)", f"{m.rps:.0f}/s",
         "", None)
    )  # fmt: skip
    ctx.notes.append(
        f"Ingest: {m.requests} answers in the measured window, {stored} stored in all (warm-up included), "
        f"{m.cpu_ms_per_request:.3f} ms server CPU per answer."
    )
    return m


def campaign_overhead(
    ctx: BenchContext, results: list[Measurement], rounds: dict[str, list[Measurement]]
) -> None:
    """Extra server CPU per check-in with campaigns pending, against the same check-in without."""
    by_name = {m.scenario: m for m in results if m.requests}
    base = by_name.get("checkin")
    if base is None:
        return
    figures = []
    for name, campaigns in (("checkin-1-campaign", 1), ("checkin-10-campaigns", 10)):
        m = by_name.get(name)
        if m is None:
            continue
        extra = m.cpu_ms_per_request / base.cpu_ms_per_request - 1
        per = extra / campaigns
        service = m.service_ms_per_request - base.service_ms_per_request
        # The same ratio round by round (each against the check-ins measured just before it).
        paired = [
            b.cpu_ms_per_request and c.cpu_ms_per_request / b.cpu_ms_per_request - 1
            for b, c in zip(rounds.get("checkin", []), rounds.get(name, []), strict=False)
        ]
        spread = f"; rounds {', '.join(f'{x:+.0%}' for x in paired)}" if len(paired) > 1 else ""
        figures.append(
            (
                f"Extra server CPU per check-in, {campaigns} active campaign{'s' if campaigns > 1 else ''}",
                f"{extra:+.1%} ({m.cpu_ms_per_request - base.cpu_ms_per_request:+.3f} ms; "
                f"{per:+.1%} per campaign{spread}; MariaDB+Redis {service:+.3f} ms)",
                "< 10 % per campaign",
                per < 0.10,
            )
        )
    ctx.figures[:0] = figures


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
    by_name = {m.scenario: m for m in results if m.requests}
    lines = []
    for m in results:
        scenario = SCENARIOS[m.scenario]
        goal = scenario.goal or (2.0 if scenario.within_2x_floor else None)
        if goal is None or not m.requests:
            continue
        reference = by_name.get(scenario.reference, floor)
        ratio = m.cpu_ms_per_request / reference.cpu_ms_per_request
        verdict = "meets" if ratio <= goal else "misses"
        misses = f"; node-key cache misses {m.miss_rate:.2%}" if m.lookups else ""
        lines.append(
            f"- **{m.scenario} / {reference.scenario} server CPU per request: {ratio:.2f}x** "
            f"({verdict} the goal of at most {goal:g}x{misses})."
        )
    return lines


CHECKIN_SCENARIOS = (
    "floor",
    "healthz",
    "checkin",
    "config",
    "log",
    "floor-paced",
    "checkin-10s",
    "checkin-60s",
)


def checkin_section(args: argparse.Namespace, results: list[Measurement]) -> list[str]:
    """The check-in against the floor at osquery's intervals, with the misses the server had."""
    by_name = {m.scenario: m for m in results if m.requests}
    floor = by_name.get("floor")
    shown = [by_name[n] for n in CHECKIN_SCENARIOS if n in by_name]
    if floor is None or not any(m.scenario.startswith("checkin") for m in shown):
        return []
    paced_floor = by_name.get("floor-paced")
    rows = [
        "## Check-in at any interval",
        "",
        "| scenario | load | requests | server CPU ms/req | / floor | / floor at the same rate "
        "| node-key cache misses | p50 ms | p99 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in shown:
        interval = SCENARIOS[m.scenario].interval
        if m.scenario == "floor-paced":
            load = f"{m.rps:.0f} requests/s, paced"
        elif interval:
            load = f"{m.hosts:,} hosts, each every {interval:g} s"
        else:
            load = f"closed loop, {args.concurrency} clients"
        same_rate = floor if not interval else paced_floor
        versus = f"{m.cpu_ms_per_request / same_rate.cpu_ms_per_request:.2f}x" if same_rate else ""
        misses = f"{m.miss_rate:.2%} ({m.misses:,} of {m.lookups:,})" if m.lookups else ""
        rows.append(
            f"| {m.scenario} | {load} | {m.requests:,} | {m.cpu_ms_per_request:.3f} | "
            f"{m.cpu_ms_per_request / floor.cpu_ms_per_request:.2f}x | {versus} | {misses} | "
            f"{m.percentile(50):.1f} | {m.percentile(99):.1f} |"
        )
    rows += [
        "",
        "*floor* is the cheapest view Django serves here: a constant `JsonResponse` at `/bench/floor` "
        "through every middleware (a server started with `FLEET_BENCH=1` has it; production never "
        "does). Agent endpoints take shorter paths (osquery's past Django's handler, "
        "`agentapi.direct`; the others past the middleware for people, "
        "`agentapi.middleware.AgentFastPathMiddleware`). "
        "The paced scenarios send each host's check-in every 10 s or 60 s, on a fixed schedule that "
        "carries on through the rounds: every enrolled host at 60 s (at most "
        f"{args.paced_rate:g} requests/s), as many at 10 s as give the same request rate. A lightly "
        "loaded server spends more CPU per request than a saturated one (its caches go cold between "
        "requests, each request wakes a worker), so the paced check-ins are held to *floor-paced*, the "
        "floor view at that same rate. They are measured only once "
        f"{args.min_age:g} s have passed since the hosts were primed, so an entry that a timer would "
        "expire (the old 180 s lifetime) has expired. Misses are the server's own count: in bench mode "
        "every agent reply says whether its node-key lookup reached the database "
        "(`X-Fleet-Node-Key-Cache`). Cache design: [architecture.md](architecture.md#the-check-in-path).",
        "",
    ]
    return rows


def live_table(ctx: BenchContext) -> list[str]:
    if not ctx.figures:
        return []
    rows = ["| figure | value | goal | |", "|---|---:|---|---|"]
    for what, value, goal, met in ctx.figures:
        verdict = "" if met is None else ("meets" if met else "**misses**")
        rows.append(f"| {what} | {value} | {goal} | {verdict} |")
    return rows


def write_report(
    path: Path, args: argparse.Namespace, ctx: BenchContext, results: list[Measurement], command: str
) -> None:
    info = machine()
    live = live_table(ctx)
    live_section = (
        ["## Live queries", "", *live, ""]
        if live
        else ["## Live queries", "", "Not measured: they need Redis (the live-query store).", ""]
    )
    lines = [
        "# Benchmarks",
        "",
        "Generated by `scripts/bench.py` (run by `make bench`); the whole file is rewritten on each run.",
        "",
        f"- **Date:** {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- **Machine:** {info['nproc']} CPU ({info['cpu']}), {info['memory']} RAM, {info['os']}, "
        f"Python {info['python']}",
        f"- **Configuration:** database {ctx.db}, cache {ctx.cache}, granian (`fleet.web_server`) "
        f"{args.workers} worker processes, one request thread each, on 127.0.0.1, {args.hosts} enrolled "
        "hosts",
        f"- **Load:** {args.concurrency} concurrent clients (aiohttp, one process on the same machine), "
        f"{args.duration:g} s measured per scenario in {args.rounds} interleaved rounds, each after "
        f"{args.warmup:g} s of warm-up",
        f"- **Command:** `{command}`",
        "",
        "## Results",
        "",
        *table(results),
        "",
        *verdicts(results),
        "",
        *checkin_section(args, results),
        *live_section,
        *bench_software.report_lines(),  # kept from its last run (bench.py --software)
        *bench_console.report_lines(),  # kept from its last run (make bench-console)
        *bench_tasks.report_lines(),  # kept from its last run (make bench-tasks)
        *bench_embedded.report_lines(),  # kept from its last run (make bench-embedded)
        *bench_load.load_report_lines(),  # kept from its last run (make bench-load)
        *fuzzrecord.report_lines(),
        "## Outages and long-lived WebSockets",
        "",
        "A minute of Redis down and a minute hung under simulated agents, and a live-query WebSocket "
        "held for 10 minutes, in the production shape: [resilience.md](resilience.md) (`make soak`).",
        "",
        "## Set-up figures",
        "",
        *[f"- {note}" for note in ctx.notes],
        "",
        "## Method",
        "",
        "- *Server CPU ms/req* is the user+system CPU time of the granian master and workers "
        "(`/proc/<pid>/stat`) consumed during the measured window, divided by the requests completed in it. "
        "It does not depend on the load client, which shares the two cores and caps requests/s.",
        "- *MariaDB+Redis CPU ms/req* is the same for the `mariadbd` and `redis-server` processes when the "
        "server uses them (whole processes, so anything else they serve meanwhile counts too; 0 when "
        "not used: SQLite's work happens inside the workers).",
        '- The check-in scenario sends `{"node_key": ...}` rotating over every enrolled host, after '
        "each host answered its detail queries once, so a check-in has nothing to do (the steady state "
        "of a fleet). Its share of empty responses is in the set-up figures.",
        "- Latencies are closed-loop (each client sends its next request when the previous one "
        "returns), so p99 includes queueing in the server. granian keeps connections alive and the "
        "load client reuses them, so a request includes no TCP connect (for every scenario alike).",
        "- Requests/s is the load client's limit as much as the server's: both share the same cores.",
        "- The request-rate scenarios run in interleaved rounds (floor, healthz, checkin, config, log, ..., "
        "checkin-10s, checkin-60s, then again), each round a share of the measured time, so a change in the "
        "machine's background load hits them alike; the table sums the rounds.",
        "- *floor*: `GET /bench/floor`, a constant `JsonResponse` through the whole middleware stack (bench "
        "mode only), the reference for the ratios. *config* and *log* rotate over every host like *checkin*: "
        "the cached config, and two result lines forwarded to the filesystem destination.",
        "- *checkin-10s*, *checkin-60s*: paced, not closed-loop: each host of the population checks in once "
        "per interval, so the node-key cache sees what a fleet at that interval does (misses included); "
        "their CPU per request includes what a lighter load leaves idle (the workers' wake-ups, the "
        "last-seen flush every 5 s over fewer requests).",
        "- *checkin-1-campaign* and *checkin-10-campaigns* repeat the check-in scenario while 1 or 10 "
        "campaigns target every host; the hosts never answer, so every check-in carries the queries (the "
        "server runs with `LIVE_QUERY_HANDOUT_RATE=0`: a paced process would hand out 200 a second). "
        "The extra CPU is the difference with *checkin*, over its CPU per request.",
        "- *mdm-idle*: Apple MDM's most frequent message, a device's `Idle` with nothing queued, from "
        f"{MDM_MACS} Macs enrolled beforehand through the real flow (enrollment profile, SCEP, Authenticate, "
        "TokenUpdate; their first DeviceInformation answered). Each body is signed once by its Mac (a "
        "detached CMS signature in `Mdm-Signature`, as a device sends it) and sent again and again; the "
        "server verifies the signature and the certificate's issuer on every request, then reads the "
        "enrollment and the queue. Not compared with the floor: the signature check is the price of "
        "Apple's protocol, and Macs send Idle on a push or a poll, not every few seconds.",
        "- *Create a campaign*: `campaigns.services.create_campaign` timed in a Django process of its own "
        "on the same MariaDB and Redis (what `POST /api/v1/campaigns/` runs, without HTTP and "
        "serialisation): validate the SQL, resolve the targets, count online/offline hosts, insert the "
        "campaign, write the Redis bitmap. After one warm-up; each campaign is stopped before the next.",
        "- *write -> WebSocket*: a watcher holds `/ws/campaigns/<id>/` on a daphne process (token header); "
        "answers from 2,000 hosts are sent one at a time to granian's `distributed/write`; the time runs "
        "from sending the request to receiving that host's `result` message (through Redis: channels-redis "
        "between the two processes).",
        "- *ingest*: a second granian with one worker process (one request thread); closed-loop "
        "`distributed/write` requests, each the first answer of a host to one of four campaigns over "
        "every host (one `os_version` row), without watchers. Its table row is that worker's rate and CPU.",
        "",
        "## Reproduce",
        "",
        "`make bench` (MariaDB and Redis are used when they answer, else SQLite and local memory). "
        "Options through `BENCH_ARGS`, e.g. `make bench BENCH_ARGS='--hosts 2000 --duration 10 "
        "--scenarios checkin'`; `scripts/bench.py --help` lists them. The live-query scenarios need Redis "
        "and are skipped without it. New scenarios are added to `SCENARIOS` in `scripts/bench.py`.",
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
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="Interleaved rounds the request-rate scenarios' time is split into.",
    )
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"from: {', '.join(SCENARIOS)}")
    parser.add_argument("--db", choices=("auto", "mariadb", "sqlite"), default="auto")
    parser.add_argument("--cache", choices=("auto", "redis", "none"), default="auto")
    parser.add_argument("--no-prime", action="store_true", help="Measure check-ins with detail queries due.")
    parser.add_argument(
        "--paced-rate",
        type=float,
        default=250.0,
        help="Paced scenarios (floor-paced, checkin-10s, checkin-60s) run at min(this, hosts / 60) "
        "requests/s: every host checks in every 60 s, fewer hosts every 10 s.",
    )
    parser.add_argument(
        "--min-age",
        type=float,
        default=240.0,
        help="Paced scenarios measure only once this many seconds have passed since the hosts were "
        "primed (past the old 180 s cache lifetime plus an interval), driving their load meanwhile.",
    )
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
    if not 1 <= args.rounds <= 10:
        parser.error("--rounds must be 1..10")
    if not 0 <= args.min_age <= 900 or not 1 <= args.paced_rate <= 2000:
        parser.error("--min-age must be 0..900 s and --paced-rate 1..2000 requests/s")
    return args


async def run(args: argparse.Namespace, server: Server, ctx: BenchContext) -> list[Measurement]:
    names = args.scenarios.split(",")
    if not ctx.live and any(SCENARIOS[n].live for n in names):
        skipped = [n for n in names if SCENARIOS[n].live]
        ctx.notes.append(f"Skipped without Redis (the live-query store): {', '.join(skipped)}.")
        _log(ctx.notes[-1])
        names = [n for n in names if not SCENARIOS[n].live]
    if any(SCENARIOS[n].agents and n not in ("healthz", "floor") for n in names):
        await enroll_and_prime(ctx, args.hosts, args.concurrency, prime=not args.no_prime)
        share = await steady_state_share(ctx)
        ctx.notes.append(f"{share:.0%} of sampled check-ins returned no queries before measuring.")
        _log(ctx.notes[-1])
    # Request-rate scenarios run in interleaved rounds (A B C, A B C, ...), each round a share of
    # --duration, so a change in the machine's background load hits every scenario alike.
    load = [n for n in names if not SCENARIOS[n].run]
    rounds: dict[str, list[Measurement]] = {n: [] for n in load}
    window = args.duration / args.rounds
    for number in range(1, args.rounds + 1 if load else 1):
        for name in load:
            scenario = SCENARIOS[name]
            if scenario.prepare:
                await scenario.prepare(ctx)
            _log(f"measuring {name} (round {number}/{args.rounds}): {scenario.description}")
            warmup = args.warmup
            if scenario.interval and ctx.primed_at:
                # Measure only once every cache entry made while priming is older than --min-age
                # (past any lifetime a timer would give it): the paced load itself fills the wait.
                warmup = max(warmup, args.min_age - (time.perf_counter() - ctx.primed_at))
                if warmup > args.warmup:
                    _log(f"  paced load for {warmup:.0f} s first: entries older than {args.min_age:g} s")
            m = await measure(scenario, ctx, server, args.concurrency, warmup, window)
            _report_measurement(m)
            rounds[name].append(m)
    results = [merge(rounds[n]) for n in load]
    for name in names:
        scenario = SCENARIOS[name]
        if scenario.run is None:
            continue
        if scenario.prepare:
            await scenario.prepare(ctx)
        _log(f"measuring {name}: {scenario.description}")
        m = await scenario.run(ctx)
        if m is not None:
            _report_measurement(m)
            results.append(m)
    campaign_overhead(ctx, results, rounds)
    return results


def _report_measurement(m: Measurement) -> None:
    misses = f", node-key misses {m.misses}/{m.lookups}" if m.lookups else ""
    _log(
        f"  {m.rps:.0f} req/s, p50 {m.percentile(50):.1f} ms, p99 {m.percentile(99):.1f} ms, "
        f"{m.cpu_ms_per_request:.3f} ms server CPU/req, {m.errors} errors{misses}"
    )


def merge(parts: list[Measurement]) -> Measurement:
    """One scenario's rounds as a single measurement (sums; latencies pooled)."""
    return Measurement(
        parts[0].scenario,
        sum(p.requests for p in parts),
        sum(p.seconds for p in parts),
        sum(p.errors for p in parts),
        [latency for p in parts for latency in p.latencies],
        sum(p.server_cpu for p in parts),
        sum(p.service_cpu for p in parts),
        sum(p.lookups for p in parts),
        sum(p.misses for p in parts),
        max(p.hosts for p in parts),
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--django"]:  # the Django helper (DjangoHelper), in the server's environment
        return _django_serve()
    if argv[:1] == ["--software"]:  # the software inventory benchmark; its options follow
        return bench_software.main(argv[1:])
    args = parse_args(argv)
    db = ("mariadb" if mariadb_available() else "sqlite") if args.db == "auto" else args.db
    cache = ("redis" if redis_available() else "none") if args.cache == "auto" else args.cache
    tmp = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    server = Server(args.workers, db, cache, tmp)
    server.env["FLEET_BENCH"] = "1"  # the floor view, and the node-key cache header on agent replies
    # Every check-in of the campaign scenarios hands the pending live queries out (their cost is the
    # figure), as no paced hand-out would past its rate (campaigns/handout.py).
    server.env["LIVE_QUERY_HANDOUT_RATE"] = "0"
    ctx = BenchContext(
        url=server.url,
        env=server.env,
        db="MariaDB (socket)" if db == "mariadb" else "SQLite",
        cache="Redis" if cache == "redis" else "local memory (per process)",
        args=args,
        server=server,
        django=DjangoHelper(server.env, tmp / "django-helper.log"),
    )
    _log(f"database {ctx.db}, cache {ctx.cache}, {args.workers} granian workers at {server.url}")
    try:
        server.prepare()
        server.start()
        results = asyncio.run(run(args, server, ctx))
    except Exception as exc:
        _log(f"failed: {exc}")
        for name, tail in (("granian", server.log_tail()), ("Django helper", ctx.django.log_tail())):
            if tail:
                _log(f"{name} log:\n{tail}")
        return 1
    finally:
        ctx.django.stop()
        server.stop()
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print("\n".join(table(results)))
    print("\n".join(verdicts(results)))
    print("\n".join(live_table(ctx)))
    if args.report:
        command = "make bench" + (f" BENCH_ARGS='{' '.join(sys.argv[1:])}'" if sys.argv[1:] else "")
        write_report(Path(args.report), args, ctx, results, command)
        _log(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
