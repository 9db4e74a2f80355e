"""``kind: task`` and ``kind: metric_destination``: what task agents run, and where their metrics go.

Both are created or updated by (team, name), the team given by name (absent: global), and every
write goes through :mod:`taskserver.services`, REST's and the console's path: the same checks
(plugin schemas, intervals, routes, URLs), the agents told on commit, and nothing new invented
here. Two things differ from REST because a YAML file is kept in git:

- a ``byIds`` route names its agents (``config: {agents: [web-1, web-2]}``), resolved among the
  agents of the task's team, since numeric ids differ from one server to the next;
- secret values (a plugin's ``secret: true`` settings, destination headers) are write-only as on
  REST: a value given as ``"<secret>"`` (what ``export`` writes) or left out keeps the stored one,
  and a value given in clear that equals the stored one is no change. Comparing the opened values
  is what lets a re-applied file be "unchanged": sealing the same value twice never gives the same
  text, and an update would raise the task's revision and make every agent restart it.

Plans and the audit trail show secrets as ``"<secret>"`` (``"<new secret>"`` where the value
changes), never their value.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.core.exceptions import ValidationError

from hosts.models import Team
from packs.spec import values
from packs.spec.context import GLOBAL, Context
from packs.spec.documents import Document
from packs.spec.labels import messages
from packs.spec.plan import UNCHANGED, compare
from taskserver import plugins, sealed, services
from taskserver.models import MetricDestination, RouteType, Task, TaskAgent

TASK_KEYS = {"name", "team", "plugin", "settings", "interval", "route", "enabled"}
DESTINATION_KEYS = {"name", "team", "kind", "url", "headers", "enabled"}
ROUTE_KEYS = {"type", "config"}
# The config key holding a route's list, as written in specs (byIds names agents; REST takes ids).
ROUTE_LISTS = {RouteType.BY_TAGS: "tags", RouteType.BY_LABELS: "labels", RouteType.BY_IDS: "agents"}
NEW_SECRET = "<new secret>"  # in plans, where a secret value changes


def display_name(team: str, name: str) -> str:
    return f"{name} (team {team})" if team else name


def _team(spec: dict[str, Any], ctx: Context) -> tuple[str, int | None]:
    """The team's name ("" when global) and id (``None`` also for a team this apply creates)."""
    team = values.text(spec, "team", max_length=255)
    if team and not ctx.team_known(team):
        raise values.Invalid(f'team "{team}" does not exist (and no team document defines it)')
    return team, ctx.teams[team].pk if team in ctx.teams else None


def _service(call: Any, *args: Any, **kwargs: Any) -> Any:
    """A ``taskserver.services`` check, its refusal as one message naming the field."""
    try:
        return call(*args, **kwargs)
    except ValidationError as exc:
        raise values.Invalid(messages(exc)) from None


def _mapping(spec: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = spec.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise values.Invalid(f"{key} must be a mapping")
    problem = values.json_problem(value, key)
    if problem:
        raise values.Invalid(problem)
    return value


def _scope_words(team: str) -> str:
    return f'in team "{team}"' if team else "among the global agents"


def agent_ids(names: list[str], team: str, team_id: int | None) -> list[int]:
    """The ids of the agents ``names`` of the task's team (``team_id`` ``None``: global)."""
    agents = TaskAgent.objects.filter(scope=team_id or 0, name__in=names)
    found = dict(agents.values_list("name", "pk"))
    missing = [name for name in names if name not in found]
    if missing or (team and team_id is None):
        listed = ", ".join(f'"{name}"' for name in (missing or names))
        raise values.Invalid(
            f"route: no agent named {listed} {_scope_words(team)} "
            "(an agent is known once it has connected with a key of that team)"
        )
    return sorted(found[name] for name in names)


def agent_names(ids: list[int]) -> list[str]:
    """How a ``byIds`` route is written in specs: its agents' names, sorted."""
    names = dict(TaskAgent.objects.filter(pk__in=ids).values_list("pk", "name"))
    return sorted(names.get(pk, f"#{pk}") for pk in ids)


def _route(spec: dict[str, Any], team: str, team_id: int | None, ctx: Context) -> dict[str, Any]:
    """``{"type", "config"}`` as specs write it, checked by ``services.clean_route`` (byIds names
    agents; labels may be defined by this same apply)."""
    route = spec.get("route")
    if route is None:
        raise values.Invalid("route is required: {type: any} or byTags, byIds, byLabels with a config")
    if not isinstance(route, dict) or set(route) - ROUTE_KEYS:
        raise values.Invalid("route must be a mapping with type and config")
    try:
        kind = values.text(route, "type", required=True)
    except values.Invalid as exc:
        raise values.Invalid(f"route: {exc} (any, byTags, byIds or byLabels)") from None
    config = route.get("config")
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise values.Invalid("route: config must be a mapping")
    key = ROUTE_LISTS.get(kind)
    if kind == RouteType.BY_IDS and set(config) != {key}:
        raise values.Invalid("route: a byIds route names its agents: config: {agents: [name, ...]}")
    if key and key in config:
        try:
            config = {**config, key: values.identifiers(config, key)}
        except values.Invalid as exc:
            raise values.Invalid(f"route: config.{exc}") from None
    if kind == RouteType.BY_IDS:
        names = config[key]
        if not names:
            raise values.Invalid("route: config.agents must be a non-empty list of agent names")
        if len(names) > services.MAX_ROUTE_ITEMS:
            raise values.Invalid(f"route: config.agents may hold at most {services.MAX_ROUTE_ITEMS} names")
        _service(services.clean_route, kind, {"ids": agent_ids(names, team, team_id)}, team_id, ctx.user)
        return {"type": kind, "config": {key: sorted(names)}}
    if kind == RouteType.BY_LABELS and set(config) == {key}:
        missing = [name for name in config[key] if not ctx.label_known(name)]
        if missing:
            raise values.Invalid(f"route: no label named {', '.join(missing)}")
        if any(name not in ctx.labels for name in config[key]):  # defined by this apply
            return {"type": kind, "config": {key: sorted(config[key])}}
    return {"type": kind, "config": _service(services.clean_route, kind, config, team_id, ctx.user)}


def _service_route(route: dict[str, Any], team: str, team_id: int | None) -> tuple[str, dict[str, Any]]:
    """The route as ``services.save_task`` takes it (agents' names back to ids)."""
    if route["type"] == RouteType.BY_IDS:
        try:
            ids = agent_ids(route["config"]["agents"], team, team_id)
        except values.Invalid as exc:
            raise ValidationError(str(exc)) from None
        return route["type"], {"ids": ids}
    return route["type"], route["config"]


# --- task -------------------------------------------------------------------------------------------


def _merged_settings(plugin: str, given: dict[str, Any], task: Task | None) -> dict[str, Any]:
    """The settings in clear as they will be saved: ``services.clean_settings``' merge, whose
    stored secrets count only for the same plugin; a marker with nothing stored is refused here,
    with a message that says what to do."""
    stored = sealed.open_settings(task.settings) if task is not None and task.plugin == plugin else {}
    secrets = plugins.secret_fields(plugin)
    for name, value in given.items():
        if name in secrets and value == sealed.MARKER and name not in stored:
            raise values.Invalid(
                f'settings.{name}: "{sealed.MARKER}" keeps the stored secret, but this task has none '
                "for this plugin: give the value"
            )
    return sealed.merge(given, stored, secrets)


def _settings_views(
    plugin: str, merged: dict[str, Any], task: Task | None
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(stored, wanted) settings as plans show them: equal exactly when the values are."""
    if task is None:
        old = None
        stored: dict[str, Any] = {}
    else:
        old = sealed.masked(task.settings)
        stored = sealed.open_settings(task.settings)
    secrets = plugins.secret_fields(plugin)
    new = {}
    for name, value in merged.items():
        if name not in secrets:
            new[name] = value
        elif old is not None and old.get(name) == sealed.MARKER and stored.get(name) == value:
            new[name] = sealed.MARKER
        else:
            new[name] = NEW_SECRET
    return old, new


def _parse_task(doc: Document, ctx: Context) -> tuple[str, str, dict[str, Any]]:
    spec = doc.spec
    name = _service(services.clean_name, values.text(spec, "name", required=True, max_length=255))
    team, team_id = _team(spec, ctx)
    wanted = {
        "plugin": values.text(spec, "plugin", required=True, max_length=128),
        "settings": _mapping(spec, "settings") or {},
        "interval": _service(
            services.clean_interval, values.integer(spec, "interval", required=True, minimum=-values.MAX_INT)
        ),
        "route": _route(spec, team, team_id, ctx),
        "enabled": values.boolean(spec, "enabled", default=True),
    }
    return team, name, wanted


def _current_task(task: Task) -> dict[str, Any]:
    config = task.route_config or {}
    if task.route_type == RouteType.BY_IDS:
        config = {"agents": agent_names(config.get("ids") or [])}
    return {
        "plugin": task.plugin,
        "interval": task.interval,
        "route": {"type": task.route_type, "config": config},
        "enabled": task.enabled,
    }


def _existing_by_team_and_name(model: Any, docs: list[Document]) -> dict[tuple[str, str], Any]:
    """The stored objects the documents name, by (team name or GLOBAL, name): one query."""
    return {
        (obj.team.name if obj.team_id else GLOBAL, obj.name): obj
        for obj in model.objects.select_related("team").filter(
            name__in=[doc.name.strip() for doc in docs if doc.name]
        )
    }


def plan_tasks(docs: list[Document], ctx: Context) -> None:
    seen: dict[tuple[str, str], Document] = {}
    existing = _existing_by_team_and_name(Task, docs)
    for doc in docs:
        try:
            team, name, wanted = _parse_task(doc, ctx)
            task = existing.get((team, name))
            merged = _merged_settings(wanted["plugin"], wanted["settings"], task)
            _service(services.clean_settings, wanted["plugin"], merged, None)
        except values.Invalid as exc:
            ctx.error(doc, str(exc))
            continue
        if ctx.repeated(seen, (team, name), "task", name, doc):
            continue
        ctx.ignore("task", set(doc.spec) - TASK_KEYS)
        old_settings, new_settings = _settings_views(wanted["plugin"], merged, task)
        current = {**_current_task(task), "settings": old_settings} if task else None
        shown = {**wanted, "settings": new_settings}
        change = compare("task", display_name(team, name), doc.where, current, shown)
        ctx.plan.changes.append(change)
        if change.action != UNCHANGED:
            ctx.plan.steps.append(partial(_save_task, ctx, team, name, wanted))


def _save_task(ctx: Context, team: str, name: str, wanted: dict[str, Any]) -> None:
    """Through ``services.save_task``: checked again in the transaction, the revision raised,
    ``any`` placement, the audit trail and the agents told on commit."""
    team_id = Team.objects.get(name=team).pk if team else None
    task = Task.objects.filter(scope=team_id or 0, name=name).first()
    route_type, route_config = _service_route(wanted["route"], team, team_id)
    try:
        services.save_task(
            task=task,
            name=name,
            plugin=wanted["plugin"],
            settings=wanted["settings"],
            interval=wanted["interval"],
            route_type=route_type,
            route_config=route_config,
            enabled=wanted["enabled"],
            team_id=team_id,
            user=ctx.user,
        )
    except services.NameTaken as exc:
        raise ValidationError(exc.message) from None


# --- metric_destination ---------------------------------------------------------------------------------


def _headers(
    given: dict[str, Any] | None, destination: MetricDestination | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any]]:
    """(headers for ``save_destination``, stored view, wanted view) of a destination.

    ``None`` (no ``headers`` key) keeps every stored header, as on REST; a value given as the
    marker keeps its stored value (header names match whatever their case).
    """
    stored = services.open_headers(destination) if destination is not None else {}
    old = {name: sealed.MARKER for name in stored} if destination is not None else None
    if given is None:
        return None, old, dict(old or {})
    _service(services.clean_headers, given, destination.headers if destination is not None else {})
    kept = {name.lower(): value for name, value in stored.items()}
    new = {}
    for name, value in given.items():
        if value == sealed.MARKER:  # clean_headers above refused a marker with nothing stored
            value = kept[name.lower()]
        new[name] = sealed.MARKER if name in stored and stored[name] == value else NEW_SECRET
    return given, old, new


def _parse_destination(doc: Document, ctx: Context) -> tuple[str, str, dict[str, Any]]:
    spec = doc.spec
    name = _service(services.clean_name, values.text(spec, "name", required=True, max_length=255))
    team, _ = _team(spec, ctx)
    kind = values.text(spec, "kind", required=True)
    wanted = {
        "kind": kind,
        "url": _service(services.clean_url, kind, values.text(spec, "url", max_length=2048)),
        "enabled": values.boolean(spec, "enabled", default=True),
    }
    return team, name, wanted


def plan_destinations(docs: list[Document], ctx: Context) -> None:
    seen: dict[tuple[str, str], Document] = {}
    existing = _existing_by_team_and_name(MetricDestination, docs)
    for doc in docs:
        try:
            team, name, wanted = _parse_destination(doc, ctx)
            destination = existing.get((team, name))
            headers, old_headers, new_headers = _headers(_mapping(doc.spec, "headers"), destination)
        except values.Invalid as exc:
            ctx.error(doc, str(exc))
            continue
        if ctx.repeated(seen, (team, name), "metric_destination", name, doc):
            continue
        ctx.ignore("metric_destination", set(doc.spec) - DESTINATION_KEYS)
        current = None
        if destination is not None:
            current = {
                "kind": destination.kind,
                "url": destination.url,
                "headers": old_headers,
                "enabled": destination.enabled,
            }
        shown = {**wanted, "headers": new_headers}
        change = compare("metric_destination", display_name(team, name), doc.where, current, shown)
        ctx.plan.changes.append(change)
        if change.action != UNCHANGED:
            ctx.plan.steps.append(partial(_save_destination, team, name, {**wanted, "headers": headers}))


def _save_destination(team: str, name: str, wanted: dict[str, Any]) -> None:
    """Through ``services.save_destination`` (checked again in the transaction, audited)."""
    team_id = Team.objects.get(name=team).pk if team else None
    destination = MetricDestination.objects.filter(scope=team_id or 0, name=name).first()
    try:
        services.save_destination(destination=destination, name=name, team_id=team_id, **wanted)
    except services.NameTaken as exc:
        raise ValidationError(exc.message) from None


# --- export ---------------------------------------------------------------------------------------------


def export_task(task: Task) -> dict[str, Any]:
    """A task as a spec; secret settings are written as the marker, never their value."""
    current = _current_task(task)
    return {
        "name": task.name,
        "team": task.team.name if task.team_id else "",
        "plugin": task.plugin,
        "settings": sealed.masked(task.settings),
        "interval": task.interval,
        "route": current["route"],
        "enabled": task.enabled,
    }


def export_destination(destination: MetricDestination) -> dict[str, Any]:
    """A destination as a spec; header values are written as the marker."""
    return {
        "name": destination.name,
        "team": destination.team.name if destination.team_id else "",
        "kind": destination.kind,
        "url": destination.url,
        "headers": {name: sealed.MARKER for name in destination.headers or {}},
        "enabled": destination.enabled,
    }
