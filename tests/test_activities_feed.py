"""Reading the trail: ``GET /api/v1/activities/`` (filters, scoping, read-only) and the console page."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from activities.choices import ActivityType, Surface
from activities.context import acting_as
from activities.models import Activity
from activities.recording import record, record_edited
from activities.snapshots import snapshot
from hosts.choices import Role
from hosts.models import Team
from queries.models import Query
from tests.factories import api_for, user_with_role

pytestmark = pytest.mark.django_db

FEED = "/api/v1/activities/"
CONSOLE = "/admin/activities/activity/"


@pytest.fixture
def root():
    return get_user_model().objects.create_superuser("root", "root@example.com", "pw")


@pytest.fixture
def sales(db) -> Team:
    return Team.objects.create(name="Sales")


@pytest.fixture
def trail(root, team, sales):
    """A global, an Engineering and a Sales activity, an hour apart, by root then alice."""
    alice = user_with_role("alice", Role.ADMIN, team)
    now = timezone.now()
    with acting_as(root, Surface.CONSOLE):
        global_one = record(ActivityType.EDITED_AGENT_OPTIONS, object_type="fleet_settings", team=None)
    with acting_as(alice, Surface.REST):
        engineering = record(ActivityType.CREATED_SAVED_QUERY, object_type="saved_query", object_id=7,
                             object_name="Uptime", team=team)  # fmt: skip
    with acting_as(root, Surface.COMMAND):
        sales_one = record(ActivityType.CREATED_TEAM, object_type="team", object_id=sales.pk,
                           object_name="Sales", team=sales)  # fmt: skip
    # Rows cannot be updated through the ORM, on purpose; the test places them in time with SQL.
    from django.db import connection

    with connection.cursor() as cursor:
        for activity, hours in ((global_one, 3), (engineering, 2), (sales_one, 1)):
            cursor.execute(
                f"UPDATE {Activity._meta.db_table} SET created_at = %s WHERE id = %s",
                [now - timedelta(hours=hours), activity.pk],
            )
    return {"global": global_one, "engineering": engineering, "sales": sales_one, "alice": alice, "now": now}


def ids(response) -> list[int]:
    assert response.status_code == 200, response.json()
    return [row["id"] for row in response.json()["results"]]


# --- REST: list and filters -----------------------------------------------------------------------


def test_global_admin_lists_everything_newest_first(root, trail):
    response = api_for(root).get(FEED)
    assert ids(response) == [trail["sales"].pk, trail["engineering"].pk, trail["global"].pk]
    row = response.json()["results"][1]
    assert row["type"] == "created_saved_query" and row["actor_full_name"] == "alice"
    assert (
        row["actor_id"] == trail["alice"].pk and row["surface"] == "rest" and row["object_name"] == "Uptime"
    )
    assert set(row) == {
        "id", "created_at", "type", "actor_id", "actor_full_name", "actor_email", "surface",
        "object_type", "object_id", "object_name", "team_id", "client_address", "details",
    }  # fmt: skip
    assert response.json()["count_is_exact"] is True


def test_filters(root, trail, team):
    api = api_for(root)
    assert ids(api.get(FEED, {"actor": "alice"})) == [trail["engineering"].pk]
    assert ids(api.get(FEED, {"actor": str(trail["alice"].pk)})) == [trail["engineering"].pk]
    assert ids(api.get(FEED, {"type": "created_team,edited_agent_options"})) == [
        trail["sales"].pk,
        trail["global"].pk,
    ]
    assert ids(api.get(FEED, {"object_type": "saved_query", "object_id": "7"})) == [trail["engineering"].pk]
    assert ids(api.get(FEED, {"team_id": team.pk})) == [trail["engineering"].pk]
    assert ids(api.get(FEED, {"team_id": 0})) == [trail["global"].pk]
    assert ids(api.get(FEED, {"surface": "command"})) == [trail["sales"].pk]
    now = trail["now"]
    window = {
        "after": (now - timedelta(minutes=150)).isoformat(),
        "before": (now - timedelta(minutes=30)).isoformat(),
    }
    assert ids(api.get(FEED, window)) == [trail["sales"].pk, trail["engineering"].pk]
    assert ids(api.get(FEED, {"search": "upti"})) == [trail["engineering"].pk]


@pytest.mark.parametrize(
    "params", [{"after": "yesterday"}, {"before": "2026-13-45T99:00:00"}, {"team_id": "x"}]
)
def test_bad_filters_are_400_json(root, trail, params):
    response = api_for(root).get(FEED, params)
    assert response.status_code == 400
    body = response.json()
    assert body["message"] and set(body["errors"]) == set(params)


def test_one_activity(root, trail):
    response = api_for(root).get(f"{FEED}{trail['sales'].pk}/")
    assert response.status_code == 200 and response.json()["object_name"] == "Sales"


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_nobody_can_change_or_delete_an_activity(root, trail, method):
    api = api_for(root)
    response = getattr(api, method)(f"{FEED}{trail['sales'].pk}/", {"object_name": "x"}, format="json")
    assert response.status_code == 405
    assert api.post(FEED, {"type": "created_team"}, format="json").status_code == 405
    assert Activity.objects.get(pk=trail["sales"].pk).object_name == "Sales"


# --- REST: who sees what --------------------------------------------------------------------------


def test_team_admin_sees_their_team_and_their_own_only(trail, team, sales):
    alice = trail["alice"]
    with acting_as(alice, Surface.REST):
        own_login = record(ActivityType.USER_LOGGED_IN, alice, team=None)
    assert ids(api_for(alice).get(FEED)) == [own_login.pk, trail["engineering"].pk]
    assert api_for(alice).get(f"{FEED}{trail['sales'].pk}/").status_code == 404
    assert ids(api_for(alice).get(FEED, {"team_id": sales.pk})) == []


def test_team_observer_reads_the_team_feed(trail, team):
    observer = user_with_role("otto", Role.OBSERVER, team)
    assert ids(api_for(observer).get(FEED)) == [trail["engineering"].pk]


def test_global_observer_reads_everything(trail):
    observer = user_with_role("gobs", Role.OBSERVER)
    assert len(ids(api_for(observer).get(FEED))) == 3


@pytest.mark.parametrize("team_role", [False, True])
def test_gitops_and_roleless_users_get_403(trail, team, team_role):
    gitops = user_with_role("gitty", Role.GITOPS, team if team_role else None)
    assert api_for(gitops).get(FEED).status_code == 403
    nobody = user_with_role("nobody")
    assert api_for(nobody).get(FEED).status_code == 403


# --- console --------------------------------------------------------------------------------------


def test_console_list_is_read_only_and_scoped(client, root, trail, team):
    client.force_login(root)
    page = client.get(CONSOLE)
    assert page.status_code == 200
    shown = [a.pk for a in page.context["cl"].result_list]
    assert {trail["sales"].pk, trail["engineering"].pk, trail["global"].pk} <= set(shown)
    assert not page.context["has_add_permission"] and page.context["action_form"] is None
    assert client.get(f"{CONSOLE}add/").status_code == 403
    detail = client.get(f"{CONSOLE}{trail['sales'].pk}/change/")
    assert detail.status_code == 200 and not detail.context["has_change_permission"]
    assert not detail.context["has_delete_permission"]
    assert client.post(f"{CONSOLE}{trail['sales'].pk}/change/", {"object_name": "x"}).status_code == 403
    assert client.post(f"{CONSOLE}{trail['sales'].pk}/delete/", {"post": "yes"}).status_code == 403
    assert Activity.objects.filter(pk=trail["sales"].pk, object_name="Sales").exists()

    filtered = client.get(CONSOLE, {"team_id": team.pk, "period": "24h"})
    assert [a.pk for a in filtered.context["cl"].result_list] == [trail["engineering"].pk]

    client.force_login(trail["alice"])
    mine = {a.pk for a in client.get(CONSOLE).context["cl"].result_list}
    assert trail["engineering"].pk in mine and not mine & {trail["sales"].pk, trail["global"].pk}


def test_console_detail_shows_the_diff(client, root, team):
    query = Query.objects.create(name="Uptime", query="SELECT * FROM uptime", team=team)
    before = snapshot(query)
    query.query = "SELECT days FROM uptime"
    query.save()
    with acting_as(root, Surface.REST):
        edited = record_edited(query, before)
    client.force_login(root)
    page = client.get(f"{CONSOLE}{edited.pk}/change/").content.decode()
    assert "<th>before</th>" in page and "SELECT * FROM uptime" in page and "SELECT days FROM uptime" in page
    listing = client.get(CONSOLE, {"q": "Uptime"}).content.decode()
    assert f"/admin/queries/query/{query.pk}/change/" in listing  # the object links to its page
