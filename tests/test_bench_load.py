"""``scripts/bench_load.py`` (``make bench-load``): the parts that need no server.

The per-host arithmetic and the goal, the "Load report" section rendered from a recorded run (and
its text before any run), the section replaced in docs/benchmarks.md, and the mix itself: it
applies as YAML specs, and every label and scheduled query runs on the simulated hosts it is meant
for (a query the simulator cannot answer would measure error handling instead of the mix).
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import bench_load  # noqa: E402
from benchdoc import replace_section  # noqa: E402

from agentapi.simulator.identity import make_identities, parse_templates  # noqa: E402
from agentapi.simulator.schedule import platform_matches  # noqa: E402
from agentapi.simulator.sql import execute  # noqa: E402
from agentapi.simulator.tables import HostTables  # noqa: E402


def sample_result(**changes: object) -> dict:
    """A recorded run: 3,000 hosts for 120 s, the worker at 30 % of a core."""
    web_cpu, mariadb_cpu, redis_cpu, hosts, seconds = 36.0, 12.0, 3.6, 3000, 120.0
    result = {
        "date": "2026-12-06 10:00 UTC",
        "command": "make bench-load",
        "hosts": hosts,
        "interval": 10,
        "config_interval": 60,
        "web_server": "granian",
        "threads": 8,
        "priming": {"seconds": 150.2, "enrolled": 3000, "with_details": 3000},
        "seconds": seconds,
        "requests_per_s": 480.5,
        "requests_per_s_by_endpoint": {"config": 50.0, "distributed/read": 300.2, "log": 130.3},
        "client_errors": 0,
        "transport_errors": 0,
        "latency_p50_ms": 5.0,
        "latency_p99_ms": 30.0,
        "web": {
            **bench_load.cpu_figures(web_cpu, hosts, seconds),
            "cpu_ms_per_request": 0.624,
            "rss_mib": {"master": 31.0, "worker": 148.2},
        },
        "mariadb": {**bench_load.cpu_figures(mariadb_cpu, hosts, seconds), "idle_pct": 0.4},
        "redis": {**bench_load.cpu_figures(redis_cpu, hosts, seconds), "idle_pct": 0.2},
        "simulator_cpu_pct": 41.0,
        "machine_load": 1.7,
        "web_run_queue_pct": 2.5,
        "live_queries": {
            "started": 11,
            "completed": 10,
            "seconds_to_all_median": 10.4,
            "seconds_to_all_max": 11.9,
            "enabled": True,
        },
        "saturated": False,
        "contended": False,
    }
    result.update(changes)
    result["goal"] = bench_load.goal(result)
    return result


def test_cpu_per_host_second_and_hosts_per_core():
    # 36 CPU-seconds over 3,000 hosts x 120 s: 0.1 CPU-ms per host per second, 10,000 per core.
    assert bench_load.cpu_ms_per_host_second(36.0, 3000, 120.0) == pytest.approx(0.1)
    assert bench_load.hosts_per_core(0.1) == 10_000
    assert bench_load.hosts_per_core(0.1333) == 7_501
    assert bench_load.cpu_figures(36.0, 3000, 120.0) == {
        "cpu_pct": 30.0,
        "cpu_ms_per_host_s": 0.1,
        "hosts_per_core": 10_000,
    }
    # Nothing measured is no figure rather than a division by zero.
    assert bench_load.cpu_ms_per_host_second(1.0, 0, 120.0) == 0.0
    assert bench_load.hosts_per_core(0.0) == 0


@pytest.mark.parametrize(
    ("changes", "failed"),
    [
        ({}, None),
        ({"latency_p99_ms": 500.0}, "p99"),
        ({"transport_errors": 1}, "errors"),
        ({"web": {"hosts_per_core": 7_499}}, "hosts_per_core"),
    ],
)
def test_goal_needs_every_part(changes, failed):
    result = {"web": {"hosts_per_core": 7_500}, "latency_p99_ms": 499.0, "client_errors": 0}
    result |= {"transport_errors": 0, **changes}
    verdict = bench_load.goal(result)
    assert verdict["met"] is (failed is None)
    assert [part for part in ("hosts_per_core", "p99", "errors") if not verdict[part]] == (
        [failed] if failed else []
    )


def test_report_renders_a_recorded_run(tmp_path):
    path = tmp_path / "bench-load.json"
    path.write_text(json.dumps(sample_result()))
    lines = bench_load.load_report_lines(path)
    text = "\n".join(lines)
    assert lines[0] == "## Load report" and lines[-1] == ""
    assert "| **hosts per web core (derived)** | **10,000** |" in text
    assert "0.1000 CPU-ms per host per s → 10,000 hosts per core" in text  # web
    assert "0.0333 CPU-ms per host per s → 30,000 hosts per core (idle before: 0.4 %)" in text  # MariaDB
    assert "| goal | met: hosts per web core ≥ 7,500: meets; p99 < 500 ms: meets; no errors: meets |" in text
    assert "10 of 11 reached every host, in 10.4 s (median; max 11.9 s)" in text
    assert "distributed/read 300.2" in text and "worker 148.2 MiB" in text
    assert "/proc" in text  # the method says where CPU comes from
    assert "waiting for a core (share of the window, all threads summed): the worker 2.5 %" in text
    assert "ran above" not in text and "was busy" not in text


def test_report_says_how_the_window_was_run(tmp_path):
    """The measured hosts' start spread, the cores each process was pinned to, the services'
    waits for a core, and a window over a fleet kept from an earlier run, each said in the report."""
    path = tmp_path / "bench-load.json"
    result = sample_result(
        warmup=80.0,
        measure_spread=60.0,
        pinned={"web": [1], "generator": [0], "services": [0]},
        services_run_queue_pct={"mariadb": 1.5, "redis": 0.7},
        priming={"reused": True, "seconds": 0.0, "spread": 0.0, "enrolled": 3000, "with_details": 3000},
    )
    path.write_text(json.dumps(result))
    text = "\n".join(bench_load.load_report_lines(path))
    assert "80 s of warm-up not counted (the hosts' starts spread over 60 s)" in text
    pinned = "pinned to cores: the worker 1, the generator 0, MariaDB and Redis 0"
    assert f"simulate_hosts at 41.0 % of a core; {pinned}" in text
    assert "the worker 2.5 %, mariadb 1.5 %, redis 0.7 %" in text
    assert "a fleet primed and kept by an earlier run (`--primed-dir`) (3,000 enrolled" in text


def _main_thread_waited() -> float:
    """What the old measure read: the process's own schedstat, its main thread alone."""
    return int(Path(f"/proc/{os.getpid()}/schedstat").read_text().split()[1]) / 1e9


def test_run_queue_counts_every_thread_of_a_process():
    """A process's own schedstat is its main thread's: time a request thread waited for a core
    would be missed. Two busy threads on a saturated core must show a wait beyond the main
    thread's."""
    import hashlib
    import threading
    import time as clock

    done = threading.Event()

    block = b"x" * 1_000_000

    def spin() -> None:  # hashing a large block releases the GIL: all three are runnable at once
        while not done.is_set():
            hashlib.sha256(block).digest()

    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # this thread and its children: one core
    threads = [threading.Thread(target=spin) for _ in range(3)]
    try:
        before = bench_load.run_queue_seconds([os.getpid()])
        main_before = _main_thread_waited()
        for thread in threads:
            thread.start()
        clock.sleep(0.6)
        waited = bench_load.run_queue_seconds([os.getpid()]) - before  # threads still alive: counted
        main_thread = _main_thread_waited() - main_before
    finally:
        done.set()
        for thread in threads:
            thread.join()
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    assert waited > 0.5  # three busy threads on one core for 0.6 s: each waited for the others
    assert waited > main_thread


def test_report_says_what_missed_and_when_the_worker_was_saturated_or_held_up(tmp_path):
    path = tmp_path / "bench-load.json"
    result = sample_result(latency_p99_ms=750.0, saturated=True, contended=True, web_run_queue_pct=31.0)
    path.write_text(json.dumps(result))
    text = "\n".join(bench_load.load_report_lines(path))
    assert "| goal | not met: " in text and "p99 < 500 ms: **misses**" in text
    assert "ran above 85 % of its core" in text
    assert "The machine was busy: the worker's threads waited 31.0 % of the window" in text


def test_report_of_a_run_without_live_queries(tmp_path):
    path = tmp_path / "bench-load.json"
    live = {"enabled": False, "started": 0, "completed": 0}
    path.write_text(json.dumps(sample_result(live_queries=live)))
    assert "| live queries, one at a time | none in this run (`--no-live`) |" in "\n".join(
        bench_load.load_report_lines(path)
    )


def test_run_queue_wait_of_this_process():
    assert bench_load.run_queue_seconds([os.getpid()]) >= 0.0
    assert bench_load.run_queue_seconds([2**22 + 1]) == 0.0  # no such process


def test_report_before_any_run(tmp_path):
    lines = bench_load.load_report_lines(tmp_path / "absent.json")
    assert lines[0] == "## Load report"
    assert "Not measured yet" in lines[2] and "make bench-load" in lines[2]


def test_write_section_replaces_only_the_load_report(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Load report\n\nold text\n\n## Fuzzing\n\nkept\n")
    assert bench_load.write_section(["## Load report", "", "new text", ""], doc)
    assert doc.read_text() == "# Benchmarks\n\n## Load report\n\nnew text\n\n## Fuzzing\n\nkept\n"
    other = tmp_path / "other.md"
    other.write_text("# Benchmarks\n")
    assert not bench_load.write_section(["## Load report", ""], other)
    assert other.read_text() == "# Benchmarks\n"


def mix_documents() -> list[dict]:
    return [doc for doc in yaml.safe_load_all(bench_load.MIX_YAML) if doc]


def test_mix_is_two_packs_of_five_queries_and_six_labels():
    docs = mix_documents()
    labels = [d["spec"] for d in docs if d["kind"] == "label"]
    packs = [d["spec"] for d in docs if d["kind"] == "pack"]
    queries = {d["spec"]["name"] for d in docs if d["kind"] == "query"}
    assert len(labels) == bench_load.MIX["labels"] == 6
    assert all(label["label_membership_type"] == "dynamic" for label in labels)
    assert len(packs) == bench_load.MIX["packs"] == 2
    scheduled = [entry for pack in packs for entry in pack["queries"]]
    assert len(scheduled) == bench_load.MIX["scheduled_queries"] == 10
    assert {entry["query"] for entry in scheduled} == queries
    assert min(e["interval"] for e in scheduled) == 60 and max(e["interval"] for e in scheduled) == 3600
    assert all(pack["targets"] == {"labels": ["All Hosts"]} for pack in packs)


def test_every_query_of_the_mix_runs_on_the_simulated_hosts():
    docs = mix_documents()
    sql = {d["spec"]["name"]: d["spec"]["query"] for d in docs if d["kind"] in ("query", "label")}
    where = {d["spec"]["name"]: d["spec"].get("platform", "") for d in docs if d["kind"] == "label"}
    for pack in (d["spec"] for d in docs if d["kind"] == "pack"):
        where |= {e["query"]: e.get("platform", "") for e in pack["queries"]}
    hosts = make_identities(13, 10, parse_templates("macos:1,windows:1,ubuntu:1,centos:1"))
    for host in hosts:
        tables = HostTables(host)
        for name, statement in [*sql.items(), *((f"live: {s}", s) for s in bench_load.LIVE_SQL)]:
            if platform_matches(where.get(name, ""), host.template.build_platform):
                result = execute(statement, tables)
                assert result.ok, f"{name} on {host.template.build_platform}: {result.message}"


@pytest.mark.django_db
def test_mix_applies_as_specs(tmp_path):
    path = tmp_path / "mix.yml"
    path.write_text(bench_load.MIX_YAML)
    out = io.StringIO()
    call_command("apply", "-f", str(path), stdout=out, stderr=io.StringIO())
    assert "18 to create, 0 to update, 0 to delete, 0 unchanged, 0 skipped." in out.getvalue()
    assert "warning" not in out.getvalue()


def test_a_section_keeps_its_place_and_a_new_one_goes_before_fuzzing(tmp_path):
    """scripts/benchdoc.py, which every bench script writes its section of the page with."""
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## A\n\nold\n\n## Fuzzing\n\nkept\n")
    assert replace_section(["## A", "", "new", ""], doc)
    assert replace_section(["## B", "", "added"], doc)
    assert doc.read_text() == "# Benchmarks\n\n## A\n\nnew\n\n## B\n\nadded\n\n## Fuzzing\n\nkept\n"
    assert replace_section(["## Fuzzing", "", "last"], doc)
    assert doc.read_text().endswith("## B\n\nadded\n\n## Fuzzing\n\nlast\n")


def test_each_scenario_keeps_its_last_run_and_the_report_shows_them_side_by_side(tmp_path):
    path = tmp_path / "bench-load.json"
    # A file from before runs were kept per scenario: one result, read as one run.
    old = sample_result(notes=["an old note"])
    path.write_text(json.dumps(old))
    assert list(bench_load.recorded(path)["runs"]) == ["3,000 hosts, a live query always running, 8 threads"]
    no_live = sample_result(
        hosts=5000,
        live_queries={"enabled": False, "started": 0, "completed": 0},
        over_500ms_by_endpoint={"log": 3, "distributed/read": 4},
        simulator_loop_lag_max_ms=41.0,
        warmup=20.0,
    )
    bench_load.record(no_live, path)
    again = sample_result(latency_p99_ms=40.0)  # the live scenario again: replaces its last run
    bench_load.record(again, path)
    data = bench_load.recorded(path)
    assert sorted(data["runs"]) == [
        "3,000 hosts, a live query always running, 8 threads",
        "5,000 hosts, no live queries, 8 threads",
    ]
    assert data["latest"] == "3,000 hosts, a live query always running, 8 threads"
    assert data["runs"][data["latest"]]["latency_p99_ms"] == 40.0
    data["notes"] = ["Why the live figure is lower."]
    path.write_text(json.dumps(data))
    text = "\n".join(bench_load.load_report_lines(path))
    rows = [line for line in text.splitlines() if line.startswith(("| 3,000 hosts", "| 5,000 hosts"))]
    assert [row.split(" | ")[0] for row in rows] == [
        "| 5,000 hosts, no live queries, 8 threads",  # without live queries first
        "| 3,000 hosts, a live query always running, 8 threads",
    ]
    assert "| **10,000** | 5 / 40 | 0 | not counted |" in rows[1]  # over 500 ms: not counted then
    assert "| 7 | 0.0333 / 0.0100 |" in rows[0]
    assert "- Why the live figure is lower." in text
    assert "### The latest run: 3,000 hosts, a live query always running, 8 threads" in text
    # The latest run in full: its own slow requests and the simulator's lag when counted.
    bench_load.record(no_live, path)
    text = "\n".join(bench_load.load_report_lines(path))
    assert "| requests over 500 ms | distributed/read 4, log 3 |" in text
    assert "event loop ran late by at most 41 ms" in text and "20 s of warm-up not counted" in text


def test_scenarios_name_how_often_a_live_query_runs_and_sort_from_none_to_always(tmp_path):
    path = tmp_path / "bench-load.json"
    always = sample_result(hosts=3000)
    every_minute = sample_result(
        hosts=5000, live_queries={"enabled": True, "every": 60.0, "started": 2, "completed": 2}
    )
    no_live = {"enabled": False, "every": 0.0, "started": 0, "completed": 0}
    none = sample_result(hosts=1200, live_queries=no_live)
    for result in (always, every_minute, none):
        bench_load.record(result, path)
    text = "\n".join(bench_load.load_report_lines(path))
    first_cells = [line.split(" | ")[0] for line in text.splitlines() if line.startswith("| ")]
    names = [cell[2:] for cell in first_cells if cell.endswith(" threads")]  # the runs table's rows
    assert names == [
        "1,200 hosts, no live queries, 8 threads",
        "5,000 hosts, a live query every 60 s, 8 threads",
        "3,000 hosts, a live query always running, 8 threads",
    ]


def test_runs_behind_the_agent_gate_are_scenarios_of_their_own(tmp_path):
    path = tmp_path / "bench-load.json"
    before = sample_result()  # recorded before the gate existed: no agent_slots
    gated = sample_result(agent_slots=2, latency_p99_ms=400.0)
    for result in (before, gated):
        bench_load.record(result, path)
    data = bench_load.recorded(path)
    assert sorted(data["runs"]) == [
        "3,000 hosts, a live query always running, 8 threads",
        "3,000 hosts, a live query always running, 8 threads, 2 agent slots",
    ]
    text = "\n".join(bench_load.load_report_lines(path))
    gate = "(at most 2 agent requests at once, `FLEET_AGENT_CONCURRENCY`)"
    assert f"one worker process of 8 threads {gate}" in text
    rows = [line.split(" | ")[0] for line in text.splitlines() if line.startswith("| 3,000 hosts")]
    assert rows == [
        "| 3,000 hosts, a live query always running, 8 threads",
        "| 3,000 hosts, a live query always running, 8 threads, 2 agent slots",
    ]


def test_paced_runs_are_scenarios_of_their_own_and_say_their_rate(tmp_path):
    path = tmp_path / "bench-load.json"
    live = {"enabled": True, "every": 60.0, "started": 2, "completed": 2, "seconds_to_all_median": 45.0,
            "seconds_to_all_max": 47.5}  # fmt: skip
    unpaced = sample_result(hosts=7500, threads=2, live_queries=live)  # from before the pacing
    paced = sample_result(hosts=7500, threads=2, live_queries=live, handout_rate=200.0)
    quiet = sample_result(
        hosts=7500, threads=2, handout_rate=200.0,
        live_queries={"enabled": False, "every": 0.0, "started": 0, "completed": 0},
    )  # fmt: skip
    for result in (unpaced, paced, quiet):
        bench_load.record(result, path)
    assert sorted(bench_load.recorded(path)["runs"]) == [
        "7,500 hosts, a live query every 60 s, 2 threads",
        "7,500 hosts, a live query every 60 s, handed out at 200/s, 2 threads",
        "7,500 hosts, no live queries, 2 threads",  # the rate says nothing without live queries
    ]
    bench_load.record(paced, path)  # the latest run, shown in full
    text = "\n".join(bench_load.load_report_lines(path))
    assert (
        "in 45.0 s (median; max 47.5 s); handed out at most 200 a second (`LIVE_QUERY_HANDOUT_RATE`)" in text
    )


def test_goal_is_judged_on_the_probes_p99_when_the_run_had_one(tmp_path):
    """The generator's p99 counts its own event loop's lateness; a run with a probe is judged on
    the probe's, and the report shows both."""
    probe = {"requests": 534, "errors": 0, "p50_ms": 6.4, "p99_ms": 160.6, "max_ms": 287.2}
    result = sample_result(latency_p99_ms=3000.0, probe=probe)
    assert result["goal"]["p99"] and result["goal"]["met"]
    assert not sample_result(latency_p99_ms=3000.0)["goal"]["p99"]  # no probe: the generator's
    assert not sample_result(probe={**probe, "p99_ms": 750.0})["goal"]["p99"]
    path = tmp_path / "bench-load.json"
    path.write_text(json.dumps(result))
    text = "\n".join(bench_load.load_report_lines(path))
    assert "| latency p50 / p99 | 5.0 ms / 3000.0 ms |" in text
    assert "p50 6.4 ms, p99 160.6 ms, max 287.2 ms; 534 requests, 0 errors" in text
    assert "p99 < 500 ms (the probe's): meets" in text
    table = "\n".join(bench_load.runs_table([result, sample_result()]))
    assert "| 5 / 3000 (6.4 / 160.6) |" in table and "| 5 / 30 |" in table  # older runs: no probe


def test_the_probe_times_requests_to_a_real_server():
    """The probe against an HTTP server that takes 30 ms to answer and fails every fifth request."""
    import threading
    import time as clock
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from types import SimpleNamespace

    seen: list[bytes] = []

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            seen.append(self.rfile.read(int(self.headers["Content-Length"])))
            clock.sleep(0.03)
            status = 500 if len(seen) % 5 == 0 else 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    serving = threading.Thread(target=httpd.serve_forever, daemon=True)
    serving.start()
    try:
        probe = bench_load.Probe(
            SimpleNamespace(url=f"http://127.0.0.1:{httpd.server_port}"), "key-1", every=0.01
        )
        probe.start()
        clock.sleep(0.6)
        probe.stop_event.set()
        probe.join(timeout=5)
    finally:
        httpd.shutdown()
        httpd.server_close()
    summary = probe.summary()
    assert json.loads(seen[0]) == {"node_key": "key-1"}
    assert summary["errors"] >= 1 and summary["requests"] >= 4
    assert 30 <= summary["p50_ms"] < 200 and summary["max_ms"] >= summary["p99_ms"] >= summary["p50_ms"]
