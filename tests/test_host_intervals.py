"""The intervals served in a host's config become the host's intervals (Fleet's GetClientConfig).

Cases from ``server/service/osquery_test.go`` ``TestUpdateHostIntervals``; intervals are written
(distributed_interval, config_tls_refresh, logger_tls_period).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from hosts import nodekeys
from hosts.intervals import NOT_SERVED, served_by
from hosts.models import Host
from hosts.services import set_agent_options
from packs import config as osquery_config
from tests.agent import Agent

pytestmark = pytest.mark.django_db


def with_intervals(agent: Agent, intervals: tuple[int, int, int]) -> Host:
    """Give the agent's host these stored intervals, and its cached check-in state with them."""
    distributed, refresh, period = intervals
    Host.objects.update(
        distributed_interval=distributed, config_tls_refresh=refresh, logger_tls_period=period
    )
    host = Host.objects.get(osquery_host_id=agent.identifier)
    nodekeys.remember(host)
    return host


def stored(agent: Agent) -> tuple[int, int, int]:
    host = Host.objects.get(osquery_host_id=agent.identifier)
    return host.distributed_interval, host.config_tls_refresh, host.logger_tls_period


def fetch_config(agent: Agent) -> tuple[dict[str, Any], list[str]]:
    """The config the agent gets, and the SQL the request ran."""
    with CaptureQueriesContext(connection) as queries:
        response = agent.authed("config")
    assert response.status_code == 200, response.content
    return response.json(), [q["sql"] for q in queries]


FLEET_OPTIONS = {"distributed_interval": 11, "logger_tls_period": 33}


@pytest.mark.parametrize(
    ("initial", "options", "final", "updated"),
    [
        pytest.param((0, 60, 0), {**FLEET_OPTIONS, "logger_plugin": "tls"}, (11, 60, 33), True,
                     id="both_updated"),
        pytest.param((11, 60, 0), FLEET_OPTIONS, (11, 60, 33), True, id="only_logger_tls_period_updated"),
        pytest.param((0, 60, 33), FLEET_OPTIONS, (11, 60, 33), True, id="only_distributed_interval_updated"),
        pytest.param((11, 60, 0), {"logger_tls_period": 33}, (11, 60, 33), True,
                     id="fleet_not_managing_distributed_interval"),
        pytest.param((11, 60, 33), {**FLEET_OPTIONS, "config_refresh": 42}, (11, 42, 33), True,
                     id="config_refresh_also_updates"),
        pytest.param((11, 60, 33), FLEET_OPTIONS, (11, 60, 33), False, id="no_update_without_changes"),
        # Fleet reads config_refresh only: osquery takes config_tls_refresh as a flag, not an option.
        pytest.param((11, 60, 33), {"config_tls_refresh": 5}, (11, 60, 33), False,
                     id="config_tls_refresh_ignored"),
        pytest.param((11, 60, 33), {}, (11, 60, 33), False, id="no_interval_options"),
    ],
)  # fmt: skip
def test_update_host_intervals(agent, initial, options, final, updated):
    set_agent_options(None, {"config": {"options": options}})
    with_intervals(agent, initial)
    osquery_config.render_for(nodekeys.lookup(agent.node_key))  # warm: count only the request's own work
    config, queries = fetch_config(agent)
    assert config["options"] == options
    assert stored(agent) == final
    assert queries == ([queries[0]] if updated else [])
    if updated:
        assert queries[0].startswith('UPDATE "hosts_host"') or queries[0].startswith("UPDATE `hosts_host`")
    assert nodekeys.lookup(agent.node_key).intervals == final  # the cached state follows at once


def test_unchanged_intervals_cost_no_query_and_a_change_exactly_one(agent):
    """Steady state: nothing but cache reads. After a change: the UPDATE, then nothing again."""
    set_agent_options(None, {"config": {"options": {"distributed_interval": 30, "logger_tls_period": 20}}})
    agent.authed("config")  # renders the config, records (30, 0, 20)
    assert stored(agent) == (30, 0, 20)
    for _ in range(3):
        assert fetch_config(agent)[1] == []

    with_intervals(agent, (5, 0, 20))  # e.g. osquery reported other flags meanwhile
    _, queries = fetch_config(agent)
    assert len(queries) == 1 and "UPDATE" in queries[0] and "hosts_host" in queries[0]
    assert stored(agent) == (30, 0, 20)
    assert fetch_config(agent)[1] == []


def test_cached_state_carries_the_new_online_interval(agent):
    set_agent_options(None, {"config": {"options": {"distributed_interval": 11}}})
    with_intervals(agent, (0, 60, 0))
    assert nodekeys.lookup(agent.node_key).online_interval == 60 + 60
    agent.authed("config")
    state = nodekeys.lookup(agent.node_key)
    assert (state.intervals, state.online_interval) == ((11, 60, 0), 11 + 60)
    cache.clear()  # and the database agrees with what was cached
    assert nodekeys.lookup(agent.node_key).online_interval == 11 + 60


def test_default_options_are_recorded_at_the_first_config(agent):
    assert stored(agent) == (0, 0, 0)  # enrolled, nothing reported yet
    agent.authed("config")
    assert stored(agent) == (10, 0, 10)  # Fleet's default agent options


def test_team_options_are_the_ones_served(client, team, team_secret):
    set_agent_options(team, {"config": {"options": {"distributed_interval": 45, "config_refresh": 90}}})
    agent = Agent(client, "team-host")
    agent.enroll(team_secret)
    agent.authed("config")
    assert stored(agent) == (45, 90, 0)


def test_flags_reported_later_win_until_the_next_config(agent):
    set_agent_options(None, {"config": {"options": {"distributed_interval": 10}}})
    agent.authed("config")
    flags = [{"name": "distributed_interval", "value": "7"}, {"name": "config_refresh", "value": "300"}]
    name = "fleet_detail_query_osquery_flags"
    agent.authed("distributed/write", {"queries": {name: flags}, "statuses": {name: 0}})
    assert stored(agent)[:2] == (7, 300)
    agent.authed("config")
    assert stored(agent)[:2] == (10, 300)


def test_a_rendering_cached_by_an_older_release_is_rendered_again(agent):
    state = nodekeys.lookup(agent.node_key)
    key = osquery_config.inputs_for(state, osquery_config.meta(osquery_config.generation())).key(
        osquery_config.generation()
    )
    cache.set(key, b'{"options":{}}')  # what render_for cached before intervals rode along
    rendered = osquery_config.rendered_for(state)
    assert rendered.intervals == (10, None, 10) and b"distributed_interval" in rendered.body


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"distributed_interval": 11, "config_refresh": 42, "logger_tls_period": 33}, (11, 42, 33)),
        ({"distributed_interval": "60", "logger_tls_period": "60.0"}, (60, None, 60)),  # spf13/cast
        ({"distributed_interval": None, "config_refresh": True}, (0, 1, None)),
        ({"distributed_interval": 12.9}, (12, None, None)),
        ({"distributed_interval": -1, "config_refresh": "-5", "logger_tls_period": "abc"}, NOT_SERVED),
        ({"distributed_interval": float("inf"), "config_refresh": float("nan")}, NOT_SERVED),
        ({"distributed_interval": [1], "config_refresh": {"a": 1}, "logger_tls_period": ""}, NOT_SERVED),
        ({"distributed_interval": 10**40, "logger_tls_period": "9" * 5000}, (2**31 - 1, None, 2**31 - 1)),
        ({"config_tls_refresh": 5}, NOT_SERVED),
    ],
)
def test_served_intervals_are_read_as_fleet_casts_them(options, expected):
    assert served_by({"options": options}) == expected


@pytest.mark.parametrize("config", [None, [], {}, {"options": None}, {"options": [1]}])
def test_a_config_without_options_serves_no_interval(config):
    assert served_by(config) == NOT_SERVED
