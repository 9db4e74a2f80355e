"""Where the agents' result and status logs go.

A destination takes a batch of log lines (JSON objects) and either stores them all or raises
:class:`DeliveryError`, in which case the agent is answered with an ``error`` so osquery keeps its
buffer and sends the lines again (at-least-once delivery; osquery-protocol.md §7, §10).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings


class DeliveryError(Exception):
    """A destination could not take a batch; nothing of it may be considered delivered."""


class Destination(Protocol):
    def write(self, lines: list[dict[str, Any]]) -> None: ...


class FileDestination:
    """JSON lines appended to a file; one ``write`` per batch so batches never interleave."""

    _locks: dict[str, threading.Lock] = {}
    _locks_guard = threading.Lock()

    def __init__(self, path: str) -> None:
        self.path = path
        with self._locks_guard:
            self._lock = self._locks.setdefault(path, threading.Lock())

    def write(self, lines: list[dict[str, Any]]) -> None:
        if not lines:
            return
        payload = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            with self._lock:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    view = memoryview(payload)
                    while view:
                        view = view[os.write(fd, view) :]
                finally:
                    os.close(fd)
        except OSError as exc:
            raise DeliveryError(f"cannot write to {self.path}: {exc.strerror}") from exc


def for_log_type(log_type: str) -> Destination:
    """The destination configured for ``result`` or ``status`` logs."""
    key = "RESULT_LOG_FILE" if log_type == "result" else "STATUS_LOG_FILE"
    return FileDestination(settings.OSQUERY[key])
