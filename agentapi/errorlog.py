"""Agent client errors, counted and logged as one summary line a minute instead of a line each.

A misbehaving or hostile agent can send thousands of bad requests a minute; logging each one
(Django logs every 4xx) filled 17 MB of log per 120,000 requests and let agent text reach the
log. Each process counts its agents' 4xx replies by status and reason, and logs what it counted
at most once per ``SUMMARY_INTERVAL``. The reasons are our own messages, cut short; the
``django.request`` filter below drops Django's own line for those replies.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

logger = logging.getLogger("agentapi.errors")

SUMMARY_INTERVAL = 60.0
MAX_KINDS = 50  # distinct (status, reason) pairs kept between summaries; the rest count as "other"
# osquery's and orbit's endpoints: the fast path (agentapi.middleware), JSON errors, this log's
# summaries. Every agent, Fleet Desktop, MDM and TUF included, is fleet.request_metrics'
# ALL_AGENT_PREFIXES.
OSQUERY_ORBIT_PREFIXES = ("/api/osquery/", "/api/v1/osquery/", "/api/fleet/orbit/")

_lock = threading.Lock()
_counts: Counter[tuple[int, str]] = Counter()
_since = time.monotonic()


def _reason(message: str) -> str:
    reason = message.split(":", 1)[0] if message.startswith("request body is not valid JSON") else message
    return reason[:80].encode("ascii", "backslashreplace").decode("ascii")


def record(path: str, status: int, message: str, now: float | None = None) -> None:
    """Count one error reply to an agent; log the summary when one is due."""
    global _since
    now = time.monotonic() if now is None else now
    key = (status, _reason(message))
    with _lock:
        if key in _counts or len(_counts) < MAX_KINDS:
            _counts[key] += 1
        else:
            _counts[(status, "other")] += 1
        if now - _since < SUMMARY_INTERVAL:
            return
        counts, elapsed = dict(_counts), now - _since
        _counts.clear()
        _since = now
    _log_summary(counts, elapsed)


def flush() -> dict[tuple[int, str], int]:
    """Log and reset what was counted so far (tests, shutdown); returns the counts."""
    global _since
    with _lock:
        counts, elapsed = dict(_counts), time.monotonic() - _since
        _counts.clear()
        _since = time.monotonic()
    if counts:
        _log_summary(counts, elapsed)
    return counts


def _log_summary(counts: dict[tuple[int, str], int], elapsed: float) -> None:
    total = sum(counts.values())
    ranked = sorted(counts.items(), key=lambda item: -item[1])
    shown = "; ".join(f"{status} {reason} x{n}" for (status, reason), n in ranked[:10])
    more = f" (+{len(ranked) - 10} more kinds)" if len(ranked) > 10 else ""
    logger.warning("agent API: %d client errors in the last %.0f s: %s%s", total, elapsed, shown, more)


class DropAgentClientErrors(logging.Filter):
    """For ``django.request``: drop the per-request line of an agent's 4xx (counted above)."""

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        request = getattr(record, "request", None)
        if status is None or request is None or not 400 <= status < 500:
            return True
        return not str(getattr(request, "path", "")).startswith(OSQUERY_ORBIT_PREFIXES)
