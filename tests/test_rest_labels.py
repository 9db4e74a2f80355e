"""REST API: /api/v1/labels/ (CRUD, roles, host_count, filters, search) and /labels/<id>/hosts/."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from hosts import labels, nodekeys
from hosts.choices import Role
from hosts.models import Host, Label, LabelMembership, LabelType, Team
from tests.factories import api_for, make_host, user_with_role
from tests.test_rest_hosts import HOST_FIELDS

pytestmark = pytest.mark.django_db

LABELS = "/api/v1/labels/"
LABEL_FIELDS = {
    "id",
    "name",
    "description",
    "query",
    "platform",
    "label_type",
    "label_membership_type",
    "host_count",
    "author_id",
    "author_name",
    "created_at",
    "updated_at",
}


@pytest.fixture(autouse=True)
def builtins(db) -> dict[str, int]:
    labels.ensure_builtin_labels()
    return labels.builtin_label_ids()


@pytest.fixture
def admin_api() -> APIClient:
    return api_for(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))


@pytest.fixture
def fleet(team):
    """Hosts in two teams and none; builtin memberships follow from their platforms."""
    other = Team.objects.create(name="Sales")
    return {
        "mac": make_host("mac-1", team, timedelta(seconds=5), platform="darwin", hardware_serial="C02MAC"),
        "box": make_host("box-1", team, timedelta(hours=2), platform="ubuntu", os_version="Ubuntu 22.04"),
        "win": make_host("win-1", other, None, platform="windows"),
        "loose": make_host("mac-2", None, None, platform="darwin"),
        "sales": other,
    }


def by_name(response) -> dict[str, dict]:
    assert response.status_code == 200, response.json()
    return {row["name"]: row for row in response.json()["results"]}


# --- reading ------------------------------------------------------------------------------------------


def test_list_shows_builtins_first_with_host_counts(admin_api, fleet, builtins):
    rows = by_name(admin_api.get(LABELS))
    first = admin_api.get(LABELS).json()["results"][0]
    assert first["label_type"] == "builtin"
    assert set(rows["macOS"]) == LABEL_FIELDS
    assert rows["All Hosts"]["host_count"] == 4
    assert rows["macOS"]["host_count"] == 2
    assert rows["All Linux"]["host_count"] == 1 and rows["Ubuntu Linux"]["host_count"] == 1
    assert rows["MS Windows"]["host_count"] == 1
    assert rows["chrome"]["host_count"] == 0
    assert rows["All Hosts"]["query"] == "SELECT 1;"


def test_host_count_costs_the_same_for_many_labels(admin_api, fleet):
    labels.create_label(name="One", query="SELECT 1")
    with CaptureQueriesContext(connection) as few:
        admin_api.get(LABELS)
    for i in range(25):
        labels.create_label(name=f"Manual {i}", label_membership_type="manual", hosts=["mac-1", "box-1"])
    with CaptureQueriesContext(connection) as many:
        rows = by_name(admin_api.get(LABELS))
    assert rows["Manual 7"]["host_count"] == 2
    assert len(many) == len(few)


def test_search_and_filters(admin_api, fleet):
    labels.create_label(name="Chrome users", description="browsers", query="SELECT 1", platform="darwin")
    labels.create_label(name="Pets", label_membership_type="manual", hosts=["mac-1"])
    labels.create_label(name="Servers", query="SELECT 1", platform="linux,windows")
    assert set(by_name(admin_api.get(LABELS, {"search": "brows"}))) == {"Chrome users"}
    assert set(by_name(admin_api.get(LABELS, {"search": "ubuntu"}))) == {"Ubuntu Linux"}
    assert set(by_name(admin_api.get(LABELS, {"label_type": "regular"}))) == {
        "Chrome users",
        "Pets",
        "Servers",
    }
    assert set(
        by_name(admin_api.get(LABELS, {"label_membership_type": "manual", "label_type": "regular"}))
    ) == {"Pets"}
    on_windows = set(by_name(admin_api.get(LABELS, {"platform": "windows", "label_type": "regular"})))
    assert on_windows == {"Pets", "Servers"}  # restricted to windows, or to no platform
    assert admin_api.get(LABELS, {"label_type": "nope"}).status_code == 400


def test_label_hosts_are_paginated_hosts_like_the_host_list(admin_api, fleet, builtins):
    url = f"{LABELS}{builtins['macOS']}/hosts/"
    body = admin_api.get(url).json()
    assert body["count"] == 2 and body["count_is_exact"] is True
    assert {row["hostname"] for row in body["results"]} == {"mac-1", "mac-2"}
    assert set(body["results"][0]) == HOST_FIELDS
    page = admin_api.get(url, {"limit": 1}).json()
    assert len(page["results"]) == 1 and page["next"]
    assert {r["hostname"] for r in admin_api.get(url, {"search": "C02MAC"}).json()["results"]} == {"mac-1"}
    team_id = fleet["mac"].team_id
    assert {r["hostname"] for r in admin_api.get(url, {"team_id": team_id}).json()["results"]} == {"mac-1"}
    assert admin_api.get(url, {"status": "sideways"}).status_code == 400
    assert admin_api.get(f"{LABELS}999999/hosts/").status_code == 404


# --- roles ----------------------------------------------------------------------------------------------


def test_team_observer_reads_labels_counting_only_their_hosts(fleet, team, builtins):
    observer = api_for(user_with_role("obs", Role.OBSERVER, team))
    rows = by_name(observer.get(LABELS))
    assert rows["All Hosts"]["host_count"] == 2  # mac-1, box-1 (their team)
    assert rows["MS Windows"]["host_count"] == 0
    hosts = observer.get(f"{LABELS}{builtins['macOS']}/hosts/").json()
    assert [r["hostname"] for r in hosts["results"]] == ["mac-1"]
    assert observer.get(f"{LABELS}{builtins['macOS']}/").status_code == 200
    assert observer.post(LABELS, {"name": "X", "query": "SELECT 1"}, format="json").status_code == 403


@pytest.mark.parametrize(
    ("role", "team_scoped", "may_write"),
    [
        (Role.ADMIN, False, True),
        (Role.MAINTAINER, False, True),
        (Role.OBSERVER, False, False),
        (Role.OBSERVER_PLUS, False, False),
        (Role.GITOPS, False, False),
        (Role.ADMIN, True, False),  # labels are global: team admins read them only
        (Role.MAINTAINER, True, False),
    ],
)
def test_who_may_write_labels(team, role, team_scoped, may_write):
    api = api_for(user_with_role("someone", role, team if team_scoped else None))
    assert api.get(LABELS).status_code == 200
    if not may_write:  # refused before the body is even looked at
        assert api.post(LABELS, {"name": "", "query": "SELEC"}, format="json").status_code == 403
    created = api.post(LABELS, {"name": "Chrome users", "query": "SELECT 1"}, format="json")
    assert created.status_code == (201 if may_write else 403), created.json()
    if not may_write:
        assert "message" in created.json()
        return
    label_id = created.json()["id"]
    assert api.patch(f"{LABELS}{label_id}/", {"description": "d"}, format="json").status_code == 200
    assert api.delete(f"{LABELS}{label_id}/").status_code == 204


def test_gitops_and_roleless_users(fleet, builtins):
    gitops = api_for(user_with_role("gitops", Role.GITOPS))
    assert gitops.get(LABELS).status_code == 200
    assert by_name(gitops.get(LABELS))["All Hosts"]["host_count"] == 0  # no host data for gitops
    assert gitops.get(f"{LABELS}{builtins['macOS']}/hosts/").status_code == 403
    nobody = api_for(user_with_role("nobody"))
    assert nobody.get(LABELS).status_code == 403
    assert APIClient().get(LABELS).status_code == 401


def test_builtin_labels_are_read_only(admin_api, builtins):
    url = f"{LABELS}{builtins['macOS']}/"
    for response in (
        admin_api.patch(url, {"description": "mine"}, format="json"),
        admin_api.put(url, {"name": "macOS", "query": "SELECT 1"}, format="json"),
        admin_api.delete(url),
        admin_api.patch(url, {"hosts": [True], "query": "SELEC"}, format="json"),  # 403 before any 400
    ):
        assert response.status_code == 403
        assert "builtin label" in response.json()["message"]
    assert Label.objects.get(pk=builtins["macOS"]).label_type == LabelType.BUILTIN


# --- writing --------------------------------------------------------------------------------------------


def test_create_a_dynamic_label(admin_api):
    response = admin_api.post(
        LABELS,
        {
            "name": "Chrome users",
            "query": "SELECT 1 FROM apps WHERE name = 'Chrome.app';",
            "platform": "darwin",
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["label_type"] == "regular" and body["label_membership_type"] == "dynamic"
    assert body["host_count"] == 0 and body["author_name"] == "root"
    assert "hosts" not in body
    assert labels.dynamic_labels()[-1].id == body["id"]  # on its way to the agents


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({"name": "Bad", "query": "SELEC 1"}, "query", 'SQL syntax error: near "SELEC": syntax error.'),
        ({"name": "Bad"}, "query", "SQL is empty."),
        ({"name": "Bad", "query": "SELECT 1; SELECT 2"}, "query", "SQL must be a single statement."),
        ({"name": "macOS", "query": "SELECT 1"}, "name", '"macOS" is the name of a builtin label.'),
        ({"name": "Bad", "query": "SELECT 1", "platform": "beos"}, "platform", "Unknown platform(s): beos."),
        (
            {"name": "Bad", "query": "SELECT 1", "label_membership_type": "psychic"},
            "label_membership_type",
            None,
        ),
        ({"name": "Bad", "query": "SELECT 1", "hosts": ["mac-1"]}, "hosts", None),
        (
            {"name": "Bad", "label_membership_type": "manual", "hosts": ["nope"]},
            "hosts",
            "Unknown host(s): nope.",
        ),
        ({"name": "Bad", "label_membership_type": "manual", "hosts": [True]}, "hosts", None),
        ({"name": "", "query": "SELECT 1"}, "name", None),
    ],
)
def test_bad_labels_are_400_with_the_reason(admin_api, fleet, payload, field, message):
    response = admin_api.post(LABELS, payload, format="json")
    assert response.status_code == 400, response.json()
    errors = response.json()["errors"]
    assert field in errors, errors
    if message:
        assert message in " ".join(map(str, errors[field])), errors
    assert not Label.objects.filter(name="Bad").exists()


def test_manual_labels_by_id_hostname_uuid_or_serial(admin_api, fleet):
    hosts = [fleet["mac"].pk, "box-1", "uuid-win-1", "C02MAC"]
    response = admin_api.post(
        LABELS, {"name": "Pets", "label_membership_type": "manual", "hosts": hosts}, format="json"
    )
    assert response.status_code == 201, response.json()
    assert response.json()["host_count"] == 3
    label_id = response.json()["id"]
    assert set(
        LabelMembership.objects.filter(label_id=label_id).values_list("host__hostname", flat=True)
    ) == {
        "mac-1",
        "box-1",
        "win-1",
    }
    replaced = admin_api.patch(f"{LABELS}{label_id}/", {"hosts": ["mac-2"]}, format="json")
    assert replaced.status_code == 200 and replaced.json()["host_count"] == 1
    renamed = admin_api.patch(f"{LABELS}{label_id}/", {"name": "Pets 2"}, format="json")
    assert renamed.json()["host_count"] == 1  # the list stays when hosts is not given


def test_changing_the_sql_empties_the_label_and_the_type_is_fixed(admin_api, fleet, client, global_secret):
    label = labels.create_label(name="Chrome users", query="SELECT 1")
    mac = fleet["mac"]
    LabelMembership.objects.create(label=label, host=mac)
    url = f"{LABELS}{label.pk}/"
    assert admin_api.patch(url, {"description": "same question"}, format="json").json()["host_count"] == 1
    changed = admin_api.patch(url, {"query": "SELECT 1 FROM apps"}, format="json")
    assert changed.status_code == 200 and changed.json()["host_count"] == 0
    assert labels.dynamic_labels()[-1].sql == "SELECT 1 FROM apps"
    bad = admin_api.patch(url, {"query": "SELECT FROM"}, format="json")
    assert bad.status_code == 400 and "SQL syntax error" in bad.json()["errors"]["query"][0]
    fixed = admin_api.patch(url, {"label_membership_type": "manual"}, format="json")
    assert fixed.status_code == 400 and "cannot change" in fixed.json()["errors"]["label_membership_type"][0]


def test_deleting_a_label_drops_its_members_cached_state(admin_api, client, global_secret):
    from tests.agent import Agent

    agent = Agent(client, "mac-a")
    agent.enroll(global_secret)
    host = Host.objects.get(osquery_host_id="mac-a")
    label = labels.create_label(name="Pets", label_membership_type="manual", hosts=[host.pk])
    assert label.pk in nodekeys.lookup(agent.node_key).label_ids
    assert admin_api.delete(f"{LABELS}{label.pk}/").status_code == 204
    assert label.pk not in nodekeys.lookup(agent.node_key).label_ids
    assert admin_api.get(f"{LABELS}{label.pk}/").status_code == 404


def test_schema_has_the_label_paths(admin_api):
    schema = admin_api.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert "/api/v1/labels/" in schema["paths"]
    assert "/api/v1/labels/{id}/hosts/" in schema["paths"]
    params = {p["name"] for p in schema["paths"]["/api/v1/labels/"]["get"]["parameters"]}
    assert {"search", "label_type", "label_membership_type", "platform"} <= params
