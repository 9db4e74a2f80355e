"""Result and status log lines in osquery's shapes, the differential logic, and the log buffer.

Why faithful shapes: the server's log endpoint must parse what osquery really sends (event
lines with ``columns``/``action``, snapshots, status lines whose values are all strings because
osquery builds them with a property tree). Why a buffer with acknowledgement: osquery keeps lines
until a send succeeds, so a server answering ``error`` gets the same lines again later
(duplicates), and one answering an empty 500 loses them. Both must be visible in tests.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Any

Row = dict[str, str]


def calendar_time(unix_time: float) -> str:
    """``asctime(gmtime)`` plus `` UTC``: ``"Sun Nov  2 05:41:27 2026 UTC"`` (day space-padded)."""
    return time.asctime(time.gmtime(unix_time)) + " UTC"


def diff_rows(previous: list[Row], current: list[Row]) -> tuple[list[Row], list[Row]]:
    """(added, removed) between two runs of a query, rows compared as a multiset."""
    key = lambda row: tuple(sorted(row.items()))  # noqa: E731 - a local sort key
    before, after = Counter(map(key, previous)), Counter(map(key, current))
    added = [dict(k) for k, n in (after - before).items() for _ in range(n)]
    removed = [dict(k) for k, n in (before - after).items() for _ in range(n)]
    return added, removed


def _header(
    name: str, host_identifier: str, unix_time: int, counter: int, epoch: int, decorations: dict[str, str]
) -> dict[str, Any]:
    line: dict[str, Any] = {
        "name": name,
        "hostIdentifier": host_identifier,
        "calendarTime": calendar_time(unix_time),
        "unixTime": unix_time,
        "epoch": epoch,
        "counter": counter,
        "numerics": False,
    }
    if decorations:
        line["decorations"] = dict(decorations)
    return line


def event_lines(
    name: str,
    host_identifier: str,
    unix_time: int,
    counter: int,
    added: list[Row],
    removed: list[Row],
    decorations: dict[str, str],
    epoch: int = 0,
) -> list[dict[str, Any]]:
    """Event format (osquery's default): one line per changed row, removed rows first."""
    head = _header(name, host_identifier, unix_time, counter, epoch, decorations)
    return [
        {**head, "columns": dict(sorted(row.items())), "action": action}
        for action, rows in (("removed", removed), ("added", added))
        for row in rows
    ]


def snapshot_line(
    name: str,
    host_identifier: str,
    unix_time: int,
    counter: int,
    rows: list[Row],
    decorations: dict[str, str],
    epoch: int = 0,
) -> dict[str, Any]:
    """Snapshot query: one line per run with every row."""
    head = _header(name, host_identifier, unix_time, counter, epoch, decorations)
    return {**head, "snapshot": [dict(sorted(r.items())) for r in rows], "action": "snapshot"}


def status_line(
    host_identifier: str,
    severity: int,
    filename: str,
    line: int,
    message: str,
    version: str,
    decorations: dict[str, str],
    unix_time: int | None = None,
) -> dict[str, Any]:
    """A status (glog) line. Every value is a string, as osquery's property-tree JSON writes them."""
    now = int(time.time() if unix_time is None else unix_time)
    result: dict[str, Any] = {
        "hostIdentifier": host_identifier,
        "calendarTime": calendar_time(now),
        "unixTime": str(now),
        "severity": str(severity),
        "filename": filename,
        "line": str(line),
        "message": message,
        "version": version,
    }
    if decorations:
        result["decorations"] = dict(decorations)
    return result


class LogBuffer:
    """osquery's buffered log store: results before statuses, oldest purged past ``max_lines``.

    ``peek`` hands out the next batch without removing it; ``ack`` removes it once the server
    accepted it. A failed send therefore re-sends the same lines later.
    """

    def __init__(self, max_lines: int = 1_000_000) -> None:
        self.results: deque[dict[str, Any]] = deque(maxlen=max_lines)
        self.statuses: deque[dict[str, Any]] = deque(maxlen=max_lines)

    def __len__(self) -> int:
        return len(self.results) + len(self.statuses)

    def add_results(self, lines: list[dict[str, Any]]) -> None:
        self.results.extend(lines)

    def add_status(self, line: dict[str, Any]) -> None:
        self.statuses.append(line)

    def peek(self, max_lines: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The next (results, statuses) to send: at most ``max_lines`` in all, results first."""
        results = [self.results[i] for i in range(min(max_lines, len(self.results)))]
        room = max_lines - len(results)
        statuses = [self.statuses[i] for i in range(min(room, len(self.statuses)))]
        return results, statuses

    def ack(self, log_type: str, count: int) -> None:
        store = self.results if log_type == "result" else self.statuses
        for _ in range(min(count, len(store))):
            store.popleft()
