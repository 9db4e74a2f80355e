"""What an object looked like: ``snapshot(obj)`` before and after a change, ``diff`` between them.

One generic helper records "every change" on every model without a hand-written activity per
field: the console and REST hooks take a snapshot before a write and after it, and store only
the fields that differ. Per model, :data:`DESCRIPTIONS` says what the trail calls it (Fleet's
names: a ``queries.Query`` is a ``saved_query``), which team it belongs to, what its name is,
and what more to include (a user's roles, a manual label's members, a pack's schedule).

Secrets never reach the trail: fields named like ``secret``, ``password``, ``token`` or
``key_hash`` are replaced by ``"<redacted …>"`` with a keyed digest, so an edit still shows
*that* the value changed without showing it (the digest is an HMAC under ``SECRET_KEY``).
Agent-reported timestamps (``auto_now`` fields, ``last_login``) are left out: they change on
their own and would turn every edit into noise.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import models

MAX_RELATED_IDS = 500  # many-to-many lists longer than this are summarised by their count
_SENSITIVE_PARTS = ("secret", "password", "token", "key_hash", "digest")
_SKIPPED_FIELDS = frozenset({"last_login", "updated_at"})


def redact(value: Any) -> str:
    """A stand-in for a secret: equal values give equal stand-ins, and nothing else leaks."""
    digest = hmac.new(settings.SECRET_KEY.encode(), str(value).encode(), hashlib.sha256).hexdigest()
    return f"<redacted {digest[:10]}>"


def is_sensitive(name: str) -> bool:
    lowered = name.lower()
    return any(part in lowered for part in _SENSITIVE_PARTS)


def json_value(value: Any) -> Any:
    """A value as JSON can hold it (datetimes as ISO 8601, decimals and UUIDs as strings)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (Decimal, UUID)):
        return str(value)
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_value(v) for v in value]
    if isinstance(value, (bytes, memoryview)):
        return f"<{len(value)} bytes>"
    return str(value)


@dataclass(frozen=True)
class Description:
    """How the trail names and scopes one model (see :data:`DESCRIPTIONS`)."""

    stem: str
    name: Callable[[Any], str] = str
    team: Callable[[Any], int | None] = lambda obj: getattr(obj, "team_id", None)
    fields: tuple[str, ...] | None = None  # None: every concrete field
    extras: Callable[[Any], dict[str, Any]] | None = None
    types: dict[str, str] = field(default_factory=dict)  # verb -> type, where Fleet names it so
    subject: Callable[[Any], tuple[str, str, str]] | None = None  # (object_type, id, name) override
    details: Callable[[Any], dict[str, Any]] | None = None  # Fleet's detail keys for the object

    def type_for(self, verb: str) -> str:
        return self.types.get(verb) or f"{verb}_{self.stem}"


def _roles_of_user(user: Any) -> dict[str, Any]:
    roles = {
        ("global" if team_id is None else f"team {team_id}"): role
        for team_id, role in user.fleet_roles.values_list("team_id", "role")
    } if user.pk else {}  # fmt: skip
    return {"roles": dict(sorted(roles.items()))}


def _label_members(label: Any) -> dict[str, Any]:
    if label.label_membership_type != "manual" or not label.pk:
        return {}
    return {"hosts": related_ids(label.memberships.values_list("host_id", flat=True))}


def _pack_schedule(pack: Any) -> dict[str, Any]:
    if not pack.pk:
        return {}
    rows = pack.scheduled.order_by("name").values_list("name", "query_id", "interval")
    return {"scheduled": [{"name": n, "query_id": q, "interval": i} for n, q, i in rows]}


def _team_secret_count(team: Any) -> dict[str, Any]:
    return {"enroll_secret_count": team.secrets.count()} if team.pk else {}


def _role_subject(role: Any) -> tuple[str, str, str]:
    user = role.user
    return "user", str(role.user_id), user.get_username() if user else ""


def _role_details(role: Any) -> dict[str, Any]:
    user = role.user
    return {
        "user_id": role.user_id,
        "user_name": user.get_username() if user else None,
        "user_email": getattr(user, "email", None),
        "role": role.role,
        "team_id": role.team_id,
        "team_name": _team_name(role.team_id),
    }


def _team_name(team_id: int | None) -> str | None:
    if team_id is None:
        return None
    from hosts.models import Team

    return Team.objects.filter(pk=team_id).values_list("name", flat=True).first()


def _fleet_ids(id_key: str, name_key: str, with_team: bool = False) -> Callable[[Any], dict[str, Any]]:
    def details(obj: Any) -> dict[str, Any]:
        data: dict[str, Any] = {id_key: obj.pk, name_key: str(getattr(obj, "name", obj))}
        if with_team:
            data["team_id"] = getattr(obj, "team_id", None)
            data["team_name"] = _team_name(data["team_id"])
        return data

    return details


def _secret_details(secret: Any) -> dict[str, Any]:
    return {"team_id": secret.team_id, "team_name": _team_name(secret.team_id), "global": not secret.team_id}


def _secret_name(secret: Any) -> str:
    """The scope, never the value: a secret's name in the trail is its team (or "global")."""
    return (_team_name(secret.team_id) or f"team {secret.team_id}") if secret.team_id else "global"


def _host_name(host: Any) -> str:
    return host.computer_name or host.hostname or host.osquery_host_id


def _usage_switch(fleet_settings: Any) -> dict[str, Any]:
    """The settings page's usage statistics checkbox, which the usage app keeps in its own row."""
    from usage.models import UsageStatistics

    enabled = UsageStatistics.objects.filter(pk=1).values_list("enabled", flat=True).first()
    return {"enable_analytics": enabled is not False}  # Fleet's server_settings.enable_analytics


_ENROLL = {
    "created": "edited_enroll_secrets",
    "edited": "edited_enroll_secrets",
    "deleted": "edited_enroll_secrets",
}

# "app_label.model" -> how the trail shows it. Unlisted models get ``<verb>_<model name>``.
_USER = Description(
    "user",
    name=lambda u: u.get_username(),
    team=lambda u: None,
    extras=_roles_of_user,
    details=lambda u: {"user_id": u.pk, "user_name": u.get_username(), "user_email": u.email},
)
DESCRIPTIONS: dict[str, Description] = {
    "hosts.team": Description(
        "team", team=lambda t: t.pk, extras=_team_secret_count, details=_fleet_ids("team_id", "team_name")
    ),
    "hosts.enrollsecret": Description(
        "enroll_secret", name=_secret_name, types=_ENROLL, details=_secret_details
    ),
    "hosts.host": Description(
        "host",
        name=_host_name,
        # Vitals change with every detail refresh; the trail keeps what identifies the host.
        fields=(
            "hostname",
            "computer_name",
            "uuid",
            "hardware_serial",
            "osquery_host_id",
            "platform",
            "os_version",
            "team",
            "refetch_requested",
        ),  # fmt: skip
        details=lambda h: {
            "host_id": h.pk,
            "host_display_name": _host_name(h),
            "host_serial": h.hardware_serial,
        },
    ),
    "hosts.fleetsettings": Description(
        "fleet_settings",
        name=lambda s: "Fleet settings",
        team=lambda s: None,
        extras=_usage_switch,
        types={"created": "edited_agent_options", "edited": "edited_agent_options"},
        details=lambda s: {"global": True, "team_id": None, "team_name": None},
    ),
    "hosts.label": Description(
        "label", team=lambda label: None, extras=_label_members, details=_fleet_ids("label_id", "label_name")
    ),
    "hosts.userrole": Description("user_role", subject=_role_subject, details=_role_details),
    "auth.user": _USER,
    "users.user": _USER,  # the users app's proxy of the same table (its console pages)
    "queries.query": Description("saved_query", details=_fleet_ids("query_id", "query_name", with_team=True)),
    "packs.pack": Description(
        "pack", team=lambda p: None, extras=_pack_schedule, details=_fleet_ids("pack_id", "pack_name")
    ),
    "packs.scheduledquery": Description(
        "scheduled_query",
        team=lambda s: None,
        details=lambda s: {"pack_id": s.pack_id, "scheduled_query_name": s.name, "query_id": s.query_id},
    ),
    "campaigns.campaign": Description(
        "campaign", name=lambda c: c.query_name or c.sql[:120], team=lambda c: None
    ),
}


def describe(obj_or_model: Any) -> Description:
    """How the trail shows a model (a proxy model as the model it stands for)."""
    meta = obj_or_model._meta
    found = DESCRIPTIONS.get(meta.label_lower) or DESCRIPTIONS.get(meta.concrete_model._meta.label_lower)
    return found or Description(meta.model_name)


def type_of(obj: Any, verb: str) -> str:
    """The activity type for ``verb`` (created, edited, deleted) done to ``obj``."""
    if obj._meta.concrete_model._meta.label_lower == "hosts.userrole":
        scope = "global" if obj.team_id is None else "team"
        return f"{'deleted' if verb == 'deleted' else 'changed'}_user_{scope}_role"
    return describe(obj).type_for(verb)


def types_for_model(model: Any, verb: str) -> set[str]:
    """Every type ``verb`` on an object of ``model`` may be recorded as (before one exists)."""
    if model._meta.concrete_model._meta.label_lower == "hosts.userrole":
        prefix = "deleted" if verb == "deleted" else "changed"
        return {f"{prefix}_user_global_role", f"{prefix}_user_team_role"}
    return {describe(model).type_for(verb)}


def subject_of(obj: Any) -> tuple[str, str, str]:
    """``(object_type, object_id, object_name)`` of an object, as the trail stores them."""
    description = describe(obj)
    if description.subject is not None:
        return description.subject(obj)
    try:
        name = description.name(obj)
    except Exception:  # a half-deleted object's related rows may be gone; the id is enough
        name = ""
    return description.stem, "" if obj.pk is None else str(obj.pk), str(name)[:255]


def team_of(obj: Any) -> int | None:
    return describe(obj).team(obj)


def fleet_details(obj: Any) -> dict[str, Any]:
    """The detail keys Fleet gives this kind of object (``team_id``/``team_name`` ...), if any."""
    described = describe(obj).details
    return json_value(described(obj)) if described else {}


def related_ids(values: Iterable[Any]) -> list[Any] | dict[str, int]:
    """Sorted ids, or ``{"count": n}`` beyond :data:`MAX_RELATED_IDS` (a big label, a wide pack)."""
    ids = sorted(values)
    return ids if len(ids) <= MAX_RELATED_IDS else {"count": len(ids)}


def _field_value(obj: models.Model, model_field: models.Field) -> Any:
    if model_field.many_to_many:
        if obj.pk is None:
            return []
        return related_ids(getattr(obj, model_field.name).values_list("pk", flat=True))
    value = getattr(obj, model_field.attname)
    if is_sensitive(model_field.name) and value not in (None, ""):
        return redact(value)
    return json_value(value)


def _snapshot_fields(model: type[models.Model], names: Iterable[str] | None) -> list[models.Field]:
    meta = model._meta
    if names is not None:
        return [meta.get_field(name) for name in names]
    chosen: list[models.Field] = []
    for model_field in meta.get_fields():
        if model_field.auto_created or not model_field.concrete and not model_field.many_to_many:
            continue
        if model_field.primary_key or model_field.name in _SKIPPED_FIELDS:
            continue
        if getattr(model_field, "auto_now", False) or getattr(model_field, "auto_now_add", False):
            continue
        if model_field.many_to_many and not model_field.remote_field.through._meta.auto_created:
            continue  # a through model of its own (label members): described by ``extras``
        chosen.append(model_field)
    return chosen


def snapshot(obj: models.Model | None, fields: Iterable[str] | None = None) -> dict[str, Any]:
    """The object's values as JSON (secrets redacted); ``fields`` limits which (default: all).

    Taken before and after a write, the two snapshots give the before/after of an edit through
    :func:`diff`. Foreign keys appear as ids under the field's name (``team``: 3).
    """
    if obj is None:
        return {}
    description = describe(obj)
    names = fields if fields is not None else description.fields
    values = {f.name: _field_value(obj, f) for f in _snapshot_fields(type(obj), names)}
    if description.extras is not None and fields is None:
        values.update(json_value(description.extras(obj)))
    return values


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{field: {"before": old, "after": new}}`` for every field whose value changed."""
    changes: dict[str, dict[str, Any]] = {}
    for key in [*before, *(k for k in after if k not in before)]:
        old, new = before.get(key), after.get(key)
        if old != new:
            changes[key] = {"before": old, "after": new}
    return changes


def reload(obj: models.Model) -> models.Model | None:
    """The object as the database holds it now (``None`` if it is gone)."""
    if obj.pk is None:
        return None
    return type(obj)._base_manager.filter(pk=obj.pk).first()
