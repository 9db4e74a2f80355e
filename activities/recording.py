"""Writing activities: :func:`record` and the create/edit/delete helpers built on it.

Recording is explicit: the write paths call these functions (the services for bulk operations,
live queries and specs; ``activities.admin_hooks`` and ``activities.api_hooks`` for the console's
and REST's create/edit/delete of any model). No model signal records anything.

Two write paths may see the same change, and each change is recorded once:

- a console or REST hook *announces* the type it is about to record (``announce``); a service
  recording that same type meanwhile is dropped (creating a team in the console goes through
  ``hosts.services.create_team``; the hook records it, with every value, after the save);
- the console logs deletions *before* deleting; a service recording the same deletion after it
  (``hosts.services.delete_hosts``) is dropped;
- a service may say its record *covers* generic ones (``covers=``): moving a host to another
  team is a ``transferred_hosts``, and the console's ``edited_host`` for the same save is dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from django.db import models

from activities import context, forwarding
from activities.choices import Surface
from activities.models import Activity
from activities.snapshots import describe, diff, fleet_details, snapshot, subject_of, team_of, type_of

_AUTO: Any = object()


def _team_id(team: Any) -> int | None:
    if team is None or isinstance(team, int):
        return team
    return team.pk


def _address(acting: context.Acting) -> str:
    if acting.address or acting.request is None:
        return acting.address
    from fleet.api_auth import client_address

    try:
        return client_address(acting.request)[:45]
    except Exception:  # a synthetic request (tests, login signals) may lack META
        return ""


def _build(
    activity_type: str,
    *,
    acting: context.Acting,
    actor: Any,
    surface: str | None,
    subject: tuple[str, str, str],
    team_id: int | None,
    details: dict[str, Any],
) -> Activity:
    user = acting.actor() if actor is _AUTO else actor
    details = dict(details)
    if user is not None:
        name, email = user.get_username(), getattr(user, "email", "") or ""
        if acting.actor_name and acting.surface == Surface.COMMAND:
            details.setdefault("operator", acting.actor_name)  # who ran the command, as whom
    else:
        name, email = acting.actor_name, ""
    object_type, object_id, object_name = subject
    return Activity(
        actor=user if user is not None and user.pk else None,
        actor_name=name[:255],
        actor_email=email[:254],
        type=activity_type,
        surface=surface or acting.surface,
        object_type=object_type[:64],
        object_id=object_id[:64],
        object_name=object_name[:255],
        team_id=team_id,
        client_address=_address(acting),
        details=details,
    )


def announce(activity_type: str) -> None:
    """A generic hook will record ``activity_type`` for the operation under way (see above)."""
    context.current().state["announced"].add(activity_type)


def _claim(
    acting: context.Acting,
    activity_type: str,
    subject: tuple[str, str, str],
    generic: bool,
    covers: Iterable[tuple[str, str, Any]] = (),
) -> bool:
    """Whether to write this record, updating the context's bookkeeping (module docstring)."""
    key = (activity_type, subject[0], subject[1])
    state = acting.state
    if generic:
        if key in state["covered"]:
            return False
        state["generic_keys"].add(key)
        return True
    if activity_type in state["announced"] or key in state["generic_keys"]:
        return False
    state["covered"].update((t, o, str(i)) for t, o, i in covers)
    return True


def record(
    activity_type: str,
    obj: models.Model | None = None,
    *,
    details: dict[str, Any] | None = None,
    team: Any = _AUTO,
    actor: Any = _AUTO,
    surface: str | None = None,
    object_type: str | None = None,
    object_id: Any = None,
    object_name: str | None = None,
    generic: bool = False,
    covers: Iterable[tuple[str, str, Any]] = (),
) -> Activity | None:
    """Record one activity now; the actor and surface come from ``activities.context``.

    ``obj`` names the object (type, id and name as :mod:`activities.snapshots` describes it) and,
    unless ``team`` is given, its team; the ``object_*`` arguments override or replace it.
    ``covers`` lists ``(type, object_type, object_id)`` of generic records this one makes
    redundant. Returns ``None`` when nothing was written (suppressed, or recorded already).
    """
    acting = context.current()
    if acting.suppressed:
        return None
    subject = subject_of(obj) if obj is not None else ("", "", "")
    subject = (
        object_type if object_type is not None else subject[0],
        str(object_id) if object_id is not None else subject[1],
        object_name if object_name is not None else subject[2],
    )
    if not _claim(acting, activity_type, subject, generic, covers):
        return None
    if team is _AUTO:
        team = team_of(obj) if obj is not None else None
    activity = _build(
        activity_type,
        acting=acting,
        actor=actor,
        surface=surface,
        subject=subject,
        team_id=_team_id(team),
        details=details or {},
    )
    activity.save()
    forwarding.enqueue([activity])
    return activity


Entry = tuple[tuple[str, str, str], "int | None", dict[str, Any]]  # (object type/id/name, team id, details)


def record_many(
    activity_type: str,
    entries: Iterable[Entry],
    *,
    actor: Any = _AUTO,
    surface: str | None = None,
    generic: bool = False,
) -> list[Activity]:
    """Many activities of one type, in one bulk insert (bulk deletes of thousands of hosts).

    Each entry is ``(subject, team_id, details)``, ``subject`` being ``(object_type, object_id,
    object_name)``.
    """
    acting = context.current()
    if acting.suppressed:
        return []
    built = [
        _build(
            activity_type,
            acting=acting,
            actor=actor,
            surface=surface,
            subject=subject,
            team_id=team_id,
            details=details,
        )
        for subject, team_id, details in entries
        if _claim(acting, activity_type, subject, generic)
    ]
    if not built:
        return []
    if forwarding.enabled() and not _returns_ids():
        for activity in built:  # the audit lines need the ids this database cannot hand back
            activity.save()
    else:
        Activity.objects.bulk_create(built, batch_size=500)
    forwarding.enqueue(built)
    return built


def _returns_ids() -> bool:
    from django.db import connection

    return bool(connection.features.can_return_rows_from_bulk_insert)


# --- the generic create / edit / delete records -------------------------------------------------


def _change_details(obj: models.Model, verb: str, **values: Any) -> dict[str, Any]:
    details = fleet_details(obj)
    if verb in describe(obj).types:  # a type Fleet names for several verbs: edited_enroll_secrets
        details["action"] = verb
    details.update(values)
    return details


def record_created(
    obj: models.Model, *, details: dict[str, Any] | None = None, generic: bool = False, **kwargs: Any
) -> Activity | None:
    """``created_<object>`` with the new object's values under ``after``."""
    activity_type = type_of(obj, "created")
    values = _change_details(obj, "created", after=snapshot(obj), **(details or {}))
    return record(activity_type, obj, details=values, generic=generic, **kwargs)


def record_edited(
    obj: models.Model,
    before: dict[str, Any],
    *,
    after: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
    generic: bool = False,
    **kwargs: Any,
) -> Activity | None:
    """``edited_<object>`` with ``changes``: ``{field: {"before": ..., "after": ...}}``.

    Nothing is recorded when nothing changed and there is nothing else to say (a form saved
    as it was).
    """
    changes = diff(before, after if after is not None else snapshot(obj))
    if not changes and not details:
        return None
    activity_type = type_of(obj, "edited")
    values = _change_details(obj, "edited", changes=changes, **(details or {}))
    return record(activity_type, obj, details=values, generic=generic, **kwargs)


def record_deleted(
    obj: models.Model,
    before: dict[str, Any] | None = None,
    *,
    details: dict[str, Any] | None = None,
    generic: bool = False,
    **kwargs: Any,
) -> Activity | None:
    """``deleted_<object>`` with the values it had under ``before``."""
    activity_type = type_of(obj, "deleted")
    values = _change_details(
        obj, "deleted", before=before if before is not None else snapshot(obj), **(details or {})
    )
    return record(activity_type, obj, details=values, generic=generic, **kwargs)


def prepare_deletions(
    objects: Sequence[models.Model], *, generic: bool = False, **kwargs: Any
) -> Callable[[], list[Activity]]:
    """Take the objects' values now; the returned function records ``deleted_*`` for each.

    For a caller that records after deleting: the values (and related counts) are those the
    objects had, and each activity names its object even once ``Model.delete()`` cleared its id.
    """
    by_type: dict[str, list[Entry]] = {}
    for obj in objects:  # user roles are deleted_user_global_role or _team_role, row by row
        activity_type = type_of(obj, "deleted")
        details = _change_details(obj, "deleted", before=snapshot(obj))
        by_type.setdefault(activity_type, []).append((subject_of(obj), team_of(obj), details))

    def write() -> list[Activity]:
        written: list[Activity] = []
        for activity_type, entries in by_type.items():
            written += record_many(activity_type, entries, generic=generic, **kwargs)
        return written

    return write


def record_deleted_many(
    objects: Sequence[models.Model], *, generic: bool = False, **kwargs: Any
) -> list[Activity]:
    """``deleted_<object>`` for each of many objects, in one insert per type."""
    return prepare_deletions(objects, generic=generic, **kwargs)()
