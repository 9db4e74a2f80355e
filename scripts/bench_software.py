"""Benchmark the software inventory ingest: simulated hosts' lists through the real agent API.

What it answers: what does a host's software list cost the server the first time, and on every
detail refresh after that when nothing changed (the steady state: the same hundreds of items
every hour)? And does a fleet with an inventory still meet the check-in goal of
``docs/benchmarks.md`` (a check-in at most 2x ``/healthz`` in server CPU)?

Steps: a throwaway database (MariaDB when it answers, else SQLite) and Redis index, granian on
127.0.0.1 (``scripts/servers.py``), ``--hosts`` simulated agents enrolled; each host's answer to
its software detail query comes from the simulator (``agentapi/simulator/software.py``). Then,
with ``--concurrency`` closed-loop clients, every host sends ``distributed/write`` with that
answer: the first time (everything new), again unchanged, and once more with a few items
changed. Server CPU (granian master and workers) and MariaDB+Redis CPU are read from /proc
around each pass. Then: check-ins (``distributed/read``) against ``/healthz`` in alternating
rounds; the recount of host counts and one unchanged ingest timed in a Django process of its
own (``--django``); and the software list over REST.

The figures go to ``docs/software-bench.json`` and the "Software inventory" section of
``docs/benchmarks.md`` (only that section is replaced; ``scripts/bench.py`` renders it from the
JSON file whenever it rewrites the page). ``scripts/bench.py --software`` runs this script.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchdoc import replace_section  # noqa: E402  (scripts/benchdoc.py, beside this file)
from servers import (  # noqa: E402  (scripts/servers.py, beside this file)
    SECRET,
    Server,
    cpu_seconds,
    mariadb_available,
    redis_available,
    service_pids,
)

from agentapi.simulator.agent import AgentSettings, SimulatedAgent  # noqa: E402
from agentapi.simulator.detail import answer  # noqa: E402
from agentapi.simulator.runner import SimulationConfig, build_agents, enroll_all  # noqa: E402
from agentapi.simulator.stats import Stats  # noqa: E402
from agentapi.simulator.transport import HttpTransport  # noqa: E402

PY = sys.executable
RESULTS = ROOT / "docs" / "software-bench.json"
REPORT = ROOT / "docs" / "benchmarks.md"
SECTION = "## Software inventory"
MYSQL_DB = "fleet_bench_software"
REDIS_URL = "redis://127.0.0.1:6379/7"
PREFIX = "fleet_detail_query_"
FAMILY = {"macos": "macos", "windows": "windows", "ubuntu": "linux", "centos": "linux"}
# The defaults the amortised figure assumes: details hourly, a check-in every 10 s.
DETAIL_INTERVAL, DISTRIBUTED_INTERVAL = 3600, 10


def _log(message: str) -> None:
    print(f"[bench-software {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- the Django side (``bench_software.py --django OP``, in the server's environment) ----------


def _django_op(op: str, hosts: int) -> Any:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from knox.models import AuthToken

    from agentapi.simulator.identity import make_identity
    from agentapi.simulator.tables import HostTables
    from hosts.models import Host
    from software import counts
    from software.ingest import ingest_rows
    from software.models import HostSoftware, SoftwareTitle, SoftwareVersion
    from software.queries import SOFTWARE_QUERIES

    if op == "recount":
        return counts.recount().as_dict()
    if op == "token":
        admin, _ = get_user_model().objects.get_or_create(
            username="bench-admin", defaults={"is_superuser": True}
        )
        return AuthToken.objects.create(user=admin)[1]
    if op == "sizes":
        return {
            "titles": SoftwareTitle.objects.count(),
            "versions": SoftwareVersion.objects.count(),
            "links": HostSoftware.objects.count(),
        }
    if op == "unchanged":  # one host's unchanged list, ingested in-process: time and queries
        sql = {q.name: q.sql for q in SOFTWARE_QUERIES}
        seconds, queries = [], []
        for index in range(min(hosts, 200)):
            identity = make_identity(1, index)
            name = f"software_{FAMILY[identity.template.key]}"
            rows = answer(PREFIX + name, sql[name], HostTables(identity)).rows
            host_id = Host.objects.get(osquery_host_id=identity.host_identifier).pk
            with CaptureQueriesContext(connection) as captured:
                started = time.perf_counter()
                result = ingest_rows(host_id, rows)
                seconds.append(time.perf_counter() - started)
            assert not result.changed, f"host {index}: its list changed"
            queries.append(len(captured))
        return {"median_ms": statistics.median(seconds) * 1000, "max_queries": max(queries)}
    raise ValueError(op)


def django(env: dict[str, str], op: str, hosts: int = 0) -> Any:
    done = subprocess.run(
        [PY, str(Path(__file__).resolve()), "--django", op, str(hosts)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"django step {op} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- load -----------------------------------------------------------------------------------------


async def send_all(
    url: str, path: str, bodies: list[bytes | None], concurrency: int, server: Server
) -> dict[str, float]:
    """Send every body once (closed loop, ``concurrency`` clients); CPU around the whole pass."""
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []
    errors = 0
    headers = {"Content-Type": "application/json", "User-Agent": "osquery/5.23.1"}

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while not queue.empty():
            body = queue.get_nowait()
            started = time.perf_counter()
            method = "POST" if body is not None else "GET"
            async with session.request(method, url + path, data=body, headers=headers) as response:
                raw = await response.read()
                ok = response.status == 200 and (body is None or b'"error"' not in raw)
            latencies.append(time.perf_counter() - started)
            errors += not ok

    pids, services = server.pids(), service_pids(server.db, server.cache, REDIS_URL)
    cpu0, svc0, wall0 = cpu_seconds(pids), cpu_seconds(services), time.perf_counter()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=120)
    ) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    wall = time.perf_counter() - wall0
    cpu, svc = cpu_seconds(pids) - cpu0, cpu_seconds(services) - svc0
    count = len(latencies)
    ordered = sorted(latencies)
    return {
        "requests": count,
        "errors": errors,
        "seconds": wall,
        "per_second": count / wall,
        "cpu_ms": cpu / count * 1000,
        "service_ms": svc / count * 1000,
        "p50_ms": ordered[count // 2] * 1000,
        "p99_ms": ordered[min(count - 1, int(count * 0.99))] * 1000,
    }


def software_body(agent: SimulatedAgent, change: int = 0) -> bytes:
    """The host's ``distributed/write`` with its software answer; ``change`` alters a few items."""
    family = FAMILY[agent.identity.template.key]
    name = f"{PREFIX}software_{family}"
    rows = [dict(r) for r in answer(name, "", agent.tables).rows]
    if change:
        rows.pop(len(rows) // 2)  # one removed
        for r in rows[:2]:  # two upgraded
            r["version"] = f"{r['version']}.{change}"
        rows.append({**rows[-1], "name": f"bench-added-{change}", "version": "1.0"})  # one added
    body = {"node_key": agent.node_key, "queries": {name: rows}, "statuses": {name: 0}}
    return json.dumps(body).encode()


async def run(args: argparse.Namespace, server: Server) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    config = SimulationConfig(
        url=server.url, enroll_secret=SECRET, count=args.hosts, seed=1, agent=AgentSettings(retry_scale=0.05)
    )
    async with HttpTransport(server.url, connections=args.concurrency) as transport:
        agents = build_agents(transport, config, Stats(), asyncio.Event())
        enrolled = await enroll_all(agents, args.concurrency)
    if enrolled < args.hosts:
        raise RuntimeError(f"only {enrolled}/{args.hosts} hosts enrolled")
    _log(f"enrolled {enrolled} hosts")
    bodies = [software_body(a) for a in agents]
    items = [len(next(iter(json.loads(b)["queries"].values()))) for b in bodies]
    figures["items"] = {
        "total": sum(items),
        "mean": sum(items) / len(items),
        "min": min(items),
        "max": max(items),
    }
    figures["body_kib"] = sum(len(b) for b in bodies) / len(bodies) / 1024
    path = "/api/osquery/distributed/write"
    for phase, payload in (
        ("first", bodies),
        ("unchanged", bodies),
        ("changed", [software_body(a, change=1) for a in agents]),
    ):
        if phase == "changed":  # while every list is still the simulator's
            figures["unchanged_in_process"] = django(server.env, "unchanged", args.hosts)
        figures[phase] = await send_all(server.url, path, payload, args.concurrency, server)
        _log(f"{phase}: {json.dumps({k: round(v, 3) for k, v in figures[phase].items()})}")
    figures["sizes"] = django(server.env, "sizes")
    figures["recount"] = django(server.env, "recount")
    figures["recount_again"] = django(server.env, "recount")
    _log(f"recount: {figures['recount']}; again: {figures['recount_again']}")
    # Check-ins against /healthz, alternating rounds so background load hits both alike.
    checkins = [json.dumps({"node_key": a.node_key}).encode() for a in agents]
    rounds: dict[str, list[dict[str, float]]] = {"healthz": [], "checkin": []}
    for _ in range(args.rounds):
        rounds["healthz"].append(
            await send_all(server.url, "/healthz", [None] * len(agents), args.concurrency, server)
        )
        rounds["checkin"].append(
            await send_all(server.url, "/api/osquery/distributed/read", checkins, args.concurrency, server)
        )
    for name, parts in rounds.items():
        figures[name] = {"cpu_ms": statistics.median(p["cpu_ms"] for p in parts), "rounds": len(parts)}
    token = django(server.env, "token")
    lists: dict[str, float] = {}
    async with aiohttp.ClientSession(headers={"Authorization": f"Token {token}"}) as session:
        for label, query in (("all", "limit=100"), ("platform", "limit=100&platform=linux")):
            timings = []
            for _ in range(10):
                started = time.perf_counter()
                async with session.get(f"{server.url}/api/v1/software/?{query}") as response:
                    assert response.status == 200, await response.text()
                    await response.read()
                timings.append(time.perf_counter() - started)
            lists[label] = statistics.median(timings) * 1000
    figures["rest_list_ms"] = lists
    return figures


# --- report ---------------------------------------------------------------------------------------


def report_lines(path: Path = RESULTS) -> list[str]:
    """The "Software inventory" section of docs/benchmarks.md, from the last recorded run."""
    lines = [SECTION, ""]
    if not path.exists():
        return [*lines, "Not measured yet (`scripts/bench.py --software`).", ""]
    r = json.loads(path.read_text())
    first, same, changed = r["first"], r["unchanged"], r["changed"]
    per_checkin = same["cpu_ms"] / (DETAIL_INTERVAL / DISTRIBUTED_INTERVAL)
    checkin, healthz = r["checkin"]["cpu_ms"], r["healthz"]["cpu_ms"]
    share = per_checkin / checkin
    ratio = checkin / healthz
    recount, alone = r["recount"], r["unchanged_in_process"]
    web = r.get("web_server", "gunicorn")  # runs recorded before granian have no "web_server"
    served = (
        f"granian {r['workers']} worker processes, one request thread each"
        if web == "granian"
        else f"gunicorn {r['workers']} sync workers"
    )
    rows = [
        ("Hosts, items per host (mean, min-max), answer size", (
            f"{r['hosts']:,}, {r['items']['mean']:.0f} ({r['items']['min']}-{r['items']['max']}), "
            f"{r['body_kib']:.0f} KiB"
        ), "", None),
        ("Stored: titles / versions / host links", (
            f"{r['sizes']['titles']:,} / {r['sizes']['versions']:,} / {r['sizes']['links']:,}"
        ), "", None),
        ("First ingest, all hosts (wall; hosts/s)", (
            f"{first['seconds']:.1f} s; {first['per_second']:.0f}/s"
        ), "", None),
        ("First ingest, per host: server CPU / MariaDB+Redis CPU / p50 / p99", (
            f"{first['cpu_ms']:.1f} ms / {first['service_ms']:.1f} ms / {first['p50_ms']:.0f} ms / "
            f"{first['p99_ms']:.0f} ms"
        ), "", None),
        ("Unchanged list, per host and detail refresh: server CPU / MariaDB+Redis CPU / p50", (
            f"{same['cpu_ms']:.2f} ms / {same['service_ms']:.2f} ms / {same['p50_ms']:.1f} ms"
        ), "", None),
        ("Unchanged list, software ingest alone (in-process, median; queries)", (
            f"{alone['median_ms']:.2f} ms; {alone['max_queries']} query"
        ), "1 query", alone["max_queries"] <= 1),
        ("Unchanged list, amortised per check-in (hourly details, 10 s check-ins)", (
            f"{per_checkin * 1000:.1f} µs = {share:.1%} of a check-in's {checkin:.3f} ms"
        ), "< 10 % of a check-in", share < 0.10),
        ("Check-in / healthz server CPU with the inventory stored", (
            f"{ratio:.2f}x ({checkin:.3f} / {healthz:.3f} ms)"
        ), "at most 2x", ratio <= 2.0),
        ("Changed list (1 removed, 2 upgraded, 1 added), per host: server CPU / MariaDB+Redis CPU", (
            f"{changed['cpu_ms']:.1f} ms / {changed['service_ms']:.1f} ms"
        ), "", None),
        ("Recount of host counts (first / unchanged)", (
            f"{recount['seconds']:.2f} s ({recount['groups_written']:,} rows written) / "
            f"{r['recount_again']['seconds']:.2f} s ({r['recount_again']['groups_written']} written)"
        ), "", None),
        ("`GET /api/v1/software/?limit=100` (median; with `platform=linux`)", (
            f"{r['rest_list_ms']['all']:.0f} ms; {r['rest_list_ms']['platform']:.0f} ms"
        ), "", None),
        ("Errors (first / unchanged / changed)", (
            f"{first['errors']} / {same['errors']} / {changed['errors']}"
        ), "0", first["errors"] + same["errors"] + changed["errors"] == 0),
    ]  # fmt: skip
    lines += [
        f"Recorded {r['date']} on {r['database']} and {r['cache']}, {served}, "
        f"{r['concurrency']} concurrent clients (`{r['command']}`).",
        "",
        "| figure | value | goal | |",
        "|---|---:|---|---|",
    ]
    for what, value, goal, met in rows:
        verdict = "" if met is None else ("meets" if met else "**misses**")
        lines.append(f"| {what} | {value} | {goal} | {verdict} |")
    lines += [
        "",
        "Every host sends its answer to the software detail query (`software_macos`, `_windows`, "
        "`_linux`) as `distributed/write`, each once per pass: first with everything new, then the same "
        "list again (the steady state of every detail refresh), then with a few items changed. CPU per "
        f"host is the pass's CPU over its requests; *server* is {web}, *MariaDB+Redis* the two "
        "services. The amortised figure spreads the unchanged write over the check-ins a host makes "
        "in one detail interval. The recount is `software.counts.recount()` in a process of its own. "
        "Method and design: [software.md](software.md).",
        "",
    ]
    return lines


def write_section(lines: list[str], path: Path = REPORT) -> None:
    """Replace the "Software inventory" section of the page (or add it before "Fuzzing")."""
    replace_section(lines, path)


# --- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="check-in / healthz rounds")
    parser.add_argument("--db", choices=("auto", "mariadb", "sqlite"), default="auto")
    parser.add_argument("--cache", choices=("auto", "redis", "none"), default="auto")
    parser.add_argument("--no-record", action="store_true", help="Print only; keep the docs as they are.")
    args = parser.parse_args(argv)
    if not 10 <= args.hosts <= 20_000:
        parser.error("--hosts must be 10..20000")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--django"]:
        print(json.dumps(_django_op(argv[1], int(argv[2]))))
        return 0
    args = parse_args(argv)
    db = ("mariadb" if mariadb_available() else "sqlite") if args.db == "auto" else args.db
    cache = ("redis" if redis_available(REDIS_URL) else "none") if args.cache == "auto" else args.cache
    tmp = Path(tempfile.mkdtemp(prefix="fleet-bench-software-"))
    server = Server(args.workers, db, cache, tmp, mysql_db=MYSQL_DB, redis_url=REDIS_URL)
    _log(f"database {db}, cache {cache}, {args.hosts} hosts, {args.workers} granian workers at {server.url}")
    try:
        server.prepare()
        server.start()
        figures = asyncio.run(run(args, server))
    except Exception as exc:
        _log(f"failed: {exc}\n{server.log_tail()}")
        return 1
    finally:
        server.stop()
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    figures.update(
        date=f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        hosts=args.hosts,
        web_server="granian",
        workers=args.workers,
        concurrency=args.concurrency,
        database="MariaDB (socket)" if db == "mariadb" else "SQLite",
        cache="Redis" if cache == "redis" else "local memory",
        command="scripts/bench.py --software" + (f" {' '.join(argv)}" if argv else ""),
    )
    if args.no_record:
        print(json.dumps(figures, indent=1))
        return 0
    RESULTS.write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n")
    write_section(report_lines())
    print("\n".join(report_lines()))
    _log(f"wrote {RESULTS.relative_to(ROOT)} and the software section of {REPORT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
