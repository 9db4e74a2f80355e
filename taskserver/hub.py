"""Each server process's hub: the one channel through which changes reach its task agent sessions.

A change is one channel-layer message to the hub group (:func:`taskserver.live.send`) naming the
agents it concerns; every process holding sessions has one hub channel in that group, and its
hub hands the message to its own sessions of those agents. So a change costs one message per
process, not one per agent (with 1,000 agents the latter took seconds and overflowed the
layer's queues in a burst of changes).

One hub per event loop and channel layer (the server has one loop; tests make a loop and a layer
per test). Its group membership is renewed well before the layer expires it (a day).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from taskserver import live

logger = logging.getLogger(__name__)

RENEW_EVERY = 600.0  # seconds between group_add renewals (channels' group expiry is a day)
RETRY_AFTER = 1.0  # seconds to wait after the layer failed (Redis down) before receiving again


class Session(Protocol):
    async def send(self, text_data: str | None = None) -> None: ...


class Hub:
    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.sessions: dict[int, set[Session]] = {}
        self._tasks: list[asyncio.Task] = []
        self.channel = ""

    def add(self, agent_id: int, session: Session) -> None:
        self.sessions.setdefault(agent_id, set()).add(session)
        if not self._tasks or any(task.done() for task in self._tasks):
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._receive_loop()), loop.create_task(self._renew_loop())]

    def discard(self, agent_id: int, session: Session) -> None:
        held = self.sessions.get(agent_id)
        if held is not None:
            held.discard(session)
            if not held:
                del self.sessions[agent_id]

    async def _join(self) -> None:
        if not self.channel:
            # The default prefix: channels-redis reads every process-local channel through one
            # list per prefix, which only its consumers' prefix ("specific") is read from.
            self.channel = await self.layer.new_channel()
        await self.layer.group_add(live.HUB_GROUP, self.channel)

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY)
            with contextlib.suppress(Exception):  # the receive loop reports layer failures
                await self._join()

    async def _receive_loop(self) -> None:
        while True:
            try:
                await self._join()
                while True:
                    await self.deliver(await self.layer.receive(self.channel))
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("task agent hub: the channel layer failed; retrying", exc_info=True)
                await asyncio.sleep(RETRY_AFTER)

    async def deliver(self, event: dict[str, Any]) -> int:
        """Send the event's text to this process's sessions of its agents; how many got it."""
        text, sent = event.get("text"), 0
        if not isinstance(text, str):
            return 0
        for agent_id in event.get("ids") or ():
            for session in list(self.sessions.get(agent_id, ())):
                try:
                    await session.send(text_data=text)
                    sent += 1
                except Exception:  # a session closing as we send: it reconciles on reconnect
                    logger.info("task agent %s: a pushed change could not be sent", agent_id)
        return sent


_hubs: dict[tuple[int, int], Hub] = {}


def local_hub(layer: Any) -> Hub:
    """The hub of the running event loop and this channel layer."""
    loop = asyncio.get_running_loop()
    for key in [k for k, h in _hubs.items() if h._tasks and all(t.get_loop().is_closed() for t in h._tasks)]:
        del _hubs[key]  # hubs of finished event loops (tests)
    key = (id(loop), id(layer))
    hub = _hubs.get(key)
    if hub is None:
        hub = _hubs[key] = Hub(layer)
    return hub
