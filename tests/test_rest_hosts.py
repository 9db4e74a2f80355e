"""REST API: hosts (list, filters, search, detail, refetch, pagination), auth and the schema."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from hosts.choices import Role
from hosts.models import Host, Team, UserRole
from hosts.paginators import CappedLimitOffsetPagination
from tests.factories import api_for, make_host, user_with_role

pytestmark = pytest.mark.django_db

HOST_FIELDS = {
    "id",
    "hostname",
    "display_name",
    "computer_name",
    "uuid",
    "platform",
    "platform_like",
    "os_version",
    "code_name",
    "build",
    "osquery_version",
    "orbit_version",
    "cpu_type",
    "cpu_brand",
    "cpu_physical_cores",
    "cpu_logical_cores",
    "memory",
    "hardware_vendor",
    "hardware_model",
    "hardware_version",
    "hardware_serial",
    "uptime",
    "primary_ip",
    "primary_mac",
    "public_ip",
    "distributed_interval",
    "config_tls_refresh",
    "logger_tls_period",
    "team_id",
    "team_name",
    "status",
    "seen_time",
    "created_at",
    "last_enrolled_at",
    "detail_updated_at",
    "refetch_requested",
}


@pytest.fixture
def admin_api() -> APIClient:
    return api_for(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))


@pytest.fixture
def fleet(team):
    """A small fleet: online, offline, missing, never-seen and new hosts across two teams."""
    other = Team.objects.create(name="Sales")
    return {
        "online": make_host(
            "mac-online.local",
            team,
            timedelta(seconds=5),
            platform="darwin",
            hardware_serial="C02ONLINE",
            primary_ip="10.0.1.15",
            computer_name="Online Mac",
        ),
        "offline": make_host(
            "ubuntu-offline",
            team,
            timedelta(hours=2),
            platform="ubuntu",
            hardware_serial="SERIAL-OFF",
            primary_ip="10.0.2.20",
        ),
        "missing": make_host(
            "win-missing", other, timedelta(days=40), platform="windows", primary_ip="192.168.1.9"
        ),
        "never": make_host("rhel-never", None, None, platform="rhel"),
        "new": make_host(
            "fresh-mac", None, timedelta(seconds=1), created_ago=timedelta(hours=1), platform="darwin"
        ),
        "sales": other,
    }


def ids(response) -> set[int]:
    return {row["id"] for row in response.json()["results"]}


# --- authentication -------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/api/v1/hosts/", "/api/v1/teams/", "/api/v1/enroll-secrets/"])
def test_unauthenticated_requests_get_401_json(client, url):
    response = client.get(url)
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"message": "Authentication credentials were not provided."}


def test_bad_token_is_401(client):
    response = client.get("/api/v1/hosts/", HTTP_AUTHORIZATION="Token nope")
    assert response.status_code == 401
    assert response.json()["message"] == "Invalid token."


def test_obtain_token_then_use_it(client, fleet):
    get_user_model().objects.create_superuser("alice", "a@example.com", "s3cret-pass")
    response = client.post("/api/v1/auth/token/", {"username": "alice", "password": "s3cret-pass"})
    assert response.status_code == 200
    token = response.json()["token"]
    hosts = client.get("/api/v1/hosts/", HTTP_AUTHORIZATION=f"Token {token}")
    assert hosts.status_code == 200
    assert hosts.json()["count"] == 5


def test_obtain_token_with_a_wrong_password_is_400_json(client):
    get_user_model().objects.create_user("bob", password="right-one")
    response = client.post("/api/v1/auth/token/", {"username": "bob", "password": "wrong"})
    assert response.status_code == 400
    assert response.json()["message"] == "invalid request"
    assert "Unable to log in" in response.json()["errors"]["non_field_errors"][0]


def test_session_login_works_too(client, fleet):
    client.force_login(get_user_model().objects.create_superuser("s", "s@example.com", "pw"))
    assert client.get("/api/v1/hosts/").json()["count"] == 5


# --- list and detail --------------------------------------------------------------------------------


def test_host_list_has_fleets_fields_and_statuses(admin_api, fleet, team):
    response = admin_api.get("/api/v1/hosts/")
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 5 and body["count_is_exact"] is True
    rows = {row["hostname"]: row for row in body["results"]}
    assert set(rows["mac-online.local"]) == HOST_FIELDS
    online = rows["mac-online.local"]
    assert online["status"] == "online"
    assert online["display_name"] == "Online Mac"
    assert online["team_id"] == team.pk and online["team_name"] == "Engineering"
    assert online["seen_time"] is not None
    assert rows["ubuntu-offline"]["status"] == "offline"
    assert rows["win-missing"]["status"] == "missing"
    never = rows["rhel-never"]
    assert never["status"] == "offline" and never["seen_time"] is None
    assert never["team_id"] is None and never["team_name"] is None


def test_host_list_query_count_does_not_grow_with_hosts(admin_api, team):
    for i in range(3):
        make_host(f"h{i}", team, timedelta(seconds=1))
    with CaptureQueriesContext(connection) as few:
        admin_api.get("/api/v1/hosts/")
    for i in range(3, 40):
        make_host(f"h{i}", team if i % 2 else None, timedelta(seconds=1) if i % 3 else None)
    with CaptureQueriesContext(connection) as many:
        response = admin_api.get("/api/v1/hosts/")
    assert response.json()["count"] == 40
    assert len(many) == len(few)


def test_host_detail(admin_api, fleet):
    host = fleet["offline"]
    response = admin_api.get(f"/api/v1/hosts/{host.pk}/")
    assert response.status_code == 200
    assert response.json()["hostname"] == "ubuntu-offline"
    assert response.json()["status"] == "offline"


def test_unknown_host_is_404_json(admin_api):
    response = admin_api.get("/api/v1/hosts/999999/")
    assert response.status_code == 404
    assert response.json() == {"message": "No Host matches the given query."}


def test_refetch_sets_the_flag(admin_api, fleet):
    host = fleet["online"]
    response = admin_api.post(f"/api/v1/hosts/{host.pk}/refetch/")
    assert response.status_code == 200
    assert response.json() == {"refetch_requested": True}
    host.refresh_from_db()
    assert host.refetch_requested is True
    assert admin_api.get(f"/api/v1/hosts/{host.pk}/").json()["refetch_requested"] is True


def test_hosts_are_read_only(admin_api, fleet):
    host = fleet["online"]
    assert admin_api.patch(f"/api/v1/hosts/{host.pk}/", {"hostname": "x"}, format="json").status_code == 405
    assert admin_api.delete(f"/api/v1/hosts/{host.pk}/").status_code == 405
    assert admin_api.post("/api/v1/hosts/", {}, format="json").status_code == 405


# --- filters, search, ordering ------------------------------------------------------------------


def test_filter_by_team(admin_api, fleet, team):
    in_team = admin_api.get(f"/api/v1/hosts/?team_id={team.pk}")
    assert ids(in_team) == {fleet["online"].pk, fleet["offline"].pk}
    assert ids(admin_api.get("/api/v1/hosts/?team_id=0")) == {fleet["never"].pk, fleet["new"].pk}


def test_filter_by_platform(admin_api, fleet):
    assert ids(admin_api.get("/api/v1/hosts/?platform=darwin")) == {fleet["online"].pk, fleet["new"].pk}
    # "linux" is the whole family, as in Fleet.
    assert ids(admin_api.get("/api/v1/hosts/?platform=linux")) == {fleet["offline"].pk, fleet["never"].pk}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("online", {"online", "new"}),
        ("offline", {"offline", "missing", "never"}),
        ("missing", {"missing"}),
        ("new", {"new"}),
    ],
)
def test_filter_by_status(admin_api, fleet, status, expected):
    response = admin_api.get(f"/api/v1/hosts/?status={status}")
    assert ids(response) == {fleet[name].pk for name in expected}


def test_unknown_status_is_400_json(admin_api, fleet):
    response = admin_api.get("/api/v1/hosts/?status=sleeping")
    assert response.status_code == 400
    body = response.json()
    assert body["message"] == "invalid request"
    assert "sleeping is not one of the available choices" in body["errors"]["status"][0]


def test_bad_team_id_is_400(admin_api):
    response = admin_api.get("/api/v1/hosts/?team_id=abc")
    assert response.status_code == 400
    assert "team_id" in response.json()["errors"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("online", "online"),  # part of a hostname
        ("Online Mac", "online"),  # the display name
        ("uuid-win-missing", "missing"),  # a whole uuid
        ("SERIAL-OFF", "offline"),  # a whole serial
        ("192.168.", "missing"),  # an IP prefix
    ],
)
def test_search(admin_api, fleet, query, expected):
    assert ids(admin_api.get("/api/v1/hosts/", {"search": query})) == {fleet[expected].pk}


def test_search_matches_identifiers_exactly(admin_api, fleet):
    # Partial uuids/serials would need a full scan; they deliberately do not match.
    assert ids(admin_api.get("/api/v1/hosts/", {"search": "SERIAL-O"})) == set()
    assert ids(admin_api.get("/api/v1/hosts/", {"search": "168.1.9"})) == set()


def test_filters_combine_with_search(admin_api, fleet, team):
    response = admin_api.get("/api/v1/hosts/", {"team_id": team.pk, "status": "online", "search": "mac"})
    assert ids(response) == {fleet["online"].pk}


def test_ordering(admin_api, fleet):
    names = [row["hostname"] for row in admin_api.get("/api/v1/hosts/?ordering=hostname").json()["results"]]
    assert names == sorted(names)


# --- pagination ----------------------------------------------------------------------------------


def _count_queries(queries) -> list[str]:
    return [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]


def test_pagination_counts_through_a_limited_subquery(admin_api, team):
    Host.objects.bulk_create(Host(osquery_host_id=f"b{i}", hostname=f"bulk-{i}") for i in range(30))
    with CaptureQueriesContext(connection) as queries:
        body = admin_api.get("/api/v1/hosts/?limit=10&offset=10").json()
    assert len(body["results"]) == 10
    assert body["count"] == 30 and body["count_is_exact"] is True
    counts = _count_queries(queries)
    assert counts, "the page should still be counted"
    assert all("LIMIT" in sql.upper() for sql in counts), counts


def test_big_results_get_a_lower_bound_and_still_page_on(admin_api, monkeypatch):
    monkeypatch.setattr(CappedLimitOffsetPagination, "count_window", 12)
    Host.objects.bulk_create(Host(osquery_host_id=f"b{i}", hostname=f"bulk-{i}") for i in range(40))
    body = admin_api.get("/api/v1/hosts/?limit=5").json()
    assert body["count"] == 12 and body["count_is_exact"] is False
    assert "offset=5" in body["next"]
    # Deeper pages keep counting from where they are, so every page stays reachable.
    deep = admin_api.get("/api/v1/hosts/?limit=5&offset=30").json()
    assert deep["count"] == 40 and deep["count_is_exact"] is True
    assert len(deep["results"]) == 5 and deep["next"] is not None
    past = admin_api.get("/api/v1/hosts/?limit=5&offset=100").json()
    assert past["results"] == [] and past["count"] == 40


def test_limit_is_capped(admin_api):
    Host.objects.bulk_create(Host(osquery_host_id=f"b{i}") for i in range(3))
    assert admin_api.get("/api/v1/hosts/?limit=999999").status_code == 200


# --- roles on hosts -----------------------------------------------------------------------------------


def test_user_without_a_role_is_refused(fleet):
    response = api_for(user_with_role("nobody")).get("/api/v1/hosts/")
    assert response.status_code == 403
    assert response.json() == {"message": "Your Fleet role does not allow this."}


def test_global_observer_sees_every_host_and_may_refetch(fleet):
    api = api_for(user_with_role("obs", Role.OBSERVER))
    assert api.get("/api/v1/hosts/").json()["count"] == 5
    assert api.post(f"/api/v1/hosts/{fleet['never'].pk}/refetch/").status_code == 200


def test_team_observer_sees_only_their_teams_hosts(fleet, team):
    api = api_for(user_with_role("eng-obs", Role.OBSERVER, team))
    assert ids(api.get("/api/v1/hosts/")) == {fleet["online"].pk, fleet["offline"].pk}
    assert api.get(f"/api/v1/hosts/{fleet['missing'].pk}/").status_code == 404
    assert api.get(f"/api/v1/hosts/{fleet['never'].pk}/").status_code == 404  # "No team" is global
    assert api.post(f"/api/v1/hosts/{fleet['missing'].pk}/refetch/").status_code == 404
    assert api.post(f"/api/v1/hosts/{fleet['online'].pk}/refetch/").status_code == 200


def test_roles_on_several_teams_add_up(fleet, team):
    user = user_with_role("two-teams", Role.MAINTAINER, team)
    UserRole.objects.create(user=user, team=fleet["sales"], role=Role.OBSERVER)
    assert api_for(user).get("/api/v1/hosts/").json()["count"] == 3


def test_gitops_gets_no_host_data(fleet):
    assert api_for(user_with_role("gitops", Role.GITOPS)).get("/api/v1/hosts/").status_code == 403


def test_inactive_user_token_is_rejected(fleet):
    user = user_with_role("gone", Role.ADMIN)
    api = api_for(user)
    user.is_active = False
    user.save()
    assert api.get("/api/v1/hosts/").status_code == 401


# --- schema -------------------------------------------------------------------------------------------------


def test_schema_is_openapi_with_our_paths(admin_api):
    response = admin_api.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    for path in (
        "/api/v1/hosts/",
        "/api/v1/hosts/{id}/",
        "/api/v1/hosts/{id}/refetch/",
        "/api/v1/teams/",
        "/api/v1/enroll-secrets/",
    ):
        assert path in schema["paths"], path
    params = {p["name"] for p in schema["paths"]["/api/v1/hosts/"]["get"]["parameters"]}
    assert {"team_id", "platform", "status", "search", "limit", "offset"} <= params
