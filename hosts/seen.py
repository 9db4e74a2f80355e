"""Last-seen times, buffered in the process and written in batches (Fleet's technique).

A check-in only records the host id and time in memory. At most every
``OSQUERY_SEEN_FLUSH_INTERVAL`` seconds one request of the process writes the whole buffer with a
single multi-row upsert, sorted by host id so concurrent flushes from several processes take
row locks in the same order and never deadlock. What is still buffered when the process exits is
flushed by an ``atexit`` hook.
"""

from __future__ import annotations

import atexit
import functools
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
    ops = connection.ops
    rows = []
    for host_id, (seen, interval) in batch:
        seen_at = datetime.fromtimestamp(seen, UTC)
        offline = seen_at + timedelta(seconds=interval)
        rows.append((host_id, ops.adapt_datetimefield_value(seen_at), ops.adapt_datetimefield_value(offline)))
    try:
        with connection.cursor() as cursor:
            cursor.executemany(_upsert_statement(connection.vendor), rows)
    except DatabaseError:
        # Hosts deleted meanwhile, or the database is down: seen times are advisory, keep serving.
        logger.warning("could not write %d seen times", len(rows), exc_info=True)
        return 0
    return len(rows)


@functools.cache
def _upsert_statement(vendor: str) -> str:
    """One row's upsert; MySQLdb sends ``executemany`` of it as a single multi-row statement.

    Written out, not ``bulk_create(update_conflicts=True)``: the ORM built a model instance and
    compiled every row's SQL each flush, 3-5 % of a web worker's Python time at 3,000 hosts.
    MySQL's ``ON DUPLICATE KEY UPDATE`` takes no conflict target; SQLite and PostgreSQL need one.
    """
    quote = connection.ops.quote_name
    meta = HostSeenTime._meta
    table = quote(meta.db_table)
    host, seen, offline = (quote(meta.get_field(f).column) for f in ("host", "seen_time", "offline_after"))
    insert = f"INSERT INTO {table} ({host}, {seen}, {offline}) VALUES (%s, %s, %s)"
    if vendor == "mysql":
        return f"{insert} ON DUPLICATE KEY UPDATE {seen} = VALUES({seen}), {offline} = VALUES({offline})"
    update = f"{seen} = excluded.{seen}, {offline} = excluded.{offline}"
    return f"{insert} ON CONFLICT ({host}) DO UPDATE SET {update}"


def pending_count() -> int:
    with _lock:
        return len(_pending)


atexit.register(flush)


def flush_discard() -> None:
    """Forget the buffer without writing it (tests start from a clean process state)."""
    with _lock:
        _pending.clear()
