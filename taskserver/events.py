"""The hooks through which task changes reach connected agents (filled in by the WebSocket part).

The services in :mod:`taskserver.services` and :mod:`taskserver.routing` call these, always from
``transaction.on_commit``, so an agent is never told about a change that was rolled back. Each
hook names the agents that ran a task *before* the change, computed before the rows that say so
were touched: the original server deleted an ``any`` task's route rows first and then found
nobody to tell (task-server.md §6). They hand the change to :mod:`taskserver.live`, which sends
it to the agents' sessions through the channel layer, whichever process holds them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from taskserver.models import Task


def task_changed(task: Task, old_agent_ids: Iterable[int]) -> None:
    """``task`` was created or changed; ``old_agent_ids`` ran it before (empty for a new task).

    The receiver compares them with ``routing.agents_for(task)``: agents in both get the update,
    new ones an add, old ones only a remove.
    """
    from taskserver import live  # live imports the services, which import this module

    live.announce_changed(task, old_agent_ids)
    live.note_change()


def task_removed(task_id: int, agent_ids: Iterable[int]) -> None:
    """The task was deleted; ``agent_ids`` were running it."""
    from taskserver import live

    live.announce_removed(task_id, agent_ids)
    live.note_change()


def agent_removed(agent_id: int) -> None:
    """The agent was deleted: close its connection."""
    from taskserver import live

    live.close_agent(agent_id)
    live.note_change()


def destinations_changed(team_id: int | None) -> None:
    """A metric destination of the team (None: global) was added, changed or deleted."""
    from taskserver import live

    live.announce_destinations(team_id)
    live.note_change()
