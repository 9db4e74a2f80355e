"""The task agent's WebSocket session (``/ws/agent/``, docs/task-agent-protocol.md).

On connect: the agent key (``Authorization: Bearer``) names the team; an agent name the team does
not know yet registers itself in that team only. The session joins its agent's group, the agent
is marked online, and it receives ``welcome``, its ``destinations`` and the full ``task_list``;
``any`` tasks waiting for an agent are placed (on this one if it is the least loaded).

While connected: the server sends a heartbeat every ``TASKSERVER["HEARTBEAT"]`` seconds and closes
a session that sent nothing for ``DEAD_AFTER_HEARTBEATS`` of them; every frame from the agent is
parsed defensively (a malformed one is logged and ignored, never a crash). On disconnect the agent
goes offline (unless a newer session took over) and its ``any`` tasks move to other agents at once.

Several daphne processes: groups live in the channel layer (Redis), so changes reach a session
wherever it is held; a process that dies stops refreshing its agents' ``last_seen_at``, and the
sweep every live process runs (:func:`taskserver.sessions.sweep_if_due`) marks them offline and
moves their tasks within ``TASKSERVER["STALE_AFTER"]`` seconds plus a heartbeat.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from fleet.change_stamp import ChangeStamp
from taskserver import hub, live, metric_store, sessions
from taskserver.sessions import Signature

logger = logging.getLogger(__name__)

DEAD_AFTER_HEARTBEATS = 3
MAX_FRAME = 1024 * 1024


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


class AgentConsumer(AsyncWebsocketConsumer):
    agent_id: int | None = None
    _hub: hub.Hub | None = None
    session_id: str = ""
    _heartbeats: asyncio.Task | None = None
    _watcher: asyncio.Task | None = None
    _last_frame: float = 0.0
    _seen_noted: float = 0.0

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels closes stale database connections (a hop to the database thread) before every
        message a consumer handles; here that is each heartbeat and pushed change, for thousands of
        sessions. ``database_sync_to_async`` closes them around every database call anyway."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        headers = _headers(self.scope)
        auth = headers.get("authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        tags = [t.strip() for t in headers.get("x-fleet-agent-tags", "").split(",") if t.strip()]
        self.session_id = uuid.uuid4().hex
        try:
            agent, replaced = await database_sync_to_async(sessions.open_session)(
                key,
                headers.get("x-fleet-agent-name", ""),
                tags,
                headers.get("x-fleet-agent-version", ""),
                self.session_id,
                headers.get("x-fleet-host-uuid", ""),
            )
        except sessions.Refused as exc:
            logger.info("task agent refused: %s", exc)
            await self.close(code=exc.code)
            return
        self.agent_id = agent.pk
        if replaced:  # one session per agent: the older one closes (wherever it is held)
            await self.channel_layer.group_send(
                live.group(agent.pk), {"type": "agent.close", "session_id": replaced}
            )
        await self.channel_layer.group_add(live.group(agent.pk), self.channel_name)
        await self.accept()
        self._hub = hub.local_hub(self.channel_layer)
        self._hub.add(agent.pk, self)  # before the task list is read: no change falls in between
        self._last_frame = time.monotonic()
        stamp = live.change_stamp() if live.in_process_layer() else None
        # Both read before what the agent runs is read: a change in between causes one task list
        # too many, never one too few.
        seen_stamp = stamp.read() if stamp is not None else 0
        signature = await database_sync_to_async(sessions.task_signature)(agent.pk)
        first = await database_sync_to_async(sessions.first_messages)(
            agent.pk, self.session_id, settings.TASKSERVER["HEARTBEAT"]
        )
        for content in first:
            await self.send(text_data=json.dumps(content, separators=(",", ":")))
        await database_sync_to_async(sessions.place_waiting)(agent.pk)
        self._heartbeats = asyncio.ensure_future(self._heartbeat_loop())
        self._watcher = asyncio.ensure_future(self._watch_loop(stamp, seen_stamp, signature))

    async def _watch_loop(self, stamp: ChangeStamp | None, seen_stamp: int, signature: Signature) -> None:
        """Changes no channel-layer message brings: on the embedded default, those another process
        made (it bumped the change stamp); everywhere, a change of the agent's host's labels that
        alters what ``byLabels`` routes give it. Either way the agent gets its full list again."""
        config = settings.TASKSERVER
        poll = config["CHANGE_POLL_INTERVAL"] if stamp is not None else config["LABEL_RECHECK_INTERVAL"]
        recheck = config["LABEL_RECHECK_INTERVAL"]
        last_label_check = time.monotonic()
        while True:
            await asyncio.sleep(poll)
            catch_up = False
            if stamp is not None:
                now = stamp.read()
                catch_up = now != seen_stamp and stamp.foreign(seen_stamp, now)
                seen_stamp = now
            if signature is not None and time.monotonic() - last_label_check >= recheck:
                last_label_check = time.monotonic()
                current = await database_sync_to_async(sessions.task_signature)(self.agent_id)
                catch_up = catch_up or current != signature
                signature = current
            if catch_up:
                await self._catch_up()

    async def _catch_up(self) -> None:
        messages = await database_sync_to_async(sessions.catch_up_messages)(self.agent_id)
        if messages is None:  # deleted or switched off by another process
            await self.close(code=4004)
            return
        for content in messages:
            await self.send(text_data=json.dumps(content, separators=(",", ":")))

    async def _heartbeat_loop(self) -> None:
        while True:
            heartbeat = settings.TASKSERVER["HEARTBEAT"]
            await asyncio.sleep(heartbeat)
            silent = time.monotonic() - self._last_frame
            if silent > DEAD_AFTER_HEARTBEATS * heartbeat:
                logger.info("task agent %s sent nothing for %.0f s: closing", self.agent_id, silent)
                await self.close(code=4008)
                return
            beat = live.message("heartbeat", {"time": int(time.time())})
            await self.send(text_data=json.dumps(beat))
            if sessions.upkeep_due(time.monotonic()):  # one session per process per interval
                await database_sync_to_async(sessions.upkeep)()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        now = time.monotonic()
        self._last_frame = now
        raw = text_data if text_data is not None else (bytes_data or b"").decode("utf-8", "replace")
        if len(raw) > MAX_FRAME:
            logger.info("task agent %s: frame of %d bytes ignored", self.agent_id, len(raw))
            return
        try:
            content = json.loads(raw)
        except ValueError:
            logger.info("task agent %s: a frame that is not JSON was ignored", self.agent_id)
            return
        if not isinstance(content, dict) or content.get("v") != live.VERSION:
            logger.info("task agent %s: a message of another version or shape was ignored", self.agent_id)
            return
        kind, data = content.get("type"), content.get("data")
        if kind in ("heartbeat", "status") or kind == "metrics" and isinstance(data, dict):
            if now - self._seen_noted >= settings.TASKSERVER["HEARTBEAT"]:
                self._seen_noted = now
                sessions.seen(self.agent_id)  # in memory; written in batches by the upkeep
            if kind == "metrics":  # checked and bounded there (an agent is not trusted)
                try:
                    await database_sync_to_async(metric_store.ingest)(self.agent_id, data)
                except Exception:
                    logger.warning("task agent %s: metrics not stored", self.agent_id, exc_info=True)
        else:
            logger.info("task agent %s: unknown message type %r ignored", self.agent_id, str(kind)[:40])

    async def disconnect(self, code: int) -> None:
        for loop_task in (self._heartbeats, self._watcher):
            if loop_task is not None:
                loop_task.cancel()
        if self.agent_id is None:
            return
        sessions.seen_buffer.forget(self.agent_id)
        if self._hub is not None:
            self._hub.discard(self.agent_id, self)
        await self.channel_layer.group_discard(live.group(self.agent_id), self.channel_name)
        await database_sync_to_async(sessions.close_session)(self.agent_id, self.session_id)

    async def agent_close(self, event: dict[str, Any]) -> None:
        """The agent was deleted (every session closes), or a newer session replaced this one."""
        wanted = event.get("session_id")
        if wanted is None or wanted == self.session_id:
            await self.close(code=4004)
