"""Metrics that task agents send to this server (the ``server`` metric destination), kept per series.

An agent's ``metrics`` frame (docs/task-agent-protocol.md) reaches the consumer, which hands its
``data`` to :func:`ingest`. What is kept (docs/tasks.md, "Metrics on the server"):

- a **series** per agent, task, metric name and remaining tags, holding the latest value, so the
  console, REST and ``/metrics`` read the latest values without touching the history;
- its **points** for ``TASKSERVER_METRICS_RETENTION`` seconds (6 hours by default), for charts.

Agents are untrusted (a key lets a program in, not its data): a batch is cut at ``MAX_BATCH``
metrics; a metric whose name, unit, type, value, tags or timestamp break the bounds below is
dropped (never truncated: a cut tag would merge two series); a ``task`` tag must name a task of
the agent's own scope (team, or global for a global agent), else the metric is dropped; an agent
has at most ``MAX_SERIES_PER_AGENT`` series, and new ones beyond it are dropped. Every drop is
counted by reason and logged once per batch.

A batch costs a fixed number of queries whatever its size (the agent, its tasks, the series by
key, new series and their ids, the points, the latest values), never one per metric: Django
splits a bulk insert only at the database's parameter limit (999 on SQLite: a few hundred rows a
statement). Points are unique per (series, time) and inserted ignoring conflicts, so a batch
delivered twice (the agent delivers at least once) is stored once; the latest value is read back
from the newest point, so batches arriving out of order leave it right.

Old points and series are deleted by :func:`prune`, which :func:`ingest` runs at most every
``PRUNE_INTERVAL`` seconds per process (``fleet.due``, as the session sweep does), since the
embedded default has no beat; readers ignore what is older than the retention anyway.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import OuterRef, Subquery

from fleet.due import DueClock
from taskserver.models import MetricPoint, MetricSeries, Task, TaskAgent

logger = logging.getLogger(__name__)

DEFAULT_RETENTION = 6 * 3600
MAX_BATCH = 2_000
MAX_NAME = 200
MAX_UNIT = 32
MAX_TAGS = 16  # besides task and agent
MAX_TAG_KEY = 64
MAX_TAG_VALUE = 200
MAX_SERIES_PER_AGENT = 2_000
MAX_FUTURE = 300.0  # seconds an agent's clock may run ahead
PRUNE_INTERVAL = 60.0
TYPES = ("gauge", "counter", "rate")
# These tags are the series' foreign keys, not labels: the agent is the authenticated one,
# whatever name it writes; the task is checked against the agent's scope.
KEY_TAGS = ("task", "agent")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TASK_ID = re.compile(r"[0-9]{1,18}")
_clock = DueClock()


def retention() -> float:
    """Seconds a point is kept (``settings.TASKSERVER_METRICS_RETENTION``, default 6 hours)."""
    return float(getattr(settings, "TASKSERVER_METRICS_RETENTION", DEFAULT_RETENTION))


def cutoff(now: float | None = None) -> datetime:
    """The oldest time still kept."""
    return _moment((time.time() if now is None else now) - retention())


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def series_key(agent_id: int, task_id: int | None, name: str, tags: dict[str, str]) -> str:
    """What tells one series from another, as the fixed-length digest the unique index holds."""
    canonical = json.dumps([agent_id, task_id, name, sorted(tags.items())], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- checking one metric ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Metric:
    name: str
    value: float
    unit: str
    type: str
    tags: dict[str, str]
    task_id: int | None
    at: datetime


def _text(value: Any, limit: int, *, empty: bool = False) -> str | None:
    if not isinstance(value, str) or len(value) > limit or (not value and not empty):
        return None
    return None if _CONTROL.search(value) else value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond a double
        return None
    return number if math.isfinite(number) else None


def _check(raw: Any, now: float, oldest: float) -> tuple[_Metric | None, str]:
    """The metric, or None and the reason it is dropped."""
    if not isinstance(raw, dict):
        return None, "not an object"
    name = _text(raw.get("name"), MAX_NAME)
    if name is None:
        return None, "bad name"
    value = _number(raw.get("value"))
    if value is None:
        return None, "bad value"
    unit = _text(raw.get("unit", ""), MAX_UNIT, empty=True)
    if unit is None:
        return None, "bad unit"
    kind = raw.get("type", "gauge")
    if kind not in TYPES:
        return None, "bad type"
    timestamp = _number(raw.get("timestamp"))
    if timestamp is None or timestamp > now + MAX_FUTURE:
        return None, "bad timestamp"
    if timestamp < oldest:
        return None, "older than the retention"
    tags = raw.get("tags", {})
    if not isinstance(tags, dict):
        return None, "bad tags"
    kept: dict[str, str] = {}
    for key, tag in tags.items():
        if _text(key, MAX_TAG_KEY) is None or _text(tag, MAX_TAG_VALUE, empty=True) is None:
            return None, "bad tags"
        if key not in KEY_TAGS:
            kept[key] = tag
    if len(kept) > MAX_TAGS:
        return None, "too many tags"
    task_id = None
    if "task" in tags:
        if not _TASK_ID.fullmatch(tags["task"]):
            return None, "unknown task"
        task_id = int(tags["task"])
    return _Metric(name, value, unit, kind, kept, task_id, _moment(timestamp)), ""


# --- ingest --------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What became of a batch: metrics accepted (duplicates of stored points included), series
    created, and the metrics dropped, by reason."""

    accepted: int = 0
    new_series: int = 0
    dropped: Counter[str] = field(default_factory=Counter)


def ingest(agent_id: int, data: object) -> int:
    """Store a ``metrics`` message's ``data`` from the agent ``agent_id``; the number of metrics
    accepted. Drops are logged; old points are pruned when due."""
    outcome = store(agent_id, data)
    if outcome.dropped:
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(outcome.dropped.items()))
        logger.info("task agent %s: %d metric(s) dropped (%s)", agent_id, outcome.dropped.total(), reasons)
    prune_if_due()
    return outcome.accepted


def store(agent_id: int, data: object, now: float | None = None) -> Outcome:
    """:func:`ingest` without the log line and the pruning; ``now`` in unix seconds (tests)."""
    outcome = Outcome()
    raw = data.get("metrics") if isinstance(data, dict) else None
    if not isinstance(raw, list):
        outcome.dropped["malformed batch"] += 1
        return outcome
    if len(raw) > MAX_BATCH:
        outcome.dropped["batch too large"] += len(raw) - MAX_BATCH
        raw = raw[:MAX_BATCH]
    now = time.time() if now is None else now
    oldest = now - retention()
    metrics: list[_Metric] = []
    for item in raw:
        metric, reason = _check(item, now, oldest)
        if metric is None:
            outcome.dropped[reason] += 1
        else:
            metrics.append(metric)
    if not metrics:
        return outcome

    scope = TaskAgent.objects.filter(pk=agent_id).values_list("scope", flat=True).first()
    if scope is None:  # deleted while connected
        outcome.dropped["unknown agent"] += len(metrics)
        return outcome
    named = {m.task_id for m in metrics if m.task_id is not None}
    allowed = set()
    if named:
        allowed = set(Task.objects.filter(pk__in=named, scope=scope).values_list("pk", flat=True))

    newest: dict[str, _Metric] = {}  # series key -> its newest metric in the batch
    values: dict[tuple[str, datetime], float] = {}  # one value per series and time (the last sent)
    for metric in metrics:
        if metric.task_id is not None and metric.task_id not in allowed:
            outcome.dropped["unknown task"] += 1
            continue
        key = series_key(agent_id, metric.task_id, metric.name, metric.tags)
        values[key, metric.at] = metric.value
        if key not in newest or metric.at >= newest[key].at:
            newest[key] = metric
    if not newest:
        return outcome

    with transaction.atomic():
        ids = dict(MetricSeries.objects.filter(key__in=list(newest)).values_list("key", "pk"))
        missing = [key for key in newest if key not in ids]
        if missing:
            room = MAX_SERIES_PER_AGENT - MetricSeries.objects.filter(agent_id=agent_id).count()
            refused = set(missing[max(room, 0) :])
            missing = missing[: max(room, 0)]
            if refused:
                over = sum(1 for (key, _at) in values if key in refused)
                outcome.dropped["too many series"] += over
                values = {k: v for k, v in values.items() if k[0] not in refused}
        if missing:
            MetricSeries.objects.bulk_create(
                [_new_series(agent_id, key, newest[key]) for key in missing], ignore_conflicts=True
            )
            # Ids read back: bulk_create does not return them on every database, nor at all when a
            # concurrent session created the same series first (the conflict is ignored).
            ids.update(MetricSeries.objects.filter(key__in=missing).values_list("key", "pk"))
            outcome.new_series = len(missing)
        MetricPoint.objects.bulk_create(
            [MetricPoint(series_id=ids[key], at=at, value=value) for (key, at), value in values.items()],
            ignore_conflicts=True,
        )
        _refresh_latest([ids[key] for key in newest if key in ids])
    outcome.accepted = len(values)
    return outcome


def _new_series(agent_id: int, key: str, metric: _Metric) -> MetricSeries:
    return MetricSeries(
        agent_id=agent_id,
        task_id=metric.task_id,
        name=metric.name,
        unit=metric.unit,
        type=metric.type,
        tags=metric.tags,
        key=key,
        last_value=metric.value,
        last_at=metric.at,
    )


def _refresh_latest(series_ids: list[int]) -> None:
    """Each series' latest value and time from its newest point: one UPDATE for the batch."""
    newest = MetricPoint.objects.filter(series_id=OuterRef("pk")).order_by("-at")
    MetricSeries.objects.filter(pk__in=series_ids).update(
        last_value=Subquery(newest.values("value")[:1]), last_at=Subquery(newest.values("at")[:1])
    )


# --- retention -------------------------------------------------------------------------------------


def prune(now: float | None = None) -> tuple[int, int]:
    """Delete points older than the retention, then series with nothing newer; the two counts."""
    limit = cutoff(now)
    points = MetricPoint.objects.filter(at__lt=limit).delete()[0]
    _, by_model = MetricSeries.objects.filter(last_at__lt=limit).delete()
    return points, by_model.get(MetricSeries._meta.label, 0)


def prune_if_due() -> tuple[int, int]:
    """:func:`prune`, at most every ``PRUNE_INTERVAL`` seconds per process; a failure waits for the
    next turn."""
    if not _clock.due("prune", PRUNE_INTERVAL, time.monotonic()):
        return 0, 0
    try:
        return prune()
    except Exception:
        logger.warning("pruning task agent metrics failed; it runs again shortly", exc_info=True)
        return 0, 0


# --- reading ---------------------------------------------------------------------------------------


def series_of(
    *, task_id: int | None = None, agent_id: int | None = None, name: str | None = None, limit: int = 100
) -> tuple[list[MetricSeries], int]:
    """A task's or an agent's series seen within the retention, most recently updated first (at
    most ``limit``), with their agent and task; and how many there are in all."""
    series = MetricSeries.objects.filter(last_at__gte=cutoff())
    if task_id is not None:
        series = series.filter(task_id=task_id)
    if agent_id is not None:
        series = series.filter(agent_id=agent_id)
    if name:
        series = series.filter(name=name)
    rows = list(series.select_related("agent", "task").order_by("-last_at", "name", "id")[:limit])
    total = len(rows) if len(rows) < limit else series.count()
    return rows, total


def points_of(
    series_ids: list[int], since: datetime | None = None, max_rows: int = 200_000
) -> dict[int, list[tuple[float, float]]]:
    """The series' points since ``since`` (default: the retention), oldest first, as (unix
    seconds, value); at most ``max_rows`` in all (a safety net: the retention already bounds a
    well-behaved agent's series; when it cuts, the series of highest ids lose their oldest points)."""
    found: dict[int, list[tuple[float, float]]] = {pk: [] for pk in series_ids}
    if not series_ids:
        return found
    since = max(since or cutoff(), cutoff())
    rows = (
        MetricPoint.objects.filter(series_id__in=series_ids, at__gte=since)
        .order_by("series_id", "-at")
        .values_list("series_id", "at", "value")[:max_rows]
    )
    for series_id, at, value in rows:
        found[series_id].append((at.timestamp(), value))
    for points in found.values():
        points.reverse()
    return found


# --- Prometheus ------------------------------------------------------------------------------------

EXPORT_LIMIT = 10_000
EXPORT_EXTRA_LABELS = 8
BASE_LABELS = ("task", "task_id", "agent", "plugin", "team")
_BAD_LABEL = re.compile(r"[^a-zA-Z0-9_]")


def prometheus_name(name: str) -> str:
    """``fleet_task_`` and the metric's name with everything outside ``[a-zA-Z0-9_]`` as ``_``."""
    return "fleet_task_" + _BAD_LABEL.sub("_", name)


def prometheus_labels(tags: dict[str, str], base: dict[str, str]) -> dict[str, str]:
    """The base labels, then the series' other tags (sanitised; reserved ``__`` names dropped, a
    name taken by a base label prefixed ``tag_``; at most ``EXPORT_EXTRA_LABELS``)."""
    labels = dict(base)
    extra = 0
    for key, value in sorted(tags.items()):
        if key == "plugin" or extra >= EXPORT_EXTRA_LABELS:
            continue
        label = _BAD_LABEL.sub("_", key)
        if label[0].isdigit():
            label = f"_{label}"
        if label.startswith("__"):
            continue
        if label in labels:
            label = f"tag_{label}"
            if label in labels:
                continue
        labels[label] = value
        extra += 1
    return labels


class SeriesCollector:
    """Every series' latest value, as ``fleet_task_<name>`` gauges, read from the database at scrape
    time (one query, at most ``EXPORT_LIMIT`` series, the most recently updated), so every server
    process answers alike. A database error costs these metrics for that scrape, not the scrape."""

    def describe(self) -> list:
        return []  # names depend on the data: no reading at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import Metric

        try:
            rows = list(
                MetricSeries.objects.filter(last_at__gte=cutoff())
                .order_by("-last_at", "id")
                .values_list("name", "unit", "tags", "last_value", "task_id", "task__name", "agent__name",
                             "agent__team__name")[:EXPORT_LIMIT]
            )  # fmt: skip
        except Exception:
            logger.warning("task agent metrics could not be read for /metrics", exc_info=True)
            return
        families: dict[str, Any] = {}
        seen: set[tuple[str, tuple]] = set()
        for name, unit, tags, value, task_id, task_name, agent_name, team_name in rows:
            tags = tags if isinstance(tags, dict) else {}
            family_name = prometheus_name(name)
            base = {
                "task": task_name or "",
                "task_id": str(task_id or ""),
                "agent": agent_name,
                "plugin": str(tags.get("plugin", "")),
                "team": team_name or "",
            }
            labels = prometheus_labels(tags, base)
            identity = (family_name, tuple(sorted(labels.items())))
            if identity in seen:  # two series that sanitise alike: the most recent one wins
                continue
            seen.add(identity)
            family = families.get(family_name)
            if family is None:
                help_text = f"Task agent metric {name}" + (f" ({unit})" if unit else "") + ", latest value."
                family = families[family_name] = Metric(family_name, help_text, "gauge")
            family.add_sample(family_name, labels, value)
        yield from families.values()


_collector: SeriesCollector | None = None


def register_collector() -> None:
    """Add :class:`SeriesCollector` to ``/metrics`` once per process (from the app's ``ready``)."""
    global _collector
    if _collector is None:
        from fleet.metrics import register

        _collector = SeriesCollector()
        register(_collector)
