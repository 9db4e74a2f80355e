"""Which agents run which task: ``agents_for(task)``, ``tasks_for(agent)`` and ``any`` placement.

A task only ever runs on enabled agents of its own scope: a team's task on that team's agents, a
global task on global agents. (The original server let ``any`` pick any online agent of any
organisation, and ``byIds`` name other organisations' agents, which then received their secrets:
task-server.md §6.) A disabled task runs nowhere.

- ``byTags``: agents carrying one of the task's tags;
- ``byIds``: the listed agents (checked at write time, ``taskserver.services``);
- ``byLabels``: agents whose host (an agent enrolled as a host) is in one of the labels;
- ``any``: exactly one agent, recorded as an :class:`AnyAssignment`. :func:`assign_any` picks the
  online agent with the fewest ``any`` tasks, then the lowest id, so placement is deterministic
  and spreads evenly. When an agent goes away (offline, disabled, deleted) :func:`rebalance_agent`
  moves its tasks to the others; with nobody online a task waits unassigned, and
  :func:`assign_pending` (called when an agent connects) places it. The original left such tasks
  pinned to the dead agent forever and never told the new one (§3, §6).

Tags and label lists are matched in Python: a team has tens to hundreds of agents, and JSON
containment lookups differ between SQLite and MariaDB.

Every change to a placement tells the WebSocket part once the transaction commits
(``taskserver.events``).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

from django.db import IntegrityError, transaction
from django.db.models import Count, QuerySet

from taskserver import events
from taskserver.models import AnyAssignment, RouteType, Task, TaskAgent


def notify_changed(task: Task, old_agent_ids: Iterable[int]) -> None:
    """Call ``events.task_changed`` once the current transaction commits."""
    transaction.on_commit(partial(events.task_changed, task, sorted(set(old_agent_ids))))


def scope_agents(team_id: int | None) -> QuerySet[TaskAgent]:
    """The enabled agents a task of ``team_id`` (None: global) may run on."""
    agents = TaskAgent.objects.filter(enabled=True)
    return agents.filter(team__isnull=True) if team_id is None else agents.filter(team_id=team_id)


def _as_set(config: dict, key: str) -> set:
    values = (config or {}).get(key) or []
    return set(values) if isinstance(values, list) else set()


def agents_for(task: Task) -> list[int]:
    """The ids of the agents that should run ``task`` (online or not), sorted."""
    if not task.enabled:
        return []
    agents = scope_agents(task.team_id)
    if task.route_type == RouteType.ANY:
        ids = AnyAssignment.objects.filter(task_id=task.pk, agent__in=agents).values_list(
            "agent_id", flat=True
        )
        return list(ids)
    if task.route_type == RouteType.BY_IDS:
        return sorted(agents.filter(pk__in=_as_set(task.route_config, "ids")).values_list("pk", flat=True))
    if task.route_type == RouteType.BY_TAGS:
        tags = _as_set(task.route_config, "tags")
        return sorted(
            pk for pk, agent_tags in agents.values_list("pk", "tags") if tags & set(agent_tags or [])
        )
    if task.route_type == RouteType.BY_LABELS:
        labels = _as_set(task.route_config, "labels")
        matched = agents.filter(host__labels__name__in=labels).values_list("pk", flat=True).distinct()
        return sorted(matched)
    return []


def _host_labels(agent: TaskAgent) -> set[str]:
    if agent.host_id is None:
        return set()
    from hosts.models import Label

    return set(Label.objects.filter(memberships__host_id=agent.host_id).values_list("name", flat=True))


def tasks_for(agent: TaskAgent) -> list[Task]:
    """The enabled tasks routed to ``agent`` (its task list when it connects), by id."""
    if not agent.enabled:
        return []
    tasks = Task.objects.filter(enabled=True)
    tasks = tasks.filter(team__isnull=True) if agent.team_id is None else tasks.filter(team_id=agent.team_id)
    tags, labels = set(agent.tags or []), None
    chosen = []
    for task in tasks.exclude(route_type=RouteType.ANY).order_by("id"):
        if task.route_type == RouteType.BY_TAGS:
            routed = bool(tags & _as_set(task.route_config, "tags"))
        elif task.route_type == RouteType.BY_IDS:
            routed = agent.pk in _as_set(task.route_config, "ids")
        elif task.route_type == RouteType.BY_LABELS:
            labels = _host_labels(agent) if labels is None else labels
            routed = bool(labels & _as_set(task.route_config, "labels"))
        else:
            routed = False
        if routed:
            chosen.append(task)
    chosen.extend(tasks.filter(route_type=RouteType.ANY, any_assignment__agent=agent))
    return sorted(chosen, key=lambda t: t.pk)


# --- any ------------------------------------------------------------------------------------------


def _least_loaded(team_id: int | None, exclude: Iterable[int] = ()) -> TaskAgent | None:
    """The online agent of the scope with the fewest ``any`` tasks, then the lowest id."""
    candidates = scope_agents(team_id).filter(online=True).exclude(pk__in=list(exclude))
    return candidates.annotate(load=Count("any_assignments")).order_by("load", "pk").first()


def assign_any(task: Task) -> TaskAgent | None:
    """Place an enabled ``any`` task on one agent (kept if already placed); ``None``: nobody online.

    The caller notifies (a new task is announced by the service that created it).
    """
    if task.route_type != RouteType.ANY or not task.enabled:
        return None
    current = AnyAssignment.objects.filter(task=task).select_related("agent").first()
    if current is not None:
        return current.agent
    agent = _least_loaded(task.team_id)
    if agent is None:
        return None
    try:
        with transaction.atomic():
            AnyAssignment.objects.create(task=task, agent=agent)
    except IntegrityError:  # placed meanwhile by another process: theirs stands
        current = AnyAssignment.objects.filter(task=task).select_related("agent").first()
        return current.agent if current else None
    return agent


def unassign(task: Task) -> None:
    AnyAssignment.objects.filter(task=task).delete()


def rebalance_agent(agent_id: int) -> list[int]:
    """Move the ``any`` tasks of ``agent_id`` to the other online agents of its scope, one at a
    time to the least loaded; tasks nobody can take wait unassigned (:func:`assign_pending`).

    Returns the ids of the tasks that left the agent; each is announced with the agent as its
    old runner.
    """
    moved = []
    with transaction.atomic():
        assignments = (
            AnyAssignment.objects.select_for_update()
            .filter(agent_id=agent_id)
            .select_related("task", "agent")
            .order_by("task_id")
        )
        for assignment in assignments:
            target = _least_loaded(assignment.agent.team_id, exclude=[agent_id])
            if target is None:
                assignment.delete()
            else:
                assignment.agent = target
                assignment.save(update_fields=["agent", "assigned_at"])
            moved.append(assignment.task_id)
            notify_changed(assignment.task, [agent_id])
    return moved


def assign_pending(team_id: int | None | object = ...) -> list[int]:
    """Place the enabled ``any`` tasks waiting for an agent (of one scope, or all); returns their
    ids. The WebSocket part calls this when an agent connects."""
    waiting = Task.objects.filter(route_type=RouteType.ANY, enabled=True, any_assignment__isnull=True)
    if team_id is None:
        waiting = waiting.filter(team__isnull=True)
    elif team_id is not ...:
        waiting = waiting.filter(team_id=team_id)
    placed = []
    with transaction.atomic():
        for task in waiting.order_by("id"):
            if assign_any(task) is not None:
                placed.append(task.pk)
                notify_changed(task, [])
    return placed
