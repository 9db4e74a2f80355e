"""Background upkeep: expiry, store sweep and retention, as Celery tasks and in the embedded server."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.utils import timezone

from campaigns import services, tasks
from campaigns.models import Campaign, CampaignResult, CampaignStatus
from campaigns.store import get_store
from fleet.celery import app as celery_app
from tests.factories import make_host

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _upkeep_not_due(monkeypatch):
    """Creating a campaign may run the embedded upkeep; here only the tests that want it do."""
    monkeypatch.setattr(
        tasks._clock, "_last_run", {"expire_and_sweep": float("inf"), "retention": float("inf")}
    )


@pytest.fixture
def eager():
    """Celery runs tasks in-process (the embedded default; CI's Redis run has a broker instead)."""
    saved = celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates
    celery_app.conf.task_always_eager = celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = saved


@pytest.fixture
def admin(db):
    return get_user_model().objects.create_superuser("admin", "a@example.com", "pw")


@pytest.fixture
def hosts(db):
    return [make_host(f"host-{i}", seen_ago=timedelta(seconds=5)) for i in range(3)]


@pytest.fixture
def published(monkeypatch):
    """Every event sent to watchers, as (campaign id, event)."""
    events: list[tuple[int, dict]] = []
    monkeypatch.setattr(services.stream, "publish", lambda cid, event: events.append((cid, event)))
    return events


def start(admin, hosts, sql="SELECT * FROM os_version", age: timedelta | None = None) -> Campaign:
    campaign = services.create_campaign(admin, sql, {"hosts": [h.id for h in hosts]})
    if age is not None:
        Campaign.objects.filter(pk=campaign.pk).update(created_at=timezone.now() - age)
        campaign.refresh_from_db()
    return campaign


def pending(host) -> set[int]:
    get_store().forget_local_state()  # the Redis store caches the active list for a second
    return set(get_store().queries_for_host(host.id))


def too_old() -> timedelta:
    return timedelta(seconds=settings.LIVE_QUERY["MAX_DURATION"] + 60)


def ended_events(events, campaign_id: int) -> list[dict]:
    return [e for cid, e in events if cid == campaign_id and e["type"] == "campaign.ended"]


# --- expiry --------------------------------------------------------------------------------------
def test_expire_ends_only_campaigns_past_the_maximum_and_tells_watchers(admin, hosts, published):
    old = start(admin, hosts, age=too_old())
    young = start(admin, hosts, age=timedelta(seconds=settings.LIVE_QUERY["MAX_DURATION"] - 600))
    assert pending(hosts[0]) == {old.id, young.id}

    assert tasks.expire_campaigns() == 1

    old.refresh_from_db()
    young.refresh_from_db()
    assert old.status == CampaignStatus.EXPIRED and old.ended_at is not None
    assert young.status == CampaignStatus.WAITING and young.ended_at is None
    assert pending(hosts[0]) == {young.id}  # no longer sent to hosts
    assert ended_events(published, old.id) == [{"type": "campaign.ended", "status": "expired"}]


def test_expire_twice_is_harmless(admin, hosts, published):
    old = start(admin, hosts, age=too_old())
    assert tasks.expire_campaigns() == 1
    ended_at = Campaign.objects.get(pk=old.pk).ended_at
    assert tasks.expire_campaigns() == 0
    assert Campaign.objects.get(pk=old.pk).ended_at == ended_at
    assert len(ended_events(published, old.id)) == 1


def test_expiry_leaves_finished_and_stopped_campaigns_alone(admin, hosts, published):
    stopped = start(admin, hosts, age=too_old())
    services.stop_campaign(stopped)
    assert tasks.expire_campaigns() == 0
    assert Campaign.objects.get(pk=stopped.pk).status == CampaignStatus.STOPPED


def test_two_workers_interleaving_end_each_campaign_once(admin, hosts, published, monkeypatch):
    """Worker 1 lists the expired campaigns; worker 2 runs in full before worker 1 ends any."""
    campaigns = [start(admin, hosts, age=too_old()) for _ in range(3)]
    real_end = services._end
    other: list[int] = []

    def end_after_the_other_worker(campaign_id, status):
        if not other:
            other.append(-1)
            other[0] = services.expire_campaigns()  # the second worker, start to finish
        return real_end(campaign_id, status)

    monkeypatch.setattr(services, "_end", end_after_the_other_worker)
    first = services.expire_campaigns()

    assert (first, other[0]) == (0, 3)  # each campaign ended by exactly one of them
    for campaign in campaigns:
        campaign.refresh_from_db()
        assert campaign.status == CampaignStatus.EXPIRED
        assert len(ended_events(published, campaign.id)) == 1
    assert pending(hosts[0]) == set()


def test_a_worker_holding_the_lock_makes_the_other_skip(admin, hosts):
    old = start(admin, hosts, age=too_old())
    cache.add("fleet:lq:task:expire", "another-worker", 60)
    assert tasks.expire_campaigns() == 0
    assert Campaign.objects.get(pk=old.pk).status == CampaignStatus.WAITING
    cache.delete("fleet:lq:task:expire")
    assert tasks.expire_campaigns() == 1
    assert cache.get("fleet:lq:task:expire") is None  # released after the run


def test_a_campaign_answered_while_expiring_ends_once(admin, hosts, published):
    """The host's answer finishes the campaign; expiry then finds nothing left to end."""
    campaign = start(admin, hosts[:1], age=too_old())
    services.record_answer(campaign.id, hosts[0].id, "host-0", [{"name": "macOS"}], 0, "")
    assert tasks.expire_campaigns() == 0
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.FINISHED
    assert len(ended_events(published, campaign.id)) == 1


# --- sweeping the store -------------------------------------------------------------------------------
def test_sweep_removes_campaigns_that_ended_elsewhere_and_keeps_running_ones(admin, hosts):
    running = start(admin, hosts)
    ended = start(admin, hosts)
    vanished = start(admin, hosts)
    # Ended by another process that could not reach the store, and a row deleted outright.
    Campaign.objects.filter(pk=ended.pk).update(status=CampaignStatus.STOPPED, ended_at=timezone.now())
    Campaign.objects.filter(pk=vanished.pk).delete()
    assert get_store().active_ids() >= {running.id, ended.id, vanished.id}

    assert tasks.sweep_store() == 2

    assert running.id in get_store().active_ids()
    assert not get_store().active_ids() & {ended.id, vanished.id}
    assert pending(hosts[1]) == {running.id}
    assert tasks.sweep_store() == 0  # twice is harmless


def test_expire_and_sweep_together(admin, hosts):
    old = start(admin, hosts, age=too_old())
    assert tasks.expire_and_sweep() == {"expired": 1, "swept": 0}  # expiry already left the store
    assert old.id not in get_store().active_ids()
    assert tasks.expire_and_sweep() == {"expired": 0, "swept": 0}


# --- retention ------------------------------------------------------------------------------------------
def test_retention_deletes_old_ended_campaigns_with_their_results(admin, hosts):
    old = start(admin, hosts[:2])
    services.record_answer(old.id, hosts[0].id, "host-0", [{"a": "1"}], 0, "")
    services.record_answer(old.id, hosts[1].id, "host-1", [], 0, "")
    recent = start(admin, hosts[:1])
    services.record_answer(recent.id, hosts[0].id, "host-0", [{"a": "2"}], 0, "")
    running_old = start(admin, hosts)
    past = timezone.now() - timedelta(days=settings.LIVE_QUERY["RETENTION_DAYS"] + 1)
    Campaign.objects.filter(pk__in=[old.pk, running_old.pk]).update(created_at=past)
    assert Campaign.objects.get(pk=old.pk).status == CampaignStatus.FINISHED

    assert tasks.delete_expired_results() == 3  # the campaign and its two results

    assert not Campaign.objects.filter(pk=old.pk).exists()
    assert not CampaignResult.objects.filter(campaign_id=old.pk).exists()
    assert CampaignResult.objects.filter(campaign=recent).count() == 1
    # A campaign still running is expired first, never deleted under its watchers.
    assert Campaign.objects.filter(pk=running_old.pk).exists()
    assert tasks.delete_expired_results() == 0


# --- through Celery ---------------------------------------------------------------------------------------
def test_delay_runs_the_tasks_eagerly(admin, hosts, eager):
    old = start(admin, hosts, age=too_old())
    assert tasks.expire_and_sweep.delay().get(timeout=5) == {"expired": 1, "swept": 0}
    assert Campaign.objects.get(pk=old.pk).status == CampaignStatus.EXPIRED
    Campaign.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=400))
    assert tasks.delete_expired_results.delay().get(timeout=5) >= 1
    assert not Campaign.objects.filter(pk=old.pk).exists()
    assert tasks.sweep_store.delay().get(timeout=5) == 0
    assert tasks.expire_campaigns.delay().get(timeout=5) == 0


def test_beat_schedule_names_registered_tasks_with_configured_periods():
    schedule = settings.CELERY_BEAT_SCHEDULE
    assert {entry["task"] for entry in schedule.values()} == {
        "campaigns.expire_and_sweep",
        "campaigns.delete_expired_results",
        "software.recount_host_counts",
        "updates.refresh_timestamp",
        "mdm.push_pending",
        "mdm.reconcile_profiles",
        "usage.send_statistics",
    }
    registered = set(celery_app.tasks.keys())
    assert {entry["task"] for entry in schedule.values()} <= registered
    periods = {entry["task"]: entry["schedule"] for entry in schedule.values()}
    assert periods["campaigns.expire_and_sweep"] == settings.CAMPAIGN_UPKEEP_INTERVAL
    assert periods["campaigns.delete_expired_results"] == settings.CAMPAIGN_RETENTION_INTERVAL
    assert periods["software.recount_host_counts"] == settings.SOFTWARE_COUNTS_INTERVAL
    assert periods["updates.refresh_timestamp"] == settings.AGENT_UPDATES["TIMESTAMP_CHECK_INTERVAL"]
    assert periods["mdm.push_pending"] == settings.MDM["REPUSH_INTERVAL"]
    assert periods["mdm.reconcile_profiles"] == settings.MDM["RECONCILE_INTERVAL"]
    assert periods["usage.send_statistics"] == settings.USAGE_STATISTICS["CHECK_INTERVAL"]
    assert celery_app.conf.beat_schedule == schedule


# --- the embedded default: no beat -----------------------------------------------------------------------
def test_embedded_server_runs_upkeep_at_most_once_per_interval(admin, hosts, eager):
    first, second = start(admin, hosts), start(admin, hosts)
    Campaign.objects.filter(pk=first.pk).update(created_at=timezone.now() - too_old())
    tasks.reset_upkeep_clock()
    assert tasks.run_upkeep_if_due(now=1000.0) == {"expired": 1, "swept": 0, "deleted": 0}
    assert Campaign.objects.get(pk=first.pk).status == CampaignStatus.EXPIRED

    Campaign.objects.filter(pk=second.pk).update(created_at=timezone.now() - too_old())
    assert tasks.run_upkeep_if_due(now=1000.0 + settings.CAMPAIGN_UPKEEP_INTERVAL - 1) == {}
    assert Campaign.objects.get(pk=second.pk).status == CampaignStatus.WAITING
    done = tasks.run_upkeep_if_due(now=1000.0 + settings.CAMPAIGN_UPKEEP_INTERVAL)
    assert done == {"expired": 1, "swept": 0}  # retention keeps its own, longer period
    assert Campaign.objects.get(pk=second.pk).status == CampaignStatus.EXPIRED


def test_creating_a_campaign_expires_overdue_ones_in_the_embedded_server(admin, hosts, eager):
    old = start(admin, hosts, age=too_old())
    tasks.reset_upkeep_clock()
    new = start(admin, hosts)
    assert Campaign.objects.get(pk=old.pk).status == CampaignStatus.EXPIRED
    assert Campaign.objects.get(pk=new.pk).status == CampaignStatus.WAITING
    assert pending(hosts[0]) == {new.id}


def test_with_a_broker_upkeep_is_left_to_beat(admin, hosts, eager):
    celery_app.conf.task_always_eager = False
    old = start(admin, hosts, age=too_old())
    assert tasks.run_upkeep_if_due() == {}
    assert Campaign.objects.get(pk=old.pk).status == CampaignStatus.WAITING


def test_upkeep_failure_never_breaks_campaign_creation(admin, hosts, eager, monkeypatch, caplog):
    calls = []

    def broken():
        calls.append(1)
        raise RuntimeError("database went away")

    monkeypatch.setattr(services, "expire_campaigns", broken)
    tasks.reset_upkeep_clock()
    campaign = start(admin, hosts)
    assert calls == [1] and "upkeep failed" in caplog.text
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.WAITING
    assert pending(hosts[0]) == {campaign.id}
