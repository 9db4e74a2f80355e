"""Forwarding the audit trail to the log destinations (Fleet's ``activity_audit_log``).

Off by default (``ACTIVITY_ENABLE_AUDIT_LOG``). When on, every activity becomes one JSON line,
the same object ``GET /api/v1/activities/`` returns, on the destinations of
``ACTIVITY_AUDIT_LOG_PLUGIN``: ``filesystem`` (``ACTIVITY_AUDIT_LOG_FILE``), ``stdout``,
``webhook`` (``ACTIVITY_WEBHOOK_AUDIT_URL``), ``nats`` (``ACTIVITY_NATS_AUDIT_SUBJECT``). The
destination classes, their credentials, timeouts, rotation and circuit breakers are the osquery
logs' (``packs.destinations``, ``OSQUERY_*`` settings), so the two streams are configured alike.

Delivery, and why:

- The line is written to :class:`~activities.models.AuditLogOutbox` in the same transaction as
  the activity. A change that rolls back takes its line with it: nothing is forwarded for it.
- After the commit (``transaction.on_commit``) the request's own lines are delivered within
  ``ACTIVITY_AUDIT_DELIVERY_BUDGET`` seconds and removed from the outbox. A failure is logged and
  never reaches the user: the change is made, its activity is stored, and the line waits.
- Lines left behind (a destination outage) are delivered by the Celery beat task
  ``activities.deliver_audit_backlog`` every minute, and, without beat (the embedded default),
  by the next request that records an activity, at most once a minute per process.

So delivery is at least once, like the osquery logs: after an outage a line may arrive twice
(a destination that took it while another failed gets it again); consumers deduplicate on ``id``.
Fleet's own audit log is asynchronous too (a cron, up to ~5 minutes late).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from packs import destinations as log_destinations

logger = logging.getLogger(__name__)
LOG_TYPE = "audit"
BACKLOG_AGE = timedelta(seconds=30)  # younger lines are still being delivered by their request
BACKLOG_INTERVAL = 60.0  # seconds between backlog runs from the request path, per process
BACKLOG_BATCH = 500

_built: dict[str, list[Any]] = {}
_built_lock = threading.Lock()
_last_backlog = 0.0


def enabled() -> bool:
    return bool(settings.ACTIVITY_AUDIT_LOG["ENABLED"])


def audit_line(activity: Any) -> dict[str, Any]:
    """The forwarded object: exactly what the REST API shows for the activity."""
    from activities.api import ActivitySerializer

    return dict(ActivitySerializer(activity).data)


def enqueue(activities: Sequence[Any]) -> None:
    """Put the activities' lines in the outbox (this transaction) and deliver them after commit."""
    if not activities or not enabled():
        return
    from activities.models import AuditLogOutbox

    AuditLogOutbox.objects.bulk_create(
        [
            AuditLogOutbox(activity_id=a.pk, line=json.dumps(audit_line(a), separators=(",", ":")))
            for a in activities
        ]
    )
    ids = [a.pk for a in activities]
    transaction.on_commit(lambda: deliver_activities(ids), robust=True)


def _destinations() -> list[Any]:
    """The audit destinations, built once per configuration (breakers and connections persist)."""
    cfg, shared = settings.ACTIVITY_AUDIT_LOG, settings.OSQUERY_LOGGING
    key = repr((sorted(cfg.items()), sorted(shared.items())))
    with _built_lock:
        found = _built.get(key)
        if found is None:
            _built.clear()
            found = _built[key] = _build(cfg, shared)
    return found


def _build(cfg: dict[str, Any], shared: dict[str, Any]) -> list[Any]:
    plugins = [p.strip().lower() for p in cfg["PLUGINS"] if p.strip()]
    unknown = sorted(set(plugins) - set(log_destinations.PLUGINS))
    if unknown:
        raise ValueError(f"unknown audit log plugin(s) {unknown}; expected {log_destinations.PLUGINS}")
    built: list[Any] = []
    for plugin in dict.fromkeys(plugins):
        if plugin == "filesystem":
            built.append(
                log_destinations.FileDestination(
                    cfg["FILE"], shared["FILESYSTEM_MAX_BYTES"], shared["FILESYSTEM_MAX_BACKUPS"]
                )
            )
        elif plugin == "stdout":
            built.append(log_destinations.StdoutDestination())
        elif plugin == "webhook":
            built.append(
                log_destinations.WebhookDestination(
                    cfg["WEBHOOK_URL"],
                    shared["WEBHOOK_TOKEN"],
                    shared["WEBHOOK_TIMEOUT"],
                    shared["WEBHOOK_RETRY_BUDGET"],
                    shared["WEBHOOK_BATCH_LINES"],
                    shared["CIRCUIT_OPEN_SECONDS"],
                )
            )
        else:
            built.append(
                log_destinations.NatsDestination(
                    shared["NATS_SERVERS"],
                    cfg["NATS_SUBJECT"],
                    shared["NATS_TIMEOUT"],
                    shared["NATS_JETSTREAM"],
                    shared["NATS_CREDS_FILE"],
                    shared["NATS_TOKEN"],
                    shared["CIRCUIT_OPEN_SECONDS"],
                )
            )
    return built


def _deliver_rows(rows: list[tuple[int, str]]) -> bool:
    """Write the lines to every destination; on success drop them from the outbox."""
    from activities.models import AuditLogOutbox

    if not rows:
        return True
    lines = [line.encode() for _, line in rows]
    deadline = time.monotonic() + settings.ACTIVITY_AUDIT_LOG["DELIVERY_BUDGET"]
    errors: list[str] = []
    for destination in _destinations():
        try:
            destination.write(lines, deadline)
        except log_destinations.DeliveryError as exc:
            errors.append(str(exc))
    if errors:
        logger.warning(
            "audit log delivery failed (%d lines kept for later): %s", len(rows), "; ".join(errors)
        )
        return False
    AuditLogOutbox.objects.filter(pk__in=[pk for pk, _ in rows]).delete()
    return True


def deliver_activities(activity_ids: Sequence[int]) -> None:
    """After commit: deliver these activities' lines (and a due backlog). Never raises."""
    from activities.models import AuditLogOutbox

    try:
        rows = list(
            AuditLogOutbox.objects.filter(activity_id__in=list(activity_ids))
            .order_by("id")
            .values_list("id", "line")
        )
        if _deliver_rows(rows):
            _backlog_if_due()
    except Exception:  # a forwarding problem must never fail the user's request
        logger.exception("audit log delivery failed")


def _backlog_if_due() -> None:
    global _last_backlog
    now = time.monotonic()
    if now - _last_backlog < BACKLOG_INTERVAL:
        return
    _last_backlog = now
    deliver_backlog()


def deliver_backlog(limit: int = 10 * BACKLOG_BATCH) -> int:
    """Deliver lines older than :data:`BACKLOG_AGE`, oldest first; returns how many were delivered."""
    from activities.models import AuditLogOutbox

    if not enabled():
        return 0
    delivered = 0
    cutoff = timezone.now() - BACKLOG_AGE
    while delivered < limit:
        rows = list(
            AuditLogOutbox.objects.filter(created_at__lt=cutoff)
            .order_by("id")
            .values_list("id", "line")[:BACKLOG_BATCH]
        )
        if not rows or not _deliver_rows(rows):
            break
        delivered += len(rows)
    return delivered


def reset() -> None:
    """Forget built destinations and the backlog clock (tests, configuration reloads)."""
    global _last_backlog
    with _built_lock:
        _built.clear()
    _last_backlog = 0.0
