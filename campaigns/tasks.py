"""Background upkeep of live-query campaigns, as Celery tasks.

In production Celery beat runs them (``CELERY_BEAT_SCHEDULE`` in the settings): every
``LIVE_QUERY_UPKEEP_INTERVAL`` seconds ``expire_and_sweep``, every
``LIVE_QUERY_RETENTION_INTERVAL`` seconds ``delete_expired_results``.

Every task is idempotent and safe on several workers at once, because the work underneath is:
a campaign ends through one conditional ``UPDATE ... WHERE status IN (waiting, running)``, so
only one caller ends it (and only that one tells the watchers); stopping a campaign in the store
deletes keys, which a second caller finds already gone; deleting old campaigns deletes what is
still there. A short lock in the cache (shared through Redis in production) only saves the
duplicated effort when beat fires on two machines; correctness does not depend on it.

The embedded default runs Celery eagerly and has no beat, so ``run_upkeep_if_due`` lets the
server do the same work itself, at most once per interval, when a campaign is created.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

from celery import current_app, shared_task
from django.conf import settings
from django.core.cache import cache

from campaigns import services
from fleet.due import DueClock

logger = logging.getLogger(__name__)

LOCK_SECONDS = 300  # a crashed worker's lock lapses after this long


@contextlib.contextmanager
def _single_flight(name: str) -> Iterator[bool]:
    """Yield True if this caller holds the task's lock (or the cache is down: run anyway)."""
    key, token = f"fleet:lq:task:{name}", uuid.uuid4().hex
    try:
        acquired = cache.add(key, token, LOCK_SECONDS)
    except Exception:  # the work is safe to duplicate; a cache outage must not stop it
        logger.warning("could not take the %s lock; running anyway", name, exc_info=True)
        acquired = True
    try:
        yield acquired
    finally:
        if acquired:
            with contextlib.suppress(Exception):
                if cache.get(key) == token:
                    cache.delete(key)


@shared_task(name="campaigns.expire_campaigns", ignore_result=True)
def expire_campaigns() -> int:
    """End campaigns running past ``LIVE_QUERY["MAX_DURATION"]``; returns how many this call ended."""
    with _single_flight("expire") as mine:
        return services.expire_campaigns() if mine else 0


@shared_task(name="campaigns.sweep_store", ignore_result=True)
def sweep_store() -> int:
    """Remove ended campaigns from the live-query store; returns how many were removed."""
    with _single_flight("sweep") as mine:
        return services.sweep_store() if mine else 0


@shared_task(name="campaigns.expire_and_sweep", ignore_result=True)
def expire_and_sweep() -> dict[str, int]:
    """The frequent job: expiry first, so the sweep already finds the campaigns it ended."""
    return {"expired": expire_campaigns(), "swept": sweep_store()}


@shared_task(name="campaigns.delete_expired_results", ignore_result=True)
def delete_expired_results() -> int:
    """Delete ended campaigns and their results past ``LIVE_QUERY["RETENTION_DAYS"]``."""
    with _single_flight("retention") as mine:
        return services.delete_expired_results() if mine else 0


# --- the embedded default: no beat, so the server does it itself ----------------------------------
_clock = DueClock()
_due = _clock.due


def run_upkeep_if_due(now: float | None = None) -> dict[str, Any]:
    """Expire and sweep at most once per upkeep interval (retention once per its own interval),
    in this process, when Celery runs eagerly (no beat). Called when a campaign is created, so it
    never slows a check-in; it never raises. Returns what it did (tests, logs)."""
    if not current_app.conf.task_always_eager:
        return {}  # beat and the workers do it
    now = time.monotonic() if now is None else now
    done: dict[str, Any] = {}
    try:
        if _due("expire_and_sweep", settings.CAMPAIGN_UPKEEP_INTERVAL, now):
            done.update(expire_and_sweep())
        if _due("retention", settings.CAMPAIGN_RETENTION_INTERVAL, now):
            done["deleted"] = delete_expired_results()
    except Exception:
        logger.warning("live-query upkeep failed; it will be retried later", exc_info=True)
    return done


def reset_upkeep_clock() -> None:
    """Forget when upkeep last ran (tests)."""
    _clock.reset()
