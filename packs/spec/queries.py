"""``kind: query`` (and ``report``, Fleet's newer name): saved queries, unique by (team, name).

A spec describes the whole query, as in Fleet: a key left out takes its default on update
(``interval`` absent means not scheduled). The author is kept on update, and is the caller on
create when the apply comes through the REST API. Values are checked with the validators of
``queries.services`` (the console's and REST's rules), and tables osquery lacks on the query's
platforms are warnings in the plan, as they are elsewhere.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.core.exceptions import ValidationError

from hosts.models import Team
from packs.spec import values
from packs.spec.context import GLOBAL, Context
from packs.spec.documents import Document
from packs.spec.plan import UNCHANGED, compare
from queries.models import Query
from queries.services import save_query, sql_warnings, validate_interval, validate_version
from queries.sql import validate_sql

QUERY_KEYS = {
    "name",
    "description",
    "query",
    "platform",
    "platforms",
    "min_osquery_version",
    "interval",
    "logging",
    "observer_can_run",
    "automations_enabled",
    "discard_data",
    "team",
}
FIELDS = (
    "description",
    "query",
    "platform",
    "min_osquery_version",
    "interval",
    "logging",
    "observer_can_run",
    "automations_enabled",
    "discard_data",
)


def checked_sql(value: Any, key: str = "query") -> str:
    if not isinstance(value, str) or not value.strip():
        raise values.Invalid(f"{key} is required (osquery SQL)")
    try:
        return validate_sql(value)
    except ValidationError as exc:
        raise values.Invalid(f"{key}: {' '.join(exc.messages)}") from None


def parse(spec: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(team name or "", name, field values) of a query spec, or :class:`values.Invalid`."""
    name = values.text(spec, "name", required=True, max_length=255)
    team = values.text(spec, "team", max_length=255)
    wanted = {
        "description": values.text(spec, "description"),
        "query": checked_sql(spec.get("query")),
        "platform": values.platforms(spec),
        "min_osquery_version": values.checked(
            lambda: validate_version(values.text(spec, "min_osquery_version")), "min_osquery_version"
        ),
        "interval": values.checked(lambda: validate_interval(values.integer(spec, "interval")), "interval"),
        "logging": values.choice(spec, "logging", values.LOGGING_MODES, "snapshot"),
        "observer_can_run": values.boolean(spec, "observer_can_run"),
        "automations_enabled": values.boolean(spec, "automations_enabled"),
        "discard_data": values.boolean(spec, "discard_data"),
    }
    return team, name, wanted


def plan_queries(docs: list[Document], ctx: Context) -> None:
    seen: dict[tuple[str, str], Document] = {}
    for doc in docs:
        try:
            team, name, wanted = parse(doc.spec)
        except values.Invalid as exc:
            ctx.error(doc, str(exc))
            # Known by name all the same, so that packs using it do not report it missing too.
            team_name = doc.spec.get("team")
            ctx.planned_queries.setdefault((str(team_name or "").strip(), doc.name.strip()), "")
            continue
        if team and not ctx.team_known(team):
            ctx.error(doc, f'team "{team}" does not exist (and no team document defines it)')
            continue
        key = (team, name)
        if ctx.repeated(seen, key, "query", name, doc):
            continue
        ctx.ignore(doc.raw_kind.lower(), set(doc.spec) - QUERY_KEYS)
        ctx.planned_queries[key] = wanted["query"]
        existing = ctx.queries.get(key)
        current = {field: getattr(existing, field) for field in FIELDS} if existing else None
        change = compare("query", f"{name} (team {team})" if team else name, doc.where, current, wanted)
        ctx.plan.changes.append(change)
        if change.action != UNCHANGED:
            ctx.plan.warnings.extend(
                f"{doc.where}: {w}" for w in sql_warnings(wanted["query"], wanted["platform"])
            )
            ctx.plan.steps.append(partial(_save, team, name, wanted, ctx.user))


def find(team: str, name: str) -> Query | None:
    """A saved query by team name ("" for global) and name, as the database holds it now."""
    if team == GLOBAL:
        return Query.objects.filter(team__isnull=True, name=name).first()
    return Query.objects.filter(team__name=team, name=name).first()


def _save(team: str, name: str, wanted: dict[str, Any], author: Any) -> None:
    query = find(team, name)
    if query is None:
        query = Query(name=name, team=Team.objects.get(name=team) if team else None, author=author)
    for key, value in wanted.items():
        setattr(query, key, value)
    save_query(query)  # the shared write path: checks again inside the transaction
