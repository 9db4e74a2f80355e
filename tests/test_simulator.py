"""The host simulator: identities, SQL answers, osquery's response rules, logs, and one live run."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentapi.simulator import logs, protocol
from agentapi.simulator.agent import AgentSettings, SimulatedAgent
from agentapi.simulator.detail import answer
from agentapi.simulator.identity import make_identities, make_identity, parse_templates
from agentapi.simulator.runner import SimulationConfig, load_node_keys, save_node_keys, simulate
from agentapi.simulator.schedule import ScheduledQuery, from_config, platform_matches
from agentapi.simulator.sql import execute
from agentapi.simulator.stats import Stats
from agentapi.simulator.tables import HostTables

ROOT = Path(__file__).resolve().parent.parent
MACOS, WINDOWS, UBUNTU, CENTOS = (
    make_identity(3, i, parse_templates("macos,windows,ubuntu,centos")) for i in range(4)
)


class FakeServer:
    """A transport answering like a server would, with per-endpoint scripted responses first."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.scripted: dict[str, list[tuple[int, bytes]]] = {}
        self.enrolls = 0

    def script(self, endpoint: str, *bodies: Any, status: int = 200) -> None:
        raw = [b if isinstance(b, bytes) else json.dumps(b).encode() for b in bodies]
        self.scripted.setdefault(endpoint, []).extend((status, r) for r in raw)

    def sent(self, endpoint: str) -> list[dict[str, Any]]:
        return [body for e, body, _ in self.calls if e == endpoint]

    async def post(
        self, path: str, body: dict[str, Any], headers: dict[str, str], compress: bool = False
    ) -> tuple[int, bytes]:
        endpoint = path.removeprefix("/api/osquery/")
        self.calls.append((endpoint, json.loads(json.dumps(body)), headers))
        if self.scripted.get(endpoint):
            return self.scripted[endpoint].pop(0)
        if endpoint == "enroll":
            self.enrolls += 1
            return 200, json.dumps({"node_key": f"key-{self.enrolls}"}).encode()
        return 200, b"{}"


def make_agent(identity=MACOS, server: FakeServer | None = None, **settings: Any) -> SimulatedAgent:
    return SimulatedAgent(
        identity, server or FakeServer(), "secret", AgentSettings(retry_scale=0.0, **settings)
    )


# --- identities ------------------------------------------------------------------------------------


def test_identity_is_stable_across_processes():
    code = (
        "from agentapi.simulator.identity import make_identity as m; i = m(42, 7); "
        "print(i.uuid, i.hostname, i.serial, i.mac, i.ip, sep='|')"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    other = (
        subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
        )
        .stdout.strip()
        .split("|")
    )
    here = make_identity(42, 7)
    assert other == [here.uuid, here.hostname, here.serial, here.mac, here.ip]
    assert make_identity(42, 8).uuid != here.uuid
    assert make_identity(43, 7).uuid != here.uuid


def test_templates_are_mixed_in_exact_proportion():
    hosts = make_identities(1, 20, parse_templates("macos:3,windows:2,ubuntu:3,centos:2"))
    counts = {k: sum(h.template.key == k for h in hosts) for k in ("macos", "windows", "ubuntu", "centos")}
    assert counts == {"macos": 6, "windows": 4, "ubuntu": 6, "centos": 4}
    for attribute in ("uuid", "hostname", "ip", "mac"):
        assert len({getattr(h, attribute) for h in hosts}) == 20
    with pytest.raises(ValueError, match="unknown OS template"):
        parse_templates("beos:1")


def test_enrollment_request_has_string_host_details():
    server = FakeServer()
    agent = make_agent(WINDOWS, server)
    assert asyncio.run(agent.ensure_node_key()) == "key-1"
    body = server.sent("enroll")[0]
    assert body["host_identifier"] == WINDOWS.uuid == body["host_details"]["system_info"]["uuid"]
    assert body["platform_type"] == "2" and "node_key" not in body
    assert {"os_version", "osquery_info", "system_info"} <= set(body["host_details"])
    assert all(isinstance(v, str) for row in body["host_details"].values() for v in row.values())
    assert body["host_details"]["osquery_info"]["config_valid"] == "0"


# --- SQL and detail queries -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1", [{"1": "1"}]),
        ("select hostname as name from system_info;", [{"name": MACOS.hostname}]),
        ("SELECT platform FROM os_version WHERE platform = 'darwin' LIMIT 1", [{"platform": "darwin"}]),
        ("SELECT username FROM users WHERE uid >= 500 AND shell LIKE '%zsh'", [{"username": MACOS.username}]),
        ("SELECT 1 FROM os_version WHERE platform IN ('windows', 'ubuntu')", []),
    ],
)
def test_simple_selects(sql, expected):
    assert execute(sql, HostTables(MACOS)).rows == expected


def test_select_star_order_and_count():
    tables = HostTables(UBUNTU)
    rows = execute("SELECT * FROM processes ORDER BY pid DESC LIMIT 2", tables).rows
    assert len(rows) == 2 and int(rows[0]["pid"]) > int(rows[1]["pid"])
    assert all(isinstance(v, str) for v in rows[0].values())
    count = execute("SELECT count(*) FROM processes", tables).rows
    assert count == [{"count(*)": str(len(tables.rows("processes")))}]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT * FROM no_such_thing", "no such table: no_such_thing"),
        ("SELECT * FROM logical_drives", "no such table: logical_drives"),  # a Windows table on macOS
        ("SELECT nope FROM uptime", "no such column: nope"),
        ("SELECT a.x FROM uptime a JOIN time b", 'near "JOIN": syntax error'),
        ("SELECT * FROM uptime WHERE", "incomplete input"),
    ],
)
def test_failures_look_like_osquery(sql, message):
    result = execute(sql, HostTables(MACOS))
    assert (result.rows, result.status, result.message) == ([], 1, message)


def test_detail_queries_are_answered_by_name():
    server_sql = "SELECT os.name ... FROM os_version os LEFT JOIN kernel_info k LIMIT 1"  # not parseable here
    row = answer("fleet_detail_query_os_version", server_sql, HostTables(CENTOS)).rows[0]
    assert row["platform"] == "centos" and row["kernel_version"] == CENTOS.os.kernel_version
    windows = answer("fleet_detail_query_os_version_windows", server_sql, HostTables(WINDOWS)).rows[0]
    assert windows["display_version"] == WINDOWS.os.display_version
    primary = answer("fleet_detail_query_network_interface_unix", "...", HostTables(MACOS)).rows
    assert primary == [{"address": MACOS.ip, "mac": MACOS.mac}]
    # Meant for another platform, or unknown: the SQL runs, and fails as a real osquery would.
    assert (
        answer(
            "fleet_detail_query_disk_space_windows", "SELECT * FROM logical_drives", HostTables(MACOS)
        ).message
        == "no such table: logical_drives"
    )
    assert answer("fleet_detail_query_mdm", "SELECT * FROM mdm", HostTables(MACOS)).status == 1


# --- protocol -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "ok", "node_invalid"),
    [
        (b"", True, False),  # empty body: success (an empty 500 deletes osquery's buffered logs)
        (b"{}", True, False),
        (b'{"node_invalid": true, "error": "invalid node key"}', False, True),
        (b'{"node_invalid": "true"}', True, False),  # not a JSON boolean: ignored
        (b'{"error": null}', False, False),  # any error key fails
        (b"<html>Bad Gateway</html>", False, False),
        (b"[]", False, False),
    ],
)
def test_response_rules(raw, ok, node_invalid):
    outcome = protocol.read_response(raw)
    assert (outcome.ok, outcome.node_invalid) == (ok, node_invalid)


def test_enroll_response_rules():
    assert protocol.read_enroll_response(b'{"node_key": "k"}') == ("k", "")
    assert protocol.read_enroll_response(b'{"id": "k2"}')[0] == "k2"
    assert protocol.read_enroll_response(b'{"node_key": ""}')[0] is None
    assert protocol.read_enroll_response(b'{"error": "bad secret", "node_invalid": true}')[0] is None
    assert [protocol.enroll_wait(n) for n in (1, 2, 3, 30)] == [1, 4, 9, 600]


# --- the agent against a fake server ----------------------------------------------------------------


def test_node_invalid_drops_the_key_and_re_enrolls_as_the_same_host():
    server = FakeServer()
    agent = make_agent(MACOS, server)
    server.script("distributed/read", {"error": "invalid node key", "node_invalid": True}, status=401)
    asyncio.run(agent.distributed_cycle())
    reads = server.sent("distributed/read")
    assert [r["node_key"] for r in reads] == ["key-1", "key-2"]  # second attempt after re-enrolling
    enrolls = server.sent("enroll")
    assert len(enrolls) == 2 and enrolls[0]["host_identifier"] == enrolls[1]["host_identifier"]
    assert agent.node_key == "key-2"
    assert (agent.stats.enrollments, agent.stats.reenrollments, agent.stats.node_invalid) == (1, 1, 1)


def test_error_without_node_invalid_keeps_the_key():
    server = FakeServer()
    agent = make_agent(MACOS, server)
    server.script("config", {"error": "db down"}, {"error": "db down"}, {"error": "db down"}, status=500)
    assert asyncio.run(agent.fetch_config()) is False
    assert [c["node_key"] for c in server.sent("config")] == ["key-1"] * 3 and server.enrolls == 1


def test_header_key_only_from_osquery_5_23():
    new = next(i for i in make_identities(0, 50) if i.osquery_version == "5.23.1")
    old = next(i for i in make_identities(0, 50) if i.osquery_version == "5.22.1")
    assert new.sends_header_key and not old.sends_header_key
    server = FakeServer()
    agent = make_agent(new, server)
    asyncio.run(agent.fetch_config())
    enroll_headers, config_headers = server.calls[0][2], server.calls[1][2]
    assert "Authorization" not in enroll_headers and config_headers["Authorization"] == "NodeKey key-1"
    assert config_headers["User-Agent"] == "osquery/5.23.1"


def test_discovery_accelerate_and_failed_writes_are_resent():
    server = FakeServer()
    agent = make_agent(MACOS, server)
    server.script(
        "distributed/read",
        {
            "queries": {
                "q_b": "SELECT * FROM nope",
                "q_a": "SELECT hostname FROM system_info",
                "q_skip": "SELECT 1",
                "q_run": "SELECT 1",
            },
            "discovery": {
                "q_skip": "SELECT 1 FROM os_version WHERE platform = 'windows'",
                "q_run": "SELECT 1",
            },
            "accelerate": 60,
        },
    )
    server.script("distributed/write", {"error": "try later"}, {"error": "try later"}, {"error": "try later"})
    asyncio.run(agent.distributed_cycle())
    assert agent.poll_interval() == protocol.ACCELERATED_INTERVAL
    first = server.sent("distributed/write")
    assert len(first) == 3  # three attempts, all refused
    asyncio.run(agent.distributed_cycle())  # the next read has nothing; the results go again
    again = server.sent("distributed/write")[-1]
    assert set(again["queries"]) == {"q_a", "q_b", "q_run"}  # q_skip: nothing at all reported
    assert again["queries"]["q_a"] == [{"hostname": MACOS.hostname}]
    assert again["statuses"] == {"q_a": 0, "q_b": 1, "q_run": 0}
    assert again["messages"]["q_b"] == "no such table: nope" and again["messages"]["q_a"] == ""
    assert set(again["stats"]["q_a"]) == {"wall_time_ms", "user_time", "system_time", "memory"}
    assert agent.pending["queries"] == {}


def test_bad_entries_and_discovery_errors():
    agent = make_agent()
    work = agent.accept_work({"queries": {"a": "SELECT 1", "b": "", "c": "SELECT 1"}, "accelerate": 30})
    assert work == [("a", "SELECT 1")] and agent.accelerate_until == 0.0  # stopped at "b"
    assert (
        agent.accept_work(
            {"queries": {"a": "SELECT 1", "b": "SELECT 1"}, "discovery": {"b": "SELECT * FROM nope"}}
        )
        == []
    )


def test_config_options_apply_and_decorate():
    agent = make_agent()
    options = {"distributed_interval": "7", "logger_tls_period": 3, "pack_delimiter": "/"}
    agent.apply_config(
        {
            "options": options,
            "decorators": {
                "load": [
                    "SELECT uuid AS host_uuid FROM system_info;",
                    "SELECT hostname AS hostname FROM system_info;",
                ]
            },
            "packs": {"Global": {"queries": {"Uptime": {"query": "SELECT * FROM uptime", "interval": 60}}}},
        }
    )
    assert (agent.distributed_interval, agent.logger_tls_period) == (7, 3)
    assert agent.decorations == {"host_uuid": MACOS.uuid, "hostname": MACOS.hostname}
    assert [q.name for q in agent.schedule] == ["pack/Global/Uptime"]
    assert 54 <= agent.schedule[0].interval <= 66  # 60 s ± 10 % splay
    flags = {r["name"]: r["value"] for r in agent.tables.rows("osquery_flags")}
    assert flags["distributed_interval"] == "7" and agent.state.config_valid


def test_schedule_platforms_and_builtin_fallback():
    assert platform_matches("darwin,linux", "linux") and platform_matches("posix", "darwin")
    assert not platform_matches("windows", "darwin") and platform_matches("", "windows")
    import random

    config = {
        "schedule": {
            "w": {"query": "SELECT 1", "platform": "windows"},
            "bad": {"query": "SELECT 1", "interval": 0},
        }
    }
    assert from_config(config, "darwin", "h", random.Random(1)) == []
    builtin = from_config({}, "darwin", "h", random.Random(1))
    assert {q.name for q in builtin} >= {"pack/Global/System uptime"}


# --- logs ----------------------------------------------------------------------------------------------


def test_result_lines_are_differential_events():
    clock = [1_800_000_000.0]
    agent = SimulatedAgent(UBUNTU, FakeServer(), "s", AgentSettings(retry_scale=0), clock=lambda: clock[0])
    agent.decorations = {"host_uuid": UBUNTU.uuid}
    query = ScheduledQuery("pack/Global/Uptime", "SELECT total_seconds FROM uptime", 60)
    agent.run_scheduled(query, 1_800_000_000)
    clock[0] += 60
    agent.run_scheduled(query, 1_800_000_060)
    lines = list(agent.logs.results)
    assert [(x["counter"], x["action"]) for x in lines] == [(0, "added"), (1, "removed"), (1, "added")]
    first = lines[0]
    assert set(first) == {
        "name",
        "hostIdentifier",
        "calendarTime",
        "unixTime",
        "epoch",
        "counter",
        "numerics",
        "decorations",
        "columns",
        "action",
    }
    assert first["hostIdentifier"] == UBUNTU.uuid and first["unixTime"] == 1_800_000_000
    assert re.fullmatch(r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4} UTC", first["calendarTime"])
    assert isinstance(first["columns"]["total_seconds"], str)
    statuses = [s["message"] for s in agent.logs.statuses]
    assert statuses == ["Storing initial results for new scheduled query: pack/Global/Uptime"]
    agent.run_scheduled(ScheduledQuery("pack/Global/Same", "SELECT 1", 60), 1_800_000_060)
    agent.run_scheduled(ScheduledQuery("pack/Global/Same", "SELECT 1", 60), 1_800_000_120)
    assert len(agent.logs.results) == 4  # first run logged one row; an unchanged run logs nothing


def test_status_line_values_are_strings():
    line = logs.status_line(
        "uuid-1", 2, "distributed.cpp", 187, "boom", "5.22.1", {"hostname": "h"}, 1_800_000_000
    )
    assert line["unixTime"] == "1800000000" and line["severity"] == "2" and line["line"] == "187"
    assert set(line) == {
        "hostIdentifier",
        "calendarTime",
        "unixTime",
        "severity",
        "filename",
        "line",
        "message",
        "version",
        "decorations",
    }
    assert logs.diff_rows([{"a": "1"}, {"a": "1"}], [{"a": "1"}, {"a": "2"}]) == ([{"a": "2"}], [{"a": "1"}])


def test_logs_are_kept_while_the_server_fails_and_lost_on_empty_500():
    server = FakeServer()
    agent = make_agent(MACOS, server)
    agent.status(0, "init.cpp", 1, "hello")
    agent.run_scheduled(ScheduledQuery("pack/Global/One", "SELECT 1", 60), 1_800_000_000)
    server.script("log", {"error": "destination full"}, status=413)
    asyncio.run(agent.flush_logs())
    # Results refused: kept. Statuses go in their own request, which succeeded.
    assert len(agent.logs.results) == 1 and len(agent.logs.statuses) == 0
    assert agent._log_failures["result"] == 1
    asyncio.run(agent.flush_logs())  # backoff elapsed (retry_scale 0): the same result line again
    results_sent = [b["data"] for b in server.sent("log") if b["log_type"] == "result"]
    assert results_sent[0] == results_sent[1] and len(agent.logs) == 0
    agent.status(0, "init.cpp", 1, "lost")
    server.script("log", b"", status=500)  # empty body = success to osquery
    asyncio.run(agent.flush_logs())
    assert len(agent.logs) == 0


def test_node_key_file_round_trip(tmp_path):
    path = str(tmp_path / "keys.json")
    agent = make_agent()
    agent.node_key = "k1"
    save_node_keys(path, [agent])
    assert load_node_keys(path) == {MACOS.uuid: "k1"}


# --- end to end ------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_simulated_agents_enroll_and_report_vitals(live_server, settings):
    from hosts.models import EnrollSecret, Host

    EnrollSecret.objects.create(secret="sim-secret")
    config = SimulationConfig(
        url=live_server.url,
        enroll_secret="sim-secret",
        count=4,
        seed=9,
        start_period=0.4,
        templates="macos:1,windows:1,ubuntu:1,centos:1",
        duration=3.5,
        progress_interval=60,
        agent=AgentSettings(distributed_interval=1, logger_tls_period=1, follow_config_options=False),
    )
    output: list[str] = []
    stats = asyncio.run(simulate(config, out=output.append))
    assert stats.enrollments == 4 and stats.total_failures == 0, (stats.as_dict(), stats.last_errors)
    assert stats.requests["distributed/write"] >= 4 and stats.status_lines >= 4
    hosts = {h.osquery_host_id: h for h in Host.objects.all()}
    expected = make_identities(9, 4, parse_templates(config.templates))
    assert set(hosts) == {i.uuid for i in expected}
    for identity in expected:
        host = hosts[identity.uuid]
        assert host.hostname == identity.hostname and host.platform == identity.platform
        assert host.os_version and host.osquery_version == identity.osquery_version
        assert host.primary_ip == identity.ip and host.uptime > 0  # from the detail queries
    assert "enrolled 4/4" in output[-1]
    # The load generator reports its own stalls, so a reader can tell them from the server's.
    report = stats.as_dict()
    assert 0 <= report["simulator_loop_lag_max_ms"] < 3500
    assert report["simulator_gc_pause_max_ms"] >= 0 and gc.get_freeze_count() > 0
    gc.unfreeze()


def test_slow_requests_are_counted_by_endpoint_and_stalls_noted():
    stats = Stats()
    stats.record("config", True, 0.6)
    stats.record("config", True, 0.01)
    stats.record("distributed/write", False, 2.0, "TimeoutError")
    stats.note_loop_lag(0.7)
    stats.note_loop_lag(0.2)
    stats.note_gc_pause(0.05)
    report = stats.as_dict()
    assert report["over_500ms_by_endpoint"] == {"config": 1, "distributed/write": 1}
    assert report["simulator_loop_lag_max_ms"] == 700.0 and report["simulator_loop_lags_over_500ms"] == 1
    assert report["simulator_gc_pause_max_ms"] == 50.0


def test_stats_reset_starts_a_measurement_after_a_warm_up():
    """``--stats-after``: what was counted during the warm-up is gone, and counting goes on."""
    stats = Stats()
    stats.record("config", True, 20.0)
    stats.record("log", False, 0.5, "TimeoutError")
    stats.transport_errors += 1
    stats.reset()
    assert stats.total_requests == 0 and stats.total_failures == 0 and stats.transport_errors == 0
    assert stats.latency_percentile(99) == 0.0 and stats.last_errors == []
    stats.record("distributed/read", True, 0.004)
    assert stats.as_dict()["requests"] == {"distributed/read": 1}
    assert stats.latency_percentile(99) <= 0.005
