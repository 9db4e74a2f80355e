"""Host status, computed exactly as Fleet does (fleet-reference §5.4).

- online: seen within ``min(distributed_interval, config_tls_refresh) + 60 s``;
- offline: not online (missing hosts are offline too, as in Fleet's filters);
- missing: not seen for 30 days;
- new: enrolled within the last 24 hours (orthogonal to the others).

``HostSeenTime.offline_after`` holds ``seen_time + online interval``, so online is one indexed
comparison in SQL, on every database.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Q, QuerySet
from django.utils import timezone

from hosts.choices import HostStatus

ONLINE_INTERVAL_BUFFER = 60  # seconds, Fleet's OnlineIntervalBuffer
MISSING_AFTER = timedelta(days=30)
NEW_FOR = timedelta(hours=24)


def online_interval(distributed_interval: int, config_tls_refresh: int) -> int:
    """Seconds after its last check-in that a host still counts as online.

    Fleet takes the smaller of the two intervals; an interval osquery has not reported yet (0)
    is left out rather than making every fresh host offline after 60 s.
    """
    known = [i for i in (distributed_interval, config_tls_refresh) if i > 0]
    return (min(known) if known else 0) + ONLINE_INTERVAL_BUFFER


def status_of(seen_time: datetime | None, offline_after: datetime | None, now: datetime | None = None) -> str:
    """One host's status from its seen-time row (``None`` when it never checked in)."""
    now = now or timezone.now()
    if seen_time is None or offline_after is None:
        return HostStatus.OFFLINE
    if seen_time + MISSING_AFTER < now:
        return HostStatus.MISSING
    if offline_after >= now:
        return HostStatus.ONLINE
    return HostStatus.OFFLINE


def filter_by_status(queryset: QuerySet, status: str, now: datetime | None = None) -> QuerySet:
    """Narrow a ``Host`` queryset to one status, in SQL (index-friendly, no per-row arithmetic)."""
    now = now or timezone.now()
    if status == HostStatus.ONLINE:
        return queryset.filter(seen__offline_after__gte=now)
    if status == HostStatus.OFFLINE:
        return queryset.filter(Q(seen__offline_after__lt=now) | Q(seen__isnull=True))
    if status == HostStatus.MISSING:
        return queryset.filter(seen__seen_time__lt=now - MISSING_AFTER)
    if status == HostStatus.NEW:
        return queryset.filter(created_at__gte=now - NEW_FOR)
    raise ValueError(f"unknown status {status!r}; expected one of {', '.join(HostStatus.values)}")
