"""The agent: the connection's messages drive the runner and the destinations' pipelines.

Message handling (each in order, on the event loop, synchronously):

* ``task_list`` → ``Runner.reconcile``; ``task_add``/``task_update`` → ``Runner.upsert`` (an add
  of a known id is an update, an update of an unknown id an add: either way the agent ends with
  what the server sent); ``task_remove`` → ``Runner.remove``.
* ``destinations`` → one ``Pipeline`` per destination, each with its disk buffer under
  ``<state dir>/buffers/<id>``. A destination whose settings changed keeps its buffer; a removed
  one's buffer is deleted and its metrics counted as dropped.
* After ``welcome``, each reconcile, and every ``status_interval`` while connected, a ``status``
  message (tasks on a schedule and the counters) goes to the server.

Metrics produced before any ``destinations`` message has arrived have nowhere to go and are
counted in ``publish.dropped`` (the server sends ``destinations`` before ``task_list``, so this
only happens if it does not). Every ``stats_interval`` the agent's own counters are published as
``taskagent.<counter>`` metrics tagged ``agent``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from pathlib import Path
from typing import Any

from taskagent import __version__, protocol
from taskagent.connection import Connection, NotConnected
from taskagent.metrics import Metric
from taskagent.publish import Pipeline, make_sender
from taskagent.runner import Runner
from taskagent.stats import GAUGES, Stats

log = logging.getLogger(__name__)


def _dir_name(dest_id: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(dest_id)) or "_"


class Agent:
    def __init__(
        self, server: str, key: str, name: str, state_dir: str | Path, *, tags: list[str] | None = None,
        ssl: Any = True, status_interval: float = 30.0, stats_interval: float = 10.0,
        pipeline_options: dict[str, Any] | None = None, connection_options: dict[str, Any] | None = None,
        host_uuid: str = "",
    ) -> None:
        self.name = name
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.stats = Stats()
        self.runner = Runner(name, self.publish, self.stats)
        self.connection = Connection(
            server, key, name, tags=tags, version=__version__, on_message=self.handle,
            on_connect=self._on_connect, ssl=ssl, stats=self.stats, host_uuid=host_uuid,
            **(connection_options or {}),
        )
        self.pipelines: dict[Any, tuple[protocol.Destination, Pipeline]] = {}
        self.status_interval = status_interval
        self.stats_interval = stats_interval
        self._pipeline_options = pipeline_options or {}
        self._background: set[asyncio.Task] = set()

    # --- metrics out ----------------------------------------------------------------------------------

    def publish(self, metrics: list[Metric]) -> None:
        if not self.pipelines:
            self.stats.inc("publish.dropped", len(metrics))
            log.warning("no destination known yet: %d metrics dropped", len(metrics))
            return
        for _dest, pipeline in self.pipelines.values():
            pipeline.submit(metrics)

    def set_destinations(self, destinations: list[protocol.Destination]) -> None:
        wanted = {d.id: d for d in destinations}
        for dest_id in [i for i in self.pipelines if i not in wanted]:
            _dest, pipeline = self.pipelines.pop(dest_id)
            pipeline.stop_now()
            if pipeline.buffer.batches:
                log.warning("destination %s removed with %d batches unsent: deleted",
                            dest_id, pipeline.buffer.batches)
            self.stats.inc("publish.dropped", pipeline.buffer.pending_metrics())
            pipeline.buffer.remove_all()
            self._spawn(pipeline.close_sender())
        for dest in destinations:
            current = self.pipelines.get(dest.id)
            if current is not None and current[0] == dest:
                continue
            if current is not None:  # changed: a new sender on the same buffer directory
                current[1].stop_now()
                self._spawn(current[1].close_sender())
                del self.pipelines[dest.id]
            try:
                sender = make_sender(dest, server_send=self.connection.send_metrics)
            except ValueError as exc:
                log.error("destination %s ignored: %s", dest.id, exc)
                continue
            directory = self.state_dir / "buffers" / _dir_name(dest.id)
            pipeline = Pipeline(str(dest.id), sender, directory, self.stats, **self._pipeline_options)
            pipeline.start()
            self.pipelines[dest.id] = (dest, pipeline)
            log.info("destination %s: %s %s", dest.id, dest.kind, dest.url)

    # --- messages in ----------------------------------------------------------------------------------

    def handle(self, message: protocol.Message) -> None:
        data = message.data
        if message.type == protocol.TASK_LIST:
            self.runner.reconcile(data["tasks"])
            self._spawn(self.send_status())
        elif message.type in (protocol.TASK_ADD, protocol.TASK_UPDATE):
            self.runner.upsert(data["task"])
        elif message.type == protocol.TASK_REMOVE:
            self.runner.remove(data["id"])
        elif message.type == protocol.DESTINATIONS:
            self.set_destinations(data["destinations"])
        elif message.type in (protocol.WELCOME, protocol.HEARTBEAT):
            pass  # the connection itself uses them
        else:  # an agent->server type sent to us
            log.info("ignoring a %s message from the server", message.type)

    def _on_connect(self) -> None:
        for dest, pipeline in self.pipelines.values():
            if dest.kind == "server":
                pipeline.kick()

    async def send_status(self) -> None:
        with contextlib.suppress(NotConnected):
            await self.connection.send_text(protocol.status(self.runner.running_ids(), self.stats.snapshot()))

    # --- life -----------------------------------------------------------------------------------------

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.status_interval)
            if self.connection.connected:
                await self.send_status()

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.stats_interval)
            now = time.time()
            self.publish([
                Metric(f"taskagent.{name}", value, "", "gauge" if name in GAUGES else "counter",
                       {"agent": self.name}, now)
                for name, value in sorted(self.stats.snapshot().items())
            ])

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then shut down cleanly."""
        loops = [asyncio.get_running_loop().create_task(c) for c in
                 (self.connection.run(), self._status_loop(), self._stats_loop())]
        try:
            await stop.wait()
        finally:
            await self.shutdown(loops)

    async def shutdown(self, loops: list[asyncio.Task]) -> None:
        log.info("stopping")
        await self.runner.close(grace=5.0)
        await self.connection.stop()
        for pipeline in [p for _d, p in self.pipelines.values()]:
            await pipeline.close(drain=2.0)  # what is not sent stays on disk for the next start
        for task in [*loops, *self._background]:
            task.cancel()
        await asyncio.gather(*loops, *self._background, return_exceptions=True)
