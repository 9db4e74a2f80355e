"""Who may read, write and run scripts: the questions every scripts surface asks.

The rules are Fleet's, on top of ``hosts.permissions``:

- the library: every host reader (admin, maintainer, observer, observer+) reads the global
  scripts and those of their teams; admins and maintainers write them, global ones only with a
  global role;
- runs, and lock, unlock and wipe: admins and maintainers, globally or of the host's team;
- results: host readers see the runs of the hosts they may see. A host or a run of another team
  is "not found" (404), so its existence does not leak; a visible host the role may not act on
  is a refusal (403).

gitops, an API writer for configuration as code, gets no host data and so no runs either.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from hosts.choices import Role
from hosts.models import Host
from hosts.permissions import HOST_READ_ROLES, has_any_role, has_team_role, scope_queryset, visible_team_ids
from hostscripts.models import Script, ScriptRun

SCRIPT_READ_ROLES = HOST_READ_ROLES
SCRIPT_WRITE_ROLES = frozenset({Role.ADMIN, Role.MAINTAINER})
RUN_ROLES = SCRIPT_WRITE_ROLES  # running scripts and the device actions

NOT_ALLOWED_TO_RUN = "Your role does not allow running scripts on this host."
NOT_ALLOWED_TO_WRITE = "Your role does not allow changing scripts here."


def readable_scripts(queryset: QuerySet[Script], user: Any) -> QuerySet[Script]:
    """The global scripts and those of the user's teams (all of them for global roles)."""
    team_ids = visible_team_ids(user, SCRIPT_READ_ROLES)
    if team_ids is None:
        return queryset
    if not team_ids:  # no role that reads scripts (gitops, or no role at all)
        return queryset.none()
    return queryset.filter(Q(team__isnull=True) | Q(team_id__in=team_ids))


def may_write_script(user: Any, team_id: int | None) -> bool:
    """Admins and maintainers of the script's team, or global ones (who alone write global scripts)."""
    return has_team_role(user, team_id, SCRIPT_WRITE_ROLES)


def may_write_any_script(user: Any) -> bool:
    return has_any_role(user, SCRIPT_WRITE_ROLES)


def visible_hosts(user: Any, queryset: QuerySet[Host] | None = None) -> QuerySet[Host]:
    """The hosts whose runs the user may see."""
    hosts = Host.objects.all() if queryset is None else queryset
    return scope_queryset(hosts, user, HOST_READ_ROLES)


def runnable_hosts(user: Any, queryset: QuerySet[Host] | None = None) -> QuerySet[Host]:
    """The hosts the user may run scripts on (and lock, unlock, wipe)."""
    hosts = Host.objects.all() if queryset is None else queryset
    return scope_queryset(hosts, user, RUN_ROLES)


def may_run_on(user: Any, host: Host) -> bool:
    return has_team_role(user, host.team_id, RUN_ROLES)


def may_run_anywhere(user: Any) -> bool:
    """Whether the user may run scripts on some host (shows the run buttons and actions)."""
    return has_any_role(user, RUN_ROLES)


def visible_runs(queryset: QuerySet[ScriptRun], user: Any) -> QuerySet[ScriptRun]:
    """The runs on the hosts the user may see."""
    return scope_queryset(queryset, user, HOST_READ_ROLES, team_field="host__team_id")
