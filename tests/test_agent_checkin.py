"""Check-in (distributed/read), config and the hot path's cost (fleet-reference §1.5, §1.6, §2)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from hosts import seen
from hosts.models import Host, HostSeenTime
from hosts.services import request_refetch
from tests.agent import Agent

pytestmark = pytest.mark.django_db


def _answer_details(agent: Agent, queries: dict[str, str]) -> None:
    rows = {name: [] for name in queries}
    rows["fleet_detail_query_osquery_flags"] = [
        {"name": "distributed_interval", "value": "10"},
        {"name": "config_tls_refresh", "value": "10"},
        {"name": "logger_tls_period", "value": "10"},
    ]
    response = agent.authed("distributed/write", {"queries": rows, "statuses": {n: 0 for n in rows}})
    assert response.status_code == 200 and response.json() == {}


def test_new_host_gets_detail_queries_with_discovery(agent):
    body = agent.authed("distributed/read").json()
    assert "error" not in body
    names = set(body["queries"])
    assert {
        "fleet_detail_query_os_version",
        "fleet_detail_query_osquery_info",
        "fleet_detail_query_system_info",
        "fleet_detail_query_osquery_flags",
        "fleet_detail_query_uptime",
        "fleet_detail_query_network_interface_unix",
    } <= names
    assert "fleet_detail_query_network_interface_windows" not in names
    assert set(body["discovery"]) == names
    assert all(isinstance(sql, str) and sql for sql in body["queries"].values())
    assert "accelerate" not in body  # hostname and platform are known from host_details


def test_details_not_resent_once_ingested_until_refetch(agent):
    _answer_details(agent, agent.authed("distributed/read").json()["queries"])
    assert agent.authed("distributed/read").json() == {"queries": {}, "discovery": {}}

    request_refetch([Host.objects.get().id])
    assert agent.authed("distributed/read").json()["queries"]


def test_details_due_again_after_interval_with_stable_jitter(agent, settings):
    _answer_details(agent, agent.authed("distributed/read").json()["queries"])
    Host.objects.update(detail_updated_at=timezone.now() - timedelta(hours=1, minutes=7))
    cache.clear()
    assert agent.authed("distributed/read").json()["queries"]  # 1 h + at most 10 % jitter passed


def test_accelerate_while_hostname_or_platform_unknown(client, global_secret):
    agent = Agent(client, "uuid-bare")
    agent.details = {}
    agent.enroll(global_secret)
    body = agent.authed("distributed/read").json()
    assert body["accelerate"] == 10
    # Without a known platform only platform-independent detail queries go out.
    assert "fleet_detail_query_system_info" in body["queries"]
    assert "fleet_detail_query_network_interface_unix" not in body["queries"]


def test_node_key_in_authorization_header_only(agent):
    response = agent.post("distributed/read", {}, header_key=True)
    assert response.status_code == 200 and "queries" in response.json()


@pytest.mark.parametrize("body", [{}, {"node_key": ""}, {"node_key": "nope"}, {"node_key": 12}])
def test_unknown_or_missing_node_key_is_node_invalid(client, global_secret, body):
    for endpoint in ("config", "distributed/read", "distributed/write", "log"):
        response = Agent(client).post(endpoint, body)
        assert response.status_code == 401, endpoint
        assert response.json()["node_invalid"] is True and response.json()["error"]


def test_database_outage_is_not_node_invalid(client, agent):
    cache.clear()  # force the node-key lookup to reach the database

    def outage(execute, sql, params, many, context):
        raise OperationalError("server has gone away")

    with connection.execute_wrapper(outage):
        response = agent.authed("distributed/read")
    assert response.status_code == 503
    assert response.json()["error"] and "node_invalid" not in response.json()


def test_config_returns_fleet_default_agent_options(agent):
    response = agent.authed("config")
    assert response.status_code == 200
    config = response.json()
    assert "error" not in config
    assert config["options"]["distributed_interval"] == 10
    assert config["options"]["logger_tls_period"] == 10
    assert config["options"]["pack_delimiter"] == "/"
    assert config["options"]["distributed_plugin"] == "tls"
    assert config["options"]["disable_distributed"] is False
    assert "SELECT uuid AS host_uuid FROM system_info;" in config["decorators"]["load"]


def test_team_agent_options_replace_global_and_platform_override_applies(client, team, team_secret):
    from hosts.services import set_agent_options

    set_agent_options(
        team,
        {
            "config": {"options": {"distributed_interval": 30}},
            "overrides": {"platforms": {"darwin": {"options": {"distributed_interval": 5}}}},
        },
    )
    mac = Agent(client, "uuid-mac")
    mac.enroll(team_secret)
    assert mac.authed("config").json() == {"options": {"distributed_interval": 5}}
    linux = Agent(client, "uuid-lin", platform="ubuntu")
    linux.details["os_version"]["platform_like"] = "debian"
    linux.enroll(team_secret)
    assert linux.authed("config").json() == {"options": {"distributed_interval": 30}}


def test_config_cache_invalidated_when_global_options_change(agent):
    from hosts.services import set_agent_options

    assert agent.authed("config").json()["options"]["distributed_interval"] == 10
    set_agent_options(None, {"config": {"options": {"distributed_interval": 20}}})
    assert agent.authed("config").json()["options"]["distributed_interval"] == 20


def _enroll_fleet(client, secret: str, count: int) -> list[Agent]:
    agents = [Agent(client, f"fleet-{i:05d}", hostname=f"h{i}.local", serial=f"S{i}") for i in range(count)]
    for a in agents:
        a.enroll(secret)
    return agents


@pytest.mark.parametrize("fleet_size", [10, 1000])
def test_checkin_query_count_is_constant(client, global_secret, fleet_size):
    agents = _enroll_fleet(client, global_secret, fleet_size)
    probe = agents[fleet_size // 2]
    _answer_details(probe, probe.authed("distributed/read").json()["queries"])

    with CaptureQueriesContext(connection) as warm:
        assert probe.authed("distributed/read").json() == {"queries": {}, "discovery": {}}
    cache.clear()
    with CaptureQueriesContext(connection) as cold:
        probe.authed("distributed/read")
    assert len(warm) == 0, [q["sql"] for q in warm]
    assert len(cold) == 1  # one indexed lookup: the host by its node key hash, joined to its label ids


def test_seen_times_are_buffered_and_written_in_one_batch(client, global_secret):
    agents = _enroll_fleet(client, global_secret, 5)
    seen.flush()
    HostSeenTime.objects.all().delete()
    with CaptureQueriesContext(connection) as checkins:
        for a in agents:
            a.authed("distributed/read")
    assert not any("seen" in q["sql"] for q in checkins)
    with CaptureQueriesContext(connection) as flush:
        assert seen.flush() == 5
    assert len(flush) == 1
    assert HostSeenTime.objects.count() == 5


def test_seen_flush_happens_inline_when_due(agent, settings):
    settings.OSQUERY = {**settings.OSQUERY, "SEEN_FLUSH_INTERVAL": 0.0}
    HostSeenTime.objects.all().delete()
    agent.authed("distributed/read")
    row = HostSeenTime.objects.get()
    assert (row.offline_after - row.seen_time).total_seconds() == 60  # intervals unknown yet: buffer only
