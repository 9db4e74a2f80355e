"""Publishing campaign events to the watchers' Channels group, from sync code.

With Redis (production), events are handed to a long-lived event loop on a background thread
and sent from there, at most one batch per ``FLUSH_SECONDS``: an event published after a quiet
spell leaves at once, and those that follow it within the period wait for the next batch (at
most ``FLUSH_SECONDS``). A ``distributed/write`` never waits on Redis, and under load it does not
wake another thread for its answer either: sent one by one, each answer cost its web process
0.6 ms of CPU (a thread handoff and channels-redis' round trips), 40 % of the whole request; in
a batch the group is looked up once for many answers. Consecutive results of a campaign travel
as one ``campaign.results`` message; any other event (``campaign.ended``) keeps its place after
them, and batches leave in the order they were made. A process that exits sends what it still
holds (``atexit``).

With the in-memory layer (embedded default), the event must reach consumers on the server's own
loop: ``async_to_sync`` from a request thread, or scheduled on the loop when the request runs
inline on it (:mod:`fleet.inline_loop`). Those stay one message per event.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import time
from itertools import groupby
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

from fleet.inline_loop import call_async

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 0.02  # one batch per period at most: the longest an answer waits for its batch
BATCH_RESULTS = 100  # results per ``campaign.results`` message at most (bounds a message's size)


def group_name(campaign_id: int) -> str:
    return f"campaign.{campaign_id}"


class _BackgroundLoop:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                self._loop = asyncio.new_event_loop()
                threading.Thread(
                    target=self._loop.run_forever, name="campaign-publisher", daemon=True
                ).start()
            return self._loop


_background = _BackgroundLoop()


def _run_key(item: tuple[int, dict[str, Any]]) -> tuple[int, bool]:
    """Consecutive events of one campaign that are all results, or all something else."""
    return item[0], item[1]["type"] == "campaign.result"


def messages(events: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, dict[str, Any]]]:
    """The group messages for ``events`` (campaign id, event), in order: runs of results of one
    campaign become ``campaign.results`` messages of at most ``BATCH_RESULTS``."""
    out: list[tuple[int, dict[str, Any]]] = []
    for (campaign_id, is_result), run in groupby(events, key=_run_key):
        items = [event for _, event in run]
        if not is_result:
            out.extend((campaign_id, event) for event in items)
            continue
        for start in range(0, len(items), BATCH_RESULTS):
            chunk = [event["result"] for event in items[start : start + BATCH_RESULTS]]
            out.append((campaign_id, {"type": "campaign.results", "results": chunk}))
    return out


class _Batcher:
    """Events waiting for the next flush on the publisher loop; one flush at a time, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[tuple[int, dict[str, Any]]] = []
        self._scheduled = False
        self._next_flush = 0.0  # monotonic time before which no other batch leaves
        self._sending: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    def add(self, campaign_id: int, event: dict[str, Any]) -> None:
        with self._lock:
            self._events.append((campaign_id, event))
            if self._scheduled:
                return
            self._scheduled = True
            delay = max(0.0, self._next_flush - time.monotonic())
        loop = _background.loop()
        loop.call_soon_threadsafe(loop.call_later, delay, self._start_flush)

    def _start_flush(self) -> None:
        asyncio.ensure_future(self.flush())

    def _take(self) -> list[tuple[int, dict[str, Any]]]:
        with self._lock:
            events, self._events, self._scheduled = self._events, [], False
            self._next_flush = time.monotonic() + FLUSH_SECONDS
            return events

    async def flush(self) -> None:
        """Send what is waiting (on the publisher loop). Failures are logged: watchers are best
        effort, the answers are stored either way and a watcher that reconnects reads them."""
        loop = asyncio.get_running_loop()
        if self._sending is None or self._sending[0] is not loop:
            self._sending = (loop, asyncio.Lock())
        async with self._sending[1]:  # the batch before this one has left: order is kept
            layer = get_channel_layer()
            for campaign_id, message in messages(self._take()):
                try:
                    await layer.group_send(group_name(campaign_id), message)
                except Exception as exc:
                    logger.warning("could not publish a campaign event: %s", exc)

    def drain(self, timeout: float = 2.0) -> None:
        """Send what is waiting now, from any thread but the loop's (at exit)."""
        with self._lock:
            if not self._events:
                return
        try:
            asyncio.run_coroutine_threadsafe(self.flush(), _background.loop()).result(timeout)
        except Exception as exc:
            logger.warning("campaign events not sent at exit: %s", exc)


_batcher = _Batcher()
atexit.register(_batcher.drain)


def publish(campaign_id: int, event: dict[str, Any]) -> None:
    """Send ``event`` (a Channels message with a ``type``) to everyone watching the campaign."""
    layer = get_channel_layer()
    if layer is None:
        return
    if settings.REDIS_URL:
        _batcher.add(campaign_id, event)
        return
    try:
        call_async(layer.group_send, group_name(campaign_id), event)
    except Exception as exc:  # watchers are best effort: the result is stored either way
        logger.warning("could not publish a campaign event: %s", exc)
