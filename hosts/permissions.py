"""Who may see and change what: Fleet's global and per-team roles, in one small module.

A user holds either one global role (``UserRole`` with no team) or one role per team; a
superuser counts as a global admin. Every surface (REST, console, later apps) asks the same
questions here:

- ``visible_team_ids(user, roles)``: ``None`` when the user has one of ``roles`` globally (no
  filtering needed), else the ids of the teams where they hold one of them (maybe empty);
- ``has_team_role(user, team_id, roles)``: may the user act on an object of that team
  (``team_id=None`` means a global object, which needs a global role);
- ``FleetRolePermission``: the DRF permission class built on those two.

Users with no role at all are refused (403) rather than shown empty lists, so a missing role is
visible as such instead of looking like an empty fleet.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from rest_framework.permissions import SAFE_METHODS, BasePermission

from hosts.choices import Role

ALL_ROLES = frozenset(Role.values)
# gitops is an API writer for config-as-code and gets no host data (fleet-reference §5.2).
HOST_READ_ROLES = frozenset({Role.ADMIN, Role.MAINTAINER, Role.OBSERVER, Role.OBSERVER_PLUS})
SECRET_READ_ROLES = frozenset({Role.ADMIN, Role.MAINTAINER})
ADMIN_ROLES = frozenset({Role.ADMIN})

# Strongest first: decides which global role counts when the data holds more than one.
_STRENGTH = [Role.ADMIN, Role.MAINTAINER, Role.GITOPS, Role.OBSERVER_PLUS, Role.OBSERVER]
_CACHE_ATTR = "_fleet_roles"


@dataclass(frozen=True)
class Roles:
    """A user's roles, read once per request: ``global_role`` or ``team_roles`` (team id -> role)."""

    global_role: str | None = None
    team_roles: dict[int, str] = field(default_factory=dict)

    @property
    def any(self) -> bool:
        return bool(self.global_role or self.team_roles)


def roles_of(user: Any) -> Roles:
    """The user's roles, cached on the user object (one query per request at most)."""
    if user is None or not user.is_authenticated or not user.is_active:
        return Roles()
    cached = getattr(user, _CACHE_ATTR, None)
    if cached is not None:
        return cached
    if user.is_superuser:
        roles = Roles(global_role=Role.ADMIN)
    else:
        global_roles: list[str] = []
        team_roles: dict[int, str] = {}
        for team_id, role in user.fleet_roles.values_list("team_id", "role"):
            if team_id is None:
                global_roles.append(role)
            else:
                team_roles[team_id] = role
        strongest = min(global_roles, key=_STRENGTH.index, default=None)
        # A global role covers every team, so team roles only matter without one.
        roles = Roles(global_role=strongest) if strongest else Roles(team_roles=team_roles)
    setattr(user, _CACHE_ATTR, roles)
    return roles


def forget_roles(user: Any) -> None:
    """Drop the roles cached on a user object (after changing their roles)."""
    if hasattr(user, _CACHE_ATTR):
        delattr(user, _CACHE_ATTR)


def visible_team_ids(user: Any, roles: Collection[str] = ALL_ROLES) -> frozenset[int] | None:
    """``None`` if the user holds one of ``roles`` globally, else the teams where they do."""
    held = roles_of(user)
    if held.global_role:
        return None if held.global_role in roles else frozenset()
    return frozenset(team_id for team_id, role in held.team_roles.items() if role in roles)


def has_any_role(user: Any, roles: Collection[str] = ALL_ROLES) -> bool:
    """Whether the user holds one of ``roles`` anywhere (globally or on some team)."""
    team_ids = visible_team_ids(user, roles)
    return team_ids is None or bool(team_ids)


def has_team_role(user: Any, team_id: int | None, roles: Collection[str]) -> bool:
    """Whether the user may act with one of ``roles`` on an object of ``team_id`` (None: global)."""
    team_ids = visible_team_ids(user, roles)
    if team_ids is None:
        return True
    return team_id is not None and team_id in team_ids


def scope_queryset(
    queryset: QuerySet,
    user: Any,
    roles: Collection[str],
    team_field: str = "team_id",
) -> QuerySet:
    """Narrow a queryset of team-owned objects to the teams the user holds one of ``roles`` on.

    Objects without a team (global ones) stay visible only to global roles.
    """
    team_ids = visible_team_ids(user, roles)
    if team_ids is None:
        return queryset
    if not team_ids:
        return queryset.none()
    return queryset.filter(Q(**{f"{team_field}__in": team_ids}))


def check_role_assignment(team_ids: Iterable[int | None]) -> None:
    """Raise ``ValidationError`` unless the rows of one user are one global role or team roles.

    ``team_ids`` holds the team of each role row the user would have (``None`` = global). The
    database's unique (user, team) constraint does not stop two global rows (NULLs differ).
    """
    rows = list(team_ids)
    globals_ = sum(1 for t in rows if t is None)
    if globals_ > 1:
        raise ValidationError("A user can have only one global role.")
    if globals_ and len(rows) > 1:
        raise ValidationError("A user has either one global role or roles on teams, not both.")
    team_rows = [t for t in rows if t is not None]
    if len(team_rows) != len(set(team_rows)):
        raise ValidationError("A user can have only one role per team.")


class FleetRolePermission(BasePermission):
    """DRF permission: reads need one of ``read_roles``, writes one of ``write_roles``.

    The view may set ``read_roles`` / ``write_roles``; objects are checked against their team
    (``team_id``, or the object's own id for a ``Team``) through ``view.team_id_of(obj)`` when the
    view defines it. Querysets should still be narrowed with ``scope_queryset`` so that lists
    and 404s agree with these checks.
    """

    message = "Your Fleet role does not allow this."

    @staticmethod
    def _roles(request: Any, view: Any) -> Collection[str]:
        if request.method in SAFE_METHODS:
            return getattr(view, "read_roles", ALL_ROLES)
        return getattr(view, "write_roles", ADMIN_ROLES)

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return has_any_role(user, self._roles(request, view))

    def has_object_permission(self, request: Any, view: Any, obj: Any) -> bool:
        team_id_of = getattr(view, "team_id_of", None)
        team_id = team_id_of(obj) if team_id_of else getattr(obj, "team_id", None)
        return has_team_role(request.user, team_id, self._roles(request, view))
