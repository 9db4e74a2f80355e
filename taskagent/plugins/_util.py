"""Helpers shared by plugins (not a plugin: the name starts with ``_``)."""

from __future__ import annotations

import time


def elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
