"""The console's home page is a dashboard: the fleet's counts, by platform and team, for the
teams the user may see, each a link into the filtered host list."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from campaigns.models import Campaign
from hosts.choices import Role
from hosts.models import Label, LabelMembership, Team
from tests.factories import make_host, user_with_role


@pytest.fixture
def fleet(db):
    alpha, beta = Team.objects.create(name="Alpha"), Team.objects.create(name="Beta")
    hosts = [
        make_host("mac-1", alpha, timedelta(seconds=5), platform="darwin", osquery_version="5.12.1"),
        make_host("mac-2", alpha, timedelta(hours=2), platform="darwin", osquery_version="5.12.1"),
        make_host("ubu-1", beta, timedelta(seconds=5), platform="ubuntu", osquery_version="5.11.0"),
        make_host("win-1", None, timedelta(days=40), platform="windows", osquery_version="5.11.0"),
        make_host("new-1", None, timedelta(seconds=1), created_ago=timedelta(hours=1), platform="rhel"),
    ]
    pets = Label.objects.create(name="Pets", query="SELECT 1")
    LabelMembership.objects.bulk_create(LabelMembership(label=pets, host=h) for h in hosts[:3])
    return {"alpha": alpha, "beta": beta, "hosts": hosts, "pets": pets}


def cards(response) -> dict[str, int]:
    return {card["status"]: card["count"] for card in response.context["status_cards"]}


def test_counts_match_the_hosts(admin_client, fleet):
    response = admin_client.get("/admin/")
    assert response.status_code == 200
    assert cards(response) == {"online": 3, "offline": 2, "new": 1, "missing": 1}
    summary = response.context["dashboard"]
    assert summary.hosts["total"] == 5
    platforms = {row["platform"]: (row["total"], row["online"]) for row in summary.platforms}
    assert platforms == {"darwin": (2, 1), "linux": (2, 2), "windows": (1, 0)}
    teams = {row["name"]: row["total"] for row in summary.teams}
    assert teams == {"Alpha": 2, "Beta": 1, "No team": 2}
    labels = {row["name"]: row["hosts"] for row in summary.labels}
    assert labels["Pets"] == 3 and labels["All Hosts"] == 5 and labels["macOS"] == 2
    assert {row["version"]: row["hosts"] for row in summary.osquery_versions} == {
        "5.12.1": 2,
        "5.11.0": 2,
        "unknown": 1,
    }
    page = response.content.decode()
    assert 'href="/admin/hosts/host/?status=online"' in page
    assert 'href="/admin/hosts/host/?platform=darwin"' in page
    assert f'href="/admin/hosts/host/?label_id={fleet["pets"].pk}"' in page


def test_links_lead_to_lists_with_the_same_counts(admin_client, fleet):
    dashboard = admin_client.get("/admin/")
    for card in dashboard.context["status_cards"]:
        listed = admin_client.get(card["url"]).context["cl"].result_list
        assert len(listed) == card["count"], card


def test_a_team_can_be_chosen(admin_client, fleet):
    response = admin_client.get(f"/admin/?team_id={fleet['alpha'].pk}")
    assert cards(response) == {"online": 1, "offline": 1, "new": 0, "missing": 0}
    assert {row["hosts"] for row in response.context["dashboard"].labels} == {2}
    no_team = admin_client.get("/admin/?team_id=0")
    assert response.context["chosen_team"] == fleet["alpha"].pk
    assert cards(no_team)["offline"] == 1 and no_team.context["dashboard"].hosts["total"] == 2


def test_team_users_count_only_their_team(client, fleet):
    client.force_login(user_with_role("obs", Role.OBSERVER, fleet["alpha"]))
    response = client.get("/admin/")
    assert response.context["dashboard"].hosts["total"] == 2
    assert [row["name"] for row in response.context["dashboard"].teams] == ["Alpha"]
    assert {row["hosts"] for row in response.context["dashboard"].labels} == {2}
    other = client.get(f"/admin/?team_id={fleet['beta'].pk}")  # not theirs: their own scope instead
    assert other.context["dashboard"].hosts["total"] == 2
    assert "ubu-1" not in other.content.decode()


def test_the_counts_are_kept_not_recounted_on_every_load(admin_client, fleet):
    admin_client.get("/admin/")
    with CaptureQueriesContext(connection) as queries:
        admin_client.get("/admin/")
    grouped = [q["sql"] for q in queries if "GROUP BY" in q["sql"].upper()]
    assert grouped == []


def test_recent_live_queries(admin_client, fleet):
    admin = user_with_role("boss", Role.ADMIN)
    Campaign.objects.create(sql="SELECT * FROM usb_devices", created_by=admin)
    page = admin_client.get("/admin/").content.decode()
    assert "SELECT * FROM usb_devices" in page and "Recent live queries" in page


def test_shortcuts_follow_the_role(admin_client, client, fleet):
    page = admin_client.get("/admin/").content.decode()
    assert 'id="dashboard-live-query"' in page and 'id="dashboard-add-hosts"' in page
    client.force_login(user_with_role("viewer", Role.OBSERVER))
    page = client.get("/admin/").content.decode()
    assert 'id="dashboard-live-query"' not in page and 'id="dashboard-add-hosts"' not in page
