"""Where metrics go: one pipeline per destination, a disk buffer in front of each sender.

``Pipeline.submit`` (called by the runner with each run's metrics) only appends to memory. The
pipeline flushes that to its ``DiskBuffer`` every ``flush_interval`` (1 s) or at ``batch_size``
(1,000) metrics, and a sender loop sends the oldest batch on disk, removing it only when the
destination accepted it. A failure is retried, the same batch, after an exponential backoff with
jitter (100 ms → 60 s), so order is kept and nothing acknowledged is lost. A batch the
destination *refuses* (``RejectedError``: a 4xx other than 429, as Prometheus' remote-write
spec says) would be refused forever; it is dropped and counted instead of blocking the queue.

Senders (``graphite``, ``remote_write``, ``server``) are small: ``async send(metrics)``, raising
on failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path

from taskagent.backoff import Backoff
from taskagent.buffer import DiskBuffer
from taskagent.metrics import Metric
from taskagent.stats import Stats

log = logging.getLogger(__name__)


class SendError(Exception):
    """The destination did not take the batch this time; try again later."""


class RejectedError(Exception):
    """The destination refused the batch and always will (e.g. HTTP 400): drop it."""


def encode_batch(metrics: list[Metric]) -> bytes:
    return json.dumps([m.to_dict() for m in metrics], separators=(",", ":")).encode()


def decode_batch(payload: bytes) -> list[Metric]:
    return [Metric.from_dict(raw) for raw in json.loads(payload)]


class Pipeline:
    def __init__(
        self, name: str, sender, buffer_dir: str | Path, stats: Stats | None = None, *,
        flush_interval: float = 1.0, batch_size: int = 1000, max_bytes: int = 64 * 1024 * 1024,
        backoff: Backoff | None = None,
    ) -> None:
        self.name = name
        self.sender = sender
        self.stats = stats or Stats()
        self.buffer = DiskBuffer(buffer_dir, max_bytes=max_bytes)
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.backoff = backoff or Backoff(0.1, 60.0)
        self._pending: list[Metric] = []
        self._flush_now = asyncio.Event()
        self._has_data = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._dropped_seen = (0, 0)

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.get_running_loop().create_task(self._flusher(), name=f"flush-{self.name}"),
                           asyncio.get_running_loop().create_task(self._sender(), name=f"send-{self.name}")]
            if len(self.buffer):
                self._has_data.set()

    def submit(self, metrics: list[Metric]) -> None:
        self._pending.extend(metrics)
        if len(self._pending) >= self.batch_size:
            self._flush_now.set()

    def kick(self) -> None:
        """Retry now instead of at the end of the backoff (e.g. the server is back)."""
        self.backoff.reset()
        self._wake.set()

    def flush(self) -> None:
        """Move what is in memory to the disk buffer, in batches of at most ``batch_size``."""
        while self._pending:
            batch, self._pending = self._pending[: self.batch_size], self._pending[self.batch_size:]
            self.buffer.append(encode_batch(batch), len(batch))
            self._has_data.set()
        self._count_drops()
        self.stats.set(f"publish.{self.name}.buffer.batches", len(self.buffer))

    def stop_now(self) -> None:
        """Flush to disk and stop sending at once (a send in progress is abandoned, not acknowledged)."""
        self.flush()
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        self.buffer.close()

    async def close(self, drain: float = 0.0) -> None:
        """Flush to disk; try to send what is buffered for up to ``drain`` seconds; stop."""
        self.flush()
        if drain > 0 and self._tasks:
            deadline = asyncio.get_running_loop().time() + drain
            while len(self.buffer) and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.buffer.close()
        await self.close_sender()

    async def close_sender(self) -> None:
        closer = getattr(self.sender, "close", None)
        if closer is not None:
            await closer()

    def _count_drops(self) -> None:
        batches, metrics = self.buffer.dropped_batches, self.buffer.dropped_metrics
        new = metrics - self._dropped_seen[1]
        if new:
            self.stats.inc("publish.dropped", new)
            self.stats.inc(f"publish.{self.name}.dropped", new)
        self._dropped_seen = (batches, metrics)

    async def _flusher(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), self.flush_interval)
            self._flush_now.clear()
            self.flush()

    async def _sender(self) -> None:
        while True:
            head = self.buffer.peek()
            self._count_drops()
            if head is None:
                self._has_data.clear()
                await self._has_data.wait()
                continue
            token, payload = head
            metrics = decode_batch(payload)
            try:
                await self.sender.send(metrics)
            except RejectedError as exc:
                self.buffer.ack(token)
                self.stats.inc("publish.rejected", len(metrics))
                self.stats.inc(f"publish.{self.name}.rejected", len(metrics))
                log.error("destination %s refused a batch of %d metrics (dropped): %s",
                          self.name, len(metrics), exc)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.inc("publish.failure")
                self.stats.inc(f"publish.{self.name}.failure")
                delay = self.backoff.next()
                log.warning("destination %s: send failed (%s); retrying in %.1f s", self.name, exc, delay)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                continue
            self.backoff.reset()
            self.buffer.ack(token)
            self.stats.inc("publish.success")
            self.stats.inc(f"publish.{self.name}.success")
            self.stats.inc("publish.metrics", len(metrics))
            self.stats.set(f"publish.{self.name}.buffer.batches", len(self.buffer))


def make_sender(destination, *, server_send=None):
    """The sender for a ``protocol.Destination``; ``server_send`` sends a ``metrics`` message."""
    if destination.kind == "graphite":
        from taskagent.publish.graphite import GraphiteSender

        return GraphiteSender.from_url(destination.url)
    if destination.kind == "prometheus_remote_write":
        from taskagent.publish.remote_write import RemoteWriteSender

        return RemoteWriteSender(destination.url, destination.headers)
    if destination.kind == "server":
        from taskagent.publish.server import ServerSender

        if server_send is None:
            raise ValueError("a server destination needs the connection's send function")
        return ServerSender(server_send)
    raise ValueError(f"unknown destination kind {destination.kind!r}")
