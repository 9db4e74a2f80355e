"""Last-seen times, buffered in the process and written in batches (Fleet's technique).

A check-in only records the host id and time in memory. At most every
``OSQUERY_SEEN_FLUSH_INTERVAL`` seconds one request of the process writes the whole buffer with a
single multi-row upsert, sorted by host id so concurrent flushes from several processes take
row locks in the same order and never deadlock. What is still buffered when the process exits is
flushed by an ``atexit`` hook.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connection

from hosts.models import HostSeenTime

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_pending: dict[int, tuple[float, int]] = {}  # host id -> (seen unix time, online interval)
_last_flush = time.monotonic()


def mark_seen(host_id: int, online_interval: int, now: float | None = None) -> None:
    """Record a check-in; flush the buffer when it is due. Never raises on database errors."""
    global _last_flush
    with _lock:
        _pending[host_id] = (now or time.time(), online_interval)
        due = time.monotonic() - _last_flush >= settings.OSQUERY["SEEN_FLUSH_INTERVAL"]
        if due:
            _last_flush = time.monotonic()
    if due:
        flush()


def flush() -> int:
    """Write every buffered seen time now; returns how many hosts were written."""
    with _lock:
        batch = sorted(_pending.items())
        _pending.clear()
    if not batch:
        return 0
    rows = []
    for host_id, (seen, interval) in batch:
        seen_at = datetime.fromtimestamp(seen, UTC)
        rows.append(
            HostSeenTime(
                host_id=host_id, seen_time=seen_at, offline_after=seen_at + timedelta(seconds=interval)
            )
        )
    # MySQL's ON DUPLICATE KEY UPDATE takes no conflict target; SQLite and PostgreSQL need one.
    target = ["host"] if connection.features.supports_update_conflicts_with_target else None
    try:
        HostSeenTime.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=target,
            update_fields=["seen_time", "offline_after"],
            batch_size=1000,
        )
    except DatabaseError:
        # Hosts deleted meanwhile, or the database is down: seen times are advisory, keep serving.
        logger.warning("could not write %d seen times", len(rows), exc_info=True)
        return 0
    return len(rows)


def pending_count() -> int:
    with _lock:
        return len(_pending)


atexit.register(flush)


def flush_discard() -> None:
    """Forget the buffer without writing it (tests start from a clean process state)."""
    with _lock:
        _pending.clear()
