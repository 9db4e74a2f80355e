"""Keep full device tokens out of library logs.

APNs puts the device token in the request path, and httpx logs every request URL at INFO (hpack
logs decoded headers at DEBUG). A token identifies a Mac to APNs for as long as it is enrolled, so
logs get at most its first 8 hex chars. The filter only rewrites messages containing an APNs device
path, so other users of these libraries are unaffected.
"""

from __future__ import annotations

import logging
import re

__all__ = ["LIBRARY_LOGGERS", "TokenRedactingFilter", "install", "redact"]

#: Loggers that see request paths. Filters apply where a record is created, so these are the
#: exact module loggers, not their parents.
LIBRARY_LOGGERS = ("httpx", "hpack.hpack", "hpack.table")

_DEVICE_PATH = re.compile(r"(/3/device/[0-9a-fA-F]{0,8})[0-9a-fA-F]*")


def redact(text: str) -> str:
    """`text` with every `/3/device/<token>` cut to the token's first 8 hex chars."""
    return _DEVICE_PATH.sub(r"\1…", text)


class TokenRedactingFilter(logging.Filter):
    """Rewrites (never drops) records that mention an APNs device path."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's problem to report
            return True
        if "/3/device/" in message:
            record.msg, record.args = redact(message), None
        return True


_FILTER = TokenRedactingFilter()


def install() -> None:
    """Attach the filter to the library loggers (idempotent)."""
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
