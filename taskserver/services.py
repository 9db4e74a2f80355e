"""Every write to tasks, agents, agent keys and destinations: REST, the console and commands
come through here, so the rules are checked once and every change tells the connected agents.

Refusals are ``django.core.exceptions.ValidationError`` with a message per field (400 on REST, a
form error in the console) and :class:`NameTaken` for a name already used in the scope (409).
After a change, ``taskserver.events`` hears of it on commit (``routing.notify_changed``), with
the agents that ran the task before, read before anything was changed.
"""

from __future__ import annotations

import hmac
import re
import secrets
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from activities import recording
from activities.choices import ActivityType
from hosts.models import Host, Label
from hosts.permissions import ALL_ROLES, scope_queryset
from taskserver import events, plugins, routing, sealed
from taskserver.models import (
    MAX_INTERVAL,
    MIN_INTERVAL,
    AgentKey,
    DestinationKind,
    MetricDestination,
    RouteType,
    Task,
    TaskAgent,
    key_digest,
)

MAX_NAME = 255
MAX_TAGS = 50
MAX_ROUTE_ITEMS = 500
TAG_RE = re.compile(r"^[A-Za-z0-9_.:/=-]{1,64}$")
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
KEY_BYTES = 32


class NameTaken(Exception):
    """Another object of the same kind has this name in the same team (or globally)."""

    def __init__(self, what: str, name: str, team_id: int | None) -> None:
        where = "in this team" if team_id else "globally"
        self.message = f"A {what} named {name!r} already exists {where}."
        super().__init__(self.message)


def _refuse(field: str, message: str) -> ValidationError:
    return ValidationError({field: [message]})


def clean_name(name: Any, field: str = "name") -> str:
    if not isinstance(name, str) or not name.strip():
        raise _refuse(field, "A name is required.")
    name = name.strip()
    if len(name) > MAX_NAME:
        raise _refuse(field, f"At most {MAX_NAME} characters.")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise _refuse(field, "Control characters are not allowed.")
    return name


def _check_unique(model: type, what: str, name: str, team_id: int | None, exclude: int | None) -> None:
    others = model.objects.filter(scope=team_id or 0, name=name)
    if exclude is not None:
        others = others.exclude(pk=exclude)
    if others.exists():
        raise NameTaken(what, name, team_id)


def _save_unique(obj: Any, what: str, **kwargs: Any) -> None:
    """Save, turning a lost race on the (scope, name) constraint into :class:`NameTaken`."""
    try:
        with transaction.atomic():
            obj.save(**kwargs)
    except IntegrityError:
        raise NameTaken(what, obj.name, obj.team_id) from None


# --- Tasks -----------------------------------------------------------------------------------------


def clean_interval(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _refuse("interval", "A whole number of seconds.")
    if not MIN_INTERVAL <= value <= MAX_INTERVAL:
        raise _refuse("interval", f"Between {MIN_INTERVAL} and {MAX_INTERVAL} seconds.")
    return value


def _string_list(config: dict, key: str, pattern: re.Pattern | None = None) -> list[str]:
    values = config.get(key)
    if not isinstance(values, list) or not values:
        raise _refuse("route", f"config.{key} must be a non-empty list.")
    if len(values) > MAX_ROUTE_ITEMS:
        raise _refuse("route", f"config.{key} may hold at most {MAX_ROUTE_ITEMS} items.")
    if not all(isinstance(v, str) and v.strip() for v in values):
        raise _refuse("route", f"config.{key} must hold non-empty strings.")
    cleaned = sorted({v.strip() for v in values})
    if pattern is not None:
        bad = [v for v in cleaned if not pattern.match(v)]
        if bad:
            raise _refuse("route", f"Invalid tag {bad[0]!r}: letters, digits and _ . : / = - (at most 64).")
    return cleaned


def clean_route(route_type: Any, config: Any, team_id: int | None, user: Any = None) -> dict[str, Any]:
    """The route's config in its one accepted shape, checked against the task's scope.

    ``byIds``: each agent must exist in the task's team (or be global for a global task) and be
    visible to ``user`` (``None``: a command, which sees everything); otherwise it is "no agent
    with id N", whether it exists elsewhere or not.
    """
    if route_type not in RouteType.values:
        raise _refuse("route", f"Unknown route type {route_type!r} (any, byTags, byIds, byLabels).")
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise _refuse("route", "config must be an object.")
    expected = {RouteType.ANY: set(), RouteType.BY_TAGS: {"tags"}, RouteType.BY_IDS: {"ids"}}.get(
        route_type, {"labels"}
    )
    if set(config) != expected:
        shape = ", ".join(sorted(expected)) or "no keys"
        raise _refuse("route", f"A {route_type} route's config takes {shape}.")
    if route_type == RouteType.ANY:
        return {}
    if route_type == RouteType.BY_TAGS:
        return {"tags": _string_list(config, "tags", TAG_RE)}
    if route_type == RouteType.BY_LABELS:
        labels = _string_list(config, "labels")
        known = set(Label.objects.filter(name__in=labels).values_list("name", flat=True))
        missing = [name for name in labels if name not in known]
        if missing:
            raise _refuse("route", f"No label named {missing[0]!r}.")
        return {"labels": labels}
    ids = config["ids"]
    if not isinstance(ids, list) or not ids:
        raise _refuse("route", "config.ids must be a non-empty list.")
    if len(ids) > MAX_ROUTE_ITEMS or not all(
        isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids
    ):
        raise _refuse("route", "config.ids must hold agent ids (positive integers).")
    ids = sorted(set(ids))
    agents = TaskAgent.objects.all()
    agents = agents.filter(team__isnull=True) if team_id is None else agents.filter(team_id=team_id)
    if user is not None:
        agents = scope_queryset(agents, user, ALL_ROLES)
    found = set(agents.filter(pk__in=ids).values_list("pk", flat=True))
    missing_ids = [i for i in ids if i not in found]
    if missing_ids:
        where = "in this team" if team_id else "among the global agents"
        raise _refuse("route", f"No agent with id {missing_ids[0]} {where}.")
    return {"ids": ids}


def clean_settings(plugin: Any, incoming: Any, task: Task | None) -> dict[str, Any]:
    """The settings to store, secrets sealed; ``incoming`` ``None`` keeps the stored settings.

    A secret sent as the marker or left out keeps the stored value, for the same plugin only.
    """
    if not isinstance(plugin, str) or not plugin.strip():
        raise _refuse("plugin", "A plugin is required.")
    if incoming is not None and not isinstance(incoming, dict):
        raise _refuse("settings", "settings must be an object.")
    stored = sealed.open_settings(task.settings) if task is not None and task.plugin == plugin else {}
    if incoming is None and task is not None and task.plugin != plugin:
        incoming = {}
    names = plugins.secret_fields(plugin)
    values = sealed.merge(incoming, stored, names)
    try:
        plugins.validate(plugin, values)
    except plugins.PluginError as exc:
        field = "plugin" if plugin not in plugins.available() else "settings"
        raise ValidationError({field: exc.messages}) from None
    return sealed.seal_settings(values, names)


def task_details(task: Task) -> dict[str, Any]:
    """What the audit trail keeps of a task: never its settings."""
    return {
        "task_id": task.pk,
        "task_name": task.name,
        "plugin": task.plugin,
        "interval": task.interval,
        "route": {"type": task.route_type, "config": task.route_config},
        "enabled": task.enabled,
        "team_id": task.team_id,
    }


def save_task(
    *,
    task: Task | None = None,
    name: Any = None,
    plugin: Any = None,
    settings: Any = None,
    interval: Any = None,
    route_type: Any = None,
    route_config: Any = None,
    enabled: bool | None = None,
    team_id: int | None = None,
    user: Any = None,
) -> Task:
    """Create a task, or change one (arguments left ``None`` keep their value; the team stays).

    ``user`` is whom ``byIds`` agents must be visible to (``None``: no limit, for commands).
    """
    creating = task is None
    if not creating:
        team_id = task.team_id
        name = task.name if name is None else name
        plugin = task.plugin if plugin is None else plugin
        interval = task.interval if interval is None else interval
        if route_type is None:
            route_type = task.route_type
            route_config = task.route_config if route_config is None else route_config
        enabled = task.enabled if enabled is None else enabled
    errors: dict[str, list[str]] = {}
    values: dict[str, Any] = {}
    checks = [
        ("name", lambda: clean_name(name)),
        ("interval", lambda: clean_interval(interval)),
        ("route_config", lambda: clean_route(route_type, route_config, team_id, user)),
        ("settings", lambda: clean_settings(plugin, settings, task)),
    ]
    for key, check in checks:
        try:
            values[key] = check()
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                errors.setdefault(field, []).extend(messages)
    if errors:
        raise ValidationError(errors)
    _check_unique(Task, "task", values["name"], team_id, None if creating else task.pk)

    with transaction.atomic():
        if creating:
            old_agents: list[int] = []
            task = Task(team_id=team_id, created_by=user if getattr(user, "pk", None) else None)
        else:
            task = Task.objects.select_for_update().get(pk=task.pk)
            old_agents = routing.agents_for(task)
        was_any = task.route_type == RouteType.ANY and not creating
        task.name, task.plugin, task.settings = values["name"], plugin.strip(), values["settings"]
        task.interval, task.route_type, task.route_config = (
            values["interval"],
            route_type,
            values["route_config"],
        )
        task.enabled = True if enabled is None else bool(enabled)
        if not creating:
            task.revision = F("revision") + 1
        _save_unique(task, "task")
        task.refresh_from_db()
        if task.route_type == RouteType.ANY and task.enabled:
            if not was_any:
                routing.unassign(task)
            routing.assign_any(task)
        else:
            routing.unassign(task)
        recording.record(
            ActivityType.CREATED_TASK if creating else ActivityType.EDITED_TASK,
            task,
            details=task_details(task),
        )
        routing.notify_changed(task, old_agents)
    return task


def delete_task(task: Task) -> None:
    """Delete a task; the agents running it (read first) are told to drop it."""
    with transaction.atomic():
        agent_ids = routing.agents_for(task)
        task_id = task.pk
        recording.record(ActivityType.DELETED_TASK, task, details=task_details(task))
        task.delete()
        transaction.on_commit(partial(events.task_removed, task_id, agent_ids))


def agent_settings(task: Task) -> dict[str, Any]:
    """The task's settings in clear, for the agent that runs it (never for people)."""
    return sealed.open_settings(task.settings)


# --- Agents ----------------------------------------------------------------------------------------


def clean_tags(tags: Any) -> list[str]:
    if not isinstance(tags, list):
        raise _refuse("tags", "A list of tags.")
    if len(tags) > MAX_TAGS:
        raise _refuse("tags", f"At most {MAX_TAGS} tags.")
    if not all(isinstance(t, str) for t in tags):
        raise _refuse("tags", "Tags are strings.")
    cleaned = list(dict.fromkeys(t.strip() for t in tags if t.strip()))  # as given, without repeats
    bad = [t for t in cleaned if not TAG_RE.match(t)]
    if bad:
        raise _refuse("tags", f"Invalid tag {bad[0]!r}: letters, digits and _ . : / = - (at most 64).")
    return cleaned


def _notify_agent_tasks(agent: TaskAgent, before: set[int]) -> None:
    """Tell the WebSocket part about tasks that reach, or no longer reach, ``agent`` (``any``
    placements are announced by ``routing`` as it moves them)."""
    after = {t.pk: t for t in routing.tasks_for(agent) if t.route_type != RouteType.ANY}
    gone = before - set(after)
    for task_id in sorted(set(after) - before):
        task = after[task_id]
        routing.notify_changed(task, set(routing.agents_for(task)) - {agent.pk})
    for task in Task.objects.filter(pk__in=gone).order_by("pk"):
        routing.notify_changed(task, set(routing.agents_for(task)) | {agent.pk})


KEEP = object()  # update_agent: leave the host as it is


def host_for_agent(team_id: int | None, host_id: Any) -> int | None:
    """The host an agent of ``team_id`` may be tied to (``None`` unties it): a team's agent only to
    a host of that team; a global agent (its key is global, an admin's) to any host."""
    if host_id in (None, "", 0):
        return None
    if isinstance(host_id, bool) or not isinstance(host_id, int):
        raise _refuse("host_id", "A host id (a number) or null.")
    hosts = Host.objects.filter(pk=host_id)
    if team_id is not None:
        hosts = hosts.filter(team_id=team_id)
    if not hosts.exists():
        raise _refuse("host_id", f"No host {host_id} in the agent's team.")
    return host_id


def host_by_uuid(team_id: int | None, uuid: str) -> int | None:
    """The host an agent says it runs on (``X-Fleet-Host-UUID``: the hardware UUID osquery also
    reports), within the agent's team; ``None`` when there is no such host."""
    uuid = (uuid or "").strip()
    if not uuid or len(uuid) > 255:
        return None
    hosts = Host.objects.filter(uuid__iexact=uuid)
    if team_id is not None:
        hosts = hosts.filter(team_id=team_id)
    return hosts.order_by("pk").values_list("pk", flat=True).first()


def update_agent(
    agent: TaskAgent, *, tags: Any = None, enabled: bool | None = None, host_id: Any = KEEP
) -> TaskAgent:
    """Change an agent's tags, host, or switch it on or off; its tasks follow (an agent switched
    off hands its ``any`` tasks to the others; a new host brings its labels' ``byLabels`` tasks)."""
    with transaction.atomic():
        agent = TaskAgent.objects.select_for_update().get(pk=agent.pk)
        before = {t.pk for t in routing.tasks_for(agent)}
        old = {"tags": agent.tags, "enabled": agent.enabled, "host_id": agent.host_id}
        if tags is not None:
            agent.tags = clean_tags(tags)
        if enabled is not None:
            agent.enabled = bool(enabled)
        if host_id is not KEEP:
            agent.host_id = host_for_agent(agent.team_id, host_id)
        agent.save(update_fields=["tags", "enabled", "host"])
        before -= set(
            Task.objects.filter(route_type=RouteType.ANY, pk__in=before).values_list("pk", flat=True)
        )
        if not agent.enabled:
            routing.rebalance_agent(agent.pk)
        else:
            routing.assign_pending(agent.team_id)
        _notify_agent_tasks(agent, before)
        changes = {k: {"old": v, "new": getattr(agent, k)} for k, v in old.items() if v != getattr(agent, k)}
        if changes:
            recording.record(ActivityType.EDITED_TASK_AGENT, agent, details={"agent_id": agent.pk, **changes})
    return agent


def delete_agent(agent: TaskAgent) -> None:
    """Delete an agent: its ``any`` tasks move to the others first, ``byIds`` routes forget it."""
    with transaction.atomic():
        agent_id = agent.pk
        routing.rebalance_agent(agent_id)
        for task in Task.objects.select_for_update().filter(route_type=RouteType.BY_IDS).order_by("pk"):
            ids = (task.route_config or {}).get("ids") or []
            if agent_id in ids:
                old = routing.agents_for(task)
                task.route_config = {"ids": [i for i in ids if i != agent_id]}
                task.revision = F("revision") + 1
                task.save(update_fields=["route_config", "revision", "updated_at"])
                task.refresh_from_db()
                routing.notify_changed(task, old)
        recording.record(
            ActivityType.DELETED_TASK_AGENT, agent, details={"agent_id": agent_id, "agent_name": agent.name}
        )
        agent.delete()
        transaction.on_commit(partial(events.agent_removed, agent_id))


def register_agent(key: AgentKey, name: str, *, version: str = "", host_id: int | None = None) -> TaskAgent:
    """The agent ``name`` of the key's team, created on first connection (for the WebSocket part).

    A name is unique per team; an existing agent keeps its tags and its enabled switch.
    """
    name = clean_name(name)
    agent, _ = TaskAgent.objects.get_or_create(
        scope=key.team_id or 0, name=name, defaults={"team_id": key.team_id, "agent_key": key}
    )
    agent.version = (version or "")[:64]
    agent.last_seen_at = timezone.now()
    fields = ["version", "last_seen_at"]
    if host_id is not None:
        agent.host_id = host_id
        fields.append("host")
    agent.save(update_fields=fields)
    return agent


# --- Agent keys -------------------------------------------------------------------------------------


def new_agent_key_text() -> str:
    """A random agent key that never starts with "-": ``fleet-task-agent --key -x...`` would read
    it as an option (one key in 64 would, from ``token_urlsafe`` alone)."""
    while True:
        raw = secrets.token_urlsafe(KEY_BYTES)
        if not raw.startswith("-"):
            return raw


def create_agent_key(*, name: Any, team_id: int | None, user: Any = None) -> tuple[AgentKey, str]:
    """A new key: the object, and the key itself, which is shown this once and never stored."""
    name = clean_name(name)
    _check_unique(AgentKey, "agent key", name, team_id, None)
    raw = new_agent_key_text()
    key = AgentKey(name=name, team_id=team_id, key_digest=key_digest(raw))
    key.created_by = user if getattr(user, "pk", None) else None
    with transaction.atomic():
        _save_unique(key, "agent key")
        recording.record(ActivityType.CREATED_AGENT_KEY, key, details={"key_name": name, "team_id": team_id})
    return key, raw


def authenticate_key(raw: str) -> AgentKey | None:
    """The key an agent presents, or ``None``; marks it used (for the WebSocket part)."""
    if not isinstance(raw, str) or not raw:
        return None
    digest = key_digest(raw)
    key = AgentKey.objects.filter(key_digest=digest).first()
    if key is None or not hmac.compare_digest(key.key_digest, digest):
        return None
    AgentKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now())
    return key


def delete_agent_key(key: AgentKey) -> None:
    with transaction.atomic():
        recording.record(
            ActivityType.DELETED_AGENT_KEY, key, details={"key_name": key.name, "team_id": key.team_id}
        )
        key.delete()


# --- Metric destinations ----------------------------------------------------------------------------


def clean_url(kind: Any, url: Any) -> str:
    if kind not in DestinationKind.values:
        raise _refuse("kind", f"Unknown kind {kind!r} ({', '.join(DestinationKind.values)}).")
    url = (url or "").strip() if isinstance(url, str) or url is None else None
    if url is None:
        raise _refuse("url", "A URL is a string.")
    if kind == DestinationKind.SERVER:
        if url:
            raise _refuse("url", "A destination of kind server has no URL.")
        return ""
    schemes = ("tcp", "udp") if kind == DestinationKind.GRAPHITE else ("http", "https")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _refuse("url", "Not a valid URL.") from None
    if parts.username or parts.password:
        raise _refuse("url", "Put credentials in a header (write-only), not in the URL.")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise _refuse("url", "A URL has no spaces or control characters.")
    if parts.scheme not in schemes or not parts.hostname:
        example = "tcp://graphite:2003" if kind == DestinationKind.GRAPHITE else "https://prom/api/v1/write"
        raise _refuse("url", f"A {kind} URL looks like {example} ({' or '.join(schemes)}).")
    if kind == DestinationKind.GRAPHITE and port is None:
        raise _refuse("url", "A graphite URL needs a port (tcp://graphite:2003).")
    if len(url) > 2048:
        raise _refuse("url", "At most 2048 characters.")
    return url


def clean_headers(incoming: Any, stored: dict[str, Any]) -> dict[str, Any]:
    """Sealed headers; ``None`` keeps the stored ones, a value sent as the marker keeps its own."""
    if incoming is None:
        return dict(stored)
    if not isinstance(incoming, dict) or len(incoming) > 50:
        raise _refuse("headers", "An object of at most 50 header names to values.")
    kept = {name.lower(): value for name, value in stored.items()}
    result = {}
    for name, value in incoming.items():
        if not HEADER_NAME_RE.match(str(name)):
            raise _refuse("headers", f"Invalid header name {name!r}.")
        if value == sealed.MARKER:
            if name.lower() not in kept:
                raise _refuse("headers", f"{name} has no stored value to keep: send the value itself.")
            result[name] = kept[name.lower()]
            continue
        if not isinstance(value, str) or "\n" in value or "\r" in value or len(value) > 8192:
            raise _refuse("headers", f"The value of {name} must be one line of text.")
        result[name] = sealed.seal_value(value, sealed.header_purpose(name))
    return result


def open_headers(destination: MetricDestination) -> dict[str, str]:
    """The headers in clear, for the agents that send metrics there."""
    return {
        k: sealed.unseal_value(v, sealed.header_purpose(k)) for k, v in (destination.headers or {}).items()
    }


def save_destination(
    *,
    destination: MetricDestination | None = None,
    name: Any = None,
    kind: Any = None,
    url: Any = None,
    headers: Any = None,
    enabled: bool | None = None,
    team_id: int | None = None,
) -> MetricDestination:
    creating = destination is None
    if not creating:
        team_id = destination.team_id
        name = destination.name if name is None else name
        kind = destination.kind if kind is None else kind
        url = destination.url if url is None else url
        enabled = destination.enabled if enabled is None else enabled
    errors: dict[str, list[str]] = {}
    values: dict[str, Any] = {}
    stored = destination.headers if destination is not None else {}
    for key, check in (
        ("name", lambda: clean_name(name)),
        ("url", lambda: clean_url(kind, url)),
        ("headers", lambda: clean_headers(headers, stored)),
    ):
        try:
            values[key] = check()
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                errors.setdefault(field, []).extend(messages)
    if errors:
        raise ValidationError(errors)
    _check_unique(
        MetricDestination, "destination", values["name"], team_id, None if creating else destination.pk
    )
    destination = destination or MetricDestination(team_id=team_id)
    destination.name, destination.kind, destination.url = values["name"], kind, values["url"]
    destination.headers, destination.enabled = values["headers"], True if enabled is None else bool(enabled)
    with transaction.atomic():
        _save_unique(destination, "destination")
        details = {
            "destination_name": destination.name,
            "kind": kind,
            "url": destination.url,
            "team_id": team_id,
        }
        recording.record(
            ActivityType.CREATED_METRIC_DESTINATION if creating else ActivityType.EDITED_METRIC_DESTINATION,
            destination,
            details=details,
        )
        transaction.on_commit(partial(events.destinations_changed, team_id))
    return destination


def delete_destination(destination: MetricDestination) -> None:
    with transaction.atomic():
        details = {"destination_name": destination.name, "team_id": destination.team_id}
        recording.record(ActivityType.DELETED_METRIC_DESTINATION, destination, details=details)
        destination.delete()
        transaction.on_commit(partial(events.destinations_changed, details["team_id"]))
