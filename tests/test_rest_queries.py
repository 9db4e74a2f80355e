"""REST API for saved queries: CRUD, the SQL check and its warnings, filters, search and roles."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from hosts.choices import Role
from hosts.models import Team
from queries.models import Query
from tests.factories import api_for, user_with_role

pytestmark = pytest.mark.django_db
URL = "/api/v1/queries/"


@pytest.fixture
def other_team(db) -> Team:
    return Team.objects.create(name="Sales")


@pytest.fixture
def admin_api():
    return api_for(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))


@pytest.fixture
def library(team, other_team):
    return {
        "global": Query.objects.create(
            name="uptime", query="SELECT * FROM uptime", description="How long since boot", interval=300
        ),
        "eng": Query.objects.create(
            name="eng processes", query="SELECT name FROM processes", team=team, platform="darwin,linux"
        ),
        "sales": Query.objects.create(
            name="sales users", query="SELECT * FROM users", team=other_team, platform="windows", interval=60
        ),
    }


def names(response) -> set[str]:
    assert response.status_code == 200, response.content
    return {q["name"] for q in response.json()["results"]}


# --- create and the SQL check -----------------------------------------------------------------------------


def test_admin_creates_a_global_query(admin_api):
    response = admin_api.post(
        URL,
        {
            "name": "Listening ports",
            "query": "SELECT pid, port FROM listening_ports;",
            "platform": "darwin, linux",
            "interval": 3600,
            "logging": "differential",
            "automations_enabled": True,
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["team_id"] is None and body["team_name"] is None
    assert body["platform"] == "darwin,linux"
    assert body["scheduled"] is True
    assert body["warnings"] == []
    assert body["author_name"] == "root"
    assert Query.objects.get(pk=body["id"]).author.username == "root"


def test_syntax_error_is_a_400_with_the_parsers_message(admin_api):
    response = admin_api.post(URL, {"name": "bad", "query": "SELECT * FORM users"}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["message"] == "invalid request"
    assert 'near "FORM": syntax error' in body["errors"]["query"][0]
    assert not Query.objects.exists()


def test_unknown_table_is_saved_with_a_warning(admin_api):
    response = admin_api.post(
        URL, {"name": "mdm", "query": "SELECT * FROM mdm", "platform": "darwin"}, format="json"
    )
    assert response.status_code == 201
    [warning] = response.json()["warnings"]
    assert "'mdm' is not in osquery's schema" in warning


def test_changing_platforms_can_raise_a_warning(admin_api, library):
    url = f"{URL}{library['global'].pk}/"
    response = admin_api.patch(url, {"query": "SELECT * FROM registry", "platform": "windows"}, format="json")
    assert response.status_code == 200 and response.json()["warnings"] == []
    response = admin_api.patch(url, {"platform": "darwin,windows"}, format="json")
    assert response.status_code == 200
    assert "not available on darwin" in response.json()["warnings"][0]
    assert admin_api.get(url).json()["warnings"] == response.json()["warnings"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "uptime", "query": "SELECT 1"}, "name"),  # taken among global queries
        ({"name": "x", "query": "SELECT 1", "platform": "plan9"}, "platform"),
        ({"name": "x", "query": "SELECT 1", "interval": 10**6}, "interval"),
        ({"name": "x", "query": "SELECT 1", "interval": -1}, "interval"),
        ({"name": "x", "query": "SELECT 1", "logging": "loud"}, "logging"),
        ({"name": "x", "query": "SELECT 1", "team_id": 9999}, "team_id"),
        ({"name": "x", "query": "SELECT 1", "min_osquery_version": "v5"}, "min_osquery_version"),
        ({"name": "x"}, "query"),
        ({"name": "x", "query": ["SELECT 1"]}, "query"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(admin_api, library, payload, field):
    response = admin_api.post(URL, payload, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]


def test_same_name_in_another_team_is_fine(admin_api, library, team):
    response = admin_api.post(URL, {"name": "uptime", "query": "SELECT 1", "team_id": team.pk}, format="json")
    assert response.status_code == 201
    response = admin_api.post(URL, {"name": "uptime", "query": "SELECT 2", "team_id": team.pk}, format="json")
    assert response.status_code == 400 and "already exists" in response.json()["errors"]["name"][0]


def test_update_and_delete(admin_api, library):
    url = f"{URL}{library['eng'].pk}/"
    response = admin_api.put(
        url, {"name": "eng procs", "query": "SELECT pid FROM processes", "team_id": library["eng"].team_id}
    )
    assert response.status_code == 200, response.content
    assert Query.objects.get(pk=library["eng"].pk).name == "eng procs"
    assert admin_api.delete(url).status_code == 204
    assert not Query.objects.filter(pk=library["eng"].pk).exists()


# --- filters and search -----------------------------------------------------------------------------------


def test_filters_and_search(admin_api, library, team):
    assert names(admin_api.get(URL)) == {"uptime", "eng processes", "sales users"}
    assert names(admin_api.get(URL, {"team_id": team.pk})) == {"eng processes"}
    assert names(admin_api.get(URL, {"team_id": 0})) == {"uptime"}
    assert names(admin_api.get(URL, {"platform": "windows"})) == {"uptime", "sales users"}
    assert names(admin_api.get(URL, {"platform": "linux"})) == {"uptime", "eng processes"}
    assert names(admin_api.get(URL, {"scheduled": "true"})) == {"uptime", "sales users"}
    assert names(admin_api.get(URL, {"scheduled": "false"})) == {"eng processes"}
    assert names(admin_api.get(URL, {"search": "since boot"})) == {"uptime"}  # description
    assert names(admin_api.get(URL, {"search": "FROM users"})) == {"sales users"}  # SQL
    assert names(admin_api.get(URL, {"search": "eng"})) == {"eng processes"}  # name


# --- roles ------------------------------------------------------------------------------------------------


def test_global_observer_reads_everything_and_writes_nothing(library):
    api = api_for(user_with_role("obs", Role.OBSERVER))
    assert names(api.get(URL)) == {"uptime", "eng processes", "sales users"}
    assert api.post(URL, {"name": "n", "query": "SELECT 1"}, format="json").status_code == 403
    assert api.patch(f"{URL}{library['global'].pk}/", {"name": "x"}, format="json").status_code == 403
    assert api.delete(f"{URL}{library['eng'].pk}/").status_code == 403


def test_team_observer_sees_global_and_own_team_queries(library, team):
    api = api_for(user_with_role("tobs", Role.OBSERVER, team))
    assert names(api.get(URL)) == {"uptime", "eng processes"}
    assert api.get(f"{URL}{library['global'].pk}/").status_code == 200
    assert api.get(f"{URL}{library['sales'].pk}/").status_code == 404
    assert api.patch(f"{URL}{library['eng'].pk}/", {"name": "x"}, format="json").status_code == 403


def test_team_maintainer_writes_only_their_teams_queries(library, team, other_team):
    api = api_for(user_with_role("tmaint", Role.MAINTAINER, team))
    created = api.post(URL, {"name": "mine", "query": "SELECT 1", "team_id": team.pk}, format="json")
    assert created.status_code == 201
    assert api.post(URL, {"name": "global", "query": "SELECT 1"}, format="json").status_code == 403
    other = api.post(URL, {"name": "theirs", "query": "SELECT 1", "team_id": other_team.pk}, format="json")
    assert other.status_code == 403
    assert api.patch(f"{URL}{library['eng'].pk}/", {"interval": 60}, format="json").status_code == 200
    moved = api.patch(f"{URL}{library['eng'].pk}/", {"team_id": None}, format="json")
    assert moved.status_code == 403  # cannot turn a team query into a global one
    assert api.patch(f"{URL}{library['global'].pk}/", {"interval": 60}, format="json").status_code == 403
    assert api.delete(f"{URL}{library['sales'].pk}/").status_code == 404
    assert api.delete(f"{URL}{library['eng'].pk}/").status_code == 204


def test_gitops_writes_and_users_without_roles_are_refused(library):
    gitops = api_for(user_with_role("ci", Role.GITOPS))
    assert gitops.post(URL, {"name": "from git", "query": "SELECT 1"}, format="json").status_code == 201
    nobody = api_for(user_with_role("nobody"))
    assert nobody.get(URL).status_code == 403
    assert nobody.post(URL, {"name": "n", "query": "SELECT 1"}, format="json").status_code == 403


def test_anonymous_is_refused(client):
    assert client.get(URL).status_code in (401, 403)


def test_queries_are_in_the_openapi_schema(admin_api):
    schema = admin_api.get("/api/v1/schema/", {"format": "json"}).json()
    assert {"/api/v1/queries/", "/api/v1/queries/{id}/"} <= set(schema["paths"])
    props = schema["components"]["schemas"]["Query"]["properties"]
    assert props["warnings"]["readOnly"] is True
