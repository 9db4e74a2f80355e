"""Exponential backoff with full jitter, for publishing retries and reconnects.

The original reconnected every second without backoff (task-server.md §3); a server coming back
from an outage would be hit by every agent at once. Each delay is drawn uniformly from
``[base/2, base]`` where ``base`` doubles from ``initial`` up to ``maximum``: never zero, always
spread.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, initial: float, maximum: float, factor: float = 2.0, rng: random.Random | None = None):
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self._rng = rng or random.Random()
        self._base = initial

    def next(self) -> float:
        delay = self._rng.uniform(self._base / 2, self._base)
        self._base = min(self.maximum, self._base * self.factor)
        return delay

    def reset(self) -> None:
        self._base = self.initial
