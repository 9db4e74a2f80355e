"""Query reports: the latest snapshot each host reported for a scheduled query (fleet-reference §4.4).

What is kept, and why:

- **Snapshot results only.** Each new snapshot of a (query, host) overwrites the previous one,
  which makes storing idempotent: osquery re-sends a batch whenever any log destination failed
  (at-least-once), and writing the same snapshot twice changes nothing. Differential results
  (``added``/``removed``) are *not* applied: applying a re-sent diff twice would corrupt the
  report, and a report built from diffs is wrong after any lost or reordered batch. They are still
  forwarded to the log destinations. Schedule a query as a snapshot to get a report.
- Only the **latest run** of a batch counts (highest ``unixTime``), and an older run never
  overwrites a newer one. Event-format snapshot lines (``logger_snapshot_event_type``, one line per
  row) are regrouped into one run; a run split over two requests is merged (identical rows are
  kept once).
- **Cap**: ``QUERY_REPORT_CAP`` rows per query, all hosts together (Fleet's ``query_report_cap``).
  A host's new snapshot may use what the other hosts leave free, so existing hosts keep updating
  when the report is full (Fleet instead stops updating the whole report); rows over the cap are
  not kept, ``row_count`` keeps what the host reported and the report is flagged
  ``report_clipped``.
- Skipped: queries with ``discard_data``, results of a team's query from a host no longer in that
  team, and everything when ``QUERY_REPORTS_DISABLED`` is set.

Database work is constant per log request, whatever the number of lines or queries in it: one
read of the host's reports, one aggregate of the queries' totals (cached for a second), one
upsert, and one more read only when a split run must be merged.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, F, QuerySet, Sum, Window
from django.utils import timezone

from hosts.nodekeys import HostState
from packs.logs import ResultLine, Target, as_strings
from queries.models import QueryReport

_TOTALS_TTL = 1.0  # seconds a process trusts a query's row total (Fleet caches its count 1 s too)
_totals: dict[int, tuple[int, float]] = {}
_totals_lock = threading.Lock()


@dataclass(slots=True)
class _Run:
    """One run of a query on the host: its time, rows, and whether it arrived row by row."""

    unix_time: int | None
    rows: list[dict[str, Any]] = field(default_factory=list)
    row_by_row: bool = False
    reported: int | None = None  # rows the host reported, when more than ``rows`` (a merged run)


def _latest_runs(items: list[tuple[ResultLine, Target]], host_team_id: int | None) -> dict[int, _Run]:
    """The latest snapshot run of each query in the batch, after the skipping rules."""
    runs: dict[int, _Run] = {}
    for line, target in items:
        if not line.is_snapshot or not target.keep_report:
            continue
        if target.query_team_id is not None and target.query_team_id != host_team_id and not target.from_pack:
            continue  # the host left the query's team; its results no longer belong there
        run = runs.get(target.query_id)
        newer = run is None or (line.unix_time or 0) > (run.unix_time or 0)
        if line.snapshot is not None:
            if newer or (line.unix_time or 0) == (run.unix_time or 0):
                runs[target.query_id] = _Run(line.unix_time, list(line.snapshot))
        elif line.snapshot_row is not None:
            if newer:
                runs[target.query_id] = run = _Run(line.unix_time, row_by_row=True)
            if run.unix_time == line.unix_time and run.row_by_row:
                run.rows.append(line.snapshot_row)
    return runs


def _fetched_at(unix_time: int | None) -> datetime:
    """The run's own time (``unixTime``), unless missing or implausible; then now."""
    now = timezone.now()
    if unix_time is None or unix_time <= 946684800:  # before 2000: a broken clock
        return now
    if unix_time > now.timestamp() + 86400:  # in the future (compared before any conversion,
        return now  # which overflows for the huge values a hostile agent sends)
    return datetime.fromtimestamp(unix_time, UTC)


def _totals_for(query_ids: list[int]) -> dict[int, int]:
    """Rows kept per query over all hosts; one aggregate query for those not cached."""
    now = time.monotonic()
    with _totals_lock:
        known = {q: total for q, (total, at) in _totals.items() if q in query_ids and now - at < _TOTALS_TTL}
    missing = [q for q in query_ids if q not in known]
    if missing:
        counted = dict(
            QueryReport.objects.filter(query_id__in=missing)
            .values("query_id")
            .annotate(total=Sum("kept_rows"))
            .values_list("query_id", "total")
        )
        with _totals_lock:
            for q in missing:
                known[q] = counted.get(q) or 0
                _totals[q] = (known[q], now)
    return known


def _adjust_totals(deltas: dict[int, int]) -> None:
    with _totals_lock:
        for q, delta in deltas.items():
            if q in _totals:
                total, at = _totals[q]
                _totals[q] = (max(total + delta, 0), at)


def forget_totals() -> None:
    """Drop the cached totals (tests, or after reports were deleted in bulk)."""
    with _totals_lock:
        _totals.clear()


def _merge(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of one run that arrived in two requests; a re-sent row is not kept twice."""
    seen = {tuple(sorted(row.items())) for row in old}
    merged = list(old)
    for row in new:
        key = tuple(sorted(row.items()))
        if key not in seen:
            seen.add(key)
            merged.append(row)
    return merged


def store_snapshots(state: HostState, items: list[tuple[ResultLine, Target]]) -> int:
    """Overwrite the host's reports with the latest snapshots in ``items``; returns reports written."""
    runs = _latest_runs(items, state.team_id)
    if not runs:
        return 0
    query_ids = sorted(runs)
    mine = {
        r["query_id"]: r
        for r in QueryReport.objects.filter(host_id=state.id, query_id__in=query_ids).values(
            "query_id", "last_fetched", "kept_rows", "row_count"
        )
    }
    merge_ids = []
    for qid in list(query_ids):
        run, old = runs[qid], mine.get(qid)
        when = _fetched_at(run.unix_time)
        if old is not None and run.unix_time is not None and old["last_fetched"] > when:
            del runs[qid]  # a late re-send of an older run
        elif old is not None and run.row_by_row and old["last_fetched"] == when:
            merge_ids.append(qid)
    if merge_ids:
        stored = QueryReport.objects.filter(host_id=state.id, query_id__in=merge_ids).values_list(
            "query_id", "rows"
        )
        for qid, rows in stored:
            merged = _merge(rows or [], [as_strings(r) for r in runs[qid].rows])
            runs[qid].rows = merged
            runs[qid].reported = mine[qid]["row_count"] + len(merged) - len(rows or [])
    if not runs:
        return 0
    totals = _totals_for(sorted(runs))
    cap = settings.OSQUERY_LOGGING["QUERY_REPORT_CAP"]
    reports, deltas = [], {}
    for qid, run in runs.items():
        old_kept = mine[qid]["kept_rows"] if qid in mine else 0
        budget = max(cap - (totals[qid] - old_kept), 0)
        # Merged runs are already strings; otherwise only the rows kept are converted.
        rows = run.rows[:budget] if qid in merge_ids else [as_strings(r) for r in run.rows[:budget]]
        reports.append(
            QueryReport(
                query_id=qid,
                host_id=state.id,
                rows=rows,
                row_count=run.reported or len(run.rows),
                kept_rows=len(rows),
                last_fetched=_fetched_at(run.unix_time),
            )  # fmt: skip
        )
        deltas[qid] = len(rows) - old_kept
    # MySQL's ON DUPLICATE KEY UPDATE takes no conflict target; SQLite and PostgreSQL need one.
    target = ["query", "host"] if connection.features.supports_update_conflicts_with_target else None
    QueryReport.objects.bulk_create(
        reports,
        update_conflicts=True,
        unique_fields=target,
        update_fields=["rows", "row_count", "kept_rows", "last_fetched"],
    )
    _adjust_totals(deltas)
    return len(reports)


def report_clipped(query_id: int, host_ids: QuerySet | None = None) -> bool:
    """Whether some host reported more rows than its report keeps (the cap clipped it)."""
    reports = QueryReport.objects.filter(query_id=query_id, row_count__gt=F("kept_rows"))
    if host_ids is not None:
        reports = reports.filter(host_id__in=host_ids)
    return reports.exists()


# --- reading ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportRow:
    host_id: int
    hostname: str
    last_fetched: datetime
    columns: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ReportPage:
    rows: list[ReportRow]
    count: int  # rows kept, over every visible host
    host_count: int  # hosts with at least one row kept
    clipped: bool


def visible_reports(query_id: int, team_ids: frozenset[int] | None, host_id: int | None = None) -> QuerySet:
    """The query's reports from hosts in ``team_ids`` (``None``: every host)."""
    reports = QueryReport.objects.filter(query_id=query_id)
    if team_ids is not None:
        reports = reports.filter(host__team_id__in=team_ids)
    if host_id is not None:
        reports = reports.filter(host_id=host_id)
    return reports


def report_page(
    query_id: int, team_ids: frozenset[int] | None, offset: int, limit: int, host_id: int | None = None
) -> ReportPage:
    """Rows ``offset`` .. ``offset + limit`` of the report, all hosts' rows in host id order.

    Paging works on the kept-row counts (a running sum over the reports, computed by the
    database), so only the reports that overlap the page are read with their rows: three queries,
    however big the report.
    """
    reports = visible_reports(query_id, team_ids, host_id)
    totals = reports.filter(kept_rows__gt=0).aggregate(rows=Sum("kept_rows"), hosts=Count("id"))
    clipped = reports.filter(row_count__gt=F("kept_rows")).exists()
    count = totals["rows"] or 0
    if limit <= 0 or offset >= count:
        return ReportPage([], count, totals["hosts"], clipped)
    window = (
        reports.filter(kept_rows__gt=0)
        .annotate(end=Window(Sum("kept_rows"), order_by=F("host_id").asc()))
        .annotate(start=F("end") - F("kept_rows"))
        .filter(end__gt=offset, start__lt=offset + limit)
        .values_list("host_id", "host__hostname", "last_fetched", "rows", "start")
        .order_by("host_id")
    )
    rows: list[ReportRow] = []
    for host, hostname, fetched, kept, start in window:
        first = max(offset - start, 0)
        for columns in (kept or [])[first : first + limit - len(rows)]:
            rows.append(ReportRow(host, hostname, fetched, columns))
    return ReportPage(rows, count, totals["hosts"], clipped)
