"""distributed/write ingestion and the log endpoint (fleet-reference §1.7, §1.8)."""

from __future__ import annotations

import gzip
import json

import pytest

from hosts.models import Host
from tests.agent import Agent

pytestmark = pytest.mark.django_db

LINUX_DETAILS = {
    "fleet_detail_query_os_version": [
        {
            "name": "Ubuntu",
            "version": "22.04.4 LTS (Jammy Jellyfish)",
            "major": "22",
            "minor": "4",
            "patch": "0",
            "build": "",
            "platform": "ubuntu",
            "platform_like": "debian",
            "codename": "jammy",
            "kernel_version": "5.15.0-105-generic",
        }
    ],
    "fleet_detail_query_osquery_info": [{"version": "5.13.1", "uuid": "u"}],
    "fleet_detail_query_system_info": [
        {
            "hostname": "web-01",
            "uuid": "4C4C4544-0042",
            "cpu_type": "x86_64",
            "cpu_brand": "Intel Xeon",
            "cpu_physical_cores": "4",
            "cpu_logical_cores": "8",
            "physical_memory": "8589934592",
            "hardware_vendor": "Dell Inc.",
            "hardware_model": "PowerEdge R640",
            "hardware_serial": "-1",
            "computer_name": "web-01",
        }
    ],
    "fleet_detail_query_uptime": [{"total_seconds": "86400"}],
    "fleet_detail_query_osquery_flags": [
        {"name": "distributed_interval", "value": "15"},
        {"name": "config_refresh", "value": "30"},
        {"name": "logger_tls_period", "value": "12"},
    ],
    "fleet_detail_query_network_interface_unix": [{"address": "10.0.3.7", "mac": "00:1a:2b:3c:4d:5e"}],
}


def test_detail_results_fill_vitals_and_clear_refetch(agent):
    response = agent.authed(
        "distributed/write",
        {
            "queries": LINUX_DETAILS,
            "statuses": {n: 0 for n in LINUX_DETAILS},
            "messages": {},
            "stats": {n: {"wall_time_ms": 1} for n in LINUX_DETAILS},
        },
    )
    assert response.status_code == 200 and response.json() == {}
    host = Host.objects.get()
    assert (host.platform, host.platform_like, host.code_name) == ("ubuntu", "debian", "jammy")
    assert host.os_version == "Ubuntu 22.4.0 LTS (Jammy Jellyfish)" or host.os_version.startswith(
        "Ubuntu 22.04"
    )
    assert host.kernel_version == "5.15.0-105-generic"
    assert host.osquery_version == "5.13.1"
    assert host.hostname == "web-01" and host.hardware_vendor == "Dell Inc."
    assert host.hardware_serial == "C02TEST0001"  # "-1" from system_info is ignored
    assert (host.cpu_physical_cores, host.cpu_logical_cores, host.memory) == (4, 8, 8589934592)
    assert host.uptime == 86400
    assert (host.distributed_interval, host.config_tls_refresh, host.logger_tls_period) == (15, 30, 12)
    assert (host.primary_ip, host.primary_mac) == ("10.0.3.7", "00:1a:2b:3c:4d:5e")
    assert host.refetch_requested is False
    # Now known as Linux: the next refresh asks for the Unix network query, not the Windows one.
    Host.objects.update(refetch_requested=True)
    from hosts.services import request_refetch

    request_refetch([host.id])
    names = agent.authed("distributed/read").json()["queries"]
    assert "fleet_detail_query_network_interface_unix" in names


def test_failed_detail_query_is_skipped(agent):
    before = Host.objects.get().osquery_version
    response = agent.authed(
        "distributed/write",
        {
            "queries": {"fleet_detail_query_osquery_info": []},
            "statuses": {"fleet_detail_query_osquery_info": 1},
            "messages": {"fleet_detail_query_osquery_info": "no such table: osquery_info"},
        },
    )
    assert response.json() == {}
    assert Host.objects.get().osquery_version == before


def test_unknown_late_ids_and_legacy_shapes_are_accepted(agent):
    response = agent.authed(
        "distributed/write",
        {
            "queries": {
                "fleet_distributed_query_999": [{"a": "1"}],
                "someone_elses": "",
                "fleet_detail_query_retired_thing": [{"x": "y"}],
            },
            "statuses": {"fleet_distributed_query_999": "0", "someone_elses": "1"},
        },
    )
    assert response.status_code == 200 and response.json() == {}


def test_write_with_only_node_key_is_fine(agent):
    assert agent.authed("distributed/write").json() == {}


def _read_lines(path) -> list[dict]:
    return [json.loads(line) for line in open(path)]


def test_result_and_status_logs_are_written_as_json_lines(agent, settings):
    result = {
        "name": "pack/Global/uptime",
        "hostIdentifier": "uuid-0001",
        "calendarTime": "Sun Nov  2 05:41:27 2026 UTC",
        "unixTime": 1793598087,
        "epoch": 0,
        "counter": 0,
        "numerics": False,
        "decorations": {"host_uuid": "uuid-0001"},
        "columns": {"total_seconds": "12"},
        "action": "added",
    }
    status = {
        "hostIdentifier": "uuid-0001",
        "calendarTime": "x",
        "unixTime": 1,
        "severity": 0,
        "filename": "scheduler.cpp",
        "line": 119,
        "message": "Storing initial results",
        "version": "5.12.1",
    }
    assert agent.authed("log", {"log_type": "result", "data": [result, result]}).json() == {}
    assert agent.authed("log", {"log_type": "status", "data": [status]}).json() == {}
    assert _read_lines(settings.OSQUERY["RESULT_LOG_FILE"]) == [result, result]
    assert _read_lines(settings.OSQUERY["STATUS_LOG_FILE"]) == [status]


def test_gzip_log_body_is_accepted(agent, settings):
    line = {"name": "q", "snapshot": [{"a": "1"}], "action": "snapshot"}
    response = agent.authed("log", {"log_type": "result", "data": [line]}, gzip_body=True)
    assert response.json() == {}
    assert _read_lines(settings.OSQUERY["RESULT_LOG_FILE"]) == [line]


def test_destination_failure_returns_error_so_osquery_retries(agent, settings, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    settings.OSQUERY = {**settings.OSQUERY, "RESULT_LOG_FILE": str(blocker / "results.log")}
    response = agent.authed("log", {"log_type": "result", "data": [{"name": "q"}]})
    body = response.json()
    assert response.status_code == 413 and body["error"] and "node_invalid" not in body


def test_unknown_log_type_is_a_clear_error(agent):
    response = agent.authed("log", {"log_type": "audit", "data": []})
    assert response.status_code == 400 and "log_type" in response.json()["error"]


def test_non_object_log_lines_are_dropped_not_refused(agent, settings):
    response = agent.authed("log", {"log_type": "status", "data": [{"message": "ok"}, "garbage", 3]})
    assert response.json() == {}
    assert _read_lines(settings.OSQUERY["STATUS_LOG_FILE"]) == [{"message": "ok"}]


def test_gzip_bomb_is_refused(agent, settings):
    settings.OSQUERY = {**settings.OSQUERY, "MAX_LOG_SIZE": 100_000}
    payload = json.dumps(
        {"node_key": agent.node_key, "log_type": "result", "data": [{"x": "a" * 1_000_000}]}
    ).encode()
    response = agent.client.post(
        "/api/osquery/log",
        data=gzip.compress(payload),
        content_type="application/json",
        HTTP_CONTENT_ENCODING="gzip",
    )
    assert response.status_code == 413 and "limit" in response.json()["error"]


def test_logs_keep_working_for_a_second_agent(client, global_secret, settings):
    other = Agent(client, "uuid-2")
    other.enroll(global_secret)
    assert other.authed("log", {"log_type": "status", "data": []}).json() == {}
