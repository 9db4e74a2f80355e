"""Telling connected task agents about changes, wherever they are connected.

Every agent's sessions join the channel-layer group ``taskagent.<id>``; a change anywhere (REST,
console, ``manage.py apply``, a rebalance) sends one message to the groups of the agents it
concerns. With channels-redis that reaches a session held by any daphne process; on the embedded
default the in-process layer serves the one process there is. The messages are the agent
protocol's (docs/task-agent-protocol.md): ``task_add``, ``task_update``, ``task_remove``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings

from fleet.change_stamp import ChangeStamp, stamp_at
from fleet.inline_loop import call_async
from taskserver import routing, services
from taskserver.models import MetricDestination, Task, TaskAgent

logger = logging.getLogger(__name__)

VERSION = 1
HUB_GROUP = "taskagent.hubs"  # every server process's hub channel (taskserver/hub.py)


def group(agent_id: int) -> str:
    return f"taskagent.{agent_id}"


def message(type_: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"v": VERSION, "type": type_, "data": data}


def task_payload(task: Task) -> dict[str, Any]:
    """A task as its agent receives it: settings in clear (the socket is the agent's own, over
    TLS in production), times as unix seconds."""
    return {
        "id": task.pk,
        "name": task.name,
        "plugin": task.plugin,
        "settings": services.agent_settings(task),
        "interval": task.interval,
        "enabled": task.enabled,
        "created_at": int(task.created_at.timestamp()),
        "updated_at": int(task.updated_at.timestamp()),
    }


def task_list(agent: TaskAgent) -> dict[str, Any]:
    return message("task_list", {"tasks": [task_payload(t) for t in routing.tasks_for(agent)]})


def destinations(agent: TaskAgent) -> dict[str, Any]:
    """The metric destinations of the agent's team (global agents: the global ones)."""
    rows = MetricDestination.objects.filter(enabled=True)
    rows = rows.filter(team__isnull=True) if agent.team_id is None else rows.filter(team_id=agent.team_id)
    return message(
        "destinations",
        {
            "destinations": [
                {"id": d.pk, "kind": d.kind, "url": d.url, "headers": services.open_headers(d)}
                for d in rows.order_by("id")
            ]
        },
    )


def in_process_layer() -> bool:
    """Whether the channel layer reaches only this process's sessions (the embedded default)."""
    return isinstance(get_channel_layer(), InMemoryChannelLayer)


def change_stamp() -> ChangeStamp:
    return stamp_at(settings.TASKSERVER["CHANGE_STAMP_FILE"])


def note_change() -> None:
    """Tell sessions held by other processes that something changed, when the channel layer
    cannot: they send their agents the full task list (``taskserver.consumers``)."""
    if in_process_layer():
        change_stamp().bump()


def send(agent_ids: Iterable[int], content: dict[str, Any]) -> None:
    """One message to every session of each agent; never raises (a change is saved either way,
    and agents reconcile with the full list when they reconnect).

    One channel-layer message per server process, whatever the number of agents: it goes to the
    hub group, which every process holding sessions has joined (``taskserver.hub``), and each
    hub hands it to its own sessions of those agents. A message per agent cost a few Redis round
    trips each, so a change took seconds to reach 1,000 agents and a burst of changes overflowed
    the layer's queues (make bench-tasks)."""
    layer = get_channel_layer()
    if layer is None:
        return
    ids = sorted(set(agent_ids))
    if not ids:
        return
    event = {"type": "hub.message", "ids": ids, "text": json.dumps(content, separators=(",", ":"))}
    try:
        call_async(layer.group_send, HUB_GROUP, event)
    except Exception:
        logger.warning("could not reach %d task agent(s); they reconcile when they reconnect", len(ids))


def announce_changed(task: Task, old_agent_ids: Iterable[int]) -> None:
    """Agents that ran the task and no longer do get a remove; the others an add or an update."""
    try:
        task.refresh_from_db()
    except Task.DoesNotExist:
        return  # deleted meanwhile: its removal is announced on its own
    old = set(old_agent_ids)
    new = set(routing.agents_for(task))
    payload = task_payload(task)
    send(sorted(old - new), message("task_remove", {"id": task.pk}))
    send(sorted(new - old), message("task_add", {"task": payload}))
    send(sorted(new & old), message("task_update", {"task": payload}))


def announce_removed(task_id: int, agent_ids: Iterable[int]) -> None:
    send(sorted(set(agent_ids)), message("task_remove", {"id": task_id}))


def announce_destinations(team_id: int | None) -> None:
    """The team's destinations changed: its online agents get the new list."""
    agents = TaskAgent.objects.filter(online=True, enabled=True)
    agents = agents.filter(team__isnull=True) if team_id is None else agents.filter(team_id=team_id)
    first = agents.order_by("pk").first()
    if first is not None:
        send(agents.values_list("pk", flat=True), destinations(first))


def close_agent(agent_id: int) -> None:
    """Close every session of a deleted agent."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        call_async(layer.group_send, group(agent_id), {"type": "agent.close"})
    except Exception:
        logger.warning("could not close the sessions of deleted task agent %s", agent_id)
