"""The audit trail: every change, live query and login, who made it, when, from which surface.

The public API, importable before the app registry is ready (each call imports its module):

- ``record(type, obj=None, *, details=None, team=...)``: record one activity now, the actor and
  surface taken from ``activities.context``;
- ``record_created(obj)``, ``record_edited(obj, before)``, ``record_deleted(obj)``: the generic
  records with before/after values;
- ``snapshot(obj, fields=None)`` and ``diff(before, after)``: what an edit changed.

See docs/activities.md.
"""

from __future__ import annotations

from typing import Any


def record(activity_type: str, obj: Any = None, **kwargs: Any) -> Any:
    """Record one activity (``activities.recording.record``)."""
    from activities.recording import record as _record

    return _record(activity_type, obj, **kwargs)


def record_created(obj: Any, **kwargs: Any) -> Any:
    from activities.recording import record_created as _record

    return _record(obj, **kwargs)


def record_edited(obj: Any, before: dict[str, Any], **kwargs: Any) -> Any:
    from activities.recording import record_edited as _record

    return _record(obj, before, **kwargs)


def record_deleted(obj: Any, before: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    from activities.recording import record_deleted as _record

    return _record(obj, before, **kwargs)


def snapshot(obj: Any, fields: Any = None) -> dict[str, Any]:
    """The object's values as JSON, secrets redacted (``activities.snapshots.snapshot``)."""
    from activities.snapshots import snapshot as _snapshot

    return _snapshot(obj, fields)


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    from activities.snapshots import diff as _diff

    return _diff(before, after)
