"""A change counter in a file, for processes on one machine that share no channel layer.

The embedded default's channel layer lives in one process: a change made by another process (a
``manage.py`` command, a second server process) cannot reach that process's WebSocket sessions
through it. Such a process bumps the counter; each session reads it every few seconds (a file
read, no database query) and, when a number it did not bump itself appeared, catches up from the
database. Needs no service, only a directory every process can write.

The counter is replaced atomically (written to a temporary file, then renamed) under an exclusive
lock on a companion ``.lock`` file, so readers never see a half-written number and two bumps never
produce the same one.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections import deque
from pathlib import Path


class ChangeStamp:
    """One counter file; :meth:`bump` after a change, :meth:`read` and :meth:`foreign` to notice
    changes other processes made."""

    OWN_REMEMBERED = 1000

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._own: deque[int] = deque(maxlen=self.OWN_REMEMBERED)
        self._lock = threading.Lock()

    def read(self) -> int:
        """The current number (0 when nothing was ever bumped or the file is unreadable)."""
        try:
            return int(self.path.read_text() or 0)
        except (OSError, ValueError):
            return 0

    def bump(self) -> int:
        """Count one change made by this process; never raises (a change is saved either way)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                number = self.read() + 1
                temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
                temporary.write_text(str(number))
                os.replace(temporary, self.path)
        except OSError:
            return 0
        with self._lock:
            self._own.append(number)
        return number

    def foreign(self, since: int, now: int) -> bool:
        """Whether a number in ``(since, now]`` was bumped by another process (or the counter went
        back, as when the file was removed: catch up to be safe)."""
        if now < since or now - since > self.OWN_REMEMBERED:
            return True
        with self._lock:
            own = set(self._own)
        return any(number not in own for number in range(since + 1, now + 1))


_stamps: dict[str, ChangeStamp] = {}
_stamps_lock = threading.Lock()


def stamp_at(path: str | os.PathLike[str]) -> ChangeStamp:
    """The process's one :class:`ChangeStamp` for ``path`` (its own bumps are remembered there)."""
    key = str(path)
    with _stamps_lock:
        stamp = _stamps.get(key)
        if stamp is None:
            stamp = _stamps[key] = ChangeStamp(key)
        return stamp
