"""Publishing campaign events to the watchers' Channels group, from sync code.

With Redis (production), messages go through a long-lived event loop on a background thread, so
a ``distributed/write`` neither blocks on Redis nor pays for a new event loop and connection per
message. With the in-memory layer (embedded default), the event must reach consumers on the
server's own loop: ``async_to_sync`` from a request thread, or scheduled on the loop when the
request runs inline on it (:mod:`fleet.inline_loop`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

from fleet.inline_loop import call_async

logger = logging.getLogger(__name__)


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


def _log_failure(future: Any) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning("could not publish a campaign event: %s", future.exception())


def publish(campaign_id: int, event: dict[str, Any]) -> None:
    """Send ``event`` (a Channels message with a ``type``) to everyone watching the campaign."""
    layer = get_channel_layer()
    if layer is None:
        return
    group = group_name(campaign_id)
    if settings.REDIS_URL:
        future = asyncio.run_coroutine_threadsafe(layer.group_send(group, event), _background.loop())
        future.add_done_callback(_log_failure)
        return
    try:
        call_async(layer.group_send, group, event)
    except Exception as exc:  # watchers are best effort: the result is stored either way
        logger.warning("could not publish a campaign event: %s", exc)
