"""Live queries through the agent API: fan-out on check-in, answers, counts, late and bad ids."""

from __future__ import annotations

import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from prometheus_client import REGISTRY

from campaigns import services
from campaigns.models import Campaign, CampaignResult, CampaignStatus
from campaigns.services import CampaignError
from hosts import seen
from hosts.models import Host, HostSeenTime
from tests.agent import Agent
from tests.factories import user_with_role

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_superuser("admin", "a@example.com", "pw")


def enrolled(client, secret, n):
    agents = []
    for i in range(n):
        agent = Agent(client, identifier=f"uuid-{i:04d}", hostname=f"host-{i}")
        agent.enroll(secret)
        agent.authed("distributed/read")  # mark seen, so the host counts as online
        agents.append(agent)
    return agents


def host_id(agent: Agent) -> int:
    return Host.objects.get(osquery_host_id=agent.identifier).id


def test_pending_campaign_reaches_only_its_targets_with_discovery_and_no_accelerate(
    client, global_secret, admin
):
    """No ``accelerate`` for a live query, as Fleet: the query is in this answer already, and
    accelerating every targeted host doubled check-ins while any live query ran."""
    a, b = enrolled(client, global_secret, 2)
    campaign = services.create_campaign(admin, "SELECT * FROM os_version", {"hosts": [host_id(a)]})
    name = f"fleet_distributed_query_{campaign.id}"

    body = a.authed("distributed/read").json()
    assert body["queries"][name] == "SELECT * FROM os_version"
    assert body["discovery"][name] == "SELECT 1"
    assert "accelerate" not in body
    assert name not in b.authed("distributed/read").json()["queries"]
    assert campaign.targeted_count == 1 and campaign.online_count == 1


def test_answer_is_stored_campaign_finishes_and_is_not_sent_again(client, global_secret, admin):
    (a,) = enrolled(client, global_secret, 1)
    campaign = services.create_campaign(admin, "SELECT name FROM os_version", {"all": True})
    name = f"fleet_distributed_query_{campaign.id}"
    rows = [{"name": "macOS"}, {"name": "extra"}]
    response = a.authed("distributed/write", {"queries": {name: rows}, "statuses": {name: 0}})
    assert response.status_code == 200 and response.json() == {}

    result = CampaignResult.objects.get(campaign=campaign)
    assert (result.state, result.rows, result.row_count, result.hostname) == ("rows", rows, 2, "host-0")
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.FINISHED and campaign.ended_at is not None
    assert name not in a.authed("distributed/read").json()["queries"]
    # A repeated answer is accepted and ignored.
    assert a.authed("distributed/write", {"queries": {name: rows}, "statuses": {name: 0}}).json() == {}
    assert CampaignResult.objects.filter(campaign=campaign).count() == 1


def test_failed_no_rows_and_breakdown(client, global_secret, admin):
    a, b, c = enrolled(client, global_secret, 3)
    campaign = services.create_campaign(admin, "SELECT * FROM nope", {"all": True})
    name = f"fleet_distributed_query_{campaign.id}"
    a.authed(
        "distributed/write",
        {"queries": {name: ""}, "statuses": {name: 1}, "messages": {name: "no such table: nope"}},
    )
    b.authed("distributed/write", {"queries": {name: []}, "statuses": {name: 0}})
    failed = CampaignResult.objects.get(campaign=campaign, host_id=host_id(a))
    assert failed.state == "failed" and failed.error == "no such table: nope"
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.RUNNING
    summary = services.status_summary(campaign)
    assert summary["expected_results"] == 3 and summary["actual_results"] == 2
    assert (summary["failed"], summary["no_rows"], summary["rows"], summary["pending"]) == (1, 1, 0, 1)
    assert summary["status"] == "pending"


def test_stopped_campaign_is_not_sent_and_late_answers_are_ignored(client, global_secret, admin):
    (a,) = enrolled(client, global_secret, 1)
    campaign = services.create_campaign(admin, "SELECT 1", {"all": True})
    assert services.stop_campaign(campaign)
    name = f"fleet_distributed_query_{campaign.id}"
    assert name not in a.authed("distributed/read").json()["queries"]
    assert a.authed("distributed/write", {"queries": {name: [{"1": "1"}]}}).json() == {}
    assert not CampaignResult.objects.exists()
    assert Campaign.objects.get().status == CampaignStatus.STOPPED


def test_unknown_and_malformed_campaign_names_are_accepted(agent):
    body = {
        "queries": {"fleet_distributed_query_999": [{"a": "b"}], "fleet_distributed_query_x": []},
        "statuses": {"fleet_distributed_query_999": 0},
    }
    assert agent.authed("distributed/write", body).json() == {}


def test_rows_are_capped_per_campaign(client, global_secret, admin, settings):
    settings.LIVE_QUERY = {**settings.LIVE_QUERY, "MAX_ROWS": 3}
    a, b = enrolled(client, global_secret, 2)
    campaign = services.create_campaign(admin, "SELECT * FROM processes", {"all": True})
    name = f"fleet_distributed_query_{campaign.id}"
    a.authed("distributed/write", {"queries": {name: [{"pid": "1"}, {"pid": "2"}]}})
    b.authed("distributed/write", {"queries": {name: [{"pid": "3"}, {"pid": "4"}]}})
    kept = {r.host_id: (len(r.rows), r.row_count) for r in CampaignResult.objects.all()}
    assert kept == {host_id(a): (2, 2), host_id(b): (1, 2)}
    campaign.refresh_from_db()
    assert campaign.truncated


def test_offline_hosts_are_counted_at_start_and_may_answer_later(client, global_secret, admin):
    (a,) = enrolled(client, global_secret, 1)
    offline = Agent(client, identifier="uuid-off", hostname="off")
    offline.enroll(global_secret)
    seen.flush()
    HostSeenTime.objects.filter(host_id=host_id(offline)).delete()
    campaign = services.create_campaign(admin, "SELECT 1", {"all": True})
    assert (campaign.online_count, campaign.offline_count) == (1, 1)
    assert services.breakdown(campaign)["offline"] == 1
    name = f"fleet_distributed_query_{campaign.id}"
    offline.authed("distributed/write", {"queries": {name: []}})
    campaign.refresh_from_db()
    assert services.breakdown(campaign) == {"rows": 0, "no_rows": 1, "failed": 0, "pending": 1, "offline": 0}


@pytest.mark.parametrize(
    ("sql", "targets", "message"),
    [
        ("SELEC 1", {"all": True}, "syntax error"),
        ("", {"all": True}, "empty"),
        ("SELECT 1; SELECT 2", {"all": True}, "single statement"),
        ("SELECT 1", {}, "no targets"),
        ("SELECT 1", {"hosts": ["no-such-host"]}, "unknown host(s): no-such-host"),
        ("SELECT 1", {"teams": ["Nope"]}, "unknown team(s): Nope"),
        ("SELECT 1", {"labels": ["All Hosts?"]}, "unknown label"),
        ("SELECT 1", {"hosts": "x"}, "must be a list"),
        ("SELECT 1", {"devices": [1]}, "unknown target kind"),
    ],
)
def test_bad_input_starts_nothing(client, global_secret, admin, sql, targets, message):
    enrolled(client, global_secret, 1)
    with pytest.raises(CampaignError) as error:
        services.create_campaign(admin, sql, targets)
    assert message in str(error.value)
    assert not Campaign.objects.exists()


def test_no_hosts_in_scope_is_an_error(db, team, admin):
    with pytest.raises(CampaignError, match="no hosts targeted"):
        services.create_campaign(admin, "SELECT 1", {"teams": [team.id]})


def test_team_users_only_reach_their_teams_hosts(client, team, team_secret, global_secret):
    (mine,) = [Agent(client, identifier="uuid-team", hostname="team-host")]
    mine.enroll(team_secret)
    other = Agent(client, identifier="uuid-global", hostname="global-host")
    other.enroll(global_secret)
    maintainer = user_with_role("tm", "maintainer", team)
    campaign = services.create_campaign(maintainer, "SELECT 1", {"all": True})
    assert campaign.host_ids == [host_id(mine)]
    with pytest.raises(CampaignError, match="unknown host"):
        services.create_campaign(maintainer, "SELECT 1", {"hosts": ["global-host"]})
    observer = user_with_role("obs", "observer", team)
    with pytest.raises(CampaignError) as error:
        services.create_campaign(observer, "SELECT 1", {"all": True})
    assert error.value.status == 403


def test_hosts_by_hostname_uuid_serial_and_id(client, global_secret, admin):
    agents = enrolled(client, global_secret, 4)
    Host.objects.filter(id=host_id(agents[2])).update(hardware_serial="SERIAL-2")
    targets = {"hosts": ["host-0", "uuid-0001", "SERIAL-2", host_id(agents[3])]}
    campaign = services.create_campaign(admin, "SELECT 1", targets)
    assert campaign.targeted_count == 4


@pytest.mark.parametrize("active", [0, 1, 10])
def test_checkin_query_count_does_not_grow_with_campaigns(client, global_secret, admin, active):
    agents = enrolled(client, global_secret, 3)
    for _ in range(active):
        services.create_campaign(admin, "SELECT 1", {"all": True})
    agents[0].authed("distributed/read")
    with CaptureQueriesContext(connection) as queries:
        body = agents[1].authed("distributed/read").json()
    assert sum(name.startswith("fleet_distributed_query_") for name in body["queries"]) == active
    assert len(queries) == 0


# --- an acknowledged answer is never lost -------------------------------------------------------------
@pytest.fixture
def published(monkeypatch):
    """Every event sent to watchers, in order."""
    events: list[dict] = []
    monkeypatch.setattr(services.stream, "publish", lambda campaign_id, event: events.append(event))
    return events


def answers_counted(state: str) -> float:
    return REGISTRY.get_sample_value("fleet_live_query_answers_total", {"state": state}) or 0.0


def fail_once(monkeypatch, target, attribute: str, exc: BaseException) -> list[int]:
    """``target.attribute`` raises ``exc`` on its first call only; the list counts the calls."""
    real, calls = getattr(target, attribute), []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(target, attribute, flaky)
    return calls


def test_an_answer_the_database_failed_to_store_is_kept_on_the_agents_retry(
    client, global_secret, admin, published, monkeypatch
):
    a, b = enrolled(client, global_secret, 2)
    campaign = services.create_campaign(admin, "SELECT name FROM os_version", {"all": True})
    name = f"fleet_distributed_query_{campaign.id}"
    write = {"queries": {name: [{"name": "macOS"}]}, "statuses": {name: 0}}
    before = answers_counted("rows")
    fail_once(monkeypatch, services, "insert_result", OperationalError(2006, "MySQL server has gone away"))

    failed = a.authed("distributed/write", write)
    assert "error" in failed.json()  # osquery retries a write whose reply has an error
    assert not CampaignResult.objects.exists()
    assert name in a.authed("distributed/read").json()["queries"]  # still pending: asked again
    assert Campaign.objects.get().status == CampaignStatus.WAITING and published == []

    assert a.authed("distributed/write", write).json() == {}  # the retry
    result = CampaignResult.objects.get()
    assert (result.host_id, result.rows, result.state) == (host_id(a), [{"name": "macOS"}], "rows")
    assert Campaign.objects.get().status == CampaignStatus.RUNNING
    assert name not in a.authed("distributed/read").json()["queries"]
    assert a.authed("distributed/write", write).json() == {}  # a repeat: ignored
    assert CampaignResult.objects.count() == 1

    b.authed("distributed/write", {"queries": {name: []}, "statuses": {name: 0}})
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.FINISHED and not campaign.truncated
    assert services.breakdown(campaign) == {"rows": 1, "no_rows": 1, "failed": 0, "pending": 0, "offline": 0}
    assert [(e["type"], e.get("result", {}).get("hostname")) for e in published] == [
        ("campaign.result", "host-0"), ("campaign.result", "host-1"), ("campaign.ended", None),
    ]  # fmt: skip
    assert answers_counted("rows") - before == 1


def test_an_answer_stored_by_a_process_that_died_is_completed_by_the_retry(
    client, global_secret, admin, published, monkeypatch, settings
):
    """The row is stored, then the process dies before marking the host answered: the agent's
    retry meets the row, marks the host, and announces the answer (truncation read off the row)."""
    settings.LIVE_QUERY = {**settings.LIVE_QUERY, "MAX_ROWS": 1}
    (a,) = enrolled(client, global_secret, 1)
    campaign = services.create_campaign(admin, "SELECT pid FROM processes", {"all": True})
    name = f"fleet_distributed_query_{campaign.id}"
    write = {"queries": {name: [{"pid": "1"}, {"pid": "2"}]}, "statuses": {name: 0}}
    before = answers_counted("rows")
    fail_once(monkeypatch, services.get_store(), "complete_host", RuntimeError("killed"))

    assert "error" in a.authed("distributed/write", write).json()
    assert CampaignResult.objects.count() == 1 and published == []
    assert name in a.authed("distributed/read").json()["queries"]

    assert a.authed("distributed/write", write).json() == {}
    result = CampaignResult.objects.get()
    assert (result.rows, result.row_count) == ([{"pid": "1"}], 2)  # the first attempt's row
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.FINISHED and campaign.truncated
    assert [e["type"] for e in published] == ["campaign.result", "campaign.ended"]
    assert published[0]["result"]["id"] == result.id
    assert answers_counted("rows") - before == 1
    assert a.authed("distributed/write", write).json() == {}  # a repeat: ignored
    assert len(published) == 2 and CampaignResult.objects.count() == 1
