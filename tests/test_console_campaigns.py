"""Console live queries: the live-query page, the target count, Run, the campaign page, Stop, the
list of past campaigns, the host list's action, permissions, and the page's WebSocket contract."""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from campaigns import services
from campaigns.models import Campaign, CampaignStatus
from hosts.choices import Role
from hosts.models import Team
from tests.factories import make_host, user_with_role

pytestmark = pytest.mark.django_db

NEW = "/admin/campaigns/campaign/new/"
COUNT = "/admin/campaigns/campaign/new/count/"
CAMPAIGNS = "/admin/campaigns/campaign/"
HOSTS = "/admin/hosts/host/"


def page_of(campaign: Campaign) -> str:
    return f"{CAMPAIGNS}{campaign.pk}/change/"


@pytest.fixture
def root(db):
    return get_user_model().objects.create_superuser("root", "root@example.com", "pw")


@pytest.fixture
def admin_client(client, root):
    client.force_login(root)
    return client


@pytest.fixture
def hosts(team):
    """Two online hosts (one in the team) and one offline host."""
    return {
        "mac": make_host("mac-1.local", team, timedelta(seconds=5), hardware_serial="C02MAC"),
        "box": make_host("build-box", None, timedelta(seconds=5)),
        "desk": make_host("desk-7", None, timedelta(hours=3)),
    }


def staff_with_role(username: str, role: str | None, team: Team | None = None):
    user = user_with_role(username, role, team)
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    return user


def answer(campaign: Campaign, host, rows=None, error: str = "") -> None:
    """What ``distributed/write`` does with one host's answer."""
    services.record_answer(campaign.pk, host.pk, host.hostname, rows or [], 1 if error else 0, error)


# --- the live-query page ----------------------------------------------------------------------------------


def test_live_query_page_renders_editor_targets_and_count_url(admin_client, hosts, team):
    response = admin_client.get(NEW)
    assert response.status_code == 200
    page = response.content.decode()
    for text in (
        'name="sql"',
        "live-query-sql",
        'name="all_hosts"',
        'name="teams"',
        "Engineering (1 host)",
        'name="hosts"',
        f'data-count-url="{COUNT}"',
        "campaigns/live_query.js",
        'value="Run"',
    ):
        assert text in page, text
    assert "mac-1.local" not in page  # no host list of the whole fleet


def test_live_query_page_preselects_hosts_and_sql(admin_client, hosts):
    ids = f"{hosts['mac'].pk},{hosts['desk'].pk},99999"
    page = admin_client.get(f"{NEW}?host_ids={ids}&sql=SELECT+1").content.decode()
    assert "mac-1.local (online)" in page and "desk-7 (offline)" in page
    assert "build-box" not in page
    assert page.count('name="selected_hosts"') == 2 and page.count("checked") == 2
    assert "SELECT 1</textarea>" in page


def test_run_creates_a_campaign_with_the_chosen_targets(admin_client, hosts, team, root):
    response = admin_client.post(
        NEW,
        {
            "sql": "SELECT * FROM os_version;",
            "teams": [team.pk],
            "selected_hosts": [hosts["desk"].pk],
            "hosts": "build-box\nC02MAC, build-box",
        },
    )
    campaign = Campaign.objects.get()
    assert response.status_code == 302 and response["Location"] == page_of(campaign)
    assert campaign.sql == "SELECT * FROM os_version;" and campaign.created_by == root
    assert sorted(campaign.host_ids) == sorted(h.pk for h in hosts.values())
    assert campaign.target_teams == [team.pk]
    assert campaign.target_hosts == [hosts["desk"].pk, "build-box", "C02MAC"]
    assert (campaign.targeted_count, campaign.online_count, campaign.offline_count) == (3, 2, 1)


def test_run_on_all_hosts(admin_client, hosts):
    response = admin_client.post(NEW, {"sql": "SELECT 1", "all_hosts": "on"})
    assert response.status_code == 302
    campaign = Campaign.objects.get()
    assert campaign.targeted_count == 3 and campaign.target_all and campaign.target_teams == []


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"sql": "SELEC 1", "all_hosts": "on"}, "SQL syntax error"),
        ({"sql": "SELECT 1; SELECT 2", "all_hosts": "on"}, "single statement"),
        ({"sql": "", "all_hosts": "on"}, "This field is required"),
        ({"sql": "SELECT 1"}, "No targets"),
        ({"sql": "SELECT 1", "hosts": "mac-1.local nope-host"}, "Unknown host(s): nope-host"),
        ({"sql": "SELECT 1", "teams": ["12345"]}, "Select a valid choice"),
        ({"sql": "SELECT 1", "selected_hosts": ["12345"]}, "Select a valid choice"),
    ],
)
def test_bad_input_shows_a_form_error_and_starts_nothing(admin_client, hosts, data, error):
    response = admin_client.post(NEW, data)
    assert response.status_code == 200
    assert error in response.content.decode()
    assert not Campaign.objects.exists()


def test_a_team_with_no_hosts_is_a_form_error(admin_client, hosts):
    empty = Team.objects.create(name="Empty")
    response = admin_client.post(NEW, {"sql": "SELECT 1", "teams": [empty.pk]})
    assert "No hosts targeted" in response.content.decode()
    assert not Campaign.objects.exists()


def test_labels_are_targets(admin_client, hosts):
    from hosts.models import Label, LabelMembership

    label = Label.objects.create(name="Macs", label_membership_type="manual")
    LabelMembership.objects.create(label=label, host=hosts["mac"])

    assert 'name="labels"' in admin_client.get(NEW).content.decode()
    assert admin_client.get(COUNT, {"labels": [label.pk]}).json()["targeted"] == 1
    response = admin_client.post(NEW, {"sql": "SELECT 1", "labels": [label.pk]})
    campaign = Campaign.objects.get()
    assert response.status_code == 302 and campaign.host_ids == [hosts["mac"].pk]
    assert "Labels: Macs" in admin_client.get(page_of(campaign)).content.decode()


# --- the live target count ---------------------------------------------------------------------------------


def test_target_count_counts_online_and_offline(admin_client, hosts, team):
    assert admin_client.get(COUNT, {"all_hosts": "on"}).json() == {
        "targeted": 3,
        "online": 2,
        "offline": 1,
        "missing": 0,
    }
    body = admin_client.post(COUNT, {"teams": [team.pk], "hosts": "desk-7"}).json()
    assert (body["targeted"], body["online"], body["offline"]) == (2, 1, 1)
    assert admin_client.get(COUNT, {"selected_hosts": [hosts["box"].pk]}).json()["online"] == 1


def test_target_count_explains_errors(admin_client, hosts):
    unknown = admin_client.get(COUNT, {"hosts": "mac-1.local nope"})
    assert unknown.status_code == 400 and unknown.json() == {"error": "Unknown host(s): nope"}
    nothing = admin_client.get(COUNT)
    assert nothing.status_code == 400 and "No targets" in nothing.json()["error"]
    assert not Campaign.objects.exists()


# --- the campaign page and Stop ----------------------------------------------------------------------------


def test_campaign_page_shows_counts_and_who_has_not_answered(admin_client, hosts, root):
    campaign = services.create_campaign(root, "SELECT name FROM os_version", {"all": True})
    answer(campaign, hosts["mac"], [{"name": "macOS"}])
    response = admin_client.get(page_of(campaign))
    assert response.status_code == 200
    page = response.content.decode()
    for text in (
        "SELECT name FROM os_version",
        "All hosts",
        f'data-websocket-path="/ws/campaigns/{campaign.pk}/"',
        f"/api/v1/campaigns/{campaign.pk}/results/?format=csv",
        f"{CAMPAIGNS}{campaign.pk}/stop/",
        "campaigns/campaign.js",
        "Running",
    ):
        assert text in page, text
    summary = response.context["summary"]
    assert (summary["rows"], summary["pending"], summary["offline"], summary["expected_results"]) == (
        1,
        1,
        1,
        2,
    )
    assert [h["name"] for h in response.context["pending_hosts"]] == ["build-box"]
    assert [h["name"] for h in response.context["offline_hosts"]] == ["desk-7"]
    assert f'data-host-id="{hosts["mac"].pk}"' not in page  # answered: not in the waiting lists


def test_an_offline_host_answering_first_does_not_look_finished(admin_client, hosts, root):
    """The page's "finished" must mean every host online at the start answered, not merely that
    there are as many answers as hosts were online (an offline one may answer first)."""
    campaign = services.create_campaign(root, "SELECT 1", {"hosts": ["build-box", "desk-7"]})
    answer(campaign, hosts["desk"], [{"1": "1"}])
    summary = admin_client.get(page_of(campaign)).context["summary"]
    assert (summary["actual_results"], summary["expected_results"], summary["pending"]) == (1, 1, 1)
    assert summary["status"] == "pending"
    answer(campaign, hosts["box"], [])
    campaign.refresh_from_db()
    assert services.status_summary(campaign)["status"] == "finished"


def test_finished_campaign_page_has_no_stop_button(admin_client, hosts, root):
    campaign = services.create_campaign(root, "SELECT 1", {"hosts": ["build-box"]})
    answer(campaign, hosts["box"], error="no such table: x")
    page = admin_client.get(page_of(campaign)).content.decode()
    assert "Finished" in page and 'id="stop-form"' not in page
    assert "Hosts: build-box" in page


def test_csv_export_link_works_with_the_console_session(admin_client, hosts, root):
    campaign = services.create_campaign(root, "SELECT name FROM os_version", {"hosts": ["build-box"]})
    answer(campaign, hosts["box"], [{"name": "Ubuntu"}])
    csv_url = admin_client.get(page_of(campaign)).context["csv_url"]
    export = admin_client.get(csv_url)
    assert export.status_code == 200 and export["Content-Type"].startswith("text/csv")
    assert "build-box" in export.content.decode() and "Ubuntu" in export.content.decode()


def test_stop(admin_client, hosts, root):
    campaign = services.create_campaign(root, "SELECT 1", {"all": True})
    stop_url = f"{CAMPAIGNS}{campaign.pk}/stop/"
    assert admin_client.get(stop_url).status_code == 405
    response = admin_client.post(stop_url, follow=True)
    assert response.redirect_chain[-1][0] == page_of(campaign)
    assert "Stopped live query" in response.content.decode()
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.STOPPED
    again = admin_client.post(stop_url, follow=True)
    assert "had already ended" in again.content.decode()


def test_unknown_campaign_is_404(admin_client):
    assert admin_client.get(f"{CAMPAIGNS}999/change/").status_code == 404
    assert admin_client.post(f"{CAMPAIGNS}999/stop/").status_code == 404


# --- past campaigns ---------------------------------------------------------------------------------------


def test_changelist_lists_campaigns_read_only(admin_client, hosts, root):
    first = services.create_campaign(
        root, "SELECT * FROM processes WHERE name = 'x' " + "AND 1 " * 40, {"all": True}
    )
    answer(first, hosts["mac"], [{"pid": "1"}])
    answer(first, hosts["box"], error="boom")
    services.create_campaign(root, "SELECT * FROM users", {"hosts": ["desk-7", "build-box"]})
    response = admin_client.get(CAMPAIGNS)
    assert response.status_code == 200
    page = response.content.decode()
    for text in (
        "SELECT * FROM users",
        "SELECT * FROM processes WHERE name = &#x27;x&#x27;",
        "…",  # long SQL is truncated
        "root",
        "Running",
        "Waiting",
        "all hosts",
        "2 hosts",
        "2 / 3",  # online / targeted
        "0 / 0 /",
        NEW,  # "New live query" instead of "Add"
    ):
        assert text in page, text
    assert 'name="action"' not in page  # no delete action
    assert admin_client.get(f"{CAMPAIGNS}add/?host_ids=1")["Location"] == f"{NEW}?host_ids=1"
    assert admin_client.post(f"{CAMPAIGNS}{first.pk}/delete/").status_code == 403


def test_changelist_answer_counts_take_one_query(admin_client, hosts, root, django_assert_max_num_queries):
    for _ in range(5):
        campaign = services.create_campaign(root, "SELECT 1", {"all": True})
        answer(campaign, hosts["mac"], [{"a": "1"}])
    with django_assert_max_num_queries(10):
        assert admin_client.get(CAMPAIGNS).status_code == 200


def test_admin_index_links_to_the_live_query_page(admin_client):
    assert NEW in admin_client.get("/admin/").content.decode()


# --- the host list action -------------------------------------------------------------------------------


def test_host_list_action_opens_the_live_query_page_with_the_hosts(admin_client, hosts):
    chosen = [hosts["desk"].pk, hosts["mac"].pk]
    response = admin_client.post(HOSTS, {"action": "live_query_hosts", "_selected_action": chosen})
    assert response.status_code == 302
    assert response["Location"] == f"{NEW}?host_ids={min(chosen)},{max(chosen)}"
    page = admin_client.get(response["Location"]).content.decode()
    assert "mac-1.local (online)" in page and "desk-7 (offline)" in page


def test_host_list_action_refuses_huge_selections(admin_client, hosts, monkeypatch):
    monkeypatch.setattr("campaigns.admin_views.MAX_PRESELECTED", 2)
    response = admin_client.post(
        HOSTS, {"action": "live_query_hosts", "select_across": "1", "_selected_action": [hosts["mac"].pk]}
    )
    assert response.status_code == 302 and response["Location"] == HOSTS
    assert "Select at most 2 hosts" in admin_client.get(HOSTS).content.decode()


def test_host_list_action_is_only_offered_to_those_who_may_run(client, hosts, team):
    observer = staff_with_role("obs", Role.OBSERVER, team)
    observer.user_permissions.add(Permission.objects.get(codename="view_host"))
    client.force_login(observer)
    assert "Live query the selected hosts" not in client.get(HOSTS).content.decode()
    plus = staff_with_role("plus", Role.OBSERVER_PLUS, team)
    plus.user_permissions.add(Permission.objects.get(codename="view_host"))
    client.force_login(plus)
    assert "Live query the selected hosts" in client.get(HOSTS).content.decode()


# --- permissions -------------------------------------------------------------------------------------------


def test_anonymous_and_non_staff_are_sent_to_login(client, hosts):
    assert client.get(NEW)["Location"].startswith("/admin/login/")
    client.force_login(get_user_model().objects.create_user("u", password="pw"))
    for url in (NEW, COUNT, CAMPAIGNS):
        assert client.get(url)["Location"].startswith("/admin/login/"), url


def test_staff_whose_role_may_not_run_get_403(client, hosts, team, root):
    campaign = services.create_campaign(root, "SELECT 1", {"all": True})
    client.force_login(staff_with_role("obs", Role.OBSERVER, team))
    for url in (NEW, COUNT, CAMPAIGNS, page_of(campaign)):
        assert client.get(url).status_code == 403, url
    assert client.post(NEW, {"sql": "SELECT 1", "all_hosts": "on"}).status_code == 403
    assert client.post(f"{CAMPAIGNS}{campaign.pk}/stop/").status_code == 403
    assert Campaign.objects.count() == 1


def test_team_observer_plus_runs_on_their_team_and_sees_only_their_campaigns(client, hosts, team, root):
    theirs_not = services.create_campaign(root, "SELECT 'root'", {"all": True})
    user = staff_with_role("plus", Role.OBSERVER_PLUS, team)
    client.force_login(user)
    page = client.get(NEW).content.decode()
    assert "Engineering" in page
    assert client.get(COUNT, {"all_hosts": "on"}).json()["targeted"] == 1  # only the team's host
    assert (
        "Unknown host(s): build-box"
        in client.post(NEW, {"sql": "SELECT 1", "hosts": "build-box"}).content.decode()
    )
    response = client.post(NEW, {"sql": "SELECT 'mine'", "all_hosts": "on"})
    mine = Campaign.objects.get(created_by=user)
    assert response["Location"] == page_of(mine) and mine.host_ids == [hosts["mac"].pk]
    listing = client.get(CAMPAIGNS).content.decode()
    assert "SELECT &#x27;mine&#x27;" in listing and "SELECT &#x27;root&#x27;" not in listing
    assert client.get(page_of(mine)).status_code == 200
    assert client.get(page_of(theirs_not)).status_code == 403
    assert client.post(f"{CAMPAIGNS}{theirs_not.pk}/stop/").status_code == 403
    theirs_not.refresh_from_db()
    assert theirs_not.is_active


def test_global_admin_watches_and_stops_anyones_campaign(client, hosts, team):
    runner = staff_with_role("maint", Role.MAINTAINER)
    campaign = services.create_campaign(runner, "SELECT 1", {"all": True})
    client.force_login(staff_with_role("boss", Role.ADMIN))
    assert "SELECT 1" in client.get(CAMPAIGNS).content.decode()
    assert client.get(page_of(campaign)).status_code == 200
    assert client.post(f"{CAMPAIGNS}{campaign.pk}/stop/").status_code == 302
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.STOPPED


# --- the page's WebSocket contract --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_campaign_page_websocket_streams_totals_status_and_results():
    """What campaign.js relies on: the page's WebSocket path, reached with the browser's session
    cookie, sends totals then status on connect, then each result followed by a new status."""
    from fleet.asgi import application

    def setup():
        user = get_user_model().objects.create_superuser("ws-root", "ws@example.com", "pw")
        online = make_host("mac-1.local", None, timedelta(seconds=5))
        make_host("desk-7", None, timedelta(hours=3))
        campaign = services.create_campaign(user, "SELECT name FROM os_version", {"all": True})
        browser = Client()
        browser.force_login(user)
        page = browser.get(page_of(campaign))
        return campaign, online, page.context["websocket_path"], browser.cookies["sessionid"].value

    campaign, online, path, session = await sync_to_async(setup)()
    assert path == f"/ws/campaigns/{campaign.pk}/"
    communicator = WebsocketCommunicator(
        application,
        path,
        headers=[
            (b"cookie", f"sessionid={session}".encode()),
            (b"host", b"testserver"),
            (b"origin", b"http://testserver"),  # as a browser sends from the campaign page
        ],
    )
    connected, _ = await communicator.connect()
    assert connected
    totals = await communicator.receive_json_from(timeout=5)
    assert totals == {
        "type": "totals",
        "data": {"targeted": 2, "online": 1, "offline": 1, "missing": 0, "count": 2, "missing_in_action": 0},
    }
    status = await communicator.receive_json_from(timeout=5)
    assert status["type"] == "status"
    assert {
        k: status["data"][k] for k in ("expected_results", "actual_results", "status", "pending", "offline")
    } == {
        "expected_results": 1,
        "actual_results": 0,
        "status": "pending",
        "pending": 1,
        "offline": 1,
    }

    await sync_to_async(answer)(campaign, online, [{"name": "macOS"}])
    result = await communicator.receive_json_from(timeout=5)
    assert result["type"] == "result"
    assert {k: result["data"][k] for k in ("host_id", "hostname", "state", "rows", "error")} == {
        "host_id": online.pk,
        "hostname": "mac-1.local",
        "state": "rows",
        "rows": [{"name": "macOS"}],
        "error": None,
    }
    after = await communicator.receive_json_from(timeout=5)
    assert after["type"] == "status"
    assert (after["data"]["actual_results"], after["data"]["rows"], after["data"]["status"]) == (
        1,
        1,
        "finished",
    )
    await communicator.disconnect()
