"""REST API: teams and enroll secrets (CRUD, validation errors as 400 JSON, role scoping)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model

from hosts.choices import Role
from hosts.models import EnrollSecret, Host, Team
from tests.factories import api_for, make_host, user_with_role

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_api():
    return api_for(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))


@pytest.fixture
def sales(db) -> Team:
    return Team.objects.create(name="Sales")


def names(response) -> list[str]:
    return [row["name"] for row in response.json()["results"]]


# --- teams ------------------------------------------------------------------------------------------


def test_list_teams_with_host_counts(admin_api, team, sales):
    make_host("a", team, timedelta(seconds=1))
    make_host("b", team)
    make_host("c", None)
    body = admin_api.get("/api/v1/teams/").json()
    assert body["count"] == 2
    rows = {row["name"]: row for row in body["results"]}
    assert rows["Engineering"]["host_count"] == 2
    assert rows["Sales"]["host_count"] == 0
    assert set(rows["Sales"]) == {"id", "name", "description", "agent_options", "host_count", "created_at"}


def test_create_team_gets_an_enroll_secret(admin_api):
    response = admin_api.post(
        "/api/v1/teams/", {"name": "  Workstations ", "description": "Desks"}, format="json"
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["name"] == "Workstations" and body["host_count"] == 0
    team = Team.objects.get(pk=body["id"])
    assert team.secrets.count() == 1


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Engineering", 'A team named "Engineering" already exists.'),
        ("No team", '"No team" is reserved.'),
        ("all TEAMS", '"all TEAMS" is reserved.'),
        ("   ", "This field may not be blank."),
    ],
)
def test_create_team_rejects_bad_names(admin_api, team, name, message):
    response = admin_api.post("/api/v1/teams/", {"name": name}, format="json")
    assert response.status_code == 400
    assert response.json() == {"message": "invalid request", "errors": {"name": [message]}}


def test_create_team_needs_a_name(admin_api):
    response = admin_api.post("/api/v1/teams/", {}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"]["name"] == ["This field is required."]


def test_team_agent_options_are_validated(admin_api, team):
    bad = admin_api.patch(
        f"/api/v1/teams/{team.pk}/", {"agent_options": {"config": [], "bogus": 1}}, format="json"
    )
    assert bad.status_code == 400
    assert "unknown keys: bogus" in bad.json()["errors"]["agent_options"]
    good = {"config": {"options": {"distributed_interval": 30}}}
    ok = admin_api.patch(f"/api/v1/teams/{team.pk}/", {"agent_options": good}, format="json")
    assert ok.status_code == 200
    team.refresh_from_db()
    assert team.agent_options == good


def test_rename_team_and_keep_its_own_name(admin_api, team, sales):
    same = admin_api.patch(f"/api/v1/teams/{team.pk}/", {"name": "Engineering"}, format="json")
    assert same.status_code == 200
    clash = admin_api.patch(f"/api/v1/teams/{team.pk}/", {"name": "Sales"}, format="json")
    assert clash.status_code == 400
    renamed = admin_api.put(f"/api/v1/teams/{team.pk}/", {"name": "R&D", "description": "d"}, format="json")
    assert renamed.status_code == 200 and renamed.json()["name"] == "R&D"


def test_delete_team_leaves_hosts_without_team(admin_api, team, team_secret):
    host = make_host("a", team)
    assert admin_api.delete(f"/api/v1/teams/{team.pk}/").status_code == 204
    host.refresh_from_db()
    assert host.team_id is None
    assert not EnrollSecret.objects.filter(secret=team_secret).exists()


def test_team_search(admin_api, team, sales):
    assert names(admin_api.get("/api/v1/teams/?search=sal")) == ["Sales"]


def test_team_roles_scope_teams(team, sales):
    observer = api_for(user_with_role("obs", Role.OBSERVER, team))
    assert names(observer.get("/api/v1/teams/")) == ["Engineering"]
    assert observer.get(f"/api/v1/teams/{sales.pk}/").status_code == 404
    assert observer.patch(f"/api/v1/teams/{team.pk}/", {"description": "x"}, format="json").status_code == 403
    assert observer.post("/api/v1/teams/", {"name": "X"}, format="json").status_code == 403


def test_team_admin_edits_their_team_but_cannot_create_or_delete(team, sales):
    api = api_for(user_with_role("lead", Role.ADMIN, team))
    assert api.patch(f"/api/v1/teams/{team.pk}/", {"description": "ours"}, format="json").status_code == 200
    assert api.patch(f"/api/v1/teams/{sales.pk}/", {"description": "x"}, format="json").status_code == 404
    created = api.post("/api/v1/teams/", {"name": "Mine"}, format="json")
    assert created.status_code == 403
    assert created.json() == {"message": "Only global admins can create teams."}
    assert api.delete(f"/api/v1/teams/{team.pk}/").status_code == 403
    assert Team.objects.filter(pk=team.pk).exists()


def test_global_maintainer_reads_teams_but_does_not_write_them(team):
    api = api_for(user_with_role("maint", Role.MAINTAINER))
    assert names(api.get("/api/v1/teams/")) == ["Engineering"]
    assert api.post("/api/v1/teams/", {"name": "X"}, format="json").status_code == 403


def test_no_role_no_teams(team):
    assert api_for(user_with_role("nobody")).get("/api/v1/teams/").status_code == 403


# --- enroll secrets ------------------------------------------------------------------------------------


def test_list_secrets(admin_api, global_secret, team_secret, team):
    rows = admin_api.get("/api/v1/enroll-secrets/").json()["results"]
    by_secret = {row["secret"]: row for row in rows}
    assert by_secret[global_secret]["team_id"] is None and by_secret[global_secret]["team_name"] is None
    assert by_secret[team_secret]["team_id"] == team.pk
    assert by_secret[team_secret]["team_name"] == "Engineering"
    only_team = admin_api.get(f"/api/v1/enroll-secrets/?team_id={team.pk}").json()["results"]
    assert [row["secret"] for row in only_team] == [team_secret]
    only_global = admin_api.get("/api/v1/enroll-secrets/?team_id=0").json()["results"]
    assert [row["secret"] for row in only_global] == [global_secret]


def test_create_secret_generated_or_given(admin_api, team):
    generated = admin_api.post("/api/v1/enroll-secrets/", {}, format="json")
    assert generated.status_code == 201
    assert len(generated.json()["secret"]) == 24 and generated.json()["team_id"] is None
    given = admin_api.post(
        "/api/v1/enroll-secrets/", {"secret": " mine-123 ", "team_id": team.pk}, format="json"
    )
    assert given.status_code == 201
    assert given.json()["secret"] == "mine-123" and given.json()["team_name"] == "Engineering"


def test_duplicate_secret_is_400(admin_api, global_secret, team):
    response = admin_api.post(
        "/api/v1/enroll-secrets/", {"secret": global_secret, "team_id": team.pk}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["errors"]["secret"] == ["This secret is already in use."]


def test_fifty_first_secret_is_400(admin_api, team):
    EnrollSecret.objects.bulk_create(EnrollSecret(secret=f"s-{i}", team=team) for i in range(50))
    response = admin_api.post("/api/v1/enroll-secrets/", {"team_id": team.pk}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"]["secret"] == ["team Engineering already has 50 secrets, the maximum."]
    # The global scope has its own allowance.
    assert admin_api.post("/api/v1/enroll-secrets/", {}, format="json").status_code == 201


def test_unknown_team_is_400(admin_api):
    response = admin_api.post("/api/v1/enroll-secrets/", {"team_id": 9999}, format="json")
    assert response.status_code == 400
    assert "team_id" in response.json()["errors"]


def test_update_and_delete_secret(admin_api, team, global_secret):
    secret = EnrollSecret.objects.get(secret=global_secret)
    moved = admin_api.patch(f"/api/v1/enroll-secrets/{secret.pk}/", {"team_id": team.pk}, format="json")
    assert moved.status_code == 200 and moved.json()["team_id"] == team.pk
    empty = admin_api.patch(f"/api/v1/enroll-secrets/{secret.pk}/", {"secret": "  "}, format="json")
    assert empty.status_code == 400
    assert admin_api.delete(f"/api/v1/enroll-secrets/{secret.pk}/").status_code == 204
    assert not EnrollSecret.objects.filter(pk=secret.pk).exists()


def test_maintainers_read_secrets_observers_do_not(global_secret):
    maintainer = api_for(user_with_role("maint", Role.MAINTAINER))
    assert maintainer.get("/api/v1/enroll-secrets/").json()["count"] == 1
    assert maintainer.post("/api/v1/enroll-secrets/", {}, format="json").status_code == 403
    for role in (Role.OBSERVER, Role.OBSERVER_PLUS, Role.GITOPS):
        api = api_for(user_with_role(f"u-{role}", role))
        assert api.get("/api/v1/enroll-secrets/").status_code == 403, role


def test_team_admin_manages_only_their_teams_secrets(team, sales, global_secret, team_secret):
    sales_secret = EnrollSecret.objects.create(secret="sales-secret", team=sales)
    api = api_for(user_with_role("lead", Role.ADMIN, team))
    assert [row["secret"] for row in api.get("/api/v1/enroll-secrets/").json()["results"]] == [team_secret]
    added = api.post("/api/v1/enroll-secrets/", {"team_id": team.pk}, format="json")
    assert added.status_code == 201
    refused_global = api.post("/api/v1/enroll-secrets/", {}, format="json")
    assert refused_global.status_code == 403
    assert refused_global.json() == {"message": "You are not an admin of the global scope."}
    assert api.post("/api/v1/enroll-secrets/", {"team_id": sales.pk}, format="json").status_code == 403
    own = EnrollSecret.objects.get(secret=team_secret)
    moved_away = api.patch(f"/api/v1/enroll-secrets/{own.pk}/", {"team_id": None}, format="json")
    assert moved_away.status_code == 403
    assert api.delete(f"/api/v1/enroll-secrets/{sales_secret.pk}/").status_code == 404
    assert api.delete(f"/api/v1/enroll-secrets/{own.pk}/").status_code == 204


def test_team_maintainer_reads_but_cannot_write_team_secrets(team, team_secret):
    api = api_for(user_with_role("tm", Role.MAINTAINER, team))
    assert api.get("/api/v1/enroll-secrets/").json()["count"] == 1
    assert api.post("/api/v1/enroll-secrets/", {"team_id": team.pk}, format="json").status_code == 403


def test_deleting_a_secret_keeps_enrolled_hosts(admin_api, team, team_secret):
    make_host("enrolled", team)
    secret = EnrollSecret.objects.get(secret=team_secret)
    admin_api.delete(f"/api/v1/enroll-secrets/{secret.pk}/")
    assert Host.objects.filter(hostname="enrolled", team=team).exists()
