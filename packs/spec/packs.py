"""``kind: pack``: packs, their targets and scheduled queries, by name.

A pack's scheduled queries refer to saved queries by name (global ones; an entry may add
``team`` for a team's query), which may be defined in the same apply. The spec replaces the
pack's targets and scheduled queries: entries left out are removed, and a pack without
``targets`` reaches no host. Targets are labels and teams by name, as in Fleet, and also hosts
by identifier (hostname, UUID, serial), which Fleet's spec lacks but its packs have.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.core.exceptions import ValidationError

from hosts.labels import resolve_host_identifiers
from hosts.models import Label, Team
from packs.models import Pack, ScheduledQuery
from packs.services import PACK_PLATFORMS, check_pack, save_pack, save_scheduled
from packs.spec import values
from packs.spec.context import GLOBAL, Context
from packs.spec.documents import Document
from packs.spec.labels import identifiers_of, messages
from packs.spec.plan import UNCHANGED, compare
from packs.spec.queries import find
from queries.services import validate_interval, validate_version

PACK_KEYS = {"name", "description", "platform", "disabled", "targets", "queries"}
ENTRY_KEYS = {
    "query",
    "name",
    "description",
    "interval",
    "snapshot",
    "removed",
    "shard",
    "platform",
    "version",
    "denylist",
    "team",
}
TARGET_KEYS = ("labels", "teams", "hosts")
ENTRY_FIELDS = ("description", "interval", "snapshot", "removed", "shard", "platform", "version", "denylist")


def _entry(item: Any, position: int, ctx: Context) -> tuple[str, dict[str, Any]]:
    where = f"queries[{position}]"
    if not isinstance(item, dict):
        raise values.Invalid(f"{where} must be a mapping with at least query and interval")
    label = item.get("name") or item.get("query") or ""
    try:
        query = values.text(item, "query", required=True, max_length=255)
        name = values.text(item, "name", max_length=255) or query
        entry = {
            "query": query,
            "team": values.text(item, "team", max_length=255),
            "description": values.text(item, "description"),
            "interval": values.checked(
                lambda: validate_interval(values.integer(item, "interval", required=True), minimum=1),
                "interval",
            ),
            "snapshot": values.boolean(item, "snapshot", default=None),
            "removed": values.boolean(item, "removed", default=None),
            "shard": values.integer(item, "shard", default=None, maximum=100),
            "platform": values.platforms(item, PACK_PLATFORMS),
            "version": values.checked(lambda: validate_version(values.text(item, "version")), "version"),
            "denylist": values.boolean(item, "denylist", default=None),
        }
    except values.Invalid as exc:
        raise values.Invalid(f'{where} ("{label}"): {exc}') from None
    if ctx.query_sql(entry["team"], query) is None:
        scope = f' of team "{entry["team"]}"' if entry["team"] else ""
        raise values.Invalid(
            f'{where}: there is no saved query named "{query}"{scope} (define it in a kind: query document)'
        )
    ctx.ignore("pack query", set(item) - ENTRY_KEYS)
    return name, entry


def _parse(doc: Document, ctx: Context) -> tuple[str, dict[str, Any], dict[str, list[str]]]:
    spec = doc.spec
    name = values.text(spec, "name", required=True, max_length=255)
    targets_spec = spec.get("targets") or {}
    if not isinstance(targets_spec, dict):
        raise values.Invalid("targets must be a mapping with labels, teams and/or hosts")
    unknown = set(targets_spec) - set(TARGET_KEYS)
    if unknown:
        listed = ", ".join(sorted(unknown))
        raise values.Invalid(f"targets: unknown key(s) {listed} (use {', '.join(TARGET_KEYS)})")
    targets = {key: values.identifiers(targets_spec, key) for key in TARGET_KEYS}
    missing_labels = [label for label in targets["labels"] if not ctx.label_known(label)]
    if missing_labels:
        raise values.Invalid(f"targets.labels: no label named {', '.join(missing_labels)}")
    missing_teams = [team for team in targets["teams"] if not ctx.team_known(team)]
    if missing_teams:
        raise values.Invalid(f"targets.teams: no team named {', '.join(missing_teams)}")
    items = spec.get("queries") or []
    if not isinstance(items, list):
        raise values.Invalid("queries must be a list")
    entries: dict[str, dict[str, Any]] = {}
    for position, item in enumerate(items):
        entry_name, entry = _entry(item, position, ctx)
        if entry_name in entries:
            raise values.Invalid(f'queries[{position}]: the name "{entry_name}" is used twice in this pack')
        entries[entry_name] = entry
    wanted = {
        "description": values.text(spec, "description"),
        "platform": values.platforms(spec, PACK_PLATFORMS),
        "disabled": values.boolean(spec, "disabled"),
        "targets": {key: sorted(targets[key]) for key in ("labels", "teams")},
        "queries": entries,
    }
    return name, wanted, targets


def _current(pack: Pack) -> dict[str, Any]:
    return {
        "description": pack.description,
        "platform": pack.platform,
        "disabled": pack.disabled,
        "targets": {
            "labels": sorted(label.name for label in pack.target_labels.all()),
            "teams": sorted(team.name for team in pack.target_teams.all()),
            "hosts": identifiers_of([host.pk for host in pack.target_hosts.all()]),
        },
        "queries": {
            sq.name: {
                "query": sq.query.name,
                "team": sq.query.team.name if sq.query.team_id else GLOBAL,
                **{field: getattr(sq, field) for field in ENTRY_FIELDS},
            }
            for sq in pack.scheduled.all()
        },
    }


def plan_packs(docs: list[Document], ctx: Context) -> None:
    seen: dict[str, Document] = {}
    names = [doc.name.strip() for doc in docs if doc.name]
    existing = {
        pack.name: pack
        for pack in Pack.objects.filter(name__in=names).prefetch_related(
            "target_labels", "target_teams", "target_hosts", "scheduled__query__team"
        )
    }
    for doc in docs:
        try:
            name, wanted, targets = _parse(doc, ctx)
            host_ids = values.checked(partial(resolve_host_identifiers, targets["hosts"]), "targets.hosts")
        except values.Invalid as exc:
            ctx.error(doc, str(exc))
            continue
        if ctx.repeated(seen, name, "pack", name, doc):
            continue
        pack = existing.get(name)
        try:
            check_pack(Pack(pk=pack.pk if pack else None, name=name, platform=wanted["platform"]))
        except ValidationError as exc:
            ctx.error(doc, messages(exc))
            continue
        ctx.ignore("pack", set(doc.spec) - PACK_KEYS)
        wanted["targets"]["hosts"] = identifiers_of(host_ids)
        change = compare("pack", name, doc.where, _current(pack) if pack else None, wanted)
        ctx.plan.changes.append(change)
        if change.action != UNCHANGED:
            ctx.plan.steps.append(partial(_save, name, wanted, host_ids))


def _save(name: str, wanted: dict[str, Any], host_ids: set[int]) -> None:
    """Through ``packs.services``, the console's and REST's write path (it checks again)."""
    pack = Pack.objects.filter(name=name).first() or Pack(name=name)
    for key in ("description", "platform", "disabled"):
        setattr(pack, key, wanted[key])
    save_pack(
        pack,
        hosts=sorted(host_ids),
        labels=Label.objects.filter(name__in=wanted["targets"]["labels"]),
        teams=Team.objects.filter(name__in=wanted["targets"]["teams"]),
    )
    entries = wanted["queries"]
    pack.scheduled.exclude(name__in=list(entries)).delete()
    scheduled = {sq.name: sq for sq in pack.scheduled.all()}
    for entry_name, entry in entries.items():
        sq = scheduled.get(entry_name) or ScheduledQuery(pack=pack, name=entry_name)
        sq.query = find(entry["team"], entry["query"])
        for field in ENTRY_FIELDS:
            setattr(sq, field, entry[field])
        save_scheduled(sq)
