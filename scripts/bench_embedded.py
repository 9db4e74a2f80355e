"""``make bench-embedded``: what ``make run``'s one server process holds on this machine.

The embedded default exactly as ``make run`` starts it (``fleet.embedded_server`` on SQLite, agents
over HTTPS), and ``manage.py simulate_hosts`` in a process of its own: ``--hosts`` hosts (5,000)
checking in every 10 s, logging every 10 s and fetching their config every 60 s.

1. Priming (``--prime`` s, not measured): the hosts enroll, starting over ``--prime-spread``
   seconds (300: a fleet of 5,000 enrolling in five minutes), and answer their first detail
   queries, software included. How it went (enrolled, errors, server CPU) is reported beside.
2. The agents restart with their saved node keys (as after an upgrade of the agent), over one
   config interval (60 s), and counting starts ``--warmup`` seconds later (the simulator's
   ``--stats-after``): a restart makes every agent fetch its config and send its first scheduled
   results, which a running fleet does not do all at once.
3. ``--duration`` seconds measured; ``--live-after`` seconds into them a live query on every host
   is started and followed to the end through the REST API.

Reported: client errors, latency p50/p99 (from the simulator's histogram), requests per second,
the server's CPU (from /proc) and memory, the load generator's CPU (it has the other core), and how
long the live query took to reach every host. Goal (issue 13): no client errors, p99 under 500 ms,
the live query complete. Results go to docs/bench-embedded.json and the section of
docs/benchmarks.md (``report_lines``, which ``make bench`` renders too).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from benchdoc import replace_section  # noqa: E402
from servers import PY, EmbeddedServer, cpu_seconds, free_port, manage, rss_bytes  # noqa: E402

RESULTS = ROOT / "docs" / "bench-embedded.json"
# The agents restart over one config interval: restarted within 10 s, every host then fetched its
# config in the same 10 s of each minute (500 a second), a synchronised fleet no real one is.
RESTART_SPREAD = 60.0


def _log(message: str) -> None:
    print(f"[bench-embedded {time.strftime('%H:%M:%S')}] {message}", flush=True)


class TlsEmbeddedServer(EmbeddedServer):
    """``make run``'s server with its HTTPS port (agents), on a self-signed certificate."""

    def __init__(self, tmp: Path) -> None:
        super().__init__("sqlite", "none", tmp)
        self.tls_port = free_port()
        self.cert, self.key = tmp / "tls" / "cert.pem", tmp / "tls" / "key.pem"
        self.agent_url = f"https://127.0.0.1:{self.tls_port}"

    def prepare(self) -> None:
        super().prepare()
        code = (
            "from pathlib import Path; from fleet.selfsigned import ensure_certificate; "
            f"ensure_certificate(Path({str(self.cert)!r}), Path({str(self.key)!r}))"
        )
        manage(self.env, "shell", "-v0", "-c", code)

    def command(self) -> list[str]:
        return [
            *super().command(), "--tls-port", str(self.tls_port),
            "--cert", str(self.cert), "--key", str(self.key),
        ]  # fmt: skip


def _token(server: TlsEmbeddedServer) -> str:
    code = (
        "from django.contrib.auth import get_user_model; from knox.models import AuthToken; "
        "from hosts.models import UserRole; from hosts.choices import Role; "
        "u = get_user_model().objects.filter(username='bench').first() or "
        "get_user_model().objects.create_superuser('bench', 'bench@example.com', 'x'); "
        "UserRole.objects.get_or_create(user=u, defaults={'role': Role.ADMIN}); "
        "print(AuthToken.objects.create(user=u)[1])"
    )
    out = subprocess.run(
        [PY, str(ROOT / "manage.py"), "shell", "-v0", "-c", code], env=server.env, cwd=ROOT,
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


def _rest(server: TlsEmbeddedServer, token: str, method: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        server.url + path,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read() or b"{}")


def simulate(
    server: TlsEmbeddedServer,
    args: argparse.Namespace,
    duration: float,
    stats: Path,
    spread: float,
    stats_after: float = 0.0,
) -> subprocess.Popen:
    command = [
        PY, str(ROOT / "manage.py"), "simulate_hosts",
        "--url", server.agent_url, "--ca-file", str(server.cert),
        f"--enroll-secret={server.secret}", "--count", str(args.hosts), "--seed", "7",
        "--distributed-interval", str(args.interval), "--logger-tls-period", str(args.interval),
        "--config-interval", "60", "--start-period", str(spread), "--duration", str(duration),
        "--node-key-file", str(server.tmp / "node_keys.json"), "--progress-interval", "15",
        "--connections", str(args.connections), "--stats-file", str(stats),
        "--stats-after", str(stats_after),
    ]  # fmt: skip
    env = {**server.env, "FLEET_VAR_DIR": str(server.tmp / "simulator")}
    return subprocess.Popen(command, env=env, cwd=ROOT)


def follow_live_query(server: TlsEmbeddedServer, token: str, hosts: int, result: dict[str, Any]) -> None:
    started = time.monotonic()
    campaign = _rest(
        server, token, "POST", "/api/v1/campaigns/", {"sql": "SELECT 1 AS one", "targets": {"all": True}}
    )
    result["targeted"] = campaign["totals"]["targeted"]
    result["online_at_start"] = campaign["totals"]["online"]
    deadline = started + 120
    while time.monotonic() < deadline:
        summary = _rest(server, token, "GET", f"/api/v1/campaigns/{campaign['id']}/")["summary"]
        result["answered"] = summary["actual_results"]
        if summary["status"] == "finished" or summary["actual_results"] >= hosts:
            result["seconds_to_all"] = round(time.monotonic() - started, 1)
            break
        time.sleep(0.5)
    result["complete"] = result.get("answered", 0) >= hosts


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="fleet-bench-embedded-"))
    server = TlsEmbeddedServer(tmp)
    try:
        _log(f"preparing SQLite and the server in {tmp}")
        server.prepare()
        server.start()
        token = _token(server)
        _log(f"enrolling {args.hosts} hosts and answering their first detail queries ({args.prime:.0f} s)")
        pids = server.pids()
        cpu_p0, t_p0 = cpu_seconds(pids), time.monotonic()
        prime = simulate(server, args, args.prime, tmp / "prime.json", args.prime_spread)
        prime.wait(timeout=args.prime + 300)
        primed = json.loads((tmp / "prime.json").read_text())
        priming = {
            "seconds": round(time.monotonic() - t_p0, 1),
            "spread": args.prime_spread,
            "enrolled": primed["enrollments"],
            "requests": sum(primed["requests"].values()),
            "client_errors": sum(primed["failures"].values()),
            "latency_p99_ms": primed["latency_p99_ms"],
            "server_cpu_pct": round((cpu_seconds(pids) - cpu_p0) / (time.monotonic() - t_p0) * 100, 1),
        }
        _log(f"primed: {primed['enrollments']} enrolled, {sum(primed['failures'].values())} failures")
        _log(
            f"restarting the agents: {args.warmup:.0f} s of warm-up, then {args.duration:.0f} s measured; "
            f"a live query on all hosts {args.live_after:.0f} s into it"
        )
        measured = simulate(
            server, args, args.warmup + args.duration, tmp / "measured.json", RESTART_SPREAD, args.warmup
        )
        time.sleep(args.warmup)
        cpu0, simulator_cpu0, t0 = cpu_seconds(pids), cpu_seconds([measured.pid]), time.monotonic()
        live: dict[str, Any] = {}
        time.sleep(args.live_after)
        follower = threading.Thread(target=follow_live_query, args=(server, token, args.hosts, live))
        follower.start()
        peak_rss, simulator_cpu = 0, simulator_cpu0
        while measured.poll() is None:
            peak_rss = max(peak_rss, rss_bytes(pids))
            simulator_cpu = cpu_seconds([measured.pid]) or simulator_cpu  # gone once it exits
            time.sleep(1)
        cpu1, elapsed = cpu_seconds(pids), time.monotonic() - t0
        simulator_cpu -= simulator_cpu0
        follower.join(timeout=180)
        stats = json.loads((tmp / "measured.json").read_text())
        requests = sum(stats["requests"].values())
        errors = sum(stats["failures"].values())
        result = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": "make bench-embedded"
            + (f" BENCH_ARGS='{' '.join(sys.argv[1:])}'" if sys.argv[1:] else ""),
            "hosts": args.hosts,
            "interval": args.interval,
            "seconds": round(elapsed, 1),
            "requests": requests,
            "requests_per_s": round(requests / elapsed, 1),
            "by_endpoint": stats["requests"],
            "client_errors": errors,
            "transport_errors": stats["transport_errors"],
            "latency_p50_ms": stats["latency_p50_ms"],
            "latency_p99_ms": stats["latency_p99_ms"],
            "over_500ms_by_endpoint": stats.get("over_500ms_by_endpoint", {}),
            "simulator_loop_lag_max_ms": stats.get("simulator_loop_lag_max_ms"),
            "simulator_loop_lags_over_500ms": stats.get("simulator_loop_lags_over_500ms"),
            "simulator_gc_pause_max_ms": stats.get("simulator_gc_pause_max_ms"),
            "server_cpu_pct": round((cpu1 - cpu0) / elapsed * 100, 1),
            "server_cpu_ms_per_request": round((cpu1 - cpu0) / max(requests, 1) * 1000, 3),
            "server_peak_rss_mib": round(peak_rss / 2**20, 1),
            "simulator_cpu_pct": round(simulator_cpu / elapsed * 100, 1),
            "live_query": live,
            "priming": priming,
            "warmup": args.warmup,
            "machine_load": os.getloadavg()[0],
        }
        result["goal_met"] = errors == 0 and stats["latency_p99_ms"] < 500 and bool(live.get("complete"))
        return result
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def report_lines(path: Path = RESULTS) -> list[str]:
    """The section of docs/benchmarks.md (``make bench`` includes it)."""
    try:
        r = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    live = r.get("live_query", {})
    live_text = (
        f"reached all {live.get('answered', 0):,} hosts in {live['seconds_to_all']} s"
        if live.get("complete")
        else f"answered by {live.get('answered', 0):,} of {r['hosts']:,} hosts within 120 s"
    )
    notes = [f"- {note}" for note in r.get("notes", [])]
    primed = r.get("priming")
    priming_rows = (
        [
            f"| priming: {r['hosts']:,} hosts starting over {primed['spread']:.0f} s "
            f"({primed['seconds']} s, not in the figures above) | {primed['enrolled']:,} enrolled, "
            f"{primed['client_errors']:,} client errors, p99 {primed['latency_p99_ms']} ms, "
            f"server at {primed['server_cpu_pct']} % of a core |"
        ]
        if primed
        else []
    )
    slow = r.get("over_500ms_by_endpoint")
    stall_rows = (
        [
            "| requests over 500 ms, by endpoint | "
            + (", ".join(f"{name} {count:,}" for name, count in sorted(slow.items())) or "none")
            + " |",
            f"| load generator's own stalls (event loop lag max; GC pause max) | "
            f"{r.get('simulator_loop_lag_max_ms', '?')} ms; {r.get('simulator_gc_pause_max_ms', '?')} ms |",
        ]
        if slow is not None
        else []
    )
    return [
        "## The embedded default at 5,000 hosts",
        "",
        f"`{r['command']}`, {r['date']}: `make run`'s one server process (SQLite, agents over HTTPS) "
        f"and `simulate_hosts` in its own process on the same 2 cores, {r['hosts']:,} hosts checking in "
        f"every {r['interval']} s, logging every {r['interval']} s, config every 60 s. Measured after the "
        f"hosts enrolled (priming, below) and after {r.get('warmup', 60):.0f} s of warm-up once every agent "
        "restarted.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| requests | {r['requests']:,} in {r['seconds']} s ({r['requests_per_s']} req/s) |",
        f"| client errors | {r['client_errors']} (transport {r['transport_errors']}) |",
        f"| latency p50 / p99 | {r['latency_p50_ms']} ms / {r['latency_p99_ms']} ms |",
        *stall_rows,
        f"| server CPU | {r['server_cpu_pct']} % of a core, "
        f"{r['server_cpu_ms_per_request']} ms per request |",
        f"| server memory (peak RSS) | {r['server_peak_rss_mib']} MiB |",
        f"| load generator CPU (the other core) | {r.get('simulator_cpu_pct', '?')} % of a core |",
        f"| live query on all hosts | {live_text} |",
        *priming_rows,
        f"| goal (0 errors, p99 < 500 ms, live query complete) | {'met' if r['goal_met'] else 'not met'} |",
        "",
        *([*notes, ""] if notes else []),
        "Reproduce: `make bench-embedded` (`BENCH_ARGS='--hosts 1000'` for a shorter run; "
        "`scripts/bench_embedded.py --help`).",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--hosts", type=int, default=5000)
    parser.add_argument("--interval", type=int, default=10, help="check-in and log interval, seconds")
    parser.add_argument("--prime", type=float, default=400.0, help="seconds of enrolment and first check-ins")
    parser.add_argument(
        "--prime-spread", type=float, default=300.0, help="seconds over which the hosts first start"
    )
    parser.add_argument(
        "--warmup", type=float, default=90.0, help="seconds after the agents restart, not measured"
    )
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--live-after", type=float, default=30.0)
    parser.add_argument("--connections", type=int, default=1000, help="the simulator's HTTP connections")
    parser.add_argument(
        "--no-write", action="store_true", help="print, do not write docs/bench-embedded.json"
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    result = run(args)
    print(json.dumps(result, indent=1))
    print("\n".join(report_lines_from(result)))
    if not args.no_write:
        result["notes"] = previous_notes()
        RESULTS.write_text(json.dumps(result, indent=1) + "\n")
        replace_section(report_lines())
        _log(f"wrote {RESULTS} and its section of docs/benchmarks.md")
        if result["notes"]:
            _log(f"kept the last run's notes in {RESULTS} ({len(result['notes'])}): bring them up to date")
    return 0 if result["goal_met"] else 1


def previous_notes(path: Path = RESULTS) -> list[str]:
    """The notes written by hand under the last run: kept for the next run to revise, not lost with
    the figures they explain."""
    try:
        notes = json.loads(path.read_text()).get("notes", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [note for note in notes if isinstance(note, str)] if isinstance(notes, list) else []


def report_lines_from(result: dict[str, Any]) -> list[str]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(result, handle)
    try:
        return report_lines(Path(handle.name))
    finally:
        os.unlink(handle.name)


if __name__ == "__main__":
    sys.exit(main())
