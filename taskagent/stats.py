"""The agent's own counters and gauges (task-server.md §4 lists the original's).

Names: ``tasks.{added,updated,removed,invalid,running}``, ``runs.{succeeded,failed,skipped}``,
``publish.{success,failure,metrics,rejected,dropped}`` (also per destination:
``publish.<id>.<name>``), ``connection.{connects,failures,malformed,unknown}``. They go to the
server in every ``status`` message and, as ``taskagent.<name>`` metrics tagged ``agent``, to
every destination (``Agent._stats_loop``).
"""

from __future__ import annotations

from collections import defaultdict


class Stats:
    def __init__(self) -> None:
        self._values: dict[str, float] = defaultdict(float)

    def inc(self, name: str, amount: float = 1) -> None:
        self._values[name] += amount

    def set(self, name: str, value: float) -> None:
        self._values[name] = value

    def get(self, name: str) -> float:
        return self._values.get(name, 0.0)

    def snapshot(self) -> dict[str, float]:
        return dict(self._values)


GAUGES = frozenset({"tasks.running", "buffer.bytes", "buffer.batches"})
