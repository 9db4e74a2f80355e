"""A log formatter that keeps one record on one line, whatever text it carries.

Agents control much of what the server logs (host identifiers, query names, error text). A CR,
LF or NUL in that text would otherwise start what looks like a new record of the server's own
("log forging"). The message's control characters are escaped; a traceback keeps its lines but
each is indented, so none of them can pass for a record.
"""

from __future__ import annotations

import logging
import re
import threading
import time

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def escape_controls(text: str) -> str:
    """``\\n``, ``\\r`` and other control characters as visible escapes (tabs are kept)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class SingleLineFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatException(self, ei) -> str:  # noqa: N802 - logging's name
        return self._indent(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - logging's name
        return self._indent(super().formatStack(stack_info))

    @staticmethod
    def _indent(text: str) -> str:
        lines = text.replace("\r", "\\r").replace("\x00", "\\x00").split("\n")
        return "\n".join("    | " + line for line in lines)


class RateLimitFilter(logging.Filter):
    """At most ``per_window`` records a minute from one call site; the rest are counted.

    Keyed by logger and message template (not its arguments), so one misbehaving agent, or a
    thousand, cannot make a single log statement fill the disk. The first record let through
    after some were dropped says how many.
    """

    def __init__(self, per_window: int = 20, window: float = 60.0, max_sites: int = 1000) -> None:
        super().__init__()
        self.per_window = per_window
        self.window = window
        self.max_sites = max_sites
        self._sites: dict[tuple[str, str], list[float | int]] = {}  # -> [window start, seen, dropped]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        key = (record.name, str(record.msg)[:200])
        with self._lock:
            site = self._sites.get(key)
            if site is None or now - site[0] >= self.window:
                dropped = int(site[2]) if site else 0
                if site is None and len(self._sites) >= self.max_sites:
                    self._sites.clear()
                self._sites[key] = [now, 1, 0]
                if dropped:
                    record.msg = f"{record.msg} [{dropped} similar messages suppressed]"
                return True
            site[1] += 1
            if site[1] <= self.per_window:
                return True
            site[2] += 1
            return False
