"""The software host-count pass as a Celery task, scheduled by beat or run in-process.

Production: beat sends ``software.recount_host_counts`` every ``SOFTWARE_COUNTS_INTERVAL``
seconds (``fleet/settings.py`` declares the entry with the other beat jobs). The task counts
when a pass is due (``software.counts.is_due``: something changed, or the last pass is an hour old) and skips
otherwise. The pass is idempotent and a short lock in the shared cache keeps two workers from
doing it twice at once.

Embedded default (Celery eager, no beat): software pages call ``refresh_counts_if_due``, which
runs the pass in the request when an ingest changed something since the last one (or it is
older than the interval). At that scale the pass takes milliseconds; a check-in never runs it.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Any

from celery import current_app, shared_task
from django.conf import settings
from django.core.cache import cache

from software import counts

logger = logging.getLogger(__name__)

TASK_NAME = "software.recount_host_counts"
DEFAULT_INTERVAL = 300.0
FULL_INTERVAL = 3600.0  # without any change, a pass at least this often (deleted and moved hosts)
LOCK_KEY = "software:counts:lock"
LOCK_SECONDS = 900  # a crashed worker's lock lapses after this long


def interval() -> float:
    """Seconds between passes (``SOFTWARE_COUNTS_INTERVAL`` in the settings, if set)."""
    return float(getattr(settings, "SOFTWARE_COUNTS_INTERVAL", DEFAULT_INTERVAL))


@shared_task(name=TASK_NAME, ignore_result=True)
def recount_host_counts(force: bool = False, max_age: float = FULL_INTERVAL) -> dict[str, Any]:
    """One counting pass when due (or ``force``), unless another worker is doing it now."""
    if not force and not counts.is_due(max_age):
        return {}
    token = uuid.uuid4().hex
    try:
        mine = cache.add(LOCK_KEY, token, LOCK_SECONDS)
    except Exception:  # the pass is safe to duplicate; a cache outage must not stop it
        mine = True
    if not mine:
        return {}
    try:
        return counts.recount().as_dict()
    finally:
        with contextlib.suppress(Exception):
            if cache.get(LOCK_KEY) == token:
                cache.delete(LOCK_KEY)


def refresh_counts_if_due() -> bool:
    """Run the pass now if Celery runs eagerly (no beat) and one is due; never raises."""
    if not current_app.conf.task_always_eager:
        return False
    try:
        return bool(recount_host_counts(max_age=interval()))
    except Exception:
        logger.warning("software host counts could not be refreshed; showing the last ones", exc_info=True)
        return False
