"""Activities recorded through the real interfaces: console, REST (knox tokens), commands, YAML, logins."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework.test import APIClient

from activities.choices import ActivityType, Surface
from activities.models import Activity
from hosts import services as host_services
from hosts.choices import Role
from hosts.models import Host, Team
from queries.models import Query
from tests.factories import api_for, make_host, user_with_role

pytestmark = pytest.mark.django_db

QUERIES = "/admin/queries/query/"
HOSTS = "/admin/hosts/host/"


@pytest.fixture
def root():
    return get_user_model().objects.create_superuser("root", "root@example.com", "pw")


@pytest.fixture
def console(client, root):
    client.force_login(root)  # a user_logged_in activity; the tests look at the types that follow
    return client


def of_type(activity_type: str) -> list[Activity]:
    return list(Activity.objects.filter(type=activity_type).order_by("id"))


def only(activity_type: str) -> Activity:
    found = of_type(activity_type)
    assert len(found) == 1, [(a.type, a.object_name, a.surface) for a in Activity.objects.order_by("id")]
    return found[0]


def query_form(**fields) -> dict:
    data = {
        "name": "Listening ports",
        "description": "",
        "query": "SELECT pid, port FROM listening_ports",
        "team": "",
        "min_osquery_version": "",
        "interval": "0",
        "logging": "snapshot",
    }
    data.update(fields)
    return data


# --- console --------------------------------------------------------------------------------------


def test_console_edit_of_a_query_records_before_and_after(console, root):
    query = Query.objects.create(name="Listening ports", query="SELECT pid, port FROM listening_ports")
    response = console.post(
        f"{QUERIES}{query.pk}/change/", query_form(query="SELECT pid FROM listening_ports", interval="300")
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    edited = only(ActivityType.EDITED_SAVED_QUERY)
    assert (edited.surface, edited.actor_id, edited.actor_name) == (Surface.CONSOLE, root.pk, "root")
    assert (edited.object_type, edited.object_id, edited.object_name) == (
        "saved_query",
        str(query.pk),
        query.name,
    )
    changes = edited.details["changes"]
    assert changes["query"] == {
        "before": "SELECT pid, port FROM listening_ports",
        "after": "SELECT pid FROM listening_ports",
    }
    assert changes["interval"] == {"before": 0, "after": 300}
    assert edited.details["query_id"] == query.pk and edited.details["query_name"] == query.name


def test_console_add_and_delete_of_a_query(console):
    assert console.post(f"{QUERIES}add/", query_form()).status_code == 302
    created = only(ActivityType.CREATED_SAVED_QUERY)
    assert created.details["after"]["query"] == "SELECT pid, port FROM listening_ports"
    query = Query.objects.get()
    assert console.post(f"{QUERIES}{query.pk}/delete/", {"post": "yes"}).status_code == 302
    deleted = only(ActivityType.DELETED_SAVED_QUERY)
    assert deleted.object_id == str(query.pk) and deleted.details["before"]["name"] == "Listening ports"


def test_console_saving_without_a_change_records_nothing(console):
    query = Query.objects.create(name="Listening ports", query="SELECT pid, port FROM listening_ports")
    assert console.post(f"{QUERIES}{query.pk}/change/", query_form()).status_code == 302
    assert of_type(ActivityType.EDITED_SAVED_QUERY) == []


def test_console_team_creation_is_one_created_team(console):
    data = {"name": "Sales", "description": "", "agent_options": "",
            "secrets-TOTAL_FORMS": "0", "secrets-INITIAL_FORMS": "0",
            "secrets-MIN_NUM_FORMS": "0", "secrets-MAX_NUM_FORMS": "1000"}  # fmt: skip
    response = console.post("/admin/hosts/team/add/", data)
    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    created = only(ActivityType.CREATED_TEAM)  # not a second one from hosts.services.create_team
    team = Team.objects.get(name="Sales")
    assert (created.object_id, created.team_id, created.surface) == (str(team.pk), team.pk, Surface.CONSOLE)


def _action(client, action: str, hosts, **extra):
    data = {"action": action, "_selected_action": [h.pk for h in hosts], "index": 0, **extra}
    return client.post(HOSTS, data)


def test_console_host_transfer_and_delete(console, team, root):
    hosts = [make_host("mac-1", None), make_host("mac-2", None)]
    assert _action(console, "transfer_hosts", hosts, team=team.pk, apply="Transfer").status_code == 302
    moved = only(ActivityType.TRANSFERRED_HOSTS)
    assert moved.surface == Surface.CONSOLE and moved.team_id == team.pk
    assert moved.details["host_ids"] == sorted(h.pk for h in hosts)
    assert (
        moved.details["host_display_names"] == ["mac-1", "mac-2"] and moved.details["team_name"] == team.name
    )
    assert of_type(ActivityType.EDITED_HOST) == []

    assert _action(console, "delete_selected", hosts, post="yes").status_code == 302
    assert not Host.objects.exists()
    deleted = of_type(ActivityType.DELETED_HOST)  # once per host, not again by hosts.services
    assert sorted(a.object_id for a in deleted) == sorted(str(h.pk) for h in hosts)
    assert {a.details["host_display_name"] for a in deleted} == {"mac-1", "mac-2"}
    assert all(a.team_id == team.pk and a.actor_id == root.pk for a in deleted)


def test_console_refetch_is_one_activity(console, team):
    hosts = [make_host("a", team), make_host("b", team)]
    assert _action(console, "refetch_hosts", hosts).status_code == 302
    refetch = only(ActivityType.REFETCHED_HOSTS)
    assert refetch.team_id == team.pk and refetch.details["host_count"] == 2


# --- REST -----------------------------------------------------------------------------------------


def test_rest_create_update_delete_with_a_token(team):
    maintainer = user_with_role("maria", Role.MAINTAINER, team)
    api = api_for(maintainer)
    response = api.post(
        "/api/v1/queries/",
        {"name": "Uptime", "query": "SELECT * FROM uptime", "team_id": team.pk},
        format="json",
    )
    assert response.status_code == 201, response.json()
    query_id = response.json()["id"]
    assert api.patch(f"/api/v1/queries/{query_id}/", {"interval": 60}, format="json").status_code == 200
    assert api.delete(f"/api/v1/queries/{query_id}/").status_code == 204

    created, edited, deleted = (
        only(ActivityType.CREATED_SAVED_QUERY),
        only(ActivityType.EDITED_SAVED_QUERY),
        only(ActivityType.DELETED_SAVED_QUERY),
    )
    for activity in (created, edited, deleted):
        assert (activity.surface, activity.actor_id, activity.actor_name) == (
            Surface.REST,
            maintainer.pk,
            "maria",
        )
        assert (activity.object_id, activity.team_id) == (str(query_id), team.pk)
        assert activity.client_address == "127.0.0.1"
    assert created.details["after"]["name"] == "Uptime" and created.details["team_name"] == team.name
    assert edited.details["changes"] == {"interval": {"before": 0, "after": 60}}
    assert deleted.details["before"]["query"] == "SELECT * FROM uptime"


def test_rest_refused_write_records_nothing(team):
    observer = user_with_role("olga", Role.OBSERVER, team)
    query = Query.objects.create(name="Uptime", query="SELECT 1", team=team)
    assert api_for(observer).delete(f"/api/v1/queries/{query.pk}/").status_code == 403
    assert api_for(observer).post("/api/v1/teams/", {"name": "X"}, format="json").status_code == 403
    assert not Activity.objects.exclude(type=ActivityType.USER_LOGGED_IN).exists()


def test_rest_team_creation_is_one_created_team(root):
    api = api_for(root)
    response = api.post("/api/v1/teams/", {"name": "Sales", "agent_options": {"config": {}}}, format="json")
    assert response.status_code == 201, response.json()
    created = only(ActivityType.CREATED_TEAM)
    assert created.surface == Surface.REST and created.details["after"]["enroll_secret_count"] == 1
    assert created.details["after"]["agent_options"] == {"config": {}}


def test_rest_enroll_secret_values_stay_out_of_the_trail(root, team):
    api = api_for(root)
    response = api.post(
        "/api/v1/enroll-secrets/", {"secret": "s3cret-value-123", "team_id": team.pk}, format="json"
    )
    assert response.status_code == 201
    assert api.delete(f"/api/v1/enroll-secrets/{response.json()['id']}/").status_code == 204
    changes = of_type(ActivityType.EDITED_ENROLL_SECRETS)
    assert [a.details["action"] for a in changes] == ["created", "deleted"]
    assert all(a.team_id == team.pk and a.object_name == team.name for a in changes)
    assert "s3cret-value-123" not in str([a.details for a in changes])


def test_rest_label_membership_changes_are_recorded(root):
    hosts = [make_host("a"), make_host("b"), make_host("c")]
    api = api_for(root)
    body = {"name": "Laptops", "label_membership_type": "manual", "hosts": [hosts[0].pk, hosts[1].pk]}
    response = api.post("/api/v1/labels/", body, format="json")
    assert response.status_code == 201, response.json()
    label_id = response.json()["id"]
    response = api.patch(f"/api/v1/labels/{label_id}/", {"hosts": [hosts[1].pk, hosts[2].pk]}, format="json")
    assert response.status_code == 200, response.json()
    created, edited = only(ActivityType.CREATED_LABEL), only(ActivityType.EDITED_LABEL)
    assert created.details["after"]["hosts"] == [hosts[0].pk, hosts[1].pk]
    assert edited.details["changes"] == {
        "hosts": {"before": [hosts[0].pk, hosts[1].pk], "after": [hosts[1].pk, hosts[2].pk]}
    }


def test_agent_options_edits_are_fleets_edited_agent_options(root, team):
    host_services.set_agent_options(team, {"config": {"options": {"distributed_interval": 15}}})
    host_services.set_agent_options(None, {"config": {"options": {"distributed_interval": 30}}})
    team_edit, global_edit = of_type(ActivityType.EDITED_AGENT_OPTIONS)
    assert (team_edit.team_id, team_edit.details["global"], team_edit.details["team_name"]) == (
        team.pk,
        False,
        team.name,
    )
    assert team_edit.details["changes"]["agent_options"]["before"] is None
    assert global_edit.team_id is None and global_edit.details["global"] is True


def test_live_query_over_rest_records_sql_and_targets(root, team):
    hosts = [make_host("a", team, timedelta(seconds=5)), make_host("b", team)]
    api = api_for(root)
    body = {"sql": "SELECT * FROM uptime", "targets": {"hosts": [hosts[0].pk], "teams": [team.pk]}}
    response = api.post("/api/v1/campaigns/", body, format="json")
    assert response.status_code == 201, response.json()
    live = only(ActivityType.LIVE_QUERY)
    assert (live.surface, live.actor_id, live.object_type) == (Surface.REST, root.pk, "campaign")
    assert live.object_id == str(response.json()["id"])
    assert live.details["sql"] == "SELECT * FROM uptime"
    assert live.details["targets"] == {"hosts": [hosts[0].pk], "labels": [], "teams": [team.pk]}
    assert live.details["target_host_count"] == 2 and live.details["query_id"] is None


def test_live_query_of_a_saved_query_names_it(root, team):
    make_host("a", team)
    query = Query.objects.create(name="Uptime", query="SELECT * FROM uptime")
    response = api_for(root).post(
        "/api/v1/campaigns/", {"query_id": query.pk, "targets": {"all": True}}, format="json"
    )
    assert response.status_code == 201, response.json()
    live = only(ActivityType.LIVE_QUERY)
    assert (live.details["query_id"], live.details["query_name"]) == (query.pk, "Uptime")
    assert live.details["targets"]["all"] is True


def test_services_record_host_transfer_and_delete(root, team):
    host = make_host("mac-1", None)
    api = api_for(root)  # any REST request, so the context is REST's: here the service is called directly
    assert api.get("/api/v1/hosts/").status_code == 200
    host_services.transfer_hosts([host.pk], team)
    host_services.delete_hosts([host.pk])
    moved, deleted = only(ActivityType.TRANSFERRED_HOSTS), only(ActivityType.DELETED_HOST)
    assert moved.surface == deleted.surface == Surface.SYSTEM  # no request, no command: the system
    assert moved.details["host_ids"] == [host.pk] and moved.object_id == str(team.pk)
    assert deleted.object_id == str(host.pk) and deleted.details["before"]["hostname"] == "mac-1"


# --- commands and YAML ----------------------------------------------------------------------------


SPEC = """
apiVersion: v1
kind: query
spec:
  name: Uptime
  query: SELECT * FROM uptime
---
apiVersion: v1
kind: team
spec:
  team:
    name: Sales
"""


def test_manage_py_apply_records_the_spec_as_yaml(tmp_path):
    path = tmp_path / "fleet.yml"
    path.write_text(SPEC)
    call_command("apply", "-f", str(path), stdout=io.StringIO())
    queries, teams = only(ActivityType.APPLIED_SPEC_SAVED_QUERY), only(ActivityType.APPLIED_SPEC_TEAM)
    assert queries.surface == teams.surface == Surface.YAML
    assert queries.actor_id is None and queries.actor_name  # the operator's account
    assert [c["name"] for c in queries.details["changes"]] == ["Uptime"]
    assert queries.details["changes"][0]["action"] == "create"
    assert of_type(ActivityType.CREATED_TEAM) == []  # the apply is one activity per kind
    call_command("apply", "-f", str(path), stdout=io.StringIO())  # unchanged: nothing more
    assert Activity.objects.count() == 2
    call_command("apply", "-f", str(path), "--dry-run", stdout=io.StringIO())
    assert Activity.objects.count() == 2


def test_spec_over_rest_is_yaml_with_the_token_user(root):
    response = api_for(root).post("/api/v1/spec/", SPEC, content_type="application/yaml")
    assert response.status_code == 200, response.json()
    queries = only(ActivityType.APPLIED_SPEC_SAVED_QUERY)
    assert (queries.surface, queries.actor_id) == (Surface.YAML, root.pk)


def test_team_commands_record_with_surface_command(team):
    call_command("team", "add", "Sales", stdout=io.StringIO())
    created = only(ActivityType.CREATED_TEAM)
    assert created.surface == Surface.COMMAND and created.actor_id is None and created.actor_name
    call_command("team", "remove", "Sales", stdout=io.StringIO())
    deleted = only(ActivityType.DELETED_TEAM)
    assert deleted.surface == Surface.COMMAND and deleted.object_name == "Sales"
    assert deleted.object_id == created.object_id and deleted.details["before"]["enroll_secret_count"] == 1


def test_enroll_secret_commands(team):
    call_command("enroll_secret", "add", "command-secret-1", "--team", team.name, stdout=io.StringIO())
    call_command("enroll_secret", "remove", "command-secret-1", stdout=io.StringIO())
    changes = of_type(ActivityType.EDITED_ENROLL_SECRETS)
    assert [(a.surface, a.details["action"], a.team_id) for a in changes] == [
        (Surface.COMMAND, "created", team.pk),
        (Surface.COMMAND, "deleted", team.pk),
    ]


# --- logins ---------------------------------------------------------------------------------------


def test_logins_and_failed_logins(root):
    client = APIClient()
    assert client.post("/api/v1/auth/token/", {"username": "root", "password": "pw"}).status_code == 200
    assert client.post("/api/v1/auth/token/", {"username": "root", "password": "wrong"}).status_code == 400
    logged_in, failed = only(ActivityType.USER_LOGGED_IN), only(ActivityType.USER_FAILED_LOGIN)
    assert (logged_in.actor_id, logged_in.surface) == (root.pk, Surface.REST)
    assert logged_in.details["public_ip"] == "127.0.0.1"
    assert failed.actor_id is None and failed.details["username"] == "root" and failed.object_name == "root"


def test_console_login_is_recorded(client, root):
    response = client.post("/admin/login/", {"username": "root", "password": "pw", "next": "/admin/"})
    assert response.status_code == 302
    assert only(ActivityType.USER_LOGGED_IN).surface == Surface.CONSOLE


# --- under ASGI (daphne serves the product) ----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_the_actor_reaches_the_record_under_asgi():
    from asgiref.sync import sync_to_async
    from django.test import AsyncClient

    from tests.factories import token_for

    root = await sync_to_async(get_user_model().objects.create_superuser)("root", "root@example.com", "pw")
    token = await sync_to_async(token_for)(root)
    response = await AsyncClient().post(
        "/api/v1/teams/",
        {"name": "Async"},
        content_type="application/json",
        headers={"Authorization": f"Token {token}"},
    )
    assert response.status_code == 201, response.content
    created = await sync_to_async(only)(ActivityType.CREATED_TEAM)
    assert (created.actor_id, created.surface, created.object_name) == (root.pk, Surface.REST, "Async")
