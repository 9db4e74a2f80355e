"""Scheduled queries: read from the served config (``schedule`` and ``packs``) as osquery does.

Why: result logs should come from what the server schedules, named the way osquery names them
(``pack<delim><pack><delim><query>``, Fleet's delimiter is ``/``), on osquery's clock (a query
runs when ``unix_time % splayed_interval == 0``, not at start-up). When the config schedules
nothing, a small built-in "Global" pack keeps result logs flowing, like osquery-perf does.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agentapi.simulator.protocol import as_int

DEFAULT_INTERVAL = 3600
MAX_INTERVAL = 604800
SPLAY_PERCENT = 10

# What the simulator runs when the config schedules nothing: uptime changes on every run (one
# removed and one added line), processes change every ten minutes on a third of the hosts.
BUILTIN_PACK = {
    "Global": {
        "queries": {
            "System uptime": {
                "query": "SELECT days, hours, minutes, total_seconds FROM uptime",
                "interval": 60,
            },
            "Running processes": {"query": "SELECT pid, name, path FROM processes", "interval": 300},
            "Logged in users": {
                "query": "SELECT user, tty, time FROM logged_in_users",
                "interval": 3600,
                "snapshot": True,
            },
        }
    }
}


@dataclass(frozen=True)
class ScheduledQuery:
    name: str
    sql: str
    interval: int  # already splayed
    snapshot: bool = False
    removed: bool = True

    def next_due(self, now: float) -> int:
        """The next unix time strictly after ``now`` at which this query runs."""
        return (int(now) // self.interval + 1) * self.interval


def platform_matches(spec: Any, family: str) -> bool:
    """osquery's substring rules for a query's or pack's ``platform`` (family: darwin/linux/windows)."""
    if not isinstance(spec, str) or spec in ("", "null") or "any" in spec or "all" in spec:
        return True
    if family == "linux" and any(p in spec for p in ("linux", "ubuntu", "centos")):
        return True
    if "posix" in spec and family in ("darwin", "linux", "freebsd"):
        return True
    return family in spec


def machine_shard(hostname: str) -> int:
    """``first byte of SHA1(hostname) × 100 / 255``."""
    return hashlib.sha1(hostname.encode()).digest()[0] * 100 // 255


def _truthy(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, str):
        return value.lower() in ("true", "t", "1")
    return bool(value)


def _splay(name: str, interval: int, rng: random.Random) -> int:
    spread = interval * SPLAY_PERCENT // 100
    return max(1, interval + (rng.randint(-spread, spread) if spread else 0))


def _query(name: str, spec: Any, family: str, shard: int, rng: random.Random) -> ScheduledQuery | None:
    if not isinstance(spec, dict) or not isinstance(spec.get("query"), str) or not spec["query"].strip():
        return None
    interval = as_int(spec.get("interval", DEFAULT_INTERVAL))
    if interval is None or not 1 <= interval <= MAX_INTERVAL:
        return None  # osquery: "Query has invalid interval"
    if not platform_matches(spec.get("platform"), family):
        return None
    query_shard = as_int(spec.get("shard")) or 0
    if query_shard and query_shard < shard:
        return None
    return ScheduledQuery(
        name,
        spec["query"],
        _splay(name, interval, rng),
        _truthy(spec.get("snapshot"), False),
        _truthy(spec.get("removed"), True),
    )


def from_config(
    config: dict[str, Any],
    family: str,
    hostname: str,
    rng: random.Random,
    builtin: bool = True,
    has_rows: Callable[[str], bool] | None = None,
) -> list[ScheduledQuery]:
    """The queries this host schedules from ``config`` (the built-in pack when it has none).

    ``has_rows(sql)`` runs a pack's ``discovery`` queries: the pack is active only when every one
    of them returns a row.
    """
    options = config.get("options") if isinstance(config.get("options"), dict) else {}
    delimiter = str(options.get("pack_delimiter", "_"))
    shard = machine_shard(hostname)
    queries: list[ScheduledQuery | None] = []
    schedule = config.get("schedule")
    if isinstance(schedule, dict):
        queries += [_query(name, spec, family, shard, rng) for name, spec in schedule.items()]
    packs = config.get("packs")
    if not (isinstance(packs, dict) and packs) and not queries and builtin:
        packs, delimiter = BUILTIN_PACK, "/"
    for pack_name, pack in (packs or {}).items() if isinstance(packs, dict) else ():
        if not isinstance(pack, dict) or not platform_matches(pack.get("platform"), family):
            continue
        discovery = pack.get("discovery")
        if (
            isinstance(discovery, list)
            and has_rows
            and not all(isinstance(sql, str) and has_rows(sql) for sql in discovery)
        ):
            continue
        pack_shard = as_int(pack.get("shard")) or 0
        if pack_shard and pack_shard < shard:
            continue
        for name, spec in (pack.get("queries") or {}).items():
            full = f"pack{delimiter}{pack_name}{delimiter}{name}"
            queries.append(_query(full, spec, family, shard, rng))
    return [q for q in queries if q is not None]
