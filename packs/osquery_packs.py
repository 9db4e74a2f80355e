"""Importing osquery's own pack files (``packs/*.conf`` JSON) as a pack of saved queries.

osquery reads these files more leniently than strict JSON: ``osx-attacks.conf`` continues SQL
strings over several lines with a trailing backslash, and osquery's config loader also allows
``#`` and ``//`` comment lines. :func:`relax_json` accepts those (plus trailing commas) while
keeping positions, so a real syntax error still points at the right line of the file.

Each query becomes a saved query (global, not scheduled by itself) and a scheduled query of the
pack, named as in the file. A pack query reuses a saved query of the same name when the SQL is
the same, or when only this pack uses it (a re-import); otherwise it gets its own saved query
``<pack>/<name>``, so importing one pack never rewrites the SQL another pack runs. Queries that
cannot be used are reported one by one and left out (or, with ``strict``, nothing is imported).
The import itself goes through the spec engine, so it is one transaction with a plan.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hosts.choices import LINUX_PLATFORMS
from packs.models import Pack, ScheduledQuery
from packs.services import PACK_PLATFORMS
from packs.spec import Plan, apply_documents
from packs.spec import values as spec_values
from packs.spec.documents import Document
from packs.spec.labels import identifiers_of
from packs.spec.queries import checked_sql
from queries.models import Query
from queries.services import QUERY_PLATFORMS, validate_interval, validate_version

QUERY_KEYS = {
    "query",
    "interval",
    "description",
    "value",
    "platform",
    "version",
    "shard",
    "snapshot",
    "removed",
}
QUERY_KEYS |= {"denylist"}
PACK_KEYS = {"queries", "platform", "version", "shard", "discovery"}
_POSIX = ("darwin", "linux", "freebsd")


class PackFileError(Exception):
    """The file cannot be imported; ``problems`` lists the per-query reasons, if any."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


@dataclass
class PackQuery:
    key: str
    sql: str
    interval: int
    description: str = ""
    platform: str = ""
    version: str = ""
    shard: int | None = None
    snapshot: bool | None = None
    removed: bool | None = None
    denylist: bool | None = None


@dataclass
class OsqueryPack:
    platform: str = ""
    version: str = ""
    shard: int | None = None
    queries: list[PackQuery] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    total: int = 0  # queries in the file, imported or not


def relax_json(text: str) -> tuple[str, list[int]]:
    """Strict JSON from osquery's lenient form, and each output character's offset in ``text``."""
    out: list[str] = []
    origin: list[int] = []
    i, n, in_string = 0, len(text), False
    while i < n:
        char = text[i]
        if in_string:
            if char == "\\" and text.startswith("\n", i + 1):
                i += 2  # a line continuation inside a string: osquery joins the lines
                continue
            if char == "\\" and text.startswith("\r\n", i + 1):
                i += 3
                continue
            if char == "\\" and i + 1 < n:
                out += [char, text[i + 1]]
                origin += [i, i + 1]
                i += 2
                continue
            in_string = char != '"'
        elif char == '"':
            in_string = True
        elif char == "#" or text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        elif char == ",":
            j = i + 1
            while j < n and text[j] in " \t\r\n":
                j += 1
            if j < n and text[j] in "}]":
                i += 1  # a trailing comma
                continue
        out.append(char)
        origin.append(i)
        i += 1
    return "".join(out), origin


def _load(text: str, source: str) -> tuple[Any, list[str]]:
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in items:
            if key in seen:
                duplicates.append(key)
            seen[key] = value
        return seen

    relaxed, origin = relax_json(text)
    try:
        return json.loads(relaxed, object_pairs_hook=pairs), duplicates
    except json.JSONDecodeError as exc:
        offset = origin[exc.pos] if exc.pos < len(origin) else len(text)
        line = text.count("\n", 0, offset) + 1
        column = offset - text.rfind("\n", 0, offset)
        raise PackFileError(f"{source}: not valid JSON at line {line}, column {column}: {exc.msg}.") from None


def _query(key: str, item: Any, pack: OsqueryPack) -> PackQuery:
    if not isinstance(item, dict):
        raise spec_values.Invalid("not a JSON object")
    if len(key) > 255 or not key.strip():
        raise spec_values.Invalid("the name must be 1 to 255 characters")
    unknown = sorted(set(item) - QUERY_KEYS)
    if unknown:
        pack.problems.append(f'query "{key}": ignored unknown key(s) {", ".join(unknown)}')
    description = spec_values.text(item, "description")
    value = spec_values.text(item, "value")
    if value and value != description:
        description = f"{description} — {value}" if description else value
    return PackQuery(
        key=key,
        sql=checked_sql(item.get("query")),
        interval=spec_values.checked(
            lambda: validate_interval(spec_values.integer(item, "interval", required=True), minimum=1),
            "interval",
        ),
        description=description,
        platform=spec_values.platforms(item, PACK_PLATFORMS),
        version=spec_values.checked(lambda: validate_version(spec_values.text(item, "version")), "version"),
        shard=spec_values.integer(item, "shard", default=None, maximum=100),
        snapshot=spec_values.boolean(item, "snapshot", default=None),
        removed=spec_values.boolean(item, "removed", default=None),
        denylist=spec_values.boolean(item, "denylist", default=None),
    )


def parse_pack(text: str, source: str) -> OsqueryPack:
    """Read a pack file; queries that cannot be used are listed in ``problems`` and left out."""
    data, duplicates = _load(text, source)
    if not isinstance(data, dict) or not isinstance(data.get("queries"), dict):
        raise PackFileError(f'{source}: an osquery pack is a JSON object with a "queries" object.')
    pack = OsqueryPack()
    try:
        pack.platform = spec_values.platforms(data, PACK_PLATFORMS)
        pack.version = spec_values.checked(
            lambda: validate_version(spec_values.text(data, "version")), "version"
        )
        pack.shard = spec_values.integer(data, "shard", default=None, maximum=100)
    except spec_values.Invalid as exc:
        raise PackFileError(f"{source}: {exc}.") from None
    if data.get("discovery"):
        pack.problems.append(
            "discovery queries are not supported: the pack's queries run on every host the pack targets"
        )
    unknown = sorted(set(data) - PACK_KEYS)
    if unknown:
        pack.problems.append(f"ignored unknown top-level key(s) {', '.join(unknown)}")
    pack.problems.extend(f'query "{key}" appears more than once; the last one is used' for key in duplicates)
    pack.total = len(data["queries"])
    for key, item in data["queries"].items():
        try:
            pack.queries.append(_query(key, item, pack))
        except spec_values.Invalid as exc:
            pack.problems.append(f'query "{key}": {exc}; not imported')
    return pack


def _saved_platform(platform: str) -> str:
    """A saved query's platforms from osquery's filter (``posix`` spelled out, ``any`` = all)."""
    items = [item for item in platform.split(",") if item]
    if not items or {"any", "all"} & set(items):
        return ""
    result: list[str] = []
    for item in items:
        for name in _POSIX if item == "posix" else ("linux" if item in LINUX_PLATFORMS else item,):
            if name in QUERY_PLATFORMS and name not in result:
                result.append(name)
    return ",".join(result)


def _saved_names(pack: OsqueryPack, name: str) -> dict[str, tuple[str, bool]]:
    """Pack query key -> (saved query name, whether to write that saved query)."""
    candidates = {q.key for q in pack.queries} | {f"{name}/{q.key}" for q in pack.queries}
    existing = {q.name: q for q in Query.objects.filter(team__isnull=True, name__in=candidates)}
    uses = list(
        ScheduledQuery.objects.filter(query__in=list(existing.values())).values_list("query_id", "pack__name")
    )
    by_this = {query_id for query_id, pack_name in uses if pack_name == name}
    by_others = {query_id for query_id, pack_name in uses if pack_name != name}
    result = {}
    for query in pack.queries:
        found = existing.get(query.key)
        if found is None or (found.pk in by_this and found.pk not in by_others):
            result[query.key] = (query.key, True)  # new, or this pack's own from an earlier import
        elif found.query == query.sql:
            result[query.key] = (query.key, False)  # the same SQL: share it
        else:
            result[query.key] = (f"{name}/{query.key}", True)
    return result


def _current_targets(pack: Pack | None) -> tuple[dict[str, list[str]], bool, str | None]:
    if pack is None:
        return {}, False, None
    targets = {
        "labels": list(pack.target_labels.values_list("name", flat=True)),
        "teams": list(pack.target_teams.values_list("name", flat=True)),
        "hosts": identifiers_of(list(pack.target_hosts.values_list("id", flat=True))),
    }
    return targets, pack.disabled, pack.description


def pack_documents(pack: OsqueryPack, name: str, source: str) -> list[Document]:
    """Spec documents (saved queries, then the pack) equivalent to the parsed pack file.

    An existing pack keeps its targets, description and disabled flag: re-importing the file
    updates its queries without undoing what was set in the console.
    """
    names = _saved_names(pack, name)
    raws: list[dict[str, Any]] = []
    entries = []
    for query in pack.queries:
        saved, write = names[query.key]
        if write:
            spec = {
                "name": saved,
                "description": query.description,
                "query": query.sql,
                "platform": _saved_platform(query.platform or pack.platform),
                "min_osquery_version": query.version or pack.version,
            }
            raws.append({"apiVersion": "v1", "kind": "query", "spec": spec})
        entry: dict[str, Any] = {
            "query": saved,
            "name": query.key,
            "description": query.description,
            "interval": query.interval,
            "platform": query.platform,
            "version": query.version or pack.version,
        }
        shard = query.shard if query.shard is not None else pack.shard
        flags = {
            "snapshot": query.snapshot,
            "removed": query.removed,
            "shard": shard,
            "denylist": query.denylist,
        }
        entry.update({key: value for key, value in flags.items() if value is not None})
        entries.append(entry)
    targets, disabled, description = _current_targets(Pack.objects.filter(name=name).first())
    pack_spec = {
        "name": name,
        "description": description if description is not None else f"osquery pack imported from {source}",
        "platform": pack.platform,
        "disabled": disabled,
        "targets": targets,
        "queries": entries,
    }
    raws.append({"apiVersion": "v1", "kind": "pack", "spec": pack_spec})
    documents = []
    for index, raw in enumerate(raws, start=1):
        documents.append(
            Document(source=source, index=index, raw=raw, kind=raw["kind"], raw_kind=raw["kind"])
        )
    return documents


def import_pack(
    text: str, name: str, source: str, *, dry_run: bool = False, strict: bool = False, user: Any = None
) -> tuple[OsqueryPack, Plan]:
    """Parse and import a pack file as pack ``name``; raises :class:`PackFileError` when impossible."""
    pack = parse_pack(text, source)
    if not name.strip():
        raise PackFileError("The pack needs a name.")
    if strict and pack.problems:
        message = f"{source}: {len(pack.problems)} problem(s) in strict mode; nothing was imported."
        raise PackFileError(message, pack.problems)
    if not pack.queries:
        raise PackFileError(f"{source}: no query could be imported.", pack.problems)
    return pack, apply_documents(pack_documents(pack, name.strip(), source), dry_run=dry_run, user=user)
