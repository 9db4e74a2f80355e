"""The console's Metrics section on task and agent pages: rows of series with an inline SVG chart.

Charts are drawn on the server as small SVG line charts: no script, no external asset, nothing the
Content-Security-Policy has to allow (SVG presentation attributes are not inline styles). The
x axis ends now and starts at the oldest point shown (at least ``MIN_WINDOW`` before now, at
most the retention), the same for every row so that rows compare and a series that stopped shows
where it stopped, and a new task's chart fills its width from its first minutes; the y axis spans
the series' own minimum and maximum.
A gap longer than three times the usual spacing between points breaks the line (a failed run
sends no metric but ``<plugin>.success`` 0, so its values leave a gap rather than a fake zero).
Long series are thinned to each pixel column's minimum and maximum, which keeps spikes visible.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from django.utils.html import format_html
from django.utils.safestring import SafeString

from taskserver import metric_store
from taskserver.models import MetricSeries

WIDTH = 240
HEIGHT = 44
PAD = 3.0
MAX_SERIES_SHOWN = 40
MIN_WINDOW = 10 * 60  # a chart spans at least this long, so a few points do not fill it edge to edge
GAP_FACTOR = 3.0


def duration_label(seconds: float) -> str:
    """``"6 hours"``, ``"1.5 hours"``, ``"12 minutes"``: how long a chart's window is."""
    if seconds >= 5400:
        hours = round(seconds / 3600, 1)
        return f"{hours:g} hours"
    minutes = max(1, round(seconds / 60))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def format_value(value: float) -> str:
    """A value short enough for a table cell: 1,234,567 · 12.35 · 0.001235."""
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{value:.4g}"


def _thin(points: Sequence[tuple[float, float]], start: float, end: float) -> list[tuple[float, float]]:
    """At most two points per pixel column (its minimum and maximum, in time order)."""
    if len(points) <= 2 * WIDTH:
        return list(points)
    columns: dict[int, list[tuple[float, float]]] = {}
    span = end - start or 1.0
    for point in points:
        columns.setdefault(int((point[0] - start) / span * WIDTH), []).append(point)
    thinned: list[tuple[float, float]] = []
    for column in columns.values():
        low, high = min(column, key=lambda p: p[1]), max(column, key=lambda p: p[1])
        thinned.extend(sorted({low, high}))
    return thinned


def _segments(points: list[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    """The points split where the time between two of them is much longer than usual."""
    if len(points) < 3:
        return [points]
    usual = statistics.median(b[0] - a[0] for a, b in zip(points, points[1:], strict=False))
    segments, current = [], [points[0]]
    for previous, point in zip(points, points[1:], strict=False):
        if usual > 0 and point[0] - previous[0] > GAP_FACTOR * usual:
            segments.append(current)
            current = []
        current.append(point)
    segments.append(current)
    return segments


def line_chart(
    points: Sequence[tuple[float, float]], start: float, end: float, label: str = ""
) -> SafeString:
    """An SVG line chart of (unix seconds, value) points, oldest first, between ``start`` and
    ``end``; the last point is marked. ``data-points`` carries how many points it draws."""
    points = [p for p in points if start <= p[0] <= end and math.isfinite(p[1])]
    if not points:
        return format_html(
            '<svg class="metric-chart" viewBox="0 0 {} {}" width="{}" height="{}" role="img" '
            'aria-label="{}" data-points="0"><title>{}</title></svg>',
            WIDTH, HEIGHT, WIDTH, HEIGHT, f"{label}: no points", f"{label}: no points",
        )  # fmt: skip
    points = _thin(points, start, end)
    low, high = min(p[1] for p in points), max(p[1] for p in points)
    if high == low:  # a flat line in the middle
        low, high = low - 1, high + 1
    span = end - start or 1.0

    def x(t: float) -> float:
        return round((t - start) / span * WIDTH, 1)

    def y(v: float) -> float:
        return round(PAD + (high - v) / (high - low) * (HEIGHT - 2 * PAD), 1)

    paths = []
    for segment in _segments(points):
        coords = " L".join(f"{x(t)},{y(v)}" for t, v in segment)
        paths.append(f"M{coords}")
    last_t, last_v = points[-1]
    title = f"{label}: {len(points)} points, min {format_value(min(p[1] for p in points))}, " \
            f"max {format_value(max(p[1] for p in points))}"  # fmt: skip
    return format_html(
        '<svg class="metric-chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
        'aria-label="{title}" data-points="{n}"><title>{title}</title>'
        '<line x1="0" y1="{base}" x2="{w}" y2="{base}" stroke="#c8c8c8" stroke-width="1"/>'
        '<path d="{d}" fill="none" stroke="#417690" stroke-width="1.5" stroke-linejoin="round" '
        'stroke-linecap="round"/>'
        '<circle cx="{cx}" cy="{cy}" r="2.5" fill="#417690"/></svg>',
        w=WIDTH, h=HEIGHT, title=title, n=len(points), base=HEIGHT - 0.5, d=" ".join(paths),
        cx=x(last_t), cy=y(last_v),
    )  # fmt: skip


def _row(series: MetricSeries, points: list[tuple[float, float]], start: float, end: float) -> dict[str, Any]:
    values = [v for _, v in points]
    label = series.name + "".join(f" {k}={v}" for k, v in sorted(series.tags.items()))
    return {
        "series": series,
        "tags": sorted(series.tags.items()),
        "last_value": format_value(series.last_value),
        "chart": line_chart(points, start, end, label),
        "low": format_value(min(values)) if values else None,
        "high": format_value(max(values)) if values else None,
        "count": len(points),
    }


def section(*, task_id: int | None = None, agent_id: int | None = None) -> dict[str, Any]:
    """The context of the Metrics section: on a task page its series grouped by metric name (its
    agents side by side), on an agent page grouped by task; groups and rows most recent first, at
    most ``MAX_SERIES_SHOWN`` series. Two queries (series, points) plus a count when cut."""
    series, total = metric_store.series_of(task_id=task_id, agent_id=agent_id, limit=MAX_SERIES_SHOWN)
    points = metric_store.points_of([s.pk for s in series])
    end = time.time()
    oldest = min((p[0][0] for p in points.values() if p), default=end)
    start = max(end - metric_store.retention(), min(oldest, end - MIN_WINDOW))
    groups: dict[Any, dict[str, Any]] = {}
    for one in series:  # most recent first, so groups come in the order of their latest update
        if task_id is not None:
            group_key, title = ("name", one.name), one.name
        else:
            group_key = ("task", one.task_id)
            title = f"Task {one.task.name}" if one.task_id else "The agent's own metrics"
        group = groups.setdefault(group_key, {"title": title, "task": one.task, "rows": []})
        group["rows"].append(_row(one, points.get(one.pk, []), start, end))
    return {
        "groups": list(groups.values()),
        "shown": len(series),
        "total": total,
        "window": duration_label(end - start),
        "retention": duration_label(metric_store.retention()),
        "window_start": datetime.fromtimestamp(start, tz=UTC),
        "group_by": "name" if task_id is not None else "task",
    }
