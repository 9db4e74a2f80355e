"""The check-in at Django's floor: the node-key cache lives while the host is active, every input of
the cached state drops or refreshes it through its real write path, a miss is one query, and the
agent endpoints' short path keeps the protections they had (docs/architecture.md, "The check-in
path")."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache, caches
from django.core.cache.backends.locmem import LocMemCache
from django.urls import Resolver404, resolve
from rest_framework.test import APIClient

from agentapi.endpoint import NODE_KEY_CACHE_HEADER
from fleet.change_stamp import ChangeStamp
from fleet.request_metrics import AGENT_REQUESTS
from hosts import labels, nodekeys, services
from hosts.models import EnrollSecret, Host, Label, LabelMembership
from tests.agent import Agent
from tests.factories import api_for

pytestmark = pytest.mark.django_db

LOCAL_CACHE = isinstance(caches["default"], LocMemCache)
needs_local_cache = pytest.mark.skipif(
    not LOCAL_CACHE, reason="a fake clock cannot age Redis keys; the embedded default's cache only"
)
DAY = 24 * 3600
HOSTS = "/admin/hosts/host/"


def key_of(agent: Agent) -> str:
    return nodekeys.cache_key(nodekeys.hash_node_key(agent.node_key))


def host_of(agent: Agent) -> Host:
    return Host.objects.get(osquery_host_id=agent.identifier)


def remaining_lifetime(key: str) -> float:
    """Seconds until the cache drops ``key``, on either backend."""
    backend = caches["default"]
    full = backend.make_and_validate_key(key)
    if isinstance(backend, LocMemCache):
        return backend._expire_info[full] - time.time()
    return backend._cache.get_client(full).ttl(full)


def answer_details(agent: Agent) -> None:
    """Answer the pending detail queries, so check-ins are in their steady state (nothing due)."""
    queries = agent.authed("distributed/read").json()["queries"]
    rows = {name: [] for name in queries}
    response = agent.authed("distributed/write", {"queries": rows, "statuses": {n: 0 for n in rows}})
    assert response.status_code == 200 and response.json() == {}
    assert agent.authed("distributed/read").json() == {"queries": {}, "discovery": {}}


@pytest.fixture
def clock(monkeypatch):
    """Move this process's wall clock (the local-memory cache's expiry reads it too)."""
    real = time.time
    offset = {"seconds": 0.0}
    monkeypatch.setattr(time, "time", lambda: real() + offset["seconds"])

    def advance(seconds: float) -> None:
        offset["seconds"] += seconds
        monkeypatch.setattr(nodekeys, "_next_upkeep", 0.0)

    return advance


@pytest.fixture
def admin_api(db) -> APIClient:
    return api_for(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))


# --- lifetime ------------------------------------------------------------------------------------


def test_the_entry_outlives_the_old_180_s_lifetime(agent):
    # A new host is cached for good at enrolment: no process can hold a stale state of a new key
    # (its builtin labels are set in the same INSERT's transaction, with no cache drop).
    assert remaining_lifetime(key_of(agent)) > DAY - 60
    cache.delete(key_of(agent))  # as when evicted
    nodekeys.drop_local_copies()  # and this process's copy with it (an eviction reaches none)
    agent.authed("distributed/read")
    assert remaining_lifetime(key_of(agent)) > DAY - 60


@needs_local_cache
def test_a_host_checking_in_every_60_s_never_misses(agent, clock, store_synced, django_assert_num_queries):
    answer_details(agent)
    misses = nodekeys.MISSES
    for _ in range(10):  # ten minutes, past the old lifetime three times over
        clock(60)
        with django_assert_num_queries(0):
            nodekeys.lookup(agent.node_key)
    assert misses == nodekeys.MISSES


def test_an_old_entry_is_renewed_once(agent, monkeypatch):
    agent.authed("distributed/read")
    key = key_of(agent)
    state = nodekeys.lookup(agent.node_key)
    cache.set(key, (time.time() - 13 * 3600, state, True), 600)  # cached 13 h ago, 10 min left
    nodekeys.drop_local_copies()  # written behind nodekeys' back: this process's copy is older
    touched = []
    real_touch = cache.touch
    monkeypatch.setattr(cache, "touch", lambda *a, **k: touched.append(a) or real_touch(*a, **k))
    assert nodekeys.lookup(agent.node_key) == state
    assert remaining_lifetime(key) > DAY - 60  # a day again from now
    nodekeys.lookup(agent.node_key)
    assert len(touched) == 1  # once per half-lifetime, not per check-in


@needs_local_cache
def test_a_renewed_entry_lives_on_and_a_silent_host_expires(agent, clock, django_assert_num_queries):
    answer_details(agent)
    clock(13 * 3600)
    with django_assert_num_queries(0):
        nodekeys.lookup(agent.node_key)  # renewed
    clock(20 * 3600)  # 33 h after it was cached: alive because it was renewed
    with django_assert_num_queries(0):
        nodekeys.lookup(agent.node_key)
    clock(DAY + 60)  # then a day without a check-in
    with django_assert_num_queries(1):
        nodekeys.lookup(agent.node_key)


# --- one query on a miss, none on a hit -----------------------------------------------------------


@pytest.fixture
def store_synced(settings):
    """The live-query store re-reads its campaigns once a second: not within these tests."""
    settings.LIVE_QUERY = {**settings.LIVE_QUERY, "ACTIVE_CACHE_SECONDS": 3600.0}


def test_a_miss_is_one_query_with_every_label_and_a_hit_is_none(
    agent, store_synced, django_assert_num_queries
):
    answer_details(agent)
    host = host_of(agent)
    pets = [
        labels.create_label(name=f"pets {i}", label_membership_type="manual", hosts=[host.pk])
        for i in range(3)
    ]
    expected = tuple(sorted(LabelMembership.objects.filter(host=host).values_list("label_id", flat=True)))
    assert {p.pk for p in pets} <= set(expected)
    agent.authed("distributed/read")  # warm the rest (dynamic labels, live-query store)
    cache.clear()
    with django_assert_num_queries(1):
        assert agent.authed("distributed/read").json() == {"queries": {}, "discovery": {}}
    assert nodekeys.lookup(agent.node_key).label_ids == expected
    with django_assert_num_queries(0):
        assert agent.authed("distributed/read").json() == {"queries": {}, "discovery": {}}


def test_a_host_in_no_label_and_an_unknown_key(agent, client, django_assert_num_queries):
    LabelMembership.objects.filter(host=host_of(agent)).delete()
    nodekeys.forget([host_of(agent).node_key_hash])
    with django_assert_num_queries(1):
        assert nodekeys.lookup(agent.node_key).label_ids == ()
    with django_assert_num_queries(1):
        assert nodekeys.lookup("no-such-key") is None


# --- every input of the state, through its real write path ----------------------------------------


def test_label_membership_from_distributed_write(client, global_secret):
    agent = Agent(client, "uuid-labels")
    agent.enroll(global_secret)
    label = labels.create_label(name="Has Chrome", query="SELECT 1 FROM apps WHERE name = 'Chrome.app'")
    queries = agent.authed("distributed/read").json()["queries"]
    name = f"{labels.LABEL_PREFIX}{label.pk}"
    assert name in queries and label.pk not in nodekeys.lookup(agent.node_key).label_ids
    rows = {n: [] for n in queries} | {name: [{"1": "1"}]}
    agent.authed("distributed/write", {"queries": rows, "statuses": {n: 0 for n in rows}})
    assert label.pk in nodekeys.lookup(agent.node_key).label_ids
    assert agent.authed("distributed/read").json() == {"queries": {}, "discovery": {}}  # labels fresh


def test_manual_label_membership_through_rest(agent, admin_api):
    host = host_of(agent)
    label = labels.create_label(name="VIP", label_membership_type="manual", hosts=[])
    assert label.pk not in nodekeys.lookup(agent.node_key).label_ids
    response = admin_api.patch(f"/api/v1/labels/{label.pk}/", {"hosts": [host.pk]}, format="json")
    assert response.status_code == 200
    assert label.pk in nodekeys.lookup(agent.node_key).label_ids
    assert admin_api.patch(f"/api/v1/labels/{label.pk}/", {"hosts": []}, format="json").status_code == 200
    assert label.pk not in nodekeys.lookup(agent.node_key).label_ids


def test_label_deleted_through_rest(agent, admin_api):
    label = labels.create_label(name="Gone", label_membership_type="manual", hosts=[host_of(agent).pk])
    assert label.pk in nodekeys.lookup(agent.node_key).label_ids
    assert admin_api.delete(f"/api/v1/labels/{label.pk}/").status_code == 204
    assert label.pk not in nodekeys.lookup(agent.node_key).label_ids


def test_builtin_labels_installed(agent):
    Label.objects.filter(label_type="builtin").delete()
    nodekeys.forget([host_of(agent).node_key_hash])
    before = nodekeys.lookup(agent.node_key).label_ids
    labels.ensure_builtin_labels()  # as after a migration that adds builtins
    after = nodekeys.lookup(agent.node_key).label_ids
    assert set(after) - set(before)  # All Hosts, macOS...


def test_team_transfer_through_the_console(agent, admin_client, team):
    from hosts.services import set_agent_options

    set_agent_options(team, {"config": {"options": {"distributed_interval": 30}}})
    assert agent.authed("config").json()["options"]["distributed_interval"] == 10
    data = {"action": "transfer_hosts", "_selected_action": [host_of(agent).pk], "index": 0}
    assert admin_client.post(HOSTS, {**data, "team": team.pk, "apply": "Transfer"}).status_code == 302
    assert nodekeys.lookup(agent.node_key).team_id == team.pk
    assert agent.authed("config").json()["options"]["distributed_interval"] == 30


def test_team_deleted_through_rest(agent, admin_api, team):
    services.transfer_hosts([host_of(agent).pk], team)
    assert nodekeys.lookup(agent.node_key).team_id == team.pk
    assert admin_api.delete(f"/api/v1/teams/{team.pk}/").status_code == 204
    assert nodekeys.lookup(agent.node_key).team_id is None


def test_team_deleted_by_command(agent, team):
    from django.core.management import call_command

    services.transfer_hosts([host_of(agent).pk], team)
    assert nodekeys.lookup(agent.node_key).team_id == team.pk
    call_command("team", "remove", team.name, stdout=open("/dev/null", "w"))  # noqa: SIM115
    assert nodekeys.lookup(agent.node_key).team_id is None


def test_refetch_through_rest(agent, admin_api):
    answer_details(agent)
    assert not nodekeys.lookup(agent.node_key).refetch_requested
    assert admin_api.post(f"/api/v1/hosts/{host_of(agent).pk}/refetch/").status_code == 200
    assert "fleet_detail_query_os_version" in agent.authed("distributed/read").json()["queries"]


def test_details_ingested_through_distributed_write(agent):
    queries = agent.authed("distributed/read").json()["queries"]
    state = nodekeys.lookup(agent.node_key)
    assert state.refetch_requested and state.hostname == "mac-1.local"
    rows = {name: [] for name in queries}
    rows["fleet_detail_query_system_info"] = [{"hostname": "renamed.local", "uuid": agent.identifier}]
    agent.authed("distributed/write", {"queries": rows, "statuses": {n: 0 for n in rows}})
    state = nodekeys.lookup(agent.node_key)
    assert state.hostname == "renamed.local" and not state.refetch_requested
    assert state.details_due_at > time.time() + 3000


def test_intervals_served_by_config(agent, team):
    from hosts.services import set_agent_options

    set_agent_options(None, {"config": {"options": {"distributed_interval": 45, "config_refresh": 50}}})
    agent.authed("config")
    assert nodekeys.lookup(agent.node_key).intervals[:2] == (45, 50)


def test_re_enrolment_drops_the_old_key(client, global_secret):
    first = Agent(client, "uuid-again")
    first.enroll(global_secret)
    assert first.authed("distributed/read").status_code == 200
    second = Agent(client, "uuid-again")
    second.enroll(global_secret)
    stale = first.authed("distributed/read")
    assert stale.status_code == 401 and stale.json()["node_invalid"] is True
    assert second.authed("distributed/read").status_code == 200


def test_orbit_enrolment_moves_the_host_to_its_secrets_team(agent, client, team):
    EnrollSecret.objects.create(secret="orbit-team-secret", team=team)
    assert nodekeys.lookup(agent.node_key).team_id is None
    response = client.post(
        "/api/fleet/orbit/enroll",
        {"enroll_secret": "orbit-team-secret", "hardware_uuid": agent.identifier, "hostname": "mac-1.local",
         "platform": "darwin"},
        content_type="application/json",
    )  # fmt: skip
    assert response.status_code == 200, response.content
    assert nodekeys.lookup(agent.node_key).team_id == team.pk


def test_mdm_enrolment_into_another_team(agent, team):
    from mdm.devices import host_for
    from mdm.models import Enrollment

    host = host_of(agent)
    enrollment = Enrollment.objects.create(udid="udid-1", host=host)
    assert nodekeys.lookup(agent.node_key).team_id is None
    assert host_for(enrollment, team.pk).pk == host.pk
    assert nodekeys.lookup(agent.node_key).team_id == team.pk


def test_host_deleted_through_the_console(agent, admin_client):
    assert agent.authed("distributed/read").status_code == 200
    data = {"action": "delete_selected", "_selected_action": [host_of(agent).pk], "index": 0, "post": "yes"}
    assert admin_client.post(HOSTS, data).status_code == 302
    gone = agent.authed("distributed/read")
    assert gone.status_code == 401 and gone.json()["node_invalid"] is True


# --- races and outages -------------------------------------------------------------------------------


def test_a_lookup_that_read_before_a_change_cannot_cache_what_it_read(agent, team, monkeypatch):
    """The admin's transfer commits between the lookup's SELECT and its cache write."""
    cache.clear()
    real_load = nodekeys._load

    def load_then_transfer(key_hash: str):
        state = real_load(key_hash)
        monkeypatch.setattr(nodekeys, "_load", real_load)
        services.transfer_hosts([state.id], team)
        return state

    monkeypatch.setattr(nodekeys, "_load", load_then_transfer)
    assert nodekeys.lookup(agent.node_key).team_id is None  # what it read, served once
    assert nodekeys.lookup(agent.node_key).team_id == team.pk  # never cached


def test_a_forget_the_cache_did_not_take_is_done_again_when_it_is_back(agent, team, monkeypatch):
    assert nodekeys.lookup(agent.node_key).team_id is None
    down = {"now": True}
    real_set_many = cache.set_many
    monkeypatch.setattr(cache, "set_many", lambda *a, **k: None if down["now"] else real_set_many(*a, **k))
    monkeypatch.setattr(nodekeys, "_cache_down", lambda: down["now"])
    services.transfer_hosts([host_of(agent).pk], team)  # its forget is lost
    assert nodekeys.lookup(agent.node_key).team_id is None  # stale while the cache is away
    down["now"] = False
    monkeypatch.setattr(nodekeys, "_next_upkeep", 0.0)
    assert nodekeys.lookup(agent.node_key).team_id == team.pk
    assert not nodekeys._lost


@needs_local_cache
def test_another_processs_forget_reaches_a_per_process_cache(agent, team, settings):
    assert nodekeys.lookup(agent.node_key).team_id is None
    nodekeys._upkeep(time.time())  # this process has seen the stamp as it is
    Host.objects.filter(pk=host_of(agent).pk).update(team=team)  # what a manage.py command does...
    ChangeStamp(settings.OSQUERY["NODE_KEY_CHANGE_STAMP_FILE"]).bump()  # ...and its forget
    nodekeys._upkeep(time.time())
    assert nodekeys.lookup(agent.node_key).team_id == team.pk


# --- the short path keeps what protected the agent endpoints -------------------------------------------


def test_agent_replies_carry_the_same_protective_headers_as_other_pages(agent, client):
    response = agent.authed("distributed/read")
    page = client.get("/healthz")
    for header in ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options", "Referrer-Policy",
                   "Cross-Origin-Opener-Policy"):  # fmt: skip
        assert response[header] == page[header], header
    assert int(response["Content-Length"]) == len(response.content)
    assert "Set-Cookie" not in response and "Vary" not in response
    assert NODE_KEY_CACHE_HEADER not in response  # bench mode only


def test_agent_endpoints_stay_csrf_exempt_and_their_errors_json(client, agent, settings):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    response = strict.post(
        "/api/osquery/distributed/read", {"node_key": agent.node_key}, content_type="application/json"
    )
    assert response.status_code == 200
    wrong_method = client.get("/api/osquery/config")
    assert (
        wrong_method.status_code == 405 and wrong_method["Allow"] == "POST" and wrong_method.json()["error"]
    )
    unknown = client.post("/api/osquery/nothing-here", {}, content_type="application/json")
    assert unknown.status_code == 404 and unknown.json()["error"]
    settings.OSQUERY = {**settings.OSQUERY, "MAX_REQUEST_SIZE": 100}
    too_big = client.post(
        "/api/osquery/config", {"node_key": agent.node_key, "pad": "x" * 200}, content_type="application/json"
    )
    assert too_big.status_code == 413 and too_big.json()["error"]


def test_agent_endpoints_still_redirect_plain_http_in_production(agent, settings):
    from django.test import Client

    settings.SECURE_SSL_REDIRECT = True
    response = Client().post(
        "/api/osquery/config", {"node_key": agent.node_key}, content_type="application/json"
    )
    assert response.status_code == 301 and response["Location"].startswith("https://")


def test_agent_requests_are_still_counted_by_endpoint(agent):
    """fleet.request_metrics reads the route the short path resolved (both aliases are one endpoint)."""
    child = AGENT_REQUESTS.labels("osquery-distributed-read", "200")
    before = child._value.get()
    agent.authed("distributed/read")
    agent.prefix = "/api/v1/osquery"
    agent.authed("distributed/read")
    assert child._value.get() == before + 2


def test_an_exception_on_the_short_path_is_still_a_json_error(agent, monkeypatch):
    from django.test import Client

    from agentapi import middleware

    def broken(response):
        raise RuntimeError("boom")

    monkeypatch.setattr(middleware, "add_agent_headers", broken)
    response = Client(raise_request_exception=False).post(
        "/api/osquery/distributed/read", {"node_key": agent.node_key}, content_type="application/json"
    )
    assert response.status_code == 500 and response.json()["error"]


# --- bench mode -----------------------------------------------------------------------------------------


def test_bench_mode_tells_hits_from_misses(agent, settings):
    settings.BENCH_MODE = True
    cache.clear()
    assert agent.authed("distributed/read")[NODE_KEY_CACHE_HEADER] == "miss"
    assert agent.authed("distributed/read")[NODE_KEY_CACHE_HEADER] == "hit"


def test_the_floor_view_exists_only_in_bench_mode():
    with pytest.raises(Resolver404):
        resolve("/bench/floor")


def test_agent_requests_still_meet_allowed_hosts_and_disallowed_user_agents(agent, client, settings):
    import re

    settings.ALLOWED_HOSTS = ["fleet.example.com"]
    host = agent.post("config", {"node_key": agent.node_key}, HTTP_HOST="evil.example")
    assert host.status_code == 400 and host.json()["error"]
    settings.ALLOWED_HOSTS = ["testserver"]
    settings.DISALLOWED_USER_AGENTS = [re.compile(r"^BadBot")]
    refused = agent.post("config", {"node_key": agent.node_key}, HTTP_USER_AGENT="BadBot/1.0")
    assert refused.status_code == 403 and refused.json()["error"]
    assert (
        agent.post("config", {"node_key": agent.node_key}, HTTP_USER_AGENT="osquery/5.23.1").status_code
        == 200
    )
