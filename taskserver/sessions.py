"""Task agent sessions, the database side (the consumer, :mod:`taskserver.consumers`, is async and
calls these through ``database_sync_to_async``).

Which session is current is kept in the cache (Redis in production, so every daphne process sees
it): a newer session of the same agent takes over, and only the current one marks the agent
offline when it closes. ``last_seen_at`` is refreshed from the agent's frames at most once per
heartbeat interval; an agent online but unseen for ``TASKSERVER["STALE_AFTER"]`` seconds
(its process died without closing anything) is marked offline by :func:`sweep`, and its ``any``
tasks move.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from fleet.due import DueClock
from taskserver import live, routing, services
from taskserver.models import TaskAgent

logger = logging.getLogger(__name__)

_clock = DueClock()


class Refused(Exception):
    """The connection is closed before it is accepted, with a WebSocket close code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _session_key(agent_id: int) -> str:
    return f"taskagent-session:{agent_id}"


def open_session(
    key: str, name: str, tags: list[str], version: str, session_id: str, host_uuid: str = ""
) -> tuple[TaskAgent, str | None]:
    """The agent, and the session this one replaces (which the consumer then closes).

    ``host_uuid`` (the agent's ``X-Fleet-Host-UUID``) ties the agent to the enrolled host of its
    team with that hardware UUID, whose labels then route ``byLabels`` tasks to it."""
    agent_key = services.authenticate_key(key)
    if agent_key is None:
        raise Refused("unknown agent key", 4401)
    host_id = services.host_by_uuid(agent_key.team_id, host_uuid) if host_uuid else None
    try:
        agent = services.register_agent(agent_key, name, version=version, host_id=host_id)
    except Exception as exc:  # a name the model refuses (empty, too long, ...)
        raise Refused(f"bad agent name: {exc}", 4400) from None
    if not agent.enabled:
        raise Refused(f"agent {agent.name} is disabled", 4403)
    if tags and not agent.tags:  # first connection: the agent's own tags; admins manage them after
        try:
            agent.tags = services.clean_tags(tags)
            agent.save(update_fields=["tags"])
        except Exception:
            logger.info("task agent %s: its tags were refused", agent.name)
    previous = cache.get(_session_key(agent.pk))
    cache.set(_session_key(agent.pk), session_id, timeout=None)
    TaskAgent.objects.filter(pk=agent.pk).update(online=True, last_seen_at=timezone.now())
    return agent, (previous if previous and previous != session_id else None)


def first_messages(agent_id: int, session_id: str, heartbeat: float) -> list[dict[str, Any]]:
    agent = TaskAgent.objects.get(pk=agent_id)
    welcome = live.message(
        "welcome",
        {"agent_id": agent.pk, "name": agent.name, "session_id": session_id, "heartbeat_interval": heartbeat},
    )
    return [welcome, live.destinations(agent), live.task_list(agent)]


def catch_up_messages(agent_id: int) -> list[dict[str, Any]] | None:
    """The agent's destinations and full task list, from the database (a change this process's
    channel layer could not carry); ``None`` when the agent was deleted or switched off."""
    agent = TaskAgent.objects.filter(pk=agent_id, enabled=True).first()
    if agent is None:
        return None
    return [live.destinations(agent), live.task_list(agent)]


Signature = tuple[tuple[int, int], ...] | None


def task_signature(agent_id: int) -> Signature:
    """What the agent should run, as (task id, revision) pairs: compared between two label checks
    to notice that its host's labels changed what ``byLabels`` routes give it. ``None`` for an
    agent with no host (its tasks never depend on labels)."""
    agent = TaskAgent.objects.filter(pk=agent_id).first()
    if agent is None or agent.host_id is None:
        return None
    return tuple(sorted((t.pk, t.revision) for t in routing.tasks_for(agent)))


def place_waiting(agent_id: int) -> list[int]:
    """``any`` tasks that waited for an agent are placed now (announced on commit)."""
    agent = TaskAgent.objects.get(pk=agent_id)
    with transaction.atomic():
        return routing.assign_pending(agent.team_id)


class SeenBuffer:
    """Agents heard from since the last flush, written in one UPDATE per 1,000 ids.

    A heartbeat must cost no query and no thread hop (10,000 agents beat 1,000 times a second):
    the consumer notes its agent here at most once per heartbeat interval, and the process
    writes ``last_seen_at`` for all of them together once per interval (:func:`upkeep_if_due`).
    The write only touches agents still online, so a flush racing a disconnect never brings an
    agent back online."""

    CHUNK = 1000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: set[int] = set()

    def note(self, agent_id: int) -> None:
        with self._lock:
            self._ids.add(agent_id)

    def forget(self, agent_id: int) -> None:
        with self._lock:
            self._ids.discard(agent_id)

    def flush(self) -> int:
        with self._lock:
            ids, self._ids = sorted(self._ids), set()
        now = timezone.now()
        for start in range(0, len(ids), self.CHUNK):
            TaskAgent.objects.filter(pk__in=ids[start : start + self.CHUNK], online=True).update(
                last_seen_at=now
            )
        return len(ids)


seen_buffer = SeenBuffer()


def seen(agent_id: int) -> None:
    """The agent was heard from: written with the next flush."""
    seen_buffer.note(agent_id)


def upkeep_due(now: float) -> bool:
    """Whether this process should flush ``last_seen_at`` and sweep now: at most once per
    heartbeat interval, asked by every session's heartbeat (cheap: no I/O)."""
    return _clock.due("upkeep", settings.TASKSERVER["HEARTBEAT"], now)


def upkeep() -> None:
    """Write the agents heard from, then sweep the stale ones (when the sweep is due)."""
    try:
        seen_buffer.flush()
    except Exception:
        logger.warning("could not write the task agents' last_seen_at; next heartbeat retries", exc_info=True)
    sweep_if_due()


def close_session(agent_id: int, session_id: str) -> None:
    """The session ended: if it was the agent's current one, the agent is offline and its ``any``
    tasks move to other agents now."""
    if cache.get(_session_key(agent_id)) not in (None, session_id):
        return  # a newer session took over
    cache.delete(_session_key(agent_id))
    _offline(agent_id)


def _offline(agent_id: int) -> None:
    with transaction.atomic():
        TaskAgent.objects.filter(pk=agent_id).update(online=False)
        moved = routing.rebalance_agent(agent_id)
    if moved:
        logger.info("task agent %s went offline: %d any task(s) moved", agent_id, len(moved))


def sweep(now: Any = None) -> list[int]:
    """Agents marked online that nobody has heard from for ``TASKSERVER["STALE_AFTER"]`` seconds
    (their daphne process died): offline, tasks moved. Returns their ids."""
    limit = (now or timezone.now()) - timedelta(seconds=settings.TASKSERVER["STALE_AFTER"])
    stale = list(TaskAgent.objects.filter(online=True, last_seen_at__lt=limit).values_list("pk", flat=True))
    for agent_id in stale:
        cache.delete(_session_key(agent_id))
        _offline(agent_id)
    return stale


def sweep_if_due() -> list[int]:
    """:func:`sweep`, at most every ``TASKSERVER["SWEEP_INTERVAL"]`` seconds per process (from the
    heartbeats)."""
    if not _clock.due("sweep", settings.TASKSERVER["SWEEP_INTERVAL"], time.monotonic()):
        return []
    try:
        return sweep()
    except Exception:
        logger.warning("the task agent sweep failed; it runs again shortly", exc_info=True)
        return []
