"""The ``server`` destination: batches go back over the agent's own WebSocket (``metrics``).

``send`` is the connection's ``send_metrics``; it raises while disconnected, and the pipeline
retries (the agent kicks it on reconnect). A batch too large for one frame (1 MiB) is split.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from taskagent.metrics import Metric
from taskagent.protocol import ProtocolError


class ServerSender:
    def __init__(self, send: Callable[[list[dict[str, Any]]], Awaitable[None]]) -> None:
        self._send = send

    async def send(self, metrics: list[Metric]) -> None:
        await self._send_part([m.to_dict() for m in metrics])

    async def _send_part(self, part: list[dict[str, Any]]) -> None:
        try:
            await self._send(part)
        except ProtocolError:
            if len(part) < 2:
                raise
            half = len(part) // 2
            await self._send_part(part[:half])
            await self._send_part(part[half:])
