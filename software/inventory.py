"""Reading the inventory for people: which titles and versions a user may see, with which counts,
and a host's own list. REST and the console both read through here.

Who sees what follows ``hosts.permissions``: global host readers see fleet-wide counts; a team
user sees only titles present on their teams' hosts, counted over those hosts; gitops and users
without a role see nothing (the views refuse them). Counts come from the kept per-(team,
platform) rows (``software.counts``), so any scope is an indexed ``SUM``, never a count of links.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import F, Prefetch, Q, QuerySet, Sum
from django.db.models.functions import Lower

from hosts.choices import LINUX_PLATFORMS
from hosts.filters import LINUX, NO_TEAM
from hosts.permissions import HOST_READ_ROLES, visible_team_ids
from software.models import HostSoftware, SoftwareTitle, SoftwareVersion


@dataclass(frozen=True)
class Scope:
    """The hosts whose counts a listing shows: ``teams`` (None: all; ``NO_TEAM`` = hosts without
    a team) and ``platforms`` (None: any)."""

    teams: frozenset[int] | None = None
    platforms: frozenset[str] | None = None

    @property
    def everything(self) -> bool:
        return self.teams is None and self.platforms is None


def scope_for(user: Any, team_id: int | None = None, platform: str = "") -> Scope:
    """The scope a user sees, narrowed to one team (0: no team) or one platform when asked.

    Raises ``PermissionDenied`` for a team outside the user's teams.
    """
    visible = visible_team_ids(user, HOST_READ_ROLES)
    teams = visible
    if team_id is not None:
        if visible is not None and team_id not in visible:
            raise PermissionDenied("You cannot see that team's hosts.")
        teams = frozenset({team_id})
    platform = platform.strip().lower()
    platforms = None
    if platform:
        platforms = frozenset(LINUX_PLATFORMS | {LINUX}) if platform == LINUX else frozenset({platform})
    return Scope(teams, platforms)


def _counted(scope: Scope) -> Q:
    """The count rows of ``scope`` (through the ``counts`` relation of titles and versions)."""
    condition = Q()
    if scope.teams is not None:
        teams = Q(counts__team_id__in=scope.teams - {NO_TEAM})
        if NO_TEAM in scope.teams:
            teams |= Q(counts__team__isnull=True)
        condition &= teams
    if scope.platforms is not None:
        condition &= Q(counts__platform__in=scope.platforms)
    return condition


def titles(scope: Scope) -> QuerySet[SoftwareTitle]:
    """Titles with at least one host in ``scope``, annotated ``hosts_count`` (hosts in scope)."""
    if scope.everything:
        return SoftwareTitle.objects.filter(host_count__gt=0).annotate(hosts_count=F("host_count"))
    # One filter() call: the SUM runs over the same, filtered, join of count rows.
    return (
        SoftwareTitle.objects.filter(_counted(scope))
        .annotate(hosts_count=Sum("counts__host_count"))
        .filter(hosts_count__gt=0)
    )


def versions(scope: Scope) -> QuerySet[SoftwareVersion]:
    """Versions with at least one host in ``scope``, annotated ``hosts_count``."""
    if scope.everything:
        return SoftwareVersion.objects.filter(host_count__gt=0).annotate(hosts_count=F("host_count"))
    return (
        SoftwareVersion.objects.filter(_counted(scope))
        .annotate(hosts_count=Sum("counts__host_count"))
        .filter(hosts_count__gt=0)
    )


def with_versions(queryset: QuerySet[SoftwareTitle], scope: Scope) -> QuerySet[SoftwareTitle]:
    """Prefetch each title's versions in scope (most hosts first) as ``scoped_versions``."""
    ordered = versions(scope).order_by("-hosts_count", "version", "id")
    return queryset.prefetch_related(Prefetch("versions", queryset=ordered, to_attr="scoped_versions"))


def host_software(host_id: int) -> QuerySet[HostSoftware]:
    """A host's software, by name (any case) then version: an index range on the host, then a sort."""
    return (
        HostSoftware.objects.filter(host_id=host_id)
        .select_related("version__title")
        .order_by(Lower("version__title__name"), "version__version", "id")
    )
