"""Who may read and change tasks, agents, agent keys and metric destinations.

On top of ``hosts.permissions``, with one rule for REST and the console:

- tasks and metric destinations are configuration: every role reads them (secrets never leave
  the server), admins, maintainers and gitops write them;
- agents are runtime data, like hosts: host readers (not gitops) see them, admins and
  maintainers change their tags or switch them off, or delete them;
- agent keys let a program join a team's agents: admins and maintainers see the list (never a
  key), admins create and delete them.

Team users see their teams' objects only; global objects need a global role, to read as to write.
An object of another team is "not found" (404).
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from hosts.choices import Role
from hosts.permissions import (
    ADMIN_ROLES,
    ALL_ROLES,
    HOST_READ_ROLES,
    SECRET_READ_ROLES,
    has_team_role,
    scope_queryset,
)

TASK_READ_ROLES = ALL_ROLES
TASK_WRITE_ROLES = frozenset({Role.ADMIN, Role.MAINTAINER, Role.GITOPS})
AGENT_READ_ROLES = HOST_READ_ROLES
AGENT_WRITE_ROLES = frozenset({Role.ADMIN, Role.MAINTAINER})
KEY_READ_ROLES = SECRET_READ_ROLES
KEY_WRITE_ROLES = ADMIN_ROLES
DESTINATION_READ_ROLES = ALL_ROLES
DESTINATION_WRITE_ROLES = TASK_WRITE_ROLES


def visible(queryset: QuerySet, user: Any, roles: frozenset[str]) -> QuerySet:
    return scope_queryset(queryset, user, roles)


def may_write(user: Any, team_id: int | None, roles: frozenset[str]) -> bool:
    return has_team_role(user, team_id, roles)
