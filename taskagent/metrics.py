"""What a task run produces: metrics, and how a failed run is told apart from data.

Every run of a task produces one ``<plugin>.success`` gauge: 1 when the plugin measured
something, 0 when it did not, and then with an ``error`` tag naming the kind of failure
(``timeout``, ``connect``, ``unsupported``...; a short fixed word, never the free-text message,
so it cannot explode the number of series). A failed run produces *no other metric*: the
original agent published an NS1 error as QPS = 0 (task-server.md §6), a value that looks like
data and is not. Plugins signal a failure by raising ``PluginError``; the runner makes the
metric, so no plugin can get this wrong.

The runner also stamps every metric with the tags ``task``, ``agent`` and ``plugin`` (those
win over a plugin's own tags of the same name).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

TYPES = ("gauge", "counter", "rate")
SUCCESS = "success"


class PluginError(Exception):
    """A run that measured nothing. ``kind`` becomes the ``error`` tag, the message is logged."""

    def __init__(self, kind: str, message: str = "") -> None:
        super().__init__(message or kind)
        self.kind = kind


@dataclass(frozen=True)
class Metric:
    name: str
    value: float
    unit: str = ""
    type: str = "gauge"
    tags: dict[str, str] = field(default_factory=dict)
    timestamp: float = 0.0

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"metric type must be one of {TYPES}, not {self.type!r}")
        if isinstance(self.value, bool) or not isinstance(self.value, int | float):
            raise ValueError(f"metric value must be a number, not {self.value!r}")
        if not math.isfinite(self.value):
            raise ValueError("metric value must be finite")
        object.__setattr__(self, "value", float(self.value))

    def with_tags(self, **tags: str) -> Metric:
        return replace(self, tags={**self.tags, **tags})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Metric:
        return cls(
            name=raw["name"], value=raw["value"], unit=raw.get("unit", ""), type=raw.get("type", "gauge"),
            tags=dict(raw.get("tags") or {}), timestamp=raw.get("timestamp", 0.0),
        )


def success(plugin: str, timestamp: float) -> Metric:
    return Metric(f"{plugin}.{SUCCESS}", 1.0, "", "gauge", {}, timestamp)


def failure(plugin: str, kind: str, timestamp: float) -> Metric:
    return Metric(f"{plugin}.{SUCCESS}", 0.0, "", "gauge", {"error": kind}, timestamp)
