"""Pacing the hand-out of live queries (campaigns/handout.py): per process, oldest campaign first."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from campaigns import handout, services
from campaigns.handout import HandoutPacer
from campaigns.models import Campaign, CampaignStatus
from tests.agent import Agent

DEFERRED = "fleet_live_query_handouts_deferred_total"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_holds_one_seconds_worth_and_refills_at_the_rate():
    clock = Clock()
    pacer = HandoutPacer(4, clock)
    assert pacer.take(3) == 3
    assert pacer.take(3) == 1  # one left of the four
    assert pacer.take(1) == 0
    clock.now += 0.5  # two more at 4 a second
    assert pacer.take(5) == 2
    clock.now += 3600  # idle for an hour: still one second's worth, no more
    assert pacer.take(10) == 4
    clock.now -= 10  # a clock that steps back adds nothing and takes nothing away
    assert pacer.take(1) == 0


@pytest.mark.parametrize("rate", [0, -5])
def test_no_rate_means_no_limit(rate):
    pacer = HandoutPacer(rate, Clock())
    assert pacer.take(10_000) == 10_000 and pacer.take(10_000) == 10_000


def test_a_rate_below_one_still_hands_one_out():
    clock = Clock()
    pacer = HandoutPacer(0.5, clock)
    assert pacer.take(1) == 1 and pacer.take(1) == 0
    clock.now += 2
    assert pacer.take(1) == 1


@pytest.fixture
def admin(db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_superuser("admin", "a@example.com", "pw")


@pytest.fixture
def clock(monkeypatch):
    """The process's pacer at 2 hand-outs a second, on a clock the test moves."""
    clock = Clock()
    pacer = HandoutPacer(2, clock)
    monkeypatch.setattr(handout, "get_pacer", lambda: pacer)
    return clock


def deferred() -> float:
    return REGISTRY.get_sample_value(DEFERRED) or 0.0


def live_names(agent: Agent) -> set[str]:
    body = agent.authed("distributed/read").json()
    return {name for name in body["queries"] if name.startswith(services.QUERY_PREFIX)}


@pytest.mark.django_db
def test_hosts_past_the_rate_get_the_query_at_a_later_check_in_and_the_campaign_finishes(
    client, global_secret, admin, clock
):
    agents = []
    for i in range(3):
        agent = Agent(client, identifier=f"uuid-{i:04d}", hostname=f"host-{i}")
        agent.enroll(global_secret)
        agent.authed("distributed/read")  # no live query yet: takes nothing from the bucket
        agents.append(agent)
    campaign = services.create_campaign(admin, "SELECT 1", {"all": True})
    name = f"{services.QUERY_PREFIX}{campaign.id}"
    before = deferred()

    asked = [agent.authed("distributed/read").json()["queries"] for agent in agents]
    assert [name in queries for queries in asked] == [True, True, False]
    assert deferred() == before + 1
    # The third host's detail queries still went out: only the live query waits.
    assert any(n.startswith("fleet_detail_query_") for n in asked[2])
    for agent in agents[:2]:
        agent.authed("distributed/write", {"queries": {name: [{"1": "1"}]}, "statuses": {name: 0}})
    assert live_names(agents[2]) == set()  # the bucket is still empty

    clock.now += 0.5  # one more at 2 a second
    assert live_names(agents[2]) == {name}
    agents[2].authed("distributed/write", {"queries": {name: [{"1": "1"}]}, "statuses": {name: 0}})
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.FINISHED
    assert campaign.results.count() == 3


@pytest.mark.django_db
def test_a_host_owing_several_campaigns_gets_the_oldest_first(client, global_secret, admin, clock):
    agent = Agent(client, identifier="uuid-0001", hostname="host-1")
    agent.enroll(global_secret)
    agent.authed("distributed/read")
    first, second, third = (services.create_campaign(admin, f"SELECT {i}", {"all": True}) for i in range(3))
    names = [f"{services.QUERY_PREFIX}{c.id}" for c in (first, second, third)]

    assert live_names(agent) == set(names[:2])  # two tokens, the two oldest
    clock.now += 0.5
    assert live_names(agent) == {names[0]}  # not answered yet: the oldest again
    clock.now += 1.0
    assert live_names(agent) == set(names[:2])
    assert Campaign.objects.filter(status=CampaignStatus.WAITING).count() == 3


@pytest.mark.django_db
def test_the_rate_comes_from_the_settings(settings):
    settings.LIVE_QUERY = {**settings.LIVE_QUERY, "HANDOUT_RATE": 7.0}
    handout.get_pacer.cache_clear()
    try:
        assert handout.get_pacer().rate == 7.0
        assert handout.get_pacer() is handout.get_pacer()
    finally:
        handout.get_pacer.cache_clear()
