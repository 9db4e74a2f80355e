"""REST API for packs and their scheduled queries: targets, osquery's limits, roles, and the config."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from hosts.choices import Role
from hosts.models import Label, Team
from packs.models import Pack, ScheduledQuery
from queries.models import Query
from tests.agent import Agent
from tests.factories import api_for, make_host, user_with_role

pytestmark = pytest.mark.django_db
URL = "/api/v1/packs/"


@pytest.fixture
def admin_api():
    return api_for(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))


@pytest.fixture
def query(db) -> Query:
    return Query.objects.create(name="ports", query="SELECT * FROM listening_ports")


@pytest.fixture
def pack(db) -> Pack:
    return Pack.objects.create(name="monitoring", description="osquery health")


def scheduled_url(pack: Pack, sid: int | None = None) -> str:
    return f"{URL}{pack.pk}/scheduled/" + (f"{sid}/" if sid else "")


# --- packs -------------------------------------------------------------------------------------------------


def test_create_a_pack_with_targets_and_it_reaches_the_targeted_hosts_config(
    admin_api, client, team_secret, team
):
    label = Label.objects.create(name="Servers", query="SELECT 1")
    other = make_host("other", platform="darwin")
    response = admin_api.post(
        URL,
        {
            "name": "security",
            "description": "  watch things ",
            "platform": "darwin, linux",
            "targets": {"teams": [team.pk], "labels": [label.pk], "hosts": [other.pk]},
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["targets"] == {"hosts": [other.pk], "labels": [label.pk], "teams": [team.pk]}
    assert body["platform"] == "darwin,linux" and body["description"] == "watch things"
    assert body["query_count"] == 0

    q = Query.objects.create(name="users", query="SELECT * FROM users")
    added = admin_api.post(f"{URL}{body['id']}/scheduled/", {"query_id": q.pk, "interval": 60}, format="json")
    assert added.status_code == 201, added.content
    agent = Agent(client, "mac-in-team")
    agent.enroll(team_secret)
    config = agent.authed("config").json()
    assert config["packs"]["security"] == {
        "platform": "darwin,linux",
        "queries": {"users": {"query": "SELECT * FROM users", "interval": 60}},
    }


def test_partial_update_keeps_target_kinds_left_out(admin_api, pack, team):
    host = make_host("h1")
    label = Label.objects.create(name="L", query="SELECT 1")
    pack.target_hosts.add(host)
    response = admin_api.patch(f"{URL}{pack.pk}/", {"targets": {"labels": [label.pk]}}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["targets"] == {"hosts": [host.pk], "labels": [label.pk], "teams": []}
    response = admin_api.patch(
        f"{URL}{pack.pk}/", {"targets": {"hosts": []}, "disabled": True}, format="json"
    )
    assert response.json()["targets"]["hosts"] == [] and response.json()["disabled"] is True


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "Global"}, "name"),
        ({"name": "team-12"}, "name"),
        ({"name": "monitoring"}, "name"),  # taken
        ({"name": ""}, "name"),
        ({"name": "x", "platform": "amiga"}, "platform"),
        ({"name": "x", "targets": {"hosts": [424242]}}, "targets"),
        ({"name": "x", "targets": {"labels": ["abc"]}}, "targets"),
        ({"name": "x", "targets": []}, "targets"),
    ],
)
def test_bad_packs_are_400s(admin_api, pack, payload, field):
    response = admin_api.post(URL, payload, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]


def test_unknown_target_ids_are_named(admin_api):
    response = admin_api.post(URL, {"name": "x", "targets": {"teams": [777, 778]}}, format="json")
    assert "777, 778" in str(response.json()["errors"]["targets"])


def test_list_search_filter_and_delete(admin_api, pack, query):
    Pack.objects.create(name="inventory", disabled=True)
    ScheduledQuery.objects.create(pack=pack, query=query, name="ports", interval=60)
    listed = admin_api.get(URL).json()["results"]
    assert [(p["name"], p["query_count"]) for p in listed] == [("inventory", 0), ("monitoring", 1)]
    assert [p["name"] for p in admin_api.get(URL, {"search": "health"}).json()["results"]] == ["monitoring"]
    assert [p["name"] for p in admin_api.get(URL, {"disabled": "true"}).json()["results"]] == ["inventory"]
    assert admin_api.delete(f"{URL}{pack.pk}/").status_code == 204
    assert not ScheduledQuery.objects.exists()


# --- scheduled queries ------------------------------------------------------------------------------------


def test_scheduled_query_crud(admin_api, pack, query):
    response = admin_api.post(
        scheduled_url(pack),
        {
            "query_id": query.pk,
            "interval": 300,
            "snapshot": True,
            "shard": 50,
            "platform": "posix",
            "version": "5.1",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "ports" and body["pack_id"] == pack.pk  # the query's name by default
    assert body["query"] == "SELECT * FROM listening_ports" and body["query_name"] == "ports"
    sid = body["id"]
    assert [s["id"] for s in admin_api.get(scheduled_url(pack)).json()["results"]] == [sid]
    changed = admin_api.patch(
        scheduled_url(pack, sid), {"interval": 600, "name": "open ports"}, format="json"
    )
    assert changed.status_code == 200 and changed.json()["interval"] == 600
    assert ScheduledQuery.objects.get(pk=sid).name == "open ports"
    assert admin_api.delete(scheduled_url(pack, sid)).status_code == 204
    assert not ScheduledQuery.objects.exists()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"interval": 0}, "interval"),
        ({"interval": 604801}, "interval"),
        ({"interval": 60, "shard": 101}, "shard"),
        ({"interval": 60, "platform": "os/2"}, "platform"),
        ({"interval": 60, "version": "latest"}, "version"),
        ({"interval": 60, "name": "taken"}, "name"),
        ({"interval": 60, "query_id": 98765}, "query_id"),
    ],
)
def test_bad_scheduled_queries_are_400s(admin_api, pack, query, payload, field):
    ScheduledQuery.objects.create(pack=pack, query=query, name="taken", interval=60)
    response = admin_api.post(scheduled_url(pack), {"query_id": query.pk, **payload}, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]


def test_scheduled_queries_belong_to_their_pack(admin_api, pack, query):
    other = Pack.objects.create(name="other")
    sid = ScheduledQuery.objects.create(pack=pack, query=query, name="ports", interval=60).pk
    assert admin_api.get(scheduled_url(other, sid)).status_code == 404
    assert admin_api.get(f"{URL}99999/scheduled/").status_code == 404
    assert admin_api.post(f"{URL}99999/scheduled/", {"query_id": query.pk, "interval": 1}).status_code == 404


# --- roles --------------------------------------------------------------------------------------------------


def test_global_observer_reads_packs_but_cannot_change_them(pack, query):
    api = api_for(user_with_role("obs", Role.OBSERVER))
    assert api.get(URL).status_code == 200
    assert api.get(scheduled_url(pack)).status_code == 200
    assert api.post(URL, {"name": "x"}, format="json").status_code == 403
    assert api.patch(f"{URL}{pack.pk}/", {"disabled": True}, format="json").status_code == 403
    assert api.post(scheduled_url(pack), {"query_id": query.pk, "interval": 1}).status_code == 403


@pytest.mark.parametrize("role", [Role.MAINTAINER, Role.GITOPS])
def test_global_maintainers_and_gitops_write_packs(role, pack):
    api = api_for(user_with_role("writer", role))
    assert api.patch(f"{URL}{pack.pk}/", {"disabled": True}, format="json").status_code == 200


def test_team_roles_cannot_use_packs(pack, team):
    api = api_for(user_with_role("tadmin", Role.ADMIN, team))
    assert api.get(URL).status_code == 403
    assert api.post(URL, {"name": "x", "targets": {"teams": [team.pk]}}, format="json").status_code == 403


def test_packs_are_in_the_openapi_schema(admin_api):
    schema = admin_api.get("/api/v1/schema/", {"format": "json"}).json()
    paths = set(schema["paths"])
    assert {"/api/v1/packs/", "/api/v1/packs/{id}/", "/api/v1/packs/{pack_pk}/scheduled/"} <= paths
    assert "/api/v1/packs/{pack_pk}/scheduled/{id}/" in paths


def test_team_target_validation_uses_existing_teams(admin_api):
    team = Team.objects.create(name="Ops")
    response = admin_api.post(URL, {"name": "ops", "targets": {"teams": [team.pk]}}, format="json")
    assert response.status_code == 201
    assert list(Pack.objects.get(name="ops").target_teams.all()) == [team]
