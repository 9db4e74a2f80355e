"""Who may do what with Apple MDM, on top of ``hosts.permissions`` (Fleet's rules):

- configuration profiles: every host reader reads the global ones and their teams'; admins and
  maintainers write them (global ones only with a global role);
- commands (named ones, lock and erase): admins and maintainers of the host's team;
- raw commands, the APNs certificate and revealing a lock PIN: admins only (global admins for the
  certificate);
- enrollment profiles: admins and maintainers of the team (global ones for "no team").

A host or profile of another team is "not found" (404), so its existence does not leak.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from hosts.choices import Role
from hosts.models import Team
from hosts.permissions import HOST_READ_ROLES, has_any_role, has_team_role, scope_queryset, visible_team_ids

WRITE_ROLES = frozenset({Role.ADMIN, Role.MAINTAINER})
ADMIN_ROLES = frozenset({Role.ADMIN})


def _team_id(team: Team | int | None) -> int | None:
    return team.pk if isinstance(team, Team) else team


def may_manage_team(user: Any, team: Team | int | None) -> bool:
    """Enrollment profiles and configuration profiles of ``team`` (``None``: global)."""
    return has_team_role(user, _team_id(team), WRITE_ROLES)


def may_command(user: Any, team_id: int | None) -> bool:
    return has_team_role(user, team_id, WRITE_ROLES)


def may_send_raw(user: Any, team_id: int | None) -> bool:
    return has_team_role(user, team_id, ADMIN_ROLES)


def may_manage_push_certificate(user: Any) -> bool:
    return has_team_role(user, None, ADMIN_ROLES)


def may_manage_any(user: Any) -> bool:
    return has_any_role(user, WRITE_ROLES)


def readable_profiles(queryset: QuerySet, user: Any) -> QuerySet:
    team_ids = visible_team_ids(user, HOST_READ_ROLES)
    if team_ids is None:
        return queryset
    if not team_ids:
        return queryset.none()
    return queryset.filter(Q(team__isnull=True) | Q(team_id__in=team_ids))


def visible_commands(queryset: QuerySet, user: Any) -> QuerySet:
    return scope_queryset(queryset, user, HOST_READ_ROLES, team_field="enrollment__host__team_id")
