"""Writing a host's software list: only the difference with what is stored, and nothing at all
when the list did not change.

Every host sends its whole list on each detail interval (an hour), and almost always it is the
list it sent last time. So the ingest first reduces the rows to items (cleaned, bounded,
deduplicated), hashes them in a stable order and compares that digest with the one kept on the
host's ``HostSoftwareState`` row: equal means done, after one indexed ``SELECT`` and no write.
Otherwise it reads the host's current links once, and writes only what differs: missing titles
and versions (bulk ``INSERT`` ignoring conflicts with other hosts doing the same, then read back
by key), new links in bulk, removed links by id, changed paths or last-opened times in bulk, then
the new digest; the link writes and the digest are one transaction. If any write fails the
digest stays as it was, so the next report tries again.

Agents are untrusted: at most ``MAX_ROWS`` rows are looked at and ``MAX_ITEMS`` distinct items
kept per host; every value is a string cut to its column with NUL bytes removed (a cell that is
not a string counts as empty); unknown sources and nameless rows are dropped; last-opened times
must be plausible Unix times. Last-opened times are compared at ``LAST_OPENED_RESOLUTION`` (an
hour, Fleet's ``min_software_last_opened_at_diff``), so opening an app again within the hour
rewrites nothing.

Host counts are not touched here: ``software.counts`` recounts them in the background, and the
ingest only notes that something changed (one cache write).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from django.db import DataError, IntegrityError, OperationalError, connection, transaction
from django.utils import timezone

from software import counts
from software.batching import chunks
from software.choices import EXTENSION_SOURCES, Source
from software.models import (
    NAME_LENGTH,
    PATH_LENGTH,
    VERSION_LENGTH,
    HostSoftware,
    HostSoftwareState,
    SoftwareTitle,
    SoftwareVersion,
    title_key,
    version_key,
)

logger = logging.getLogger(__name__)

MAX_ROWS = 50_000  # rows read from one answer; the request size limit keeps real ones far below
MAX_ITEMS = 10_000  # distinct items kept per host
LAST_OPENED_RESOLUTION = 3600  # seconds
BATCH = 1000  # rows per INSERT and ids per IN (...)
_SOURCES = frozenset(Source.values)
_LATEST_PLAUSIBLE = 86400  # a last-opened time at most a day ahead of the server's clock
T = TypeVar("T")


Ident = tuple[str, str, str, str, str]  # name, source, bundle or extension id, browser, version


@dataclass(frozen=True, slots=True)
class Item:
    """One (title, version) a host reported, cleaned; ``opened`` is a Unix time or None."""

    name: str
    source: str
    bundle_identifier: str
    extension_for: str
    version: str
    installed_path: str
    opened: int | None

    @property
    def title_key(self) -> str:
        return title_key(self.name, self.source, self.bundle_identifier, self.extension_for)

    @property
    def key(self) -> str:
        """The version's key (the hashes are only needed when something changed)."""
        return version_key(self.title_key, self.version)


@dataclass(frozen=True)
class IngestResult:
    """What one ingest did (for tests, the benchmark and logs)."""

    changed: bool
    items: int = 0
    added: int = 0
    removed: int = 0
    updated: int = 0
    truncated: bool = False


def _clean(value: Any, length: int) -> str:
    """A cell as stored: a string (anything else is empty), NULs removed, trimmed, cut to ``length``.

    Written for the common case (a short clean string costs two C calls), as it runs for every
    cell of every row of every host's list.
    """
    if value.__class__ is not str:
        return ""
    if len(value) > length * 4:
        value = value[: length * 4]
    if "\x00" in value:
        value = value.replace("\x00", "")
    value = value.strip()
    return value[:length].rstrip() if len(value) > length else value


def _epoch(value: Any) -> int | None:
    """A plausible Unix time in seconds (osquery sends floats, and -1 for "never"), else None."""
    if value.__class__ is not str or not value or value == "-1":
        return None
    try:
        number = float(value[:64])
    except ValueError:
        return None
    if not math.isfinite(number) or number < 1 or number > time.time() + _LATEST_PLAUSIBLE:
        return None
    return int(number)


def normalise(rows: Any) -> tuple[dict[Ident, Item], bool]:
    """The distinct items of an answer, and whether some were dropped.

    Duplicates (the same version at two paths, in two user profiles) are one item: the first
    path reported and the latest last-opened time.
    """
    items: dict[Ident, Item] = {}
    if not isinstance(rows, list):
        return items, False
    truncated = len(rows) > MAX_ROWS
    clean, sources, extensions = _clean, _SOURCES, EXTENSION_SOURCES
    for row in rows[:MAX_ROWS]:
        if row.__class__ is not dict:
            continue
        get = row.get
        source = clean(get("source"), 32)
        name = clean(get("name"), NAME_LENGTH)
        if source not in sources or not name:
            continue
        bundle = clean(get("bundle_identifier"), NAME_LENGTH) or clean(get("extension_id"), NAME_LENGTH)
        browser = clean(get("extension_for"), 32) if source in extensions else ""
        ident = (name, source, bundle, browser, clean(get("version"), VERSION_LENGTH))
        path = clean(get("installed_path"), PATH_LENGTH)
        opened = _epoch(get("last_opened_at"))
        known = items.get(ident)
        if known is None:
            if len(items) >= MAX_ITEMS:
                truncated = True
                continue
            items[ident] = Item(*ident, path, opened)
        elif (opened or 0) > (known.opened or 0) or (path and not known.installed_path):
            latest = max(opened or 0, known.opened or 0) or None
            items[ident] = replace(known, installed_path=known.installed_path or path, opened=latest)
    return items, truncated


def digest(items: dict[Ident, Item]) -> str:
    """A stable hash of the list: same items, same paths, last-opened in the same hour."""
    h = hashlib.sha256()
    for ident in sorted(items):
        item = items[ident]
        opened = "" if item.opened is None else str(item.opened // LAST_OPENED_RESOLUTION)
        h.update("\x00".join((*ident, item.installed_path, opened, "\n")).encode())
    return h.hexdigest()


def _ids_by_key(model: type[SoftwareTitle] | type[SoftwareVersion], keys: Iterable[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for chunk in chunks(keys):
        found.update(model.objects.filter(key__in=chunk).values_list("key", "id"))
    return found


# _INSERT_ORDER: new titles and versions are inserted in key order. Two hosts reporting the same
# new software at once then lock the same unique-index entries in the same order, so InnoDB has no
# lock cycle to break (a deadlock); ``_retrying`` covers what remains.
_RETRYABLE = frozenset({1205, 1213})  # MySQL's lock wait timeout and deadlock: safe to run again
_ATTEMPTS = 3


def _retrying(call: Callable[[], T]) -> T:
    """Run ``call``, again after a MySQL deadlock or lock timeout (not inside a transaction)."""
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            return call()
        except OperationalError as exc:
            code = exc.args[0] if exc.args else None
            if code not in _RETRYABLE or attempt == _ATTEMPTS or connection.in_atomic_block:
                raise
            logger.info("software ingest: %s, attempt %d; retrying", exc, attempt)
            time.sleep(0.02 * attempt)
    raise AssertionError("unreachable")


def _title_ids(items: dict[str, Item]) -> dict[str, int]:
    """Ids of the titles (by title key) of ``items``, creating those no host reported before."""
    found = _ids_by_key(SoftwareTitle, items)
    missing = [k for k in sorted(items) if k not in found]  # key order: see _INSERT_ORDER
    if missing:
        SoftwareTitle.objects.bulk_create(
            [
                SoftwareTitle(
                    name=items[k].name,
                    source=items[k].source,
                    bundle_identifier=items[k].bundle_identifier,
                    extension_for=items[k].extension_for,
                    key=k,
                )
                for k in missing
            ],
            batch_size=BATCH,
            ignore_conflicts=True,  # another host may create the same title at the same moment
        )
        found.update(_ids_by_key(SoftwareTitle, missing))
    return found


def _version_ids(items: dict[str, Item]) -> dict[str, int]:
    """Ids of the versions (by version key) of ``items``, creating missing titles and versions."""
    found = _ids_by_key(SoftwareVersion, items)
    missing = [k for k in sorted(items) if k not in found]
    if missing:
        title_of = {k: items[k].title_key for k in missing}
        titles = _title_ids({title_of[k]: items[k] for k in missing})
        SoftwareVersion.objects.bulk_create(
            [
                SoftwareVersion(title_id=titles[title_of[k]], version=items[k].version, key=k)
                for k in missing
                if title_of[k] in titles
            ],
            batch_size=BATCH,
            ignore_conflicts=True,
        )
        found.update(_ids_by_key(SoftwareVersion, missing))
    return found


def _as_datetime(opened: int | None) -> datetime | None:
    return None if opened is None else datetime.fromtimestamp(opened, tz=UTC)


def _opened_changed(stored: datetime | None, reported: int | None) -> bool:
    if stored is None or reported is None:
        return (stored is None) != (reported is None)
    return abs(stored.timestamp() - reported) >= LAST_OPENED_RESOLUTION


def ingest_rows(host_id: int, rows: Any) -> IngestResult:
    """Store what a host reported for its software detail query (see the module docstring)."""
    items, truncated = normalise(rows)
    if truncated:
        logger.warning("host %s reported more software than kept; %d items stored", host_id, len(items))
    new_digest = digest(items)
    stored = HostSoftwareState.objects.filter(host_id=host_id).values_list("digest", flat=True).first()
    if stored == new_digest:
        return IngestResult(changed=False, items=len(items), truncated=truncated)
    try:
        result = _retrying(
            lambda: _apply(host_id, items, new_digest, truncated, has_state=stored is not None)
        )
    except (IntegrityError, DataError) as exc:
        # The host was deleted meanwhile, or a version was cleaned up under us: no digest is kept,
        # so the host's next report writes its list again.
        logger.warning("host %s: software not stored (%s); retried at its next report", host_id, exc)
        return IngestResult(changed=False, items=len(items), truncated=truncated)
    counts.note_change()
    return result


_LINK_COLUMNS = ("host_id", "version_id", "installed_path", "last_opened_at")


def _insert_links(links: list[tuple[Any, ...]]) -> None:
    """Insert host-software links (rows of ``_LINK_COLUMNS``, values already adapted), skipping
    any that exist.

    Plain ``executemany`` rather than ``bulk_create``: a host's first inventory is a few hundred
    links, and the ORM built a model instance and prepared every field of each, a fifth of the
    server's time while a fleet enrolls (profiled on ``make run`` at 5,000 hosts). The SQL is
    the same ``INSERT IGNORE`` (MySQL) or ``ON CONFLICT DO NOTHING`` (SQLite, PostgreSQL) that
    ``bulk_create(ignore_conflicts=True)`` sends.
    """
    quote = connection.ops.quote_name
    table = quote(HostSoftware._meta.db_table)
    columns = ", ".join(quote(c) for c in _LINK_COLUMNS)
    values = ", ".join(["%s"] * len(_LINK_COLUMNS))
    if connection.vendor == "mysql":
        sql = f"INSERT IGNORE INTO {table} ({columns}) VALUES ({values})"
    else:
        sql = f"INSERT INTO {table} ({columns}) VALUES ({values}) ON CONFLICT DO NOTHING"
    with connection.cursor() as cursor:
        for chunk in chunks(links, BATCH):
            cursor.executemany(sql, chunk)


def _apply(
    host_id: int, reported: dict[Ident, Item], new_digest: str, truncated: bool, *, has_state: bool
) -> IngestResult:
    items = {item.key: item for item in reported.values()}  # hashed only now that something changed
    current = {
        key: (link_id, path, opened)
        for link_id, key, path, opened in HostSoftware.objects.filter(host_id=host_id).values_list(
            "id", "version__key", "installed_path", "last_opened_at"
        )
    }
    added = {k: items[k] for k in items.keys() - current.keys()}
    removed = [current[k][0] for k in current.keys() - items.keys()]
    updated = [
        HostSoftware(id=link_id, installed_path=item.installed_path, last_opened_at=_as_datetime(item.opened))
        for k, (link_id, path, opened) in current.items()
        if (item := items.get(k)) is not None
        and (item.installed_path != path or _opened_changed(opened, item.opened))
    ]
    version_ids = _version_ids(added) if added else {}
    adapt = connection.ops.adapt_datetimefield_value
    links = [
        (host_id, version_ids[k], item.installed_path, adapt(_as_datetime(item.opened)))
        for k, item in sorted(added.items())
        if k in version_ids
    ]
    # Should a version not be found (it cannot, short of a concurrent clean-up), keep no digest.
    complete = len(links) == len(added)
    with transaction.atomic():
        for chunk in chunks(removed):
            HostSoftware.objects.filter(id__in=chunk).delete()
        if links:
            _insert_links(links)
        if updated:
            HostSoftware.objects.bulk_update(updated, ["installed_path", "last_opened_at"], batch_size=500)
        state = {
            "digest": new_digest if complete else "",
            "item_count": len(items),
            "truncated": truncated,
            "changed_at": timezone.now(),
        }
        if has_state:
            HostSoftwareState.objects.filter(host_id=host_id).update(**state)
        else:
            HostSoftwareState.objects.create(host_id=host_id, **state)
    return IngestResult(
        changed=True,
        items=len(items),
        added=len(links),
        removed=len(removed),
        updated=len(updated),
        truncated=truncated,
    )
