"""Every Fleet role, global and on a team, against every console page and REST endpoint.

One rule for every surface: the Fleet role alone decides (no ``is_staff``, no Django permission
rows), and team users see only their team's objects. Objects of another team are "not found"
(the console redirects to its index, REST answers 404) so their existence does not leak; pages a
role may not use are 403; gitops has no console at all (sent to the login page) and reads no
host data over REST.

The expected outcome of each case is written out below as a rule on (role, scope), so a change
in who may do what shows up here as a failing case with its name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from django.test import Client

from campaigns.models import Campaign
from hosts.choices import Role
from hosts.models import EnrollSecret, FleetSettings, Host, Label, Team
from packs.models import Pack
from queries.models import Query
from tests.factories import api_for, make_host, user_with_role

ROLES = [Role.ADMIN, Role.MAINTAINER, Role.OBSERVER, Role.OBSERVER_PLUS, Role.GITOPS]
GLOBAL, TEAM = "global", "team"
OK, LOGIN, GONE, DENIED = "ok", "login", "gone", "denied"


@dataclass(frozen=True)
class Who:
    role: str
    scope: str

    @property
    def is_global(self) -> bool:
        return self.scope == GLOBAL

    def any_of(self, *roles: str) -> bool:
        return self.role in roles

    @property
    def console(self) -> bool:
        return self.role != Role.GITOPS

    @property
    def writer(self) -> bool:  # admins and maintainers change hosts, queries, labels
        return self.any_of(Role.ADMIN, Role.MAINTAINER)

    @property
    def runner(self) -> bool:  # may run SQL of their own live
        return self.any_of(Role.ADMIN, Role.MAINTAINER, Role.OBSERVER_PLUS)


@pytest.fixture
def world(db):
    team_a, team_b = Team.objects.create(name="Alpha"), Team.objects.create(name="Beta")
    admin = user_with_role("root-admin", Role.ADMIN)
    data = {
        "team_a": team_a,
        "team_b": team_b,
        "host_a": make_host("host-a", team=team_a),
        "host_b": make_host("host-b", team=team_b),
        "query_b": Query.objects.create(name="beta only", query="SELECT 1", team=team_b),
        "query": Query.objects.create(name="global", query="SELECT 1"),
        "label": Label.objects.create(name="Pets", query="SELECT 1"),
        "pack": Pack.objects.create(name="monitoring"),
        "secret": EnrollSecret.objects.create(secret="global-secret-123"),
        "settings": FleetSettings.load(),
        "campaign": Campaign.objects.create(sql="SELECT 1", created_by=admin),
    }
    return data


def _user(who: Who, world: dict):
    team = None if who.is_global else world["team_a"]
    return user_with_role(f"{who.role}-{who.scope}", who.role, team)


def _outcome(response) -> str:
    """What the user met: the page, the login form, "not found" or a refusal."""
    if response.status_code == 200:
        return OK
    if response.status_code == 302:
        location = response["Location"]
        if "/admin/login/" in location:
            return LOGIN
        if location.rstrip("/").endswith("/admin"):
            return GONE  # the admin's "doesn't exist (perhaps deleted?)": nothing leaks
        return OK  # a successful POST redirects to the next page
    if response.status_code == 404:
        return GONE
    if response.status_code == 403:
        return DENIED
    raise AssertionError(f"unexpected {response.status_code}")


def console_cases(w: dict) -> list[tuple[str, str, str, dict | None, Callable[[Who], str]]]:
    """(name, method, url, data, expected(who)) for every console page."""

    def console_only(rule: Callable[[Who], str]) -> Callable[[Who], str]:
        return lambda who: rule(who) if who.console else LOGIN

    everyone = console_only(lambda who: OK)
    h_a, h_b, team_b = w["host_a"].pk, w["host_b"].pk, w["team_b"].pk
    return [
        ("dashboard", "get", "/admin/", None, everyone),
        ("host list", "get", "/admin/hosts/host/", None, everyone),
        ("host list csv", "get", "/admin/hosts/host/export.csv", None, everyone),
        ("own team's host", "get", f"/admin/hosts/host/{h_a}/change/", None, everyone),
        (
            "other team's host",
            "get",
            f"/admin/hosts/host/{h_b}/change/",
            None,
            console_only(lambda who: OK if who.is_global else GONE),
        ),
        (
            "transfer a host",
            "post",
            f"/admin/hosts/host/{h_a}/transfer/",
            {"team": w["team_a"].pk},
            console_only(lambda who: OK if who.writer else DENIED),
        ),
        (
            "delete a host (confirmation page)",
            "get",
            f"/admin/hosts/host/{h_a}/delete/",
            None,
            console_only(lambda who: OK if who.writer else DENIED),
        ),
        ("teams", "get", "/admin/hosts/team/", None, everyone),
        (
            "add a team",
            "get",
            "/admin/hosts/team/add/",
            None,
            console_only(lambda who: OK if who.is_global and who.role == Role.ADMIN else DENIED),
        ),
        (
            "other team's page",
            "get",
            f"/admin/hosts/team/{team_b}/change/",
            None,
            console_only(lambda who: OK if who.is_global else GONE),
        ),
        (
            "enroll secrets",
            "get",
            "/admin/hosts/enrollsecret/",
            None,
            console_only(lambda who: OK if who.writer else DENIED),
        ),
        (
            "fleet settings",
            "get",
            f"/admin/hosts/fleetsettings/{w['settings'].pk}/change/",
            None,
            console_only(lambda who: OK if who.is_global and who.role == Role.ADMIN else DENIED),
        ),
        ("queries", "get", "/admin/queries/query/", None, everyone),
        (
            "add a query",
            "get",
            "/admin/queries/query/add/",
            None,
            console_only(lambda who: OK if who.writer else DENIED),
        ),
        (
            "other team's query",
            "get",
            f"/admin/queries/query/{w['query_b'].pk}/change/",
            None,
            console_only(lambda who: OK if who.is_global else GONE),
        ),
        ("labels", "get", "/admin/hosts/label/", None, everyone),
        (
            "add a label",
            "get",
            "/admin/hosts/label/add/",
            None,
            console_only(lambda who: OK if who.is_global and who.writer else DENIED),
        ),
        (
            "packs",
            "get",
            "/admin/packs/pack/",
            None,
            console_only(lambda who: OK if who.is_global else DENIED),
        ),
        (
            "add a pack",
            "get",
            "/admin/packs/pack/add/",
            None,
            console_only(lambda who: OK if who.is_global and who.writer else DENIED),
        ),
        (
            "ad-hoc live query",
            "get",
            "/admin/campaigns/campaign/new/",
            None,
            console_only(lambda who: OK if who.runner else DENIED),
        ),
        (
            "someone else's live query",
            "get",
            f"/admin/campaigns/campaign/{w['campaign'].pk}/change/",
            None,
            console_only(lambda who: OK if who.is_global and who.role == Role.ADMIN else DENIED),
        ),
        ("software", "get", "/admin/software/softwaretitle/", None, everyone),
        (
            "users",
            "get",
            "/admin/users/user/",
            None,
            console_only(lambda who: OK if who.role == Role.ADMIN else DENIED),
        ),
        (
            "invite a user",
            "get",
            "/admin/users/invite/add/",
            None,
            console_only(lambda who: OK if who.role == Role.ADMIN else DENIED),
        ),
    ]


def rest_cases(w: dict) -> list[tuple[str, str, str, dict | None, Callable[[Who], int]]]:
    """(name, method, url, data, expected status(who)) for the REST API."""
    h_b = w["host_b"].pk
    hosts_reader = lambda who: 200 if who.console else 403  # noqa: E731
    return [
        ("hosts", "get", "/api/v1/hosts/", None, hosts_reader),
        (
            "other team's host",
            "get",
            f"/api/v1/hosts/{h_b}/",
            None,
            lambda who: 403 if not who.console else 200 if who.is_global else 404,
        ),
        (
            "host software",
            "get",
            f"/api/v1/hosts/{h_b}/software/",
            None,
            lambda who: 403 if not who.console else 200 if who.is_global else 404,
        ),
        ("teams", "get", "/api/v1/teams/", None, lambda who: 200),
        (
            "create a team",
            "post",
            "/api/v1/teams/",
            {"name": "Gamma"},
            lambda who: 201 if who.is_global and who.role == Role.ADMIN else 403,
        ),
        ("enroll secrets", "get", "/api/v1/enroll-secrets/", None, lambda who: 200 if who.writer else 403),
        ("queries", "get", "/api/v1/queries/", None, lambda who: 200),
        (
            "other team's query",
            "get",
            f"/api/v1/queries/{w['query_b'].pk}/",
            None,
            lambda who: 200 if who.is_global else 404,
        ),
        ("labels", "get", "/api/v1/labels/", None, lambda who: 200),
        ("packs", "get", "/api/v1/packs/", None, lambda who: 200 if who.is_global else 403),
        (
            "ad-hoc live query",
            "post",
            "/api/v1/campaigns/",
            {"sql": "SELECT 1", "targets": {"all": True}},
            lambda who: 201 if who.runner else 403,
        ),
        (
            "someone else's live query",
            "get",
            f"/api/v1/campaigns/{w['campaign'].pk}/",
            None,
            lambda who: 200 if who.is_global and who.role == Role.ADMIN else 403,
        ),
        ("software", "get", "/api/v1/software/", None, hosts_reader),
    ]


CASES = [Who(role, scope) for role in ROLES for scope in (GLOBAL, TEAM)]


@pytest.mark.parametrize("who", CASES, ids=[f"{w.scope}-{w.role}" for w in CASES])
def test_console_pages(who: Who, world: dict) -> None:
    client = Client()
    client.force_login(_user(who, world))
    wrong = []
    for name, method, url, data, expected in console_cases(world):
        response = getattr(client, method)(url, data or {})
        got, want = _outcome(response), expected(who)
        if got != want:
            wrong.append(f"{name}: {method.upper()} {url} -> {got} ({response.status_code}), expected {want}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("who", CASES, ids=[f"{w.scope}-{w.role}" for w in CASES])
def test_rest_endpoints(who: Who, world: dict) -> None:
    api = api_for(_user(who, world))
    wrong = []
    for name, method, url, data, expected in rest_cases(world):
        response = getattr(api, method)(url, data, format="json") if data else getattr(api, method)(url)
        if response.status_code != expected(who):
            wrong.append(
                f"{name}: {method.upper()} {url} -> {response.status_code}, expected {expected(who)}"
            )
    assert not wrong, "\n".join(wrong)


def test_roles_need_nothing_else_to_open_the_console(world: dict) -> None:
    """A global observer logs in through the login form: no is_staff, no permission rows."""
    user = user_with_role("plain-observer", Role.OBSERVER)
    assert not user.is_staff and not user.user_permissions.exists()
    client = Client()
    response = client.post("/admin/login/", {"username": "plain-observer", "password": "pw-plain-observer"})
    assert response.status_code == 302, response.content.decode()[:500]
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/hosts/host/").status_code == 200


@pytest.mark.parametrize("role", [Role.GITOPS, None])
def test_gitops_and_roleless_users_are_told_why_they_cannot_log_in(world: dict, role: str | None) -> None:
    user_with_role("someone", role)
    response = Client().post("/admin/login/", {"username": "someone", "password": "pw-someone"})
    page = response.content.decode()
    assert response.status_code == 200
    assert ("GitOps accounts work through the REST API" if role else "no Fleet role yet") in page


def test_django_permission_rows_grant_nothing(world: dict) -> None:
    """The role decides: an observer given ``change_query`` by hand still may not edit queries."""
    from django.contrib.auth.models import Permission

    user = user_with_role("obs", Role.OBSERVER)
    user.is_staff = True
    user.save()
    user.user_permissions.add(*Permission.objects.filter(codename__in=["add_query", "change_query"]))
    client = Client()
    client.force_login(user)
    assert client.get("/admin/queries/query/add/").status_code == 403
    response = client.post(
        f"/admin/queries/query/{world['query'].pk}/change/", {"name": "x", "query": "SELECT 2"}
    )
    assert response.status_code == 403
    assert Query.objects.get(pk=world["query"].pk).name == "global"
    assert Host.objects.count() == 2
