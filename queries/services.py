"""Saved queries: the one write path the console, REST and config-as-code share.

Checks on save, as Fleet does: a name unique within its team (or among global queries), SQL that
parses (``queries.sql.validate_sql``: a syntax error is an error with the parser's message),
platforms osquery knows, an interval osquery accepts. Tables osquery does not have on the query's
platforms are only a *warning* (``queries.schema``), returned to the caller: extension tables are
legitimate, and the schema may be older than the agents.

Saving invalidates the osquery config (``packs.signals``), since scheduled queries are part of it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.db import transaction

from fleet.validation import FieldErrors
from queries.models import LoggingMode, Query, QueryReport
from queries.schema import table_warnings
from queries.sql import validate_sql

MAX_INTERVAL = 604_800  # osquery drops scheduled queries with an interval outside 1..604800 s
QUERY_PLATFORMS = ("darwin", "linux", "windows", "chrome", "freebsd")
# Fleet's and people's names for platforms (the 2021 query library says "macOS, Linux, Windows").
PLATFORM_ALIASES = {
    "macos": "darwin",
    "mac": "darwin",
    "osx": "darwin",
    "ms windows": "windows",
    "win": "windows",
    "chromeos": "chrome",
}
_VERSION = re.compile(r"^\d+(\.\d+){0,3}$")


def normalize_platforms(value: str | Iterable[str] | None, allowed: Iterable[str] = QUERY_PLATFORMS) -> str:
    """A canonical ``darwin,linux`` list (empty: all platforms), or ``ValidationError``.

    Accepts comma lists with any spacing and case, and the display names Fleet's YAML uses.
    """
    if value is None:
        return ""
    parts = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    allowed = tuple(allowed)
    result: list[str] = []
    unknown: list[str] = []
    for part in parts:
        name = part.strip().lower()
        if not name:
            continue
        name = PLATFORM_ALIASES.get(name, name)
        if name not in allowed:
            unknown.append(part.strip())
        elif name not in result:
            result.append(name)
    if unknown:
        names = ", ".join(repr(u) for u in unknown)
        raise ValidationError(f"Unknown platform {names}; use a comma list of {', '.join(allowed)}.")
    return ",".join(result)


def validate_version(value: str | None) -> str:
    """A minimum osquery version such as ``5.12`` or ``5.12.1`` (empty: any)."""
    value = (value or "").strip()
    if value and not _VERSION.match(value):
        raise ValidationError(f"'{value}' is not a version such as 5.12.1.")
    return value


def validate_interval(value: object, minimum: int = 0) -> int:
    try:
        interval = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise ValidationError("The interval must be a whole number of seconds.") from None
    if not minimum <= interval <= MAX_INTERVAL:
        raise ValidationError(f"The interval must be between {minimum} and {MAX_INTERVAL} seconds.")
    return interval


def sql_warnings(sql: str, platform: str) -> list[str]:
    """Schema warnings for this SQL on these platforms (the SQL is assumed to parse)."""
    return table_warnings(sql, [p for p in platform.split(",") if p])


def query_warnings(query: Query) -> list[str]:
    return sql_warnings(query.query, query.platform)


def check_query(query: Query) -> list[str]:
    """Normalise and check a query in place; raise ``ValidationError`` by field, else return warnings."""
    found = FieldErrors()
    check = found.check

    def name() -> None:
        query.name = (query.name or "").strip()
        if not query.name:
            raise ValidationError("A query needs a name.")
        if len(query.name) > 255:
            raise ValidationError("The name is longer than 255 characters.")
        clash = Query.objects.filter(team_scope=str(query.team_id) if query.team_id else "", name=query.name)
        if clash.exclude(pk=query.pk).exists():
            scope = "this team" if query.team_id else "the global queries"
            raise ValidationError(f"A query named '{query.name}' already exists in {scope}.")

    def sql() -> None:
        query.query = validate_sql(query.query)

    def platform() -> None:
        query.platform = normalize_platforms(query.platform)

    def version() -> None:
        query.min_osquery_version = validate_version(query.min_osquery_version)

    def interval() -> None:
        query.interval = validate_interval(query.interval)

    def logging() -> None:
        if query.logging not in LoggingMode.values:
            raise ValidationError(f"Logging must be one of {', '.join(LoggingMode.values)}.")

    check("name", name)
    check("query", sql)
    check("platform", platform)
    check("min_osquery_version", version)
    check("interval", interval)
    check("logging", logging)
    query.description = (query.description or "").strip()
    found.raise_if_any()
    return query_warnings(query)


def save_query(query: Query) -> list[str]:
    """Check and save a query (create or update); return the schema warnings."""
    warnings = check_query(query)
    before = (
        Query.objects.filter(pk=query.pk).values_list("query", "discard_data").first() if query.pk else None
    )
    with transaction.atomic():
        query.save()
        # As in Fleet: results of the old SQL would not match the new one, and "discard data"
        # means no report at all.
        if before is not None and (before[0] != query.query or (query.discard_data and not before[1])):
            from queries.reports import forget_totals  # reports import the log path, which imports us

            QueryReport.objects.filter(query=query).delete()
            transaction.on_commit(forget_totals)
    return warnings
