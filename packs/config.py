"""The osquery config each host receives from ``/api/osquery/config`` (fleet-reference §4.3).

What a host gets: the agent options' ``config`` (team options replace the global ones, a platform
override replaces ``config``; ``hosts.agent_options``), plus ``packs`` keyed by name:

- every enabled pack targeting the host directly, through one of its labels, or through its team;
- ``Global``: global saved queries with an interval; ``team-<id>``: its team's, as Fleet does.

Query options follow Fleet: a saved query's logging mode becomes ``snapshot``/``removed``
(snapshot -> ``snapshot: true, removed: false``; differential -> ``removed: true``; ignoring
removals -> ``removed: false``), ``min_osquery_version`` becomes ``version``.

Platforms and shards are decided here, not left to osquery. A pack or query whose ``platform``
(osquery's substring rules) excludes the host's platform family is left out, which keeps configs
small (osquery wipes the schedule of a config over 1 MiB). ``shard`` is *not* sent: osquery's
own shard hashes the hostname, which changes with renames; here a host is in a query's shard
when a stable hash of its id, mod 100, is below the shard percentage, so it is always in or
always out.

Cost: a config request does no database work with a warm cache (one UPDATE when the intervals
served differ from the host's, see ``hosts.intervals``). Configs are rendered once per
distinct input and cached as ready JSON bytes (beside the intervals its options set) under a
key made of the team, the platform family, the host's labels that some pack targets, the host id
only when a pack targets the host directly, and the host's shard class (where its hash falls
among the shard percentages in use).
All keys carry a *generation*: :func:`invalidate` replaces it, so nothing is ever enumerated or
deleted, and a render that raced a write is stored under a generation nobody reads any more.
Renders read one in-process *catalog* of every input, built per generation with a fixed number of
single-table queries (no joins), whatever the number of packs, hosts or labels.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from django.core.cache import cache
from django.db.models import Q

from hosts.agent_options import default_agent_options, effective_config
from hosts.details import platform_family
from hosts.intervals import Served, served_by
from hosts.models import FleetSettings, Team
from hosts.nodekeys import HostState
from packs.models import Pack, ScheduledQuery
from packs.services import GLOBAL_PACK, team_pack_name
from queries.models import LoggingMode, Query

logger = logging.getLogger(__name__)

GENERATION_KEY = "cfg:generation"
_TTL = 3600
MAX_CONFIG_BYTES = 1 << 20  # osquery refuses (and drops its schedule for) larger configs
_LOCK = threading.Lock()


# --- inputs ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Meta:
    """What the cache key needs beyond the host's own state; small, shared through the cache."""

    direct_hosts: frozenset[int] = frozenset()  # hosts some enabled pack targets directly
    target_labels: frozenset[int] = frozenset()  # labels some enabled pack targets
    shards: tuple[int, ...] = ()  # distinct shard percentages (1-99) used by enabled packs


@dataclass(frozen=True)
class PackQuery:
    name: str
    content: dict[str, Any]
    platform: str = ""
    shard: int | None = None


@dataclass(frozen=True)
class PackEntry:
    name: str
    platform: str
    queries: tuple[PackQuery, ...]
    host_ids: frozenset[int] = frozenset()
    label_ids: frozenset[int] = frozenset()
    team_ids: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Catalog:
    """Every input of every config, read in one go per generation."""

    generation: str
    global_options: dict[str, Any]
    team_options: dict[int, dict[str, Any]]
    packs: tuple[PackEntry, ...]
    scheduled: dict[int | None, tuple[PackQuery, ...]]  # team id (None: global) -> its scheduled queries
    meta: Meta = field(default_factory=Meta)


_memo: dict[str, Any] = {"catalog": None, "meta": None}


def logging_options(logging_mode: str) -> dict[str, bool]:
    """Fleet's mapping of a saved query's logging mode onto osquery's schedule options."""
    if logging_mode == LoggingMode.SNAPSHOT:
        return {"snapshot": True, "removed": False}
    if logging_mode == LoggingMode.DIFFERENTIAL_IGNORE_REMOVALS:
        return {"removed": False}
    return {"removed": True}


def _saved_query(row: dict[str, Any]) -> PackQuery:
    content: dict[str, Any] = {"query": row["query"], "interval": row["interval"]}
    content.update(logging_options(row["logging"]))
    if row["platform"]:
        content["platform"] = row["platform"]
    if row["min_osquery_version"]:
        content["version"] = row["min_osquery_version"]
    return PackQuery(row["name"], content, row["platform"])


def _pack_query(row: dict[str, Any], sql: str) -> PackQuery:
    content: dict[str, Any] = {"query": sql, "interval": row["interval"]}
    for option in ("snapshot", "removed", "denylist"):
        if row[option] is not None:
            content[option] = row[option]
    if row["platform"]:
        content["platform"] = row["platform"]
    if row["version"]:
        content["version"] = row["version"]
    shard = row["shard"] if row["shard"] and row["shard"] < 100 else None
    return PackQuery(row["name"], content, row["platform"], shard)


def _targets(through: Any, column: str, pack_ids: set[int]) -> dict[int, frozenset[int]]:
    found: dict[int, set[int]] = {}
    for pack_id, target_id in through.objects.values_list("pack_id", column):
        if pack_id in pack_ids:
            found.setdefault(pack_id, set()).add(target_id)
    return {pack_id: frozenset(ids) for pack_id, ids in found.items()}


def load_catalog(generation: str) -> Catalog:
    """Read every config input: eight single-table queries, however many packs and queries exist."""
    # Read, not ``FleetSettings.load()``: creating the row would signal a change and re-render.
    stored = FleetSettings.objects.filter(pk=1).values_list("agent_options", flat=True).first()
    global_options = default_agent_options() if stored is None else stored or {}
    team_options = {
        team_id: options
        for team_id, options in Team.objects.values_list("id", "agent_options")
        if options  # None or {}: the team uses the global options, as Fleet does
    }
    packs = list(Pack.objects.filter(disabled=False).order_by("name").values("id", "name", "platform"))
    pack_ids = {p["id"] for p in packs}
    hosts = _targets(Pack.target_hosts.through, "host_id", pack_ids)
    labels = _targets(Pack.target_labels.through, "label_id", pack_ids)
    teams = _targets(Pack.target_teams.through, "team_id", pack_ids)
    scheduled_rows = list(
        ScheduledQuery.objects.filter(pack_id__in=pack_ids)
        .order_by("pack_id", "name")
        .values("pack_id", "query_id", "name", "interval", "snapshot", "removed", "platform", "version",
                "shard", "denylist")
    )  # fmt: skip
    query_rows = Query.objects.filter(Q(interval__gt=0) | Q(id__in={r["query_id"] for r in scheduled_rows}))
    sql_of: dict[int, str] = {}
    scheduled: dict[int | None, list[PackQuery]] = {}
    for row in query_rows.order_by("name").values(
        "id", "team_id", "name", "query", "interval", "logging", "platform", "min_osquery_version"
    ):
        sql_of[row["id"]] = row["query"]
        if row["interval"] > 0:
            scheduled.setdefault(row["team_id"], []).append(_saved_query(row))
    in_pack: dict[int, list[PackQuery]] = {}
    for row in scheduled_rows:
        in_pack.setdefault(row["pack_id"], []).append(_pack_query(row, sql_of[row["query_id"]]))
    entries = tuple(
        PackEntry(
            name=p["name"],
            platform=p["platform"],
            queries=tuple(in_pack.get(p["id"], ())),
            host_ids=hosts.get(p["id"], frozenset()),
            label_ids=labels.get(p["id"], frozenset()),
            team_ids=teams.get(p["id"], frozenset()),
        )
        for p in packs
    )
    meta = Meta(
        direct_hosts=frozenset().union(*(e.host_ids for e in entries)),
        target_labels=frozenset().union(*(e.label_ids for e in entries)),
        shards=tuple(sorted({q.shard for e in entries for q in e.queries if q.shard})),
    )
    return Catalog(
        generation=generation,
        global_options=global_options,
        team_options=team_options,
        packs=entries,
        scheduled={team: tuple(queries) for team, queries in scheduled.items()},
        meta=meta,
    )


# --- generation, catalog and meta -------------------------------------------------------------------


def generation() -> str:
    """The current generation token (a new random one when the cache lost it)."""
    current = cache.get(GENERATION_KEY)
    if current is None:
        token = secrets.token_hex(8)
        current = token if cache.add(GENERATION_KEY, token, None) else cache.get(GENERATION_KEY) or token
    return current


def invalidate() -> None:
    """Every input may have changed: later requests render afresh (old keys simply expire).

    A random token rather than a counter: a counter lost from the cache would restart at a value
    whose old keys may still hold stale configs.
    """
    cache.set(GENERATION_KEY, secrets.token_hex(8), None)


def catalog(gen: str) -> Catalog:
    """This process's catalog for the generation, read from the database once per generation."""
    current = _memo["catalog"]
    if current is not None and current.generation == gen:
        return current
    with _LOCK:
        current = _memo["catalog"]
        if current is None or current.generation != gen:
            current = load_catalog(gen)
            _memo["catalog"] = current
            _memo["meta"] = (gen, current.meta)
            cache.set(f"cfg:{gen}:meta", current.meta, _TTL)
    return current


def meta(gen: str) -> Meta:
    """The key inputs for this generation: from memory, else the cache, else the catalog."""
    memo = _memo["meta"]
    if memo is not None and memo[0] == gen:
        return memo[1]
    found = cache.get(f"cfg:{gen}:meta")
    if found is None:
        return catalog(gen).meta
    _memo["meta"] = (gen, found)
    return found


# --- per host ----------------------------------------------------------------------------------------


def shard_bucket(host_id: int) -> int:
    """The host's place (0-99) for sharding: stable for the life of the host record."""
    digest = hashlib.blake2b(f"fleet-shard:{host_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 100


def in_shard(shard: int | None, bucket: int) -> bool:
    return not shard or bucket < shard


def platform_matches(spec: str, family: str) -> bool:
    """osquery's platform rule (``core/system.cpp`` ``checkPlatform``); unknown family: keep."""
    if not family or not spec or spec == "null" or "any" in spec or "all" in spec:
        return True
    if family == "linux" and any(name in spec for name in ("linux", "ubuntu", "centos")):
        return True
    if "posix" in spec and family in ("darwin", "linux", "freebsd"):
        return True
    return family in spec


@dataclass(frozen=True)
class Inputs:
    """Everything a host's config depends on; hosts with equal inputs share one rendered config."""

    team_id: int | None
    family: str
    label_ids: frozenset[int]
    host_id: int | None  # set only when a pack targets the host directly
    bucket: int  # the host's shard bucket; only its class (below) goes in the key
    shard_class: int

    def key(self, gen: str) -> str:
        labels = ",".join(str(i) for i in sorted(self.label_ids))
        if len(labels) > 40:
            labels = hashlib.blake2b(labels.encode(), digest_size=10).hexdigest()
        return f"cfg:{gen}:{self.team_id or 0}:{self.family}:{labels}:{self.host_id or 0}:{self.shard_class}"


def inputs_for(state: HostState, key_meta: Meta) -> Inputs:
    bucket = shard_bucket(state.id)
    return Inputs(
        team_id=state.team_id,
        family=platform_family(state.platform, state.platform_like),
        label_ids=frozenset(state.label_ids) & key_meta.target_labels,
        host_id=state.id if state.id in key_meta.direct_hosts else None,
        bucket=bucket,
        shard_class=bisect.bisect_right(key_meta.shards, bucket),
    )


def build(cat: Catalog, inputs: Inputs) -> dict[str, Any]:
    """The config document for these inputs (a fresh object)."""
    config = effective_config(cat.global_options, cat.team_options.get(inputs.team_id or 0), inputs.family)
    packs: dict[str, Any] = dict(config["packs"]) if isinstance(config.get("packs"), dict) else {}

    def queries(items: tuple[PackQuery, ...]) -> dict[str, Any]:
        return {
            q.name: q.content
            for q in items
            if in_shard(q.shard, inputs.bucket) and platform_matches(q.platform, inputs.family)
        }

    for pack in cat.packs:
        targeted = (
            (inputs.host_id is not None and inputs.host_id in pack.host_ids)
            or bool(inputs.label_ids & pack.label_ids)
            or (inputs.team_id is not None and inputs.team_id in pack.team_ids)
        )
        if targeted and platform_matches(pack.platform, inputs.family):
            body: dict[str, Any] = {"queries": queries(pack.queries)}
            if pack.platform:
                body["platform"] = pack.platform
            packs[pack.name] = body
    global_queries = queries(cat.scheduled.get(None, ()))
    if global_queries:
        packs[GLOBAL_PACK] = {"queries": global_queries}
    if inputs.team_id:
        team_queries = queries(cat.scheduled.get(inputs.team_id, ()))
        if team_queries:
            packs[team_pack_name(inputs.team_id)] = {"queries": team_queries}
    if packs:
        config["packs"] = packs
    return config


class Rendered(NamedTuple):
    """A rendered config: the JSON sent, and the intervals its options set (read once, here)."""

    body: bytes
    intervals: Served


def rendered_for(state: HostState) -> Rendered:
    """The config for a host, from the cache when any host with the same inputs asked before."""
    gen = generation()
    inputs = inputs_for(state, meta(gen))
    key = inputs.key(gen)
    rendered = cache.get(key)
    if not isinstance(rendered, Rendered):  # a miss, or bytes cached by an older release
        document = build(catalog(gen), inputs)
        body = json.dumps(document, separators=(",", ":")).encode()
        if len(body) > MAX_CONFIG_BYTES:
            logger.error(
                "config for %s is %d bytes: osquery refuses configs over %d bytes and runs no "
                "scheduled queries until it gets a valid one",
                key, len(body), MAX_CONFIG_BYTES,
            )  # fmt: skip
        rendered = Rendered(body, served_by(document))
        cache.set(key, rendered, _TTL)
    return rendered


def render_for(state: HostState) -> bytes:
    """The config JSON for a host (:func:`rendered_for` without the intervals)."""
    return rendered_for(state).body
