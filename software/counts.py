"""Host counts per title and version, recounted in the background rather than on each ingest.

Why not count on each page load: "hosts with Chrome 131" is a count over a table of hosts times
hundreds of rows; at 100,000 hosts a page of 50 titles would count millions of index entries,
and a team user's page would join hosts on top. Why not keep running totals from the ingest:
every host that installs or updates Chrome would increment the same few rows at once (lock
contention, deadlock risk across hosts), and a deleted or moved host would leave them wrong.
So, like Fleet's periodic ``software_host_counts`` job, one pass groups the links by version,
team and platform (and by title with distinct hosts), and writes only the counts that changed:

- ``SoftwareVersionCount`` / ``SoftwareTitleCount``: one row per (version or title, team,
  platform). Every host is in exactly one (team, platform) group, so summing rows gives exact
  counts for any set of teams (a team user's view) or platforms (a filter);
- ``host_count`` on each version and title: the fleet-wide sum, so the unfiltered list of a
  global user orders by an indexed column.

Celery beat asks for a pass every ``SOFTWARE_COUNTS_INTERVAL`` seconds (production); in the
embedded default, where there is no beat, a software page asks when it is loaded
(``software.tasks.refresh_counts_if_due``). Either way it runs only when due (``is_due``).
It also removes versions and titles no host has had for ``ORPHAN_AGE``: a version that a host
links to cannot be deleted (``PROTECT``), so a clean-up racing an ingest fails safely and is
retried next time.

An ingest that changed something notes the time in the cache (``note_change``); a pass is due
when a change came after the last one started, or that one is old (``is_due``), and long passes
take at most a tenth of the time. Counts lag the ingests by about one interval.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, Model, OuterRef, ProtectedError
from django.utils import timezone

from hosts.models import Host
from software.batching import chunks as _chunks
from software.models import (
    HostSoftware,
    SoftwareTitle,
    SoftwareTitleCount,
    SoftwareVersion,
    SoftwareVersionCount,
)

logger = logging.getLogger(__name__)

CHANGED_KEY = "software:counts:changed"
COUNTED_KEY = "software:counts:counted"
ORPHAN_AGE = timedelta(days=1)
DUTY_FACTOR = 10
BATCH = 1000
Group = tuple[int, int | None, str]  # (title or version id, team id, platform)


@dataclass(frozen=True)
class RecountResult:
    """What one pass changed (returned by the Celery task, logged, read by tests and the bench)."""

    seconds: float
    groups_written: int
    groups_deleted: int
    totals_changed: int
    versions_deleted: int
    titles_deleted: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def note_change() -> None:
    """Called by the ingest when a host's list changed: the counts are stale from now."""
    cache.set(CHANGED_KEY, time.time(), None)


def last_pass() -> tuple[float, float] | None:
    """(when the last pass started, how long it took), as far as the cache knows."""
    value = cache.get(COUNTED_KEY)
    return tuple(value) if isinstance(value, list | tuple) and len(value) == 2 else None  # type: ignore[return-value]


def is_due(max_age: float, now: float | None = None) -> bool:
    """Whether a pass should run now: an ingest changed something since the last one, or it is
    older than ``max_age`` seconds (hosts deleted or moved between teams leave no change mark).

    A pass that took a second or more is not repeated sooner than ``DUTY_FACTOR`` times its
    duration after it started, so that on a big fleet (a pass of a minute or so at 100,000
    hosts) counting takes at most a tenth of the database's time, whatever the schedule.
    """
    now = time.time() if now is None else now
    last = last_pass()
    if last is None:
        return True
    started, seconds = last
    if seconds >= 1.0 and now - started < DUTY_FACTOR * seconds:
        return False
    changed = cache.get(CHANGED_KEY)
    return (changed is not None and changed >= started) or now - started >= max_age


HOSTS_PER_QUERY = 5000


def _host_ranges() -> Iterator[tuple[int, int]]:
    """(first, last) host ids of consecutive slices of ``HOSTS_PER_QUERY`` hosts."""
    ids = list(Host.objects.order_by("id").values_list("id", flat=True))
    for start in range(0, len(ids), HOSTS_PER_QUERY):
        part = ids[start : start + HOSTS_PER_QUERY]
        yield part[0], part[-1]


def _grouped(by: str, counted: Any) -> dict[Group, int]:
    """Hosts per (``by``, team, platform), summed over slices of hosts.

    One GROUP BY over every link (2,000,000 at 100,000 hosts) outlasts the database read timeout
    (``DATABASE_READ_TIMEOUT``, 4 s); a slice of hosts is a range on the (host, version) index and
    takes a fraction of a second. A host lies in one slice, so distinct counts stay exact.
    """
    totals: dict[Group, int] = defaultdict(int)
    for first, last in _host_ranges():
        rows = (
            HostSoftware.objects.filter(host_id__gte=first, host_id__lte=last)
            .order_by()
            .values(by, "host__team_id", "host__platform")
            .annotate(n=counted)
            .values_list(by, "host__team_id", "host__platform", "n")
        )
        for obj, team, platform, n in rows.iterator(chunk_size=5000):
            totals[(obj, team, platform)] += n
    return dict(totals)


def _sync_groups(model: type[Model], field: str, desired: dict[Group, int]) -> tuple[int, int]:
    """Make ``model``'s rows equal ``desired``, writing only differences: (written, deleted)."""
    existing: dict[Group, tuple[int, int]] = {
        (obj, team, platform): (row_id, n)
        for row_id, obj, team, platform, n in model.objects.values_list(
            "id", field, "team_id", "platform", "host_count"
        ).iterator(chunk_size=5000)
    }
    create = [
        model(**{field: obj}, team_id=team, platform=platform, host_count=n)
        for (obj, team, platform), n in desired.items()
        if (obj, team, platform) not in existing
    ]
    update = [
        model(id=existing[group][0], host_count=n)
        for group, n in desired.items()
        if group in existing and existing[group][1] != n
    ]
    gone = [row_id for group, (row_id, _) in existing.items() if group not in desired]
    model.objects.bulk_create(create, batch_size=BATCH)
    model.objects.bulk_update(update, ["host_count"], batch_size=BATCH)
    for chunk in _chunks(gone):
        model.objects.filter(id__in=chunk).delete()
    return len(create) + len(update), len(gone)


def _sync_totals(model: type[SoftwareTitle] | type[SoftwareVersion], groups: dict[Group, int]) -> int:
    totals: dict[int, int] = defaultdict(int)
    for (obj, _team, _platform), n in groups.items():
        totals[obj] += n
    changed = [
        model(id=obj_id, host_count=totals.get(obj_id, 0))
        for obj_id, stored in model.objects.values_list("id", "host_count").iterator(chunk_size=5000)
        if stored != totals.get(obj_id, 0)
    ]
    model.objects.bulk_update(changed, ["host_count"], batch_size=BATCH)
    return len(changed)


def _delete_orphans(
    model: type[SoftwareTitle] | type[SoftwareVersion], referrer: type[Model], field: str, cutoff: Any
) -> int:
    """Delete rows no ``referrer`` points to (by ``field``), created before ``cutoff``.

    Rows that gain a referrer between the check and the delete are protected (``PROTECT``): that
    chunk is skipped and the next pass tries again.
    """
    in_use = referrer.objects.filter(**{field: OuterRef("pk")})
    ids = list(
        model.objects.filter(host_count=0, created_at__lt=cutoff)
        .filter(~Exists(in_use))
        .values_list("id", flat=True)
    )
    deleted = 0
    for chunk in _chunks(ids):
        try:
            with transaction.atomic():
                deleted += model.objects.filter(id__in=chunk).delete()[1].get(model._meta.label, 0)
        except (ProtectedError, IntegrityError):
            logger.info(
                "software clean-up: some %s came back into use; left for the next pass", model.__name__
            )
    return deleted


def recount() -> RecountResult:
    """Recount hosts per title and version, per team and platform, and clean up orphans."""
    started_wall, started = time.time(), time.perf_counter()
    versions = _grouped("version_id", Count("id"))  # (host, version) is unique: rows are hosts
    titles = _grouped("version__title_id", Count("host_id", distinct=True))
    written_v, deleted_v = _sync_groups(SoftwareVersionCount, "version_id", versions)
    written_t, deleted_t = _sync_groups(SoftwareTitleCount, "title_id", titles)
    totals = _sync_totals(SoftwareVersion, versions) + _sync_totals(SoftwareTitle, titles)
    cutoff = timezone.now() - ORPHAN_AGE
    versions_deleted = _delete_orphans(SoftwareVersion, HostSoftware, "version", cutoff)
    titles_deleted = _delete_orphans(SoftwareTitle, SoftwareVersion, "title", cutoff)
    seconds = time.perf_counter() - started
    cache.set(COUNTED_KEY, (started_wall, seconds), None)
    result = RecountResult(
        seconds=round(seconds, 3),
        groups_written=written_v + written_t,
        groups_deleted=deleted_v + deleted_t,
        totals_changed=totals,
        versions_deleted=versions_deleted,
        titles_deleted=titles_deleted,
    )
    logger.info("software host counts: %s", result)
    return result
