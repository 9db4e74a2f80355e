"""Who may read which activities (the console and REST ask the same two questions here).

Fleet lets every user with a role read the activity feed; here, as for hosts, gitops (an API
writer for config-as-code) reads none of it. Global admins, maintainers, observers and
observers+ read every activity. Users with team roles read their teams' activities and their
own, nothing else global: a team admin sees who changed their team's queries or moved hosts
into it, and their own live queries and logins, but not the rest of the fleet.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from hosts.permissions import HOST_READ_ROLES, has_any_role, visible_team_ids

ACTIVITY_READ_ROLES = HOST_READ_ROLES


def may_read_activities(user: Any) -> bool:
    """Whether the user may open the activity feed at all (403 otherwise)."""
    return bool(user and user.is_authenticated and has_any_role(user, ACTIVITY_READ_ROLES))


def visible_activities(queryset: QuerySet, user: Any) -> QuerySet:
    """Narrow activities to those ``user`` may read (see the module docstring)."""
    if not may_read_activities(user):
        return queryset.none()
    team_ids = visible_team_ids(user, ACTIVITY_READ_ROLES)
    if team_ids is None:
        return queryset
    return queryset.filter(Q(team_id__in=team_ids) | Q(actor_id=user.pk))
