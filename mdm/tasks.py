"""MDM background work: pushes, re-pushes to silent devices, and the profile reconciler.

Production: beat sends ``mdm.push_pending`` every ``MDM["REPUSH_INTERVAL"]`` seconds and
``mdm.reconcile_profiles`` every ``MDM["RECONCILE_INTERVAL"]``; enqueueing a command sends
``mdm.push`` for its device. Embedded default (Celery eager, no beat): the same tasks run
in-process, ``run_upkeep_if_due`` runs the periodic ones at most once per interval when a device
checks in, and profile changes run the reconciler at once.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from celery import current_app, shared_task
from django.conf import settings
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from fleet.due import DueClock
from mdm import push as pushes
from mdm.models import FINAL_STATUSES, Command, Enrollment

logger = logging.getLogger(__name__)

_clock = DueClock()
_due = _clock.due


@shared_task(name="mdm.push", ignore_result=True)
def push(enrollment_ids: list[int]) -> dict[str, int]:
    try:
        return pushes.push_enrollments(enrollment_ids)
    except Exception:  # a push is a hint; the next re-push pass tries again
        logger.warning("APNs push failed", exc_info=True)
        return {"sent": 0, "failed": len(enrollment_ids)}


def silent_with_pending(now=None) -> list[int]:
    """Enrolled devices with unanswered commands that have not been heard from, nor pushed, for a
    re-push interval (Fleet's ``apns_push_to_pending_hosts``)."""
    now = now or timezone.now()
    since = now - timedelta(seconds=settings.MDM["REPUSH_INTERVAL"])
    pending = Command.objects.filter(enrollment=OuterRef("pk"), cancelled=False).exclude(
        status__in=FINAL_STATUSES
    )
    return list(
        Enrollment.objects.filter(enrolled=True)
        .filter(Exists(pending))
        .filter(Q(last_seen_at__isnull=True) | Q(last_seen_at__lt=since))
        .filter(Q(last_push_at__isnull=True) | Q(last_push_at__lt=since))
        .values_list("pk", flat=True)[:5000]
    )


@shared_task(name="mdm.push_pending", ignore_result=True)
def push_pending() -> dict[str, int]:
    ids = silent_with_pending()
    return push(ids) if ids else {"sent": 0, "failed": 0}


@shared_task(name="mdm.reconcile_profiles", ignore_result=True)
def reconcile_profiles() -> dict[str, Any]:
    from mdm.profiles.reconciler import reconcile  # profiles import the queue, which imports tasks

    return reconcile()


def run_upkeep_if_due(now: float | None = None) -> dict[str, Any]:
    """Embedded default only (no beat): re-push and reconcile at most once per interval, here.
    Never raises: it runs inside a device's check-in."""
    if not current_app.conf.task_always_eager:
        return {}
    now = time.monotonic() if now is None else now
    done: dict[str, Any] = {}
    try:
        if _due("reconcile", settings.MDM["RECONCILE_INTERVAL"], now):
            done["reconcile"] = reconcile_profiles()
        if _due("push_pending", settings.MDM["REPUSH_INTERVAL"], now):
            done["push_pending"] = push_pending()
    except Exception:
        logger.warning("MDM upkeep failed; it will be retried later", exc_info=True)
    return done


def reset_upkeep_clock() -> None:
    _clock.reset()
