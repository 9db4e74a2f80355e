"""Node keys: issue them, store only their hash, and resolve them to a host on the hot path.

A check-in must not cost a database query. The host's check-in state (``HostState``: the few
fields that decide what the agent is sent) is cached under the node key's hash; a miss costs one
indexed SELECT (the host row LEFT JOINed to its label memberships, one row per label).

**Lifetime.** An entry lives while its host is active, not on a timer: it is cached for
``OSQUERY_NODE_KEY_CACHE_TTL`` (a day) and a hit on an entry older than half that renews it with
one ``touch`` (once per entry and process per half-lifetime). A check-in every 10 s or every
60 s therefore misses only after a change, an eviction or a day of silence. With the old 180 s
lifetime every active host missed on a timer (one check-in in three at osquery's 60 s default).

**Invalidation.** Everything that changes an input of the state refreshes or drops the entry
through this module, after its write: details and labels ingested (:func:`remember`), intervals
served (:func:`store`), refetch, team transfer, team deletion, label edits, re-enrolment, orbit
enrolment, host deletion (:func:`forget`). ``docs/architecture.md`` ("The check-in path") lists
the writers; ``tests/test_checkin_floor.py`` proves each one.

A long lifetime makes a stale entry costly, so races are closed rather than left to a timer:

- :func:`forget` writes a *tombstone* (for ``SETTLE_SECONDS``), again when the transaction
  commits. A lookup that misses on an absent key caches with ``add``, which never overwrites a
  tombstone, so a request that read the database just before a change cannot re-cache what it
  read. The first lookup after a tombstone caches its state for ``SETTLE_SECONDS`` only (a second
  change racing it is forgotten by then), after which the next lookup caches it for good.
- Writers (:func:`remember`, :func:`store`) likewise cache briefly over a fresh tombstone.
- A tombstone the cache could not take (Redis down: ``fleet.cache`` skips the call) is written
  again once Redis answers; and every state is rebuilt from the database when its details are
  refreshed (hourly), which bounds any staleness that still slips through.
- On the embedded default the cache is per process: a ``forget`` in another process (a
  ``manage.py`` command) bumps a change-stamp file, and a process that sees a bump it did not make
  drops every entry it holds (a new key generation) within ``UPKEEP_SECONDS``.

**This process's copies** (production, ``fleet.near_cache``): a settled entry read from Redis is
kept in the process for ``NEAR_SECONDS`` (5 min), so most check-ins skip Redis too. Every write
above announces its keys on a Redis channel, and each process drops its copies of them as the
message arrives; a process that is not listening (Redis away, a lost connection) neither serves
nor keeps copies. The embedded default's cache is the process's own already and needs none.

``MISSES`` counts lookups that reached the database (per process; the benchmark reads it through
a response header that only bench mode sends).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import secrets
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.locmem import LocMemCache
from django.db import transaction
from django.db.models.signals import pre_delete
from django.dispatch import receiver

from fleet.change_stamp import stamp_at
from fleet.near_cache import NearCache
from hosts.models import Host, LabelMembership, Team
from hosts.status import online_interval

logger = logging.getLogger(__name__)

NODE_KEY_BYTES = 24  # Fleet's osquery.node_key_size
_CACHE_PREFIX = "nk5:"  # bump when HostState or the entry changes shape, so old pickles are not read
# After a change, states are cached this briefly (and a tombstone lives this long): long enough for
# any request that read the database before the change to have finished.
SETTLE_SECONDS = 30.0
UPKEEP_SECONDS = 1.0  # how often a process looks for other processes' changes and lost tombstones
_MAX_LOST = 100_000  # tombstones kept for a retry while Redis is away; beyond, the hourly rebuild
_MAX_RENEWED = 100_000  # renewals remembered per process before the memo starts over
# Copies of settled entries a production process keeps (fleet/near_cache.py): this long at most,
# which bounds what a lost change announcement can cost, and this many (about 0.5 KB each).
NEAR_SECONDS = 300.0
NEAR_ENTRIES = 200_000

MISSES = 0  # lookups that reached the database, in this process


def new_node_key() -> str:
    """A fresh random node key; the agent sees it once, we keep only its hash."""
    return secrets.token_urlsafe(NODE_KEY_BYTES)


def hash_node_key(node_key: str) -> str:
    return hashlib.sha256(node_key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class HostState:
    """What a check-in needs to know about its host, without touching the database."""

    id: int
    team_id: int | None
    platform: str
    platform_like: str
    hostname: str
    needs_identity: bool  # hostname or platform still unknown: ask the agent to hurry (accelerate)
    details_due_at: float  # unix time when detail queries are next due
    refetch_requested: bool
    online_interval: int
    label_ids: tuple[int, ...] = ()  # sorted ids of the labels the host is in (the config depends on it)
    labels_due_at: float = 0.0  # unix time when label queries are next due
    # (distributed_interval, config_tls_refresh, logger_tls_period) as stored: a config fetch
    # compares the served ones with these, and writes only when they differ (hosts.intervals).
    intervals: tuple[int, int, int] = (0, 0, 0)
    node_key_hash: str = ""  # where this state is cached, so a writer holding it can refresh it


# Every column HostState is built from, in the order ``_state`` takes them.
_STATE_FIELDS = (
    "id",
    "team_id",
    "platform",
    "platform_like",
    "hostname",
    "detail_updated_at",
    "label_updated_at",
    "refetch_requested",
    "distributed_interval",
    "config_tls_refresh",
    "logger_tls_period",
    "node_key_hash",
)


def detail_jitter(host_id: int, interval: int) -> float:
    """A stable per-host delay of up to ``MAX_JITTER_PERCENT`` of the interval (Fleet's jitter).

    Spreads the hourly detail refresh of hosts enrolled together, yet keeps each host's own
    schedule steady.
    """
    spread = interval * settings.OSQUERY["MAX_JITTER_PERCENT"] / 100
    return (zlib.crc32(host_id.to_bytes(8, "little")) / 0xFFFFFFFF) * spread


def host_label_ids(host_id: int) -> tuple[int, ...]:
    return tuple(sorted(LabelMembership.objects.filter(host_id=host_id).values_list("label_id", flat=True)))


def _state(values: Sequence[Any], label_ids: Iterable[int]) -> HostState:
    """The state from the ``_STATE_FIELDS`` values of a host row and its label ids."""
    (id_, team_id, platform, platform_like, hostname, detail_updated_at, label_updated_at, refetch,
     distributed, config_refresh, logger_period, node_key_hash) = values  # fmt: skip
    interval = settings.OSQUERY["DETAIL_UPDATE_INTERVAL"]
    label_interval = settings.OSQUERY["LABEL_UPDATE_INTERVAL"]
    return HostState(
        id=id_,
        team_id=team_id,
        platform=platform,
        platform_like=platform_like,
        hostname=hostname,
        needs_identity=not (hostname and platform),
        details_due_at=detail_updated_at.timestamp() + interval + detail_jitter(id_, interval),
        refetch_requested=refetch,
        online_interval=online_interval(distributed, config_refresh),
        label_ids=tuple(sorted(label_ids)),
        labels_due_at=label_updated_at.timestamp() + label_interval + detail_jitter(id_, label_interval),
        intervals=(distributed, config_refresh, logger_period),
        node_key_hash=node_key_hash or "",
    )


def state_of(host: Host, label_ids: Iterable[int] | None = None) -> HostState:
    """The cached check-in state; ``label_ids`` saves a query when the caller knows them."""
    labels = label_ids if label_ids is not None else host_label_ids(host.id)
    return _state([getattr(host, name) for name in _STATE_FIELDS], labels)


def _load(key_hash: str) -> HostState | None:
    """The state of the host holding this key hash, in one indexed query (one row per label)."""
    rows = list(
        Host.objects.filter(node_key_hash=key_hash)
        .order_by()
        .values_list(*_STATE_FIELDS, "label_memberships__label_id")
    )
    if not rows:
        return None
    return _state(rows[0][:-1], [row[-1] for row in rows if row[-1] is not None])


# --- the cache entries -----------------------------------------------------------------------
# An entry is (written at, state, settled): a state cached for good (``settled``), a state cached
# for SETTLE_SECONDS after a change, or a tombstone (state None) left by ``forget``.

_prefix = _CACHE_PREFIX + "0:"  # the key generation; only a per-process cache ever changes it
_renewed: dict[str, float] = {}  # key -> when this process last renewed it
_lost: set[str] = set()  # key hashes whose tombstone the cache did not take (Redis away)
_next_upkeep = 0.0
_local: bool | None = None  # whether the cache is this process's own (LocMemCache)
_near: NearCache | None = None  # this process's copies (production only): see _near_copies
_stamp_seen: int | None = None


def _ttl() -> int:
    return settings.OSQUERY["NODE_KEY_CACHE_TTL"]


def cache_key(key_hash: str) -> str:
    """Where the state of this key hash is cached (for tests and tools; lookups inline it)."""
    return _prefix + key_hash


def lookup(node_key: str) -> HostState | None:
    """The host for a node key, or ``None`` when the key is unknown.

    Database errors propagate: the caller must not answer ``node_invalid`` on an outage, or
    every agent would re-enroll at once.
    """
    global MISSES
    now = time.time()
    if now >= _next_upkeep:
        _upkeep(now)
    key_hash = hash_node_key(node_key)
    key = _prefix + key_hash
    near = _near
    entry = near.get(key) if near is not None else None
    if entry is None:
        epoch = near.epoch() if near is not None else 0
        entry = cache.get(key)
        if near is not None and entry is not None and entry[2]:
            near.put(key, entry, epoch)  # settled: kept until it changes (or NEAR_SECONDS)
    if entry is not None:
        written, state, settled = entry
        if settled:
            if now - written > _ttl() / 2:
                _renew(key, now)
            return state
        if state is not None and now - written < SETTLE_SECONDS:
            return state
    MISSES += 1
    state = _load(key_hash)
    if state is not None:
        _fill(key, state, entry, now)
    return state


def _fill(key: str, state: HostState, found: tuple | None, now: float) -> None:
    """Cache what a lookup read, never over a change that happened meanwhile."""
    if found is None:
        # Absent: ``add``, so a tombstone written since our read wins over what we read.
        cache.add(key, (now, state, True), _ttl())
    else:
        _set(key, state, found, now)


def _renew(key: str, now: float) -> None:
    """Extend an old entry's life (one ``touch`` per entry and process per half-lifetime)."""
    if now - _renewed.get(key, 0.0) <= _ttl() / 2:
        return
    if len(_renewed) >= _MAX_RENEWED:
        _renewed.clear()
    _renewed[key] = now
    cache.touch(key, _ttl())


def remember(host: Host) -> HostState:
    """Store the host's fresh state in the cache (after a write changed it) and return it."""
    return store(state_of(host))


def store(state: HostState) -> HostState:
    """Cache a state built without reading the host (e.g. ``dataclasses.replace`` after a write).

    Inside a transaction it is cached again once it commits.
    """
    if state.node_key_hash:
        _put(state)
        if transaction.get_connection().in_atomic_block:
            transaction.on_commit(functools.partial(_put, state))
    return state


def _put(state: HostState) -> None:
    key = _prefix + state.node_key_hash
    _set(key, state, cache.get(key), time.time())


def _set(key: str, state: HostState, found: tuple | None, now: float) -> None:
    """Cache ``state`` over ``found``: briefly over a tombstone written moments ago (a change is
    settling), else for good (also over a settling entry or a tombstone past its time)."""
    if found is not None and found[1] is None and now - found[0] < SETTLE_SECONDS:
        cache.set(key, (now, state, False), SETTLE_SECONDS)
    else:
        cache.set(key, (now, state, True), _ttl())
    _announce([key])


def forget(node_key_hashes: Iterable[str | None]) -> None:
    """Drop cached states (after a refetch request, a transfer, a re-enrolment...), now and, inside
    a transaction, again once it commits: a request racing the change cannot re-cache old data."""
    hashes = [h for h in node_key_hashes if h]
    if not hashes:
        return
    _tombstone(hashes)
    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(functools.partial(_tombstone, hashes))


def forget_hosts(host_ids: Iterable[int]) -> None:
    forget(Host.objects.filter(id__in=list(host_ids)).values_list("node_key_hash", flat=True))


def forget_all() -> None:
    """Drop every host's state (e.g. when builtin label memberships were installed)."""
    hashes = Host.objects.exclude(node_key_hash=None).values_list("node_key_hash", flat=True)
    batch: list[str] = []
    for key_hash in hashes.iterator(chunk_size=2000):
        batch.append(key_hash)
        if len(batch) == 2000:
            forget(batch)
            batch = []
    forget(batch)


def _tombstone(hashes: list[str]) -> None:
    now = time.time()
    keys = [_prefix + h for h in hashes]
    cache.set_many(dict.fromkeys(keys, (now, None, False)), SETTLE_SECONDS)
    _announce(keys)
    if _cache_down():
        if len(_lost) < _MAX_LOST:
            _lost.update(hashes[: _MAX_LOST - len(_lost)])
        logger.warning("cache unavailable: %d node-key states will be dropped when it is back", len(hashes))
    if _is_local():
        stamp_at(_stamp_path()).bump()  # tell this machine's other processes


@receiver(pre_delete, sender=Team, dispatch_uid="hosts.nodekeys.team_deleted")
def _team_deleted(sender: type[Team], instance: Team, **kwargs: Any) -> None:
    """A deleted team's hosts lose their team (``SET_NULL``), whichever path deleted it (REST,
    console, ``manage.py team``): their states go with it."""
    forget(Host.objects.filter(team_id=instance.pk).values_list("node_key_hash", flat=True))


# --- upkeep: other processes' changes, lost tombstones ------------------------------------------


def _near_copies() -> NearCache | None:
    """This process's copies, made the first time a lookup or a write needs them (a process that
    only writes, a console or a Celery worker, must still tell the others)."""
    global _near
    if _near is None and not _is_local() and settings.REDIS_URL:
        circuit = getattr(caches["default"], "circuit", None)
        _near = NearCache(settings.REDIS_URL, "nodekeys", NEAR_ENTRIES, NEAR_SECONDS, circuit)
    return _near


def drop_local_copies() -> None:
    """Drop this process's copies (for tools and tests that change cache entries behind this
    module's back; everything here announces its own changes)."""
    if _near is not None:
        _near.clear()


def _announce(keys: list[str]) -> None:
    """These entries changed in the shared cache: every process drops its copies of them."""
    near = _near_copies()
    if near is not None:
        near.changed(keys)


def _upkeep(now: float) -> None:
    global _next_upkeep
    _next_upkeep = now + UPKEEP_SECONDS
    _near_copies()
    if _is_local():
        _follow_other_processes()
    if _lost and not _cache_down():
        hashes = list(_lost)
        _lost.clear()
        logger.warning("cache is back: dropping %d node-key states changed while it was away", len(hashes))
        _tombstone(hashes)


def _is_local() -> bool:
    global _local
    if _local is None:
        _local = isinstance(caches["default"], LocMemCache)
    return _local


def _cache_down() -> bool:
    circuit = getattr(caches["default"], "circuit", None)  # fleet.cache.ResilientRedisCache
    return circuit is not None and circuit.down


def _stamp_path() -> str:
    return settings.OSQUERY["NODE_KEY_CHANGE_STAMP_FILE"]


def _follow_other_processes() -> None:
    """A per-process cache cannot be reached by another process's ``forget``: when one of them
    bumped the stamp, start a new key generation (every entry of this process is dropped)."""
    global _stamp_seen
    stamp = stamp_at(_stamp_path())
    now = stamp.read()
    if _stamp_seen is not None and (now != _stamp_seen and stamp.foreign(_stamp_seen, now)):
        new_generation()
    _stamp_seen = now


def new_generation() -> None:
    """Drop every state this process can reach, by moving to new keys (nothing is enumerated)."""
    global _prefix
    _prefix = f"{_CACHE_PREFIX}{secrets.token_hex(4)}:"
    _renewed.clear()
