"""The label engine: which label queries a host gets, what its answers mean, and label writes.

Three kinds of labels (``hosts.models.Label``):

- **dynamic** (regular, with SQL): sent as ``fleet_label_query_<id>`` in ``distributed/read``
  when the host's labels are due (``OSQUERY_LABEL_UPDATE_INTERVAL`` plus the host's stable
  jitter) or a refetch was asked, and only when the label's platform matches the host's. A host
  is a member iff the query returned at least one row with status 0; a failed query leaves the
  membership as it was.
- **manual**: a list of hosts set by an admin; never sent to agents.
- **builtin** (All Hosts, macOS, ...): maintained by the server from the host's vitals
  whenever a host is saved with new platform facts (``hosts.labels_builtin`` says why).

The check-in path reads the list of dynamic labels from the cache (:func:`dynamic_labels`), never
the database; every label write drops that copy and whatever else depends on labels: the cached
check-in states of the hosts whose membership changed (their ``label_ids``) and the rendered
osquery configs (``packs.config.invalidate``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.utils import timezone

from fleet.numbers import parse_id
from hosts import nodekeys
from hosts.choices import LINUX_PLATFORMS
from hosts.details import ALWAYS_TRUE, platform_family
from hosts.identifiers import match_hosts, split_ids_and_names
from hosts.labels_builtin import RESERVED_NAMES, Vitals, builtin_names_for, install
from hosts.models import Host, Label, LabelMembership, LabelMembershipType, LabelType
from queries.sql import validate_sql

logger = logging.getLogger(__name__)

LABEL_PREFIX = "fleet_label_query_"
PLATFORMS = frozenset({"darwin", "windows", "linux", "chrome", "freebsd", *LINUX_PLATFORMS})
MAX_MANUAL_HOSTS = 100_000
_DYNAMIC_KEY = "labels:dynamic:1"
_BUILTIN_KEY = "labels:builtin:1"
_CACHE_TTL = 600  # a safety net only: every label write drops these keys
_VITAL_FIELDS = frozenset({"platform", "platform_like", "os_version"})
_CHUNK = 2000  # identifiers per IN (...) list, well under SQLite's variable limit


class UnknownLabelsError(LookupError):
    """Some label ids or names do not exist (the message lists them)."""


# --- the dynamic labels, as check-ins see them -----------------------------------------------


@dataclass(frozen=True, slots=True)
class LabelQuery:
    """A dynamic label as a check-in needs it."""

    id: int
    sql: str
    platforms: frozenset[str]  # empty: every platform

    def applies_to(self, platform: str, platform_like: str = "") -> bool:
        if not self.platforms:
            return True
        host_platforms = {platform, platform_family(platform, platform_like)}
        host_platforms.update(platform_like.replace(",", " ").split())
        return bool(self.platforms & host_platforms)


def split_platforms(value: str) -> frozenset[str]:
    return frozenset(p.strip().lower() for p in (value or "").split(",") if p.strip())


def dynamic_labels() -> tuple[LabelQuery, ...]:
    """Every dynamic label, from the cache (one indexed query to refill it after a change)."""
    found = cache.get(_DYNAMIC_KEY)
    if found is None:
        rows = (
            Label.objects.filter(
                label_type=LabelType.REGULAR, label_membership_type=LabelMembershipType.DYNAMIC
            )
            .exclude(query="")
            .order_by("id")
            .values_list("id", "query", "platform")
        )
        found = tuple(LabelQuery(id_, sql, split_platforms(platform)) for id_, sql, platform in rows)
        cache.set(_DYNAMIC_KEY, found, _CACHE_TTL)
    return found


def labels_due(state: nodekeys.HostState, now: float | None = None) -> bool:
    """Whether the host should run its label queries now (interval + jitter passed, or refetch)."""
    return state.refetch_requested or state.labels_due_at <= (time.time() if now is None else now)


def queries_for(state: nodekeys.HostState) -> dict[str, str]:
    """The label queries for this host, by distributed query name.

    Nothing while the host's platform is unknown: platform-restricted labels could not be chosen
    yet, and the labels stay due until the details (asked at once for new hosts) arrive.
    """
    if not state.platform:
        return {}
    return {
        f"{LABEL_PREFIX}{label.id}": label.sql
        for label in dynamic_labels()
        if label.applies_to(state.platform, state.platform_like)
    }


def add_due_queries(state: nodekeys.HostState, queries: dict[str, str], discovery: dict[str, str]) -> None:
    """Add the host's label queries to a ``distributed/read`` answer when they are due."""
    if labels_due(state):
        for name, sql in queries_for(state).items():
            queries[name] = sql
            discovery[name] = ALWAYS_TRUE


# --- answers from distributed/write ------------------------------------------------------------


def _label_id(name: str) -> int | None:
    suffix = name[len(LABEL_PREFIX) :] if name.startswith(LABEL_PREFIX) else ""
    return parse_id(suffix)


def ingest_results(
    state: nodekeys.HostState,
    rows: dict[str, list],
    statuses: dict[str, int],
    messages: dict[str, str],
) -> bool:
    """Apply the label answers of a ``distributed/write``; ``True`` when the host row changed.

    The caller then refreshes the host's cached state (its ``label_ids`` and when labels are
    next due). A write without label answers from a host whose labels are due, when no label
    applies to it, marks its labels fresh too: otherwise it would look them up at every check-in.
    """
    answered_names = rows.keys() | statuses.keys()
    named = {name: label_id for name in answered_names if (label_id := _label_id(name)) is not None}
    due = labels_due(state)
    if not (named or due):
        return False  # a live answer or details only: no need for the labels (a cache call)
    labels = dynamic_labels()
    known = {label.id for label in labels}
    answers: dict[int, bool] = {}
    answered = False
    for name, label_id in named.items():
        if label_id not in known:
            continue  # a label deleted since it was sent
        answered = True
        if statuses.get(name, 0) != 0:
            logger.info("host %s: label query %s failed: %s", state.id, name, messages.get(name, ""))
            continue  # membership unchanged, as in Fleet
        answers[label_id] = bool(rows.get(name))
    if not answered:
        nothing_to_ask = not any(label.applies_to(state.platform, state.platform_like) for label in labels)
        if not (due and state.platform and nothing_to_ask):
            return False
    record_results(state.id, answers)
    return True


def record_results(host_id: int, answers: dict[int, bool]) -> None:
    """Write a host's label answers (label id -> member) and mark its labels fresh: 3 queries."""
    joined = [label_id for label_id, member in answers.items() if member]
    left = [label_id for label_id, member in answers.items() if not member]
    with transaction.atomic():
        if left:
            LabelMembership.objects.filter(host_id=host_id, label_id__in=left).delete()
        if joined:
            LabelMembership.objects.bulk_create(
                [LabelMembership(host_id=host_id, label_id=label_id) for label_id in joined],
                ignore_conflicts=True,  # already a member: ``updated_at`` keeps when it joined
            )
        Host.objects.filter(id=host_id).update(label_updated_at=timezone.now())


def refresh_state(host_id: int) -> None:
    """Re-cache a host's check-in state after its labels changed (two indexed queries)."""
    host = Host.objects.filter(id=host_id).first()
    if host is not None:
        nodekeys.remember(host)


# --- builtin labels ------------------------------------------------------------------------------


def builtin_label_ids() -> dict[str, int]:
    """Builtin label ids by name, cached (they change only when builtins are installed)."""
    found = cache.get(_BUILTIN_KEY)
    if found is None:
        found = dict(Label.objects.filter(label_type=LabelType.BUILTIN).values_list("name", "id"))
        cache.set(_BUILTIN_KEY, found, _CACHE_TTL)
    return found


def ensure_builtin_labels() -> list[int]:
    """Create the builtin labels if missing and fill them (the data migration does it too)."""
    ids = install(Label, LabelMembership, Host)
    cache.delete_many([_BUILTIN_KEY, _DYNAMIC_KEY])
    nodekeys.forget_all()  # every host's label_ids may have changed
    return ids


def sync_builtin_membership(host: Host, created: bool = False) -> bool:
    """Put the host in exactly the builtin labels its vitals call for; ``True`` if that changed.

    ``created``: the row was just inserted, so it is in no label yet and no state of it can be
    cached (its key is new): the read and the cache drop are skipped (a fleet enrolling at once
    made the drop's change-stamp write and the misses it caused a fifth of an enrolment).
    """
    ids = builtin_label_ids()
    if not ids:
        return False
    wanted = {ids[name] for name in builtin_names_for(_vitals(host)) if name in ids}
    current: set[int] = (
        set()
        if created
        else set(
            LabelMembership.objects.filter(host_id=host.pk, label_id__in=ids.values()).values_list(
                "label_id", flat=True
            )
        )
    )
    if wanted == current:
        return False
    if current - wanted:
        LabelMembership.objects.filter(host_id=host.pk, label_id__in=current - wanted).delete()
    if wanted - current:
        LabelMembership.objects.bulk_create(
            [LabelMembership(host_id=host.pk, label_id=label_id) for label_id in wanted - current],
            ignore_conflicts=True,
        )
    if not created:
        nodekeys.forget([host.node_key_hash])
    return True


def _vitals(host: Host) -> Vitals:
    return Vitals(host.platform, host.platform_like, host.os_version)


@receiver(post_save, sender=Host, dispatch_uid="hosts.labels.builtin_membership")
def _host_saved(sender: type[Host], instance: Host, created: bool, raw: bool = False, **kwargs: Any) -> None:
    """Builtin labels follow the host's platform facts: at enrolment and when details change.

    A signal, so that every path that saves those facts (osquery and orbit enrolment, detail
    ingestion) keeps the builtins right; it runs inside ``save()``, before those paths re-cache
    the host's state, so the fresh ``label_ids`` are what gets cached.
    """
    update_fields = kwargs.get("update_fields")
    if raw or not (created or update_fields is None or _VITAL_FIELDS & set(update_fields)):
        return
    sync_builtin_membership(instance, created=created)


# --- writes: create, update, delete, manual membership ------------------------------------------


def invalidate(host_ids: Iterable[int] = ()) -> None:
    """Drop what depends on labels: the dynamic-label list, these hosts' cached states, the configs.

    The list and configs are dropped again once the transaction commits, so a check-in that read
    the old rows meanwhile cannot leave a stale copy behind.
    """
    from packs import config as osquery_config  # packs builds on hosts, not the other way round

    def drop() -> None:
        cache.delete(_DYNAMIC_KEY)
        osquery_config.invalidate()

    ids = sorted(set(host_ids))
    for start in range(0, len(ids), _CHUNK):
        nodekeys.forget_hosts(ids[start : start + _CHUNK])
    drop()
    transaction.on_commit(drop)


def _forget_members(label: Label) -> None:
    """Drop the cached states of a label's members (one join, however many members)."""
    nodekeys.forget(
        Host.objects.filter(label_memberships__label=label).values_list("node_key_hash", flat=True)
    )


def resolve_host_identifiers(identifiers: Sequence[Any]) -> set[int]:
    """Hosts by id, hostname, uuid or hardware serial; unknown ones are one ``ValidationError``.

    A hostname shared by several hosts names them all (as in Fleet's manual labels).
    """
    if len(identifiers) > MAX_MANUAL_HOSTS:
        raise ValidationError({"hosts": f"A manual label holds at most {MAX_MANUAL_HOSTS} hosts."})
    bad = [repr(i) for i in identifiers if not isinstance(i, (int, str)) or isinstance(i, bool)]
    if bad:
        raise ValidationError(
            {"hosts": f"Hosts are ids, hostnames, UUIDs or serials, not {', '.join(bad[:5])}."}
        )
    host_ids, missing = match_hosts(identifiers)
    if missing:
        more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise ValidationError({"hosts": f"Unknown host(s): {', '.join(missing[:20])}{more}."})
    return host_ids


def clean_label_fields(
    *,
    name: str,
    query: str = "",
    platform: str = "",
    label_membership_type: str = LabelMembershipType.DYNAMIC,
    hosts: Sequence[Any] | None = None,
    instance: Label | None = None,
) -> dict[str, Any]:
    """Check a label's fields (all errors at once, per field); return them normalised."""
    errors: dict[str, str] = {}
    name = (name or "").strip()
    if not name:
        errors["name"] = "A label needs a name."
    elif len(name) > 255:
        errors["name"] = "The name is longer than 255 characters."
    elif name.lower() in RESERVED_NAMES:
        errors["name"] = f'"{name}" is the name of a builtin label.'
    elif Label.objects.filter(name__iexact=name).exclude(pk=instance.pk if instance else None).exists():
        errors["name"] = f'A label named "{name}" already exists.'
    if label_membership_type not in LabelMembershipType.values:
        errors["label_membership_type"] = f"Choose one of: {', '.join(LabelMembershipType.values)}."
    elif instance is not None and label_membership_type != instance.label_membership_type:
        errors["label_membership_type"] = "A label's membership type cannot change; create a new label."
    platforms = split_platforms(platform)
    unknown = sorted(platforms - PLATFORMS)
    if unknown:
        errors["platform"] = (
            f"Unknown platform(s): {', '.join(unknown)}. Known: {', '.join(sorted(PLATFORMS))}."
        )
    query = (query or "").strip()
    if label_membership_type == LabelMembershipType.DYNAMIC:
        try:
            query = validate_sql(query)
        except ValidationError as exc:
            errors["query"] = " ".join(exc.messages)
        if hosts:
            errors["hosts"] = "Only manual labels have a list of hosts; a dynamic label's query decides."
    elif label_membership_type == LabelMembershipType.MANUAL and query:
        errors["query"] = "A manual label has no query: its hosts are listed."
    host_ids: set[int] | None = None
    if hosts is not None and "hosts" not in errors and label_membership_type == LabelMembershipType.MANUAL:
        try:
            host_ids = resolve_host_identifiers(hosts)
        except ValidationError as exc:
            errors.update({field: " ".join(msgs) for field, msgs in exc.message_dict.items()})
    if errors:
        raise ValidationError(errors)
    return {
        "name": name,
        "query": query,
        "platform": ",".join(sorted(platforms)),
        "label_membership_type": label_membership_type,
        "host_ids": host_ids,
    }


def _check_editable(label: Label) -> None:
    if label.label_type == LabelType.BUILTIN:
        raise PermissionDenied(
            f'"{label.name}" is a builtin label: Fleet maintains it and it cannot be changed.'
        )


@transaction.atomic
def create_label(
    *,
    name: str,
    description: str = "",
    query: str = "",
    platform: str = "",
    label_membership_type: str = LabelMembershipType.DYNAMIC,
    hosts: Sequence[Any] | None = None,
    author: Any = None,
) -> Label:
    """Create a regular label; a manual one gets ``hosts`` (ids, hostnames, UUIDs or serials)."""
    fields = clean_label_fields(
        name=name, query=query, platform=platform, label_membership_type=label_membership_type, hosts=hosts
    )
    host_ids = fields.pop("host_ids")
    label = Label.objects.create(description=description or "", author=author, **fields)
    if host_ids:
        LabelMembership.objects.bulk_create(LabelMembership(label=label, host_id=h) for h in sorted(host_ids))
    invalidate(host_ids=host_ids or ())
    return label


@transaction.atomic
def update_label(label: Label, **changes: Any) -> Label:
    """Change a regular label. New SQL empties its membership: hosts answer the new query when due.

    ``hosts`` (manual labels) replaces the member list.
    """
    _check_editable(label)
    hosts = changes.pop("hosts", None)
    allowed = {"name", "description", "query", "platform", "label_membership_type"}
    if set(changes) - allowed:
        raise ValidationError(f"Unknown label field(s): {', '.join(sorted(set(changes) - allowed))}.")
    current = {f: getattr(label, f) for f in allowed}
    merged = {**current, **{k: v if v is not None else "" for k, v in changes.items()}}
    fields = clean_label_fields(
        name=merged["name"],
        query=merged["query"],
        platform=merged["platform"],
        label_membership_type=merged["label_membership_type"],
        hosts=hosts,
        instance=label,
    )
    host_ids = fields.pop("host_ids")
    # Answers to another question, or from hosts that no longer get it, say nothing any more.
    new_question = fields["query"] != label.query or fields["platform"] != label.platform
    for field, value in {**fields, "description": merged["description"]}.items():
        setattr(label, field, value)
    label.save()
    changed: set[int] = set()
    if new_question and label.label_membership_type == LabelMembershipType.DYNAMIC:
        _forget_members(label)
        LabelMembership.objects.filter(label=label).delete()
    elif host_ids is not None:
        current = set(LabelMembership.objects.filter(label=label).values_list("host_id", flat=True))
        _replace_members(label, current, host_ids)
        changed = current ^ host_ids  # the hosts that joined or left
    invalidate(host_ids=changed)
    return label


def _replace_members(label: Label, current: set[int], wanted: set[int]) -> None:
    gone = sorted(current - wanted)
    for start in range(0, len(gone), _CHUNK):
        LabelMembership.objects.filter(label=label, host_id__in=gone[start : start + _CHUNK]).delete()
    LabelMembership.objects.bulk_create(
        (LabelMembership(label=label, host_id=h) for h in sorted(wanted - current)),
        batch_size=_CHUNK,
        ignore_conflicts=True,
    )


@transaction.atomic
def delete_label(label: Label) -> None:
    """Delete a regular label; its members' cached states and the configs are dropped."""
    _check_editable(label)
    _forget_members(label)
    label.delete()
    invalidate()


# --- targets (live queries, packs) ----------------------------------------------------------------


def find_labels(identifiers: Sequence[Any]) -> list[Label]:
    """Labels by id or name; unknown ones raise ``UnknownLabelsError`` listing them all."""
    ids, names = split_ids_and_names(identifiers)
    found = list(Label.objects.filter(Q(id__in=ids) | Q(name__in=names)))
    matched = {str(label.pk) for label in found} | {label.name for label in found}
    missing = [str(i).strip() for i in identifiers if str(i).strip() not in matched]
    if missing:
        raise UnknownLabelsError(f"unknown label(s): {', '.join(missing[:20])}")
    return found


def resolve_label_hosts(user: Any, identifiers: Sequence[Any]) -> set[int]:
    """The ids of the hosts in any of these labels (by id or name).

    Labels are global and every role may read them, so ``user`` does not narrow the labels;
    callers narrow the hosts to those the user may act on.
    """
    labels = find_labels(identifiers)
    return set(LabelMembership.objects.filter(label__in=labels).values_list("host_id", flat=True).distinct())
