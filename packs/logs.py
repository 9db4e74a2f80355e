"""Result logs from osquery: parse every shape it sends and map each line to its query and pack.

osquery sends result lines in three shapes, often mixed in one request (osquery-protocol.md §7):

- event format (the default): one line per changed row, ``columns`` + ``action`` ``added`` /
  ``removed`` (or ``snapshot`` with ``logger_snapshot_event_type``);
- batch format: one line per run with ``diffResults: {added: [...], removed: [...]}``;
- snapshot: one line per run with ``snapshot: [...]`` and ``action: "snapshot"``.

The line's ``name`` says where it came from: ``pack<d>Global<d><query>`` (a global query),
``pack<d>team-<id><d><query>`` (a team's query) or ``pack<d><pack><d><scheduled name>`` (a
pack), with ``<d>`` the agent options' ``pack_delimiter`` (``/`` by default). Names are resolved
through an in-process map (:class:`NameMap`): no database work per line, none per request while
nothing changed.

:func:`ingest_results` keeps query reports (``queries.reports``) and returns the lines to forward
to the log destinations: everything, except lines of saved queries whose ``automations_enabled``
is off (Fleet forwards only those; unknown names are forwarded, nothing is silently dropped).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from hosts.models import FleetSettings, Team
from hosts.nodekeys import HostState
from packs import config
from packs.models import Pack, ScheduledQuery
from queries.models import Query

logger = logging.getLogger(__name__)
DEFAULT_DELIMITER = "/"


# --- parsing -----------------------------------------------------------------------------------


@dataclass(slots=True)
class ResultLine:
    """One result line, whatever its shape. Rows are the columns' values as osquery sent them."""

    name: str
    unix_time: int | None
    counter: int | None
    snapshot: list[dict[str, Any]] | None = None  # a whole run (batch snapshot form)
    snapshot_row: dict[str, Any] | None = None  # one row of a run (``logger_snapshot_event_type``)
    added: list[dict[str, Any]] = field(default_factory=list)
    removed: list[dict[str, Any]] = field(default_factory=list)
    decorations: dict[str, Any] = field(default_factory=dict)
    numerics: bool = False

    @property
    def is_snapshot(self) -> bool:
        return self.snapshot is not None or self.snapshot_row is not None

    @property
    def is_differential(self) -> bool:
        return not self.is_snapshot


_INT64 = 2**63 - 1
_INTEGER = re.compile(r"-?[0-9]{1,19}")


def _int_or_none(value: Any) -> int | None:
    """An integer field of a log line, or ``None`` when absent, malformed or beyond 64 bits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not _INTEGER.fullmatch(text):  # ASCII digits: "²".isdigit() is true, int("²") fails
            return None
        value = int(text)
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and -_INT64 - 1 <= value <= _INT64:
        return value
    return None


def _rows(value: Any) -> list[dict[str, Any]]:
    return [row for row in value if isinstance(row, dict)] if isinstance(value, list) else []


def parse_result(line: dict[str, Any]) -> ResultLine | None:
    """The result line's name, time, counter and rows; ``None`` when it has no usable name."""
    name = line.get("name")
    if not isinstance(name, str) or not name:
        return None
    decorations = line.get("decorations")
    parsed = ResultLine(
        name=name,
        unix_time=_int_or_none(line.get("unixTime")),
        counter=_int_or_none(line.get("counter")),
        decorations=decorations if isinstance(decorations, dict) else {},
        numerics=line.get("numerics") is True,
    )
    action = line.get("action")
    columns = line.get("columns")
    if isinstance(line.get("snapshot"), list):
        parsed.snapshot = _rows(line["snapshot"])
    elif isinstance(columns, dict) and action == "snapshot":
        parsed.snapshot_row = columns
    elif isinstance(columns, dict) and action in ("added", "removed"):
        (parsed.added if action == "added" else parsed.removed).append(columns)
    elif isinstance(line.get("diffResults"), dict):
        diff = line["diffResults"]
        parsed.added = _rows(diff.get("added"))
        parsed.removed = _rows(diff.get("removed"))
    return parsed


def as_strings(row: dict[str, Any]) -> dict[str, str]:
    """A row as osquery's own strings, whether or not the agent ran with ``--logger_numerics``.

    Reports then look the same for every host, and match live-query results (always strings).
    """
    out: dict[str, str] = {}
    for key, value in row.items():
        if isinstance(value, str):
            out[str(key)] = value
        elif value is None:
            out[str(key)] = ""
        elif isinstance(value, bool):
            out[str(key)] = "1" if value else "0"
        elif isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
            out[str(key)] = str(int(value))
        else:
            out[str(key)] = str(value)
    return out


# --- names -> queries ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """What a result line's name refers to."""

    query_id: int
    query_team_id: int | None  # the saved query's team (None: global)
    pack: str  # "Global", "team-<id>" or the pack's name
    scheduled_id: int | None  # set for a pack's scheduled query
    forward: bool  # send to the log destinations
    keep_report: bool  # not discard_data

    @property
    def from_pack(self) -> bool:
        return self.scheduled_id is not None


def _delimiters(options: Iterable[Any]) -> set[str]:
    """``/`` and every ``pack_delimiter`` set in agent options (config and platform overrides)."""
    found = {DEFAULT_DELIMITER}
    for doc in options:
        if not isinstance(doc, dict):
            continue
        configs = [doc.get("config")]
        overrides = doc.get("overrides")
        platforms = overrides.get("platforms") if isinstance(overrides, dict) else None
        if isinstance(platforms, dict):
            configs.extend(platforms.values())
        for osquery_config in configs:
            opts = osquery_config.get("options") if isinstance(osquery_config, dict) else None
            delimiter = opts.get("pack_delimiter") if isinstance(opts, dict) else None
            if isinstance(delimiter, str) and delimiter:
                found.add(delimiter)
    return found


def build_map() -> dict[str, Target]:
    """Every name a result line may carry, for every delimiter in use: five single-table queries, no joins."""
    # Read-only on purpose: FleetSettings.load() would create the row, a config change of its own.
    global_options = FleetSettings.objects.filter(pk=1).values_list("agent_options", flat=True).first()
    team_options = Team.objects.values_list("agent_options", flat=True)
    delimiters = _delimiters([global_options, *team_options])
    names: dict[str, Target] = {}
    queries = {}
    for qid, team_id, name, automations, discard in Query.objects.values_list(
        "id", "team_id", "name", "automations_enabled", "discard_data"
    ):
        pack = f"team-{team_id}" if team_id else "Global"
        queries[qid] = discard
        target = Target(qid, team_id, pack, None, automations, not discard)
        for d in delimiters:
            names[f"pack{d}{pack}{d}{name}"] = target
    packs = dict(Pack.objects.values_list("id", "name"))
    for sid, pack_id, name, qid in ScheduledQuery.objects.values_list("id", "pack_id", "name", "query_id"):
        pack = packs.get(pack_id)
        if pack is None or qid not in queries:
            continue
        target = Target(qid, None, pack, sid, True, not queries[qid])
        for d in delimiters:
            names.setdefault(f"pack{d}{pack}{d}{name}", target)  # a Global/team name wins a clash
    return names


class NameMap:
    """This process's name map, rebuilt when the served config's *generation* changes.

    The names come from the same inputs as the osquery config (saved queries, packs, scheduled
    queries, agent options), and ``packs.signals`` replaces the config generation in the shared
    cache whenever one of them changes, in any process. Checking it costs one cache read per
    log request; the map itself is rebuilt once per change.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names: dict[str, Target] = {}
        self._generation: str | None = None

    def lookup(self, names: Iterable[str]) -> dict[str, Target]:
        """Targets for the names that are known (one map read per request, not per line)."""
        wanted = set(names)
        if not wanted:
            return {}
        current = self._current()
        return {n: current[n] for n in wanted if n in current}

    def _current(self) -> dict[str, Target]:
        gen = config.generation()
        with self._lock:
            if gen == self._generation:
                return self._names
        names = build_map()  # outside the lock: a slow read must not stall other requests
        with self._lock:
            self._names, self._generation = names, gen
        return names


NAMES = NameMap()


# --- ingestion -------------------------------------------------------------------------------------


def ingest_results(state: HostState, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the reports a batch of result lines updates; return the lines to forward.

    Reports are a convenience: when they fail (a database hiccup, a host deleted meanwhile, a bug)
    the error is logged, as Fleet does, and the lines still reach the destinations. Failing the
    request instead would hold back every log of the host, and the retry would duplicate the lines
    at every destination.
    """
    from queries import reports

    parsed = [parse_result(line) for line in lines]
    try:
        targets = NAMES.lookup({p.name for p in parsed if p is not None})
    except Exception:
        logger.exception("host %s: cannot read query names; forwarding every result line", state.id)
        return lines
    if not settings.OSQUERY_LOGGING["QUERY_REPORTS_DISABLED"]:
        try:
            reports.store_snapshots(state, [(p, targets[p.name]) for p in parsed if p and p.name in targets])
        except RecursionError:
            raise  # a body too deep to handle: the endpoint answers 400
        except Exception:
            logger.exception("host %s: query reports not updated", state.id)
    return [
        line
        for line, p in zip(lines, parsed, strict=True)
        if p is None or p.name not in targets or targets[p.name].forward
    ]
