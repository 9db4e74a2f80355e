"""``kind: label``: dynamic labels (SQL) and manual ones (a list of hosts), by name.

Fleet's own example files give a dynamic label's ``query`` as the *name* of a saved query
(``query: pending_updates``); when the value names a global saved query (existing, or defined
in the same apply) that query's SQL is used, and the plan says so.

Checks and writes are ``hosts.labels``' (``clean_label_fields``, ``create_label``,
``update_label``), the same as the console's and REST's: builtin names are reserved, the
membership type of a label cannot change, manual labels list known hosts (by hostname, UUID,
serial or id) and listing ``hosts`` replaces the membership; new SQL for a dynamic label empties
its membership until hosts answer the new query.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.core.exceptions import ValidationError

from hosts.labels import clean_label_fields, create_label, update_label
from hosts.models import Host, Label, LabelMembership, LabelType
from packs.spec import values
from packs.spec.context import GLOBAL, Context
from packs.spec.documents import Document
from packs.spec.plan import UNCHANGED, compare

LABEL_KEYS = {"name", "description", "query", "platform", "platforms", "label_membership_type", "hosts"}
FIELDS = ("description", "query", "platform", "label_membership_type")
HOST_VALUES = ("id", "uuid", "hostname", "hardware_serial")


def host_identifier(host: dict[str, Any]) -> str:
    """How a host is written in specs and plans: its UUID (stable), else hostname, serial or id."""
    return host["uuid"] or host["hostname"] or host["hardware_serial"] or str(host["id"])


def identifiers_of(host_ids: set[int] | list[int]) -> list[str]:
    hosts = Host.objects.filter(id__in=list(host_ids)).values(*HOST_VALUES)
    return sorted(host_identifier(host) for host in hosts)


def messages(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return "; ".join(f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items())
    return " ".join(exc.messages)


def _parse(doc: Document, ctx: Context) -> tuple[str, dict[str, Any], list[str] | None, list[str]]:
    spec = doc.spec
    notes: list[str] = []
    name = values.text(spec, "name", required=True, max_length=255)
    membership = values.text(spec, "label_membership_type").lower()
    if membership == "host_vitals":
        raise values.Invalid("host_vitals labels are not supported yet")
    hosts = values.identifiers(spec, "hosts") if "hosts" in spec else None
    query = values.text(spec, "query")
    if not membership:
        membership = "manual" if hosts is not None and not query else "dynamic"
    if membership == "dynamic" and query:
        saved_sql = ctx.query_sql(GLOBAL, query)
        if saved_sql is not None:
            notes.append(f'query taken from the saved query "{query}"')
            query = saved_sql
    wanted = {
        "description": values.text(spec, "description"),
        "query": query,
        "platform": values.label_platform(spec),
        "label_membership_type": membership,
    }
    return name, wanted, hosts, notes


def plan_labels(docs: list[Document], ctx: Context) -> None:
    seen: dict[str, Document] = {}
    for doc in docs:
        try:
            name, wanted, hosts, notes = _parse(doc, ctx)
        except values.Invalid as exc:
            ctx.error(doc, str(exc))
            ctx.planned_labels.add(doc.name.strip())  # so that packs targeting it do not report it too
            continue
        existing = ctx.labels.get(name)
        ctx.planned_labels.add(name)
        if existing and existing.label_type == LabelType.BUILTIN:
            ctx.error(doc, f'"{name}" is a builtin label; it cannot be changed')
            continue
        if ctx.repeated(seen, name.lower(), "label", name, doc):
            continue
        try:
            clean = clean_label_fields(
                name=name, hosts=hosts, instance=existing, **_without(wanted, "description")
            )
        except ValidationError as exc:
            ctx.error(doc, messages(exc))
            continue
        ctx.ignore("label", set(doc.spec) - LABEL_KEYS)
        host_ids = clean.pop("host_ids")
        wanted = {**wanted, **{key: clean[key] for key in FIELDS if key in clean}}
        current = {field: getattr(existing, field) for field in FIELDS} if existing else None
        if host_ids is not None:
            wanted["hosts"] = identifiers_of(host_ids)
            if existing:
                members = LabelMembership.objects.filter(label=existing).values_list("host_id", flat=True)
                current["hosts"] = identifiers_of(list(members))
        change = compare("label", name, doc.where, current, wanted)
        change.notes.extend(notes)
        ctx.plan.changes.append(change)
        if change.action != UNCHANGED:
            ctx.plan.steps.append(partial(_save, ctx, name, _without(wanted, "hosts"), hosts))


def _without(mapping: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k != key}


def _save(ctx: Context, name: str, fields: dict[str, Any], hosts: list[str] | None) -> None:
    label = Label.objects.filter(name=name).first()
    if label is None:
        label = create_label(name=name, hosts=hosts, author=ctx.user, **fields)
    else:
        update_label(label, hosts=hosts, **fields)
    ctx.labels_changed.add(label.pk)
