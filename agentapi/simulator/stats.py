"""Counters shared by all agents of a simulation, and the one-line progress summary.

Why plain counters: with thousands of agents in one event loop, anything heavier than integer
increments (locks, histograms per request) would show up in the simulator's own CPU, which
shares the machine with the server under test.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from dataclasses import dataclass, field

LATENCY_BOUNDS = (
    0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2,
    0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0,
)  # fmt: skip


SLOW = 0.5  # seconds: issue 13's p99 goal


@dataclass
class Stats:
    requests: Counter[str] = field(default_factory=Counter)  # by endpoint
    failures: Counter[str] = field(default_factory=Counter)  # osquery saw a failure (any reason)
    transport_errors: int = 0
    node_invalid: int = 0
    enrollments: int = 0
    reenrollments: int = 0
    queries_run: int = 0
    queries_failed: int = 0
    queries_skipped: int = 0  # discovery returned no rows
    result_lines: int = 0
    status_lines: int = 0
    latency_total: float = 0.0
    # Simulated Macs (``--mdm``); their requests are counted above as ``mdm/...`` endpoints.
    mdm_enrollments: int = 0
    mdm_commands: Counter[str] = field(default_factory=Counter)  # "RequestType:Status"
    mdm_pushes: int = 0
    started: float = field(default_factory=time.monotonic)
    last_errors: list[str] = field(default_factory=list)
    # Requests by latency bucket (LATENCY_BOUNDS, seconds; one more for slower): a bisect and an
    # increment per request, cheap enough for thousands of agents, and enough for a p99.
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS) + 1))
    # Which endpoints the slow requests were (over SLOW seconds), and how late the simulator's own
    # event loop ran (a busy load generator reports its lag as the server's latency).
    slow: Counter[str] = field(default_factory=Counter)
    loop_lag_max: float = 0.0
    loop_lag_over_slow: int = 0
    gc_pause_max: float = 0.0

    def reset(self) -> None:
        """Start counting afresh (``--stats-after``: a measurement after a warm-up); the counters
        are replaced in place, so every agent keeps recording into this object."""
        fresh = Stats()
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(fresh, name))

    def record(self, endpoint: str, ok: bool, elapsed: float, error: str = "") -> None:
        self.requests[endpoint] += 1
        self.latency_total += elapsed
        self.latency_buckets[bisect.bisect_left(LATENCY_BOUNDS, elapsed)] += 1
        if elapsed > SLOW:
            self.slow[endpoint] += 1
        if not ok:
            self.failures[endpoint] += 1
            if error:
                self.last_errors = [*self.last_errors[-4:], f"{endpoint}: {error}"]

    def latency_percentile(self, p: float) -> float:
        """The upper bound (seconds) of the bucket holding the p-th percentile request; inf past
        the last bound."""
        total = sum(self.latency_buckets)
        if not total:
            return 0.0
        wanted, seen = p / 100 * total, 0
        for index, count in enumerate(self.latency_buckets):
            seen += count
            if seen >= wanted:
                return LATENCY_BOUNDS[index] if index < len(LATENCY_BOUNDS) else float("inf")
        return float("inf")

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    @property
    def total_failures(self) -> int:
        return sum(self.failures.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": dict(self.requests),
            "failures": dict(self.failures),
            "transport_errors": self.transport_errors,
            "node_invalid": self.node_invalid,
            "enrollments": self.enrollments,
            "reenrollments": self.reenrollments,
            "queries_run": self.queries_run,
            "queries_failed": self.queries_failed,
            "queries_skipped": self.queries_skipped,
            "result_lines": self.result_lines,
            "status_lines": self.status_lines,
            "mdm_enrollments": self.mdm_enrollments,
            "mdm_commands": dict(self.mdm_commands),
            "mdm_pushes": self.mdm_pushes,
            "latency_p50_ms": round(self.latency_percentile(50) * 1000, 1),
            "latency_p99_ms": round(self.latency_percentile(99) * 1000, 1),
            f"over_{SLOW * 1000:.0f}ms_by_endpoint": dict(self.slow),
            "simulator_loop_lag_max_ms": round(self.loop_lag_max * 1000, 1),
            f"simulator_loop_lags_over_{SLOW * 1000:.0f}ms": self.loop_lag_over_slow,
            "simulator_gc_pause_max_ms": round(self.gc_pause_max * 1000, 1),
        }

    def note_gc_pause(self, seconds: float) -> None:
        self.gc_pause_max = max(self.gc_pause_max, seconds)

    def note_loop_lag(self, lag: float) -> None:
        self.loop_lag_max = max(self.loop_lag_max, lag)
        if lag > SLOW:
            self.loop_lag_over_slow += 1


class Progress:
    """Formats a summary line with rates since the previous line."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self._last_time = time.monotonic()
        self._last_requests = 0

    def line(self, enrolled: int, total: int) -> str:
        now = time.monotonic()
        requests = self.stats.total_requests
        since = requests - self._last_requests if requests >= self._last_requests else requests  # reset
        rate = since / max(now - self._last_time, 1e-9)
        self._last_time, self._last_requests = now, requests
        s = self.stats
        mean_ms = s.latency_total / requests * 1000 if requests else 0.0
        mdm = ""
        if s.mdm_enrollments or s.requests["mdm/enroll"]:
            mdm_requests = sum(n for name, n in s.requests.items() if name.startswith("mdm/"))
            mdm_errors = sum(n for name, n in s.failures.items() if name.startswith("mdm/"))
            mdm = (
                f" | mdm {s.mdm_enrollments} enrolled, {sum(s.mdm_commands.values())} commands, "
                f"{s.mdm_pushes} pushes, {mdm_requests} requests ({mdm_errors} errors)"
            )
        return (
            f"[{now - s.started:6.0f}s] enrolled {enrolled}/{total} | {rate:7.1f} req/s | "
            f"requests {requests} (mean {mean_ms:.1f} ms) | errors {s.total_failures} "
            f"(transport {s.transport_errors}, node_invalid {s.node_invalid}) | "
            f"re-enrolls {s.reenrollments} | "
            f"queries {s.queries_run} | log lines {s.result_lines}+{s.status_lines}{mdm}"
        )
