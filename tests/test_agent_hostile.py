"""Hostile agents: what an attacker or a broken agent sends must cost little and break nothing.

Each test here reproduces a defect found by fuzzing the agent API (issue 8) and would have
failed before its fix.
"""

from __future__ import annotations

import gzip
import json
import logging
import tracemalloc

import pytest

from agentapi import errorlog
from campaigns import services
from campaigns.models import CampaignResult, ResultState
from fleet.logformat import SingleLineFormatter
from hosts.models import Host
from tests.agent import Agent

pytestmark = pytest.mark.django_db

TEN_MB = 10 * 1024 * 1024


def post(client, endpoint: str, data: bytes, **extra):
    return client.post(f"/api/osquery/{endpoint}", data=data, content_type="application/json", **extra)


def peak_bytes(call) -> tuple[object, int]:
    """Run ``call`` and return its result and the peak of Python memory it allocated."""
    tracemalloc.start()
    try:
        result = call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


# --- bounded cost before authentication -----------------------------------------------------------


def test_an_unauthenticated_gzip_bomb_is_refused_before_it_is_parsed(client, agent):
    inflated = b'{"node_key": "not-a-key", "log_type": "status", "data": [' + b"{}," * (TEN_MB // 3 - 30)
    inflated += b"{}]}"
    bomb = gzip.compress(inflated, compresslevel=9)
    assert len(bomb) < 64 * 1024
    response, peak = peak_bytes(lambda: post(client, "log", bomb, HTTP_CONTENT_ENCODING="gzip"))
    assert response.status_code == 401
    assert response.json()["node_invalid"] is True
    # The inflated bytes (10 MB) and little else: parsing them would have cost about 280 MB.
    assert peak < 3 * len(inflated), peak


def test_a_large_body_without_any_credential_is_refused_unparsed(client, agent):
    body = b'{"log_type": "status", "data": [' + b"[]," * 100_000 + b"[]]}"
    response, peak = peak_bytes(lambda: post(client, "log", body))
    assert response.status_code == 401 and response.json()["error"] == "missing node key"
    assert peak < 4 * len(body)


def test_a_wrong_nodekey_header_is_refused_before_the_body_is_parsed(client, agent):
    """The body (not JSON at all) is read and dropped unparsed, so the client gets the reply and
    may reuse the connection; past the drain limit the connection is closed instead."""
    response = post(client, "log", b"x" * 500_000, HTTP_AUTHORIZATION="NodeKey wrong")
    assert response.status_code == 401 and response.json()["node_invalid"] is True
    assert not response.has_header("Connection")


def test_a_wrong_nodekey_header_with_a_body_past_the_drain_limit_closes(client, agent, monkeypatch):
    from agentapi import wire

    monkeypatch.setattr(wire, "DRAIN_LIMIT", 100_000)
    response = post(client, "log", b"x" * 500_000, HTTP_AUTHORIZATION="NodeKey wrong")
    assert response.status_code == 401 and response.json()["node_invalid"] is True
    assert response["Connection"] == "close"  # the unread body must not be parsed as a request


def test_a_valid_host_cannot_send_a_body_of_a_million_tiny_objects(agent):
    body = {"node_key": agent.node_key, "log_type": "result", "data": [{}] * 300_000}
    data = gzip.compress(json.dumps(body).encode())
    response, peak = peak_bytes(lambda: post(agent.client, "log", data, HTTP_CONTENT_ENCODING="gzip"))
    assert response.status_code == 413
    assert "objects and arrays" in response.json()["error"]
    assert peak < 20 * 1024 * 1024, peak


def test_a_large_valid_body_with_its_node_key_is_still_accepted(agent, settings):
    lines = [{"name": "pack/p/q", "hostIdentifier": "h", "unixTime": 1700000000, "action": "snapshot",
              "snapshot": [{"path": "/x" * 50, "size": str(i)}]} for i in range(2000)]  # fmt: skip
    body = json.dumps({"node_key": agent.node_key, "log_type": "result", "data": lines}).encode()
    assert len(body) > 64 * 1024
    response = post(agent.client, "log", body)
    assert response.status_code == 200 and response.json() == {}


def test_a_large_enroll_needs_a_valid_secret_before_it_is_parsed(client, global_secret):
    padding = {f"t{i}": {"c": "v" * 100} for i in range(1000)}
    for secret, status in (("wrong", 401), (global_secret, 200)):
        body = {"enroll_secret": secret, "host_identifier": "big-enroll", "host_details": padding}
        response = post(client, "enroll", json.dumps(body).encode())
        assert response.status_code == status, response.content
    assert Host.objects.filter(osquery_host_id="big-enroll").count() == 1


# --- hostile values -----------------------------------------------------------------------------


@pytest.mark.parametrize("identifier", ["h" * 256, "x" * 5000, "bad\x00id"])
def test_an_unstorable_host_identifier_is_a_400_and_creates_nothing(client, global_secret, identifier):
    before = Host.objects.count()
    body = {"enroll_secret": global_secret, "host_identifier": identifier, "host_details": {}}
    response = post(client, "enroll", json.dumps(body).encode())
    assert response.status_code == 400
    assert response.json()["error"].startswith("enroll failed: host identifier")
    assert "node_invalid" not in response.json()
    assert Host.objects.count() == before


@pytest.mark.parametrize(
    "value", ["1e400", "inf", "-inf", "nan", "-1", "99999999999999999999999999", "9" * 5000, "4294967296"]
)
def test_out_of_range_vitals_are_clamped_not_500(client, global_secret, value):
    agent = Agent(client, identifier=f"vitals-{len(value)}-{value[:4]}")
    agent.details["system_info"].update(
        {"physical_memory": value, "cpu_physical_cores": value, "cpu_logical_cores": value}
    )
    agent.enroll(global_secret)
    write = {
        "queries": {
            "fleet_detail_query_uptime": [{"total_seconds": value}],
            "fleet_detail_query_system_info": [{"physical_memory": value, "cpu_logical_cores": value}],
            "fleet_detail_query_osquery_flags": [
                {"name": "distributed_interval", "value": value},
                {"name": "config_tls_refresh", "value": value},
                {"name": "logger_tls_period", "value": value},
            ],
        },
        "statuses": {},
    }
    response = agent.authed("distributed/write", write)
    assert response.status_code == 200, response.content
    for endpoint in ("config", "distributed/read"):
        assert agent.authed(endpoint).status_code == 200
    host = Host.objects.get(osquery_host_id=agent.identifier)
    assert -(2**63) <= host.memory < 2**63 and -(2**63) <= host.uptime < 2**63
    assert 0 <= host.cpu_logical_cores < 2**31 and 0 <= host.distributed_interval < 2**31
    assert not Host.objects.filter(node_key_hash__isnull=True).exists()


@pytest.mark.parametrize("unix_time", [10**30, -(10**30), "9" * 400, 1e300, "inf", None, [1]])
def test_a_log_line_with_an_absurd_unixtime_is_accepted(agent, unix_time):
    line = {"name": "pack/p/q", "unixTime": unix_time, "action": "snapshot", "snapshot": [{"a": "1"}]}
    response = agent.authed("log", {"log_type": "result", "data": [line]})
    assert response.status_code == 200, response.content


@pytest.mark.parametrize("value", [123, ["ubuntu"], {"x": 1}, None, True, 1.5])
def test_a_non_string_detail_value_does_not_poison_the_hosts_next_check_ins(agent, value):
    row = {"name": "Ubuntu", "version": "22.04", "platform": value, "platform_like": value}
    write = {"queries": {"fleet_detail_query_os_version": [row]}, "statuses": {}}
    assert agent.authed("distributed/write", write).status_code == 200
    for _ in range(2):
        response = agent.authed("config")
        assert response.status_code == 200, response.content
        assert "error" not in response.json()
        assert agent.authed("distributed/read").status_code == 200


def test_a_deeply_nested_live_query_row_is_stored_not_silently_dropped(agent, django_user_model):
    admin = django_user_model.objects.create_superuser("admin", "a@example.com", "pw")
    agent.authed("distributed/read")
    campaign = services.create_campaign(admin, "SELECT * FROM os_version", {"all": True})
    nested: object = "leaf"
    for _ in range(40):
        nested = {"n": nested}
    name = f"fleet_distributed_query_{campaign.id}"
    row = {"deep": nested, "n": 7, "ok": "yes"}
    response = agent.authed("distributed/write", {"queries": {name: [row]}, "statuses": {name: 0}})
    assert response.status_code == 200
    result = CampaignResult.objects.get(campaign=campaign)
    assert result.state == ResultState.ROWS
    row = result.rows[0]
    assert row["ok"] == "yes" and row["n"] == "7"
    assert json.loads(row["deep"]) == nested  # kept, as osquery's string cells are


# --- what an agent can make the server log -----------------------------------------------------


def test_agent_text_cannot_forge_log_lines():
    formatter = SingleLineFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    record = logging.LogRecord(
        "agentapi.views", logging.INFO, __file__, 1, "host %s: detail query failed: %s",
        (7, "boom\r\n2026-12-04 12:00:00,000 ERROR fleet forged\x00"), None,
    )  # fmt: skip
    text = formatter.format(record)
    assert "\n" not in text and "\r" not in text and "\x00" not in text
    assert "\\n2026-12-04" in text


def test_a_storm_of_bad_requests_is_summarised_not_logged_one_by_one(client, agent, caplog):
    errorlog.flush()
    with caplog.at_level(logging.INFO):
        for i in range(200):
            post(client, "distributed/read", json.dumps({"node_key": f"bad-{i}\n"}).encode())
            post(client, "log", b"{not json")
    per_request = [r for r in caplog.records if r.name == "django.request"]
    assert per_request == []
    counts = errorlog.flush()
    assert counts[(401, "invalid node key")] == 200
    assert sum(n for (status, _), n in counts.items() if status == 400) == 200
    assert any(r.name == "agentapi.errors" and "400 client errors" in r.getMessage() for r in caplog.records)


def test_the_summary_is_logged_at_most_once_a_minute(caplog):
    errorlog.flush()  # what earlier tests counted
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="agentapi.errors"):
        start = 1000.0
        errorlog._since = start
        for i in range(500):
            errorlog.record("/api/osquery/log", 400, f"kind {i % 3}", now=start + i * 0.1)
    summaries = [r for r in caplog.records if r.name == "agentapi.errors"]
    assert len(summaries) == 0  # 50 s: not yet
    errorlog.record("/api/osquery/log", 400, "kind 0", now=start + 61)
    summaries = [r for r in caplog.records if r.name == "agentapi.errors"]
    assert len(summaries) == 1 and "501 client errors" in summaries[0].getMessage()


# --- replies osquery can read ------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type, data",
    [
        ("multipart/form-data; boundary=xyz", b"--xyz\r\nContent-Disposition: form-data; name=a\r\n\r\nb"),
        ("multipart/form-data", b"garbage"),
        ("application/x-www-form-urlencoded", b"node_key=%ZZ&x"),
    ],
)
def test_form_bodies_get_a_json_error(agent, content_type, data):
    response = agent.client.post("/api/osquery/log", data=data, content_type=content_type)
    assert response.status_code == 400
    assert response.json()["error"]


def test_a_host_header_outside_allowed_hosts_gets_a_json_error(agent, settings):
    settings.ALLOWED_HOSTS = ["fleet.example.com"]
    response = agent.client.post(
        "/api/osquery/config", data=b"{}", content_type="application/json", HTTP_HOST="evil.example"
    )
    assert response.status_code == 400
    assert response.json()["error"]


def test_a_413_reads_what_is_left_of_the_body_and_keeps_the_connection(agent, settings):
    """The client, still sending, must get the reply: closing with a body unread resets the
    connection and loses it (found by the fuzzer against granian)."""
    settings.OSQUERY = {**settings.OSQUERY, "MAX_LOG_SIZE": 1000}
    response = post(agent.client, "log", b'{"node_key": "x", "pad": "' + b"a" * 2000 + b'"}')
    assert response.status_code == 413 and response.json()["error"]
    assert not response.has_header("Connection")


def test_a_413_past_the_drain_limit_closes_the_connection(agent, settings, monkeypatch):
    from agentapi import wire

    monkeypatch.setattr(wire, "DRAIN_LIMIT", 1500)
    settings.OSQUERY = {**settings.OSQUERY, "MAX_LOG_SIZE": 1000}
    response = post(agent.client, "log", b'{"node_key": "x", "pad": "' + b"a" * 2000 + b'"}')
    assert response.status_code == 413 and response.json()["error"]
    assert response["Connection"] == "close"  # the unread rest must not be parsed as a request


@pytest.mark.parametrize("suffix", ["²", "9" * 5000, "1٣", "-1", ""])
def test_odd_query_ids_in_a_write_are_ignored_not_500(agent, suffix):
    names = [f"fleet_distributed_query_{suffix}", f"fleet_label_query_{suffix}"]
    write = {"queries": {n: [{"a": "1"}] for n in names}, "statuses": {n: 0 for n in names}}
    response = agent.authed("distributed/write", write)
    assert response.status_code == 200 and response.json() == {}


@pytest.mark.parametrize("unix_time", ["²", "١٢٣", "9" * 30])
def test_a_log_line_with_non_ascii_digits_in_unixtime_is_accepted(agent, unix_time):
    line = {"name": "pack/p/q", "unixTime": unix_time, "action": "snapshot", "snapshot": [{"a": "1"}]}
    assert agent.authed("log", {"log_type": "result", "data": [line]}).status_code == 200
