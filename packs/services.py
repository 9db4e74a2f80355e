"""Packs and their scheduled queries: the checks every surface (console, REST, specs) shares.

The served config keys packs by name, next to Fleet's own ``Global`` and ``team-<id>`` packs, so
those names are reserved. Intervals, shards and platforms are checked against what osquery
accepts, because osquery silently drops a query it does not like (osquery-protocol §5).
Saving anything here invalidates the served configs (``packs.signals``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.db import transaction

from fleet.validation import FieldErrors
from hosts.models import Host, Label, Team
from packs.models import Pack, ScheduledQuery
from queries.services import normalize_platforms, validate_interval, validate_version

GLOBAL_PACK = "Global"
TEAM_PACK_PREFIX = "team-"
_RESERVED = re.compile(r"^(global|team-\d+)$", re.IGNORECASE)
# osquery's pack/query platform strings (substring matched, osquery-protocol §5).
PACK_PLATFORMS = (
    "darwin",
    "linux",
    "windows",
    "freebsd",
    "chrome",
    "posix",
    "ubuntu",
    "centos",
    "any",
    "all",
)


def team_pack_name(team_id: int) -> str:
    return f"{TEAM_PACK_PREFIX}{team_id}"


def check_pack(pack: Pack) -> None:
    """Normalise and check a pack in place; raise ``ValidationError`` by field."""
    errors: dict[str, list[str]] = {}
    pack.name = (pack.name or "").strip()
    if not pack.name:
        errors["name"] = ["A pack needs a name."]
    elif _RESERVED.match(pack.name):
        errors["name"] = [f"'{pack.name}' is reserved for the packs Fleet builds from scheduled queries."]
    elif len(pack.name) > 255:
        errors["name"] = ["The name is longer than 255 characters."]
    elif Pack.objects.filter(name=pack.name).exclude(pk=pack.pk).exists():
        errors["name"] = [f"A pack named '{pack.name}' already exists."]
    try:
        pack.platform = normalize_platforms(pack.platform, PACK_PLATFORMS)
    except ValidationError as exc:
        errors["platform"] = exc.messages
    pack.description = (pack.description or "").strip()
    if errors:
        raise ValidationError(errors)


def save_pack(
    pack: Pack,
    hosts: Iterable[Host | int] | None = None,
    labels: Iterable[Label | int] | None = None,
    teams: Iterable[Team | int] | None = None,
) -> Pack:
    """Check and save a pack; targets given as ``None`` are left as they are."""
    check_pack(pack)
    with transaction.atomic():
        pack.save()
        for related, targets in (
            (pack.target_hosts, hosts),
            (pack.target_labels, labels),
            (pack.target_teams, teams),
        ):
            if targets is not None:
                related.set(list(targets))
    return pack


def check_scheduled(scheduled: ScheduledQuery) -> None:
    """Normalise and check a scheduled query in place; raise ``ValidationError`` by field."""
    found = FieldErrors()
    check = found.check

    def name() -> None:
        scheduled.name = (scheduled.name or "").strip()
        if not scheduled.name and scheduled.query_id:
            scheduled.name = scheduled.query.name
        if not scheduled.name:
            raise ValidationError("A scheduled query needs a name.")
        if len(scheduled.name) > 255:
            raise ValidationError("The name is longer than 255 characters.")
        clash = ScheduledQuery.objects.filter(pack_id=scheduled.pack_id, name=scheduled.name)
        if scheduled.pack_id and clash.exclude(pk=scheduled.pk).exists():
            raise ValidationError(f"This pack already schedules a query named '{scheduled.name}'.")

    def interval() -> None:
        scheduled.interval = validate_interval(scheduled.interval, minimum=1)

    def shard() -> None:
        if scheduled.shard is not None and not 0 <= scheduled.shard <= 100:
            raise ValidationError("The shard is a percentage of hosts, between 0 and 100.")

    def platform() -> None:
        scheduled.platform = normalize_platforms(scheduled.platform, PACK_PLATFORMS)

    def version() -> None:
        scheduled.version = validate_version(scheduled.version)

    if not scheduled.query_id:
        found.add("query", "Choose the saved query to schedule.")
    check("name", name)
    check("interval", interval)
    check("shard", shard)
    check("platform", platform)
    check("version", version)
    scheduled.description = (scheduled.description or "").strip()
    found.raise_if_any()


def save_scheduled(scheduled: ScheduledQuery) -> ScheduledQuery:
    check_scheduled(scheduled)
    with transaction.atomic():
        scheduled.save()
    return scheduled
