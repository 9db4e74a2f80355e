"""The activities of operations that are not one object's create/edit/delete.

Services call these at their write paths (one line each), whatever the surface: moving, refetching
and deleting hosts (``hosts.services``), agent options, live queries (``campaigns.services``),
spec applies (``packs.spec.engine``) and deletions done by commands.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django.db.models import QuerySet

from activities import context
from activities.choices import ActivityType, Surface
from activities.recording import prepare_deletions, record
from activities.snapshots import describe, diff, json_value

MAX_LISTED = 1000  # ids and names listed in one activity's details; the count is always exact
_CHUNK = 5000


def _hosts(host_ids: Sequence[int]) -> list[tuple[int, str, int | None]]:
    """``(id, display name, team id)`` of hosts, read in chunks (any number of ids)."""
    from hosts.models import Host

    rows: list[tuple[int, str, int | None]] = []
    for start in range(0, len(host_ids), _CHUNK):
        chunk = host_ids[start : start + _CHUNK]
        for pk, computer, hostname, identifier, team_id in Host.objects.filter(id__in=chunk).values_list(
            "id", "computer_name", "hostname", "osquery_host_id", "team_id"
        ):
            rows.append((pk, computer or hostname or identifier, team_id))
    return sorted(rows)


def _host_lists(rows: list[tuple[int, str, int | None]]) -> dict[str, Any]:
    return {
        "host_ids": [pk for pk, _, _ in rows[:MAX_LISTED]],
        "host_display_names": [name for _, name, _ in rows[:MAX_LISTED]],
        "host_count": len(rows),
    }


def _single(rows: list[tuple[int, str, int | None]]) -> dict[str, Any]:
    """The object fields: the host itself when there is one."""
    if len(rows) == 1:
        return {"object_type": "host", "object_id": rows[0][0], "object_name": rows[0][1]}
    return {"object_type": "host", "object_name": f"{len(rows)} hosts"}


def hosts_refetched(host_ids: Iterable[int]) -> None:
    """``refetched_hosts``: one activity per request, for the team the hosts share (if one)."""
    rows = _hosts(sorted(set(host_ids)))
    if not rows:
        return
    teams = {team_id for _, _, team_id in rows}
    team = teams.pop() if len(teams) == 1 else None
    record(ActivityType.REFETCHED_HOSTS, team=team, details=_host_lists(rows), **_single(rows))


def hosts_transferred(host_ids: Iterable[int], team: Any) -> None:
    """Fleet's ``transferred_hosts``: the destination team (or none) and the hosts moved."""
    rows = _hosts(sorted(set(host_ids)))
    if not rows:
        return
    details = {
        "team_id": team.pk if team else None,
        "team_name": team.name if team else None,
        **_host_lists(rows),
    }
    record(
        ActivityType.TRANSFERRED_HOSTS,
        team=team,
        details=details,
        object_type="team" if team else "",
        object_id=team.pk if team else "",
        object_name=team.name if team else "No team",
        covers=[("edited_host", "host", pk) for pk, _, _ in rows],  # the console's host form
    )


@contextmanager
def deleting(queryset: QuerySet) -> Iterator[None]:
    """Record ``deleted_*`` for each object of ``queryset`` once the block deleting them succeeds.

    The objects are read before the block (their values are the activity's ``before``), in
    their own instances, so ``Model.delete()`` clearing a primary key does not blank the record.
    """
    fields = describe(queryset.model).fields
    if fields:
        queryset = queryset.only(*fields)
    write = prepare_deletions(list(queryset))
    yield
    write()


def agent_options_edited(team: Any, before: Any, after: Any) -> None:
    """Fleet's ``edited_agent_options`` (global when ``team`` is ``None``)."""
    from hosts.models import FleetSettings

    changes = diff({"agent_options": json_value(before)}, {"agent_options": json_value(after)})
    if not changes:
        return
    subject = team if team is not None else FleetSettings(pk=1)
    details = {
        "global": team is None,
        "team_id": team.pk if team else None,
        "team_name": team.name if team else None,
        "changes": changes,
    }
    record(ActivityType.EDITED_AGENT_OPTIONS, subject, team=team, details=details)


def live_query(campaign: Any, targets: Any, *, query_id: int | None = None, roles: Any = None) -> None:
    """Fleet's ``live_query``: who asked which SQL of which targets, and how many hosts it reached."""
    from hosts.permissions import visible_team_ids

    asked = {"hosts": list(targets.hosts), "labels": list(targets.labels), "teams": list(targets.teams)}
    if targets.all_hosts:
        asked["all"] = True
    user = campaign.created_by
    # The team it concerns, when that is plain: one team asked for, or a user of one team only.
    team_ids = visible_team_ids(user, roles) if roles is not None else None
    team: int | None = None
    if team_ids is not None and len(team_ids) == 1:
        team = next(iter(team_ids))
    elif len(targets.teams) == 1 and not (targets.hosts or targets.labels or targets.all_hosts):
        only = targets.teams[0]
        team = only if isinstance(only, int) else _team_id_named(str(only))
    details = {
        "sql": campaign.sql,
        "query_sql": campaign.sql,  # Fleet's key
        "query_id": query_id,
        "query_name": campaign.query_name or None,
        "targets": asked,
        "target_host_count": campaign.targeted_count,
        "targets_count": campaign.targeted_count,  # Fleet's key
        "online_count": campaign.online_count,
        "offline_count": campaign.offline_count,
    }
    record(ActivityType.LIVE_QUERY, campaign, actor=user, team=team, details=details)


def _team_id_named(name: str) -> int | None:
    from hosts.models import Team

    return Team.objects.filter(name=name.strip()).values_list("pk", flat=True).first()


# --- configuration as code ----------------------------------------------------------------------

SPEC_TYPES = {
    "query": ActivityType.APPLIED_SPEC_SAVED_QUERY,
    "report": ActivityType.APPLIED_SPEC_SAVED_QUERY,
    "pack": ActivityType.APPLIED_SPEC_PACK,
    "team": ActivityType.APPLIED_SPEC_TEAM,
    "label": ActivityType.APPLIED_SPEC_LABEL,
    "task": ActivityType.APPLIED_SPEC_TASK,
    "metric_destination": ActivityType.APPLIED_SPEC_METRIC_DESTINATION,
    "enroll_secret": ActivityType.EDITED_ENROLL_SECRETS,
    "config": ActivityType.EDITED_AGENT_OPTIONS,
}
_SPEC_OBJECTS = {"query": "saved_query", "report": "saved_query", "config": "fleet_settings"}


@contextmanager
def applying_spec(plan: Any, user: Any = None) -> Iterator[None]:
    """Around the steps of a spec apply: surface ``yaml``, one activity per kind changed.

    What the steps write through the services is not recorded again one object at a time: the
    plan already says, per object, what was created, updated or deleted and which fields changed.
    """
    acting = context.current()
    who: dict[str, Any] = {"user": user} if user is not None and acting.actor() is None else {}
    with context.acting_as(surface=Surface.YAML, **who):
        with context.suppressed():
            yield
        _record_plan(plan)


def _record_plan(plan: Any) -> None:
    by_kind: dict[str, list[Any]] = {}
    for change in plan.changes:
        if change.action != "unchanged":
            by_kind.setdefault(change.kind, []).append(change)
    for kind, changes in by_kind.items():
        subject: dict[str, Any] = {"object_type": _SPEC_OBJECTS.get(kind, kind)}
        if len(changes) == 1:
            subject["object_name"] = changes[0].name[:255]
        details = {"changes": [json_value(change.as_dict()) for change in changes]}
        if kind == "config":
            details.update({"global": True, "team_id": None, "team_name": None})
        record(SPEC_TYPES.get(kind, f"applied_spec_{kind}"), team=None, details=details, **subject)
