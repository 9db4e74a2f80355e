"""Periodic jobs on the embedded default, which has no Celery beat: each process runs a job at
most once per interval, when something that happens anyway (a device's check-in, a new
campaign) gives it the chance. A :class:`DueClock` remembers when each of its jobs last ran."""

from __future__ import annotations

import threading


class DueClock:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_run: dict[str, float] = {}

    def due(self, job: str, interval: float, now: float) -> bool:
        """Whether ``job`` should run at ``now`` (monotonic seconds); if so, it counts as run."""
        with self._lock:
            last = self._last_run.get(job)
            if last is not None and now - last < interval:
                return False
            self._last_run[job] = now
            return True

    def reset(self) -> None:
        """Forget every job's last run (tests)."""
        with self._lock:
            self._last_run.clear()
