"""Node keys: issue them, store only their hash, and resolve them to a host on the hot path.

A check-in must not cost a database query. The host's check-in state (a few fields that decide
what the agent is sent) is cached under the node key's hash; a miss costs two indexed SELECTs
(the host row and its label ids).
Anything that changes that state (details ingested, refetch asked, re-enrolment, team change)
refreshes or drops the cache entry through this module.
"""

from __future__ import annotations

import hashlib
import secrets
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

from hosts.models import Host, LabelMembership
from hosts.status import online_interval

NODE_KEY_BYTES = 24  # Fleet's osquery.node_key_size
_CACHE_PREFIX = "nk4:"  # bump when HostState changes shape, so old pickles are not read


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


def state_of(host: Host, label_ids: Iterable[int] | None = None) -> HostState:
    """The cached check-in state; ``label_ids`` saves a query when the caller knows them."""
    interval = settings.OSQUERY["DETAIL_UPDATE_INTERVAL"]
    label_interval = settings.OSQUERY["LABEL_UPDATE_INTERVAL"]
    labels = tuple(sorted(label_ids)) if label_ids is not None else host_label_ids(host.id)
    return HostState(
        id=host.id,
        team_id=host.team_id,
        platform=host.platform,
        platform_like=host.platform_like,
        hostname=host.hostname,
        needs_identity=not (host.hostname and host.platform),
        details_due_at=host.detail_updated_at.timestamp() + interval + detail_jitter(host.id, interval),
        refetch_requested=host.refetch_requested,
        online_interval=online_interval(host.distributed_interval, host.config_tls_refresh),
        label_ids=labels,
        labels_due_at=host.label_updated_at.timestamp()
        + label_interval
        + detail_jitter(host.id, label_interval),
        intervals=(host.distributed_interval, host.config_tls_refresh, host.logger_tls_period),
        node_key_hash=host.node_key_hash or "",
    )


def _ttl() -> int:
    return settings.OSQUERY["NODE_KEY_CACHE_TTL"]


def lookup(node_key: str) -> HostState | None:
    """The host for a node key, or ``None`` when the key is unknown.

    Database errors propagate: the caller must not answer ``node_invalid`` on an outage, or
    every agent would re-enroll at once.
    """
    key_hash = hash_node_key(node_key)
    state = cache.get(_CACHE_PREFIX + key_hash)
    if state is not None:
        return state
    host = Host.objects.only(*_STATE_FIELDS).filter(node_key_hash=key_hash).first()
    if host is None:
        return None
    state = state_of(host)
    cache.set(_CACHE_PREFIX + key_hash, state, _ttl())
    return state


def remember(host: Host) -> HostState:
    """Store the host's fresh state in the cache (after a write changed it) and return it."""
    return store(state_of(host))


def store(state: HostState) -> HostState:
    """Cache a state built without reading the host (e.g. ``dataclasses.replace`` after a write)."""
    if state.node_key_hash:
        cache.set(_CACHE_PREFIX + state.node_key_hash, state, _ttl())
    return state


def forget(node_key_hashes: Iterable[str | None]) -> None:
    """Drop cached states, e.g. after a refetch request or a re-enrolment."""
    keys = [_CACHE_PREFIX + h for h in node_key_hashes if h]
    if keys:
        cache.delete_many(keys)


def forget_hosts(host_ids: Iterable[int]) -> None:
    forget(Host.objects.filter(id__in=list(host_ids)).values_list("node_key_hash", flat=True))
