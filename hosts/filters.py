"""Host filters, written once and used by both the REST API (a FilterSet) and the console.

Every filter here is cheap on 100,000 hosts: indexed equality or range lookups, and platform
choices that come from a fixed list plus a cached ``DISTINCT`` (never one per page load).
"""

from __future__ import annotations

from typing import Any

import django_filters
from django.contrib import admin
from django.core.cache import cache
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce

from fleet.numbers import parse_id
from hosts.choices import LINUX_PLATFORMS, HostStatus
from hosts.models import EnrollSecret, Host, Team
from hosts.permissions import visible_team_ids
from hosts.status import filter_by_status

LINUX = "linux"
NO_TEAM = 0  # Fleet's team_id=0: hosts without a team

# Platforms as osquery reports them, with the names people know them by.
KNOWN_PLATFORMS: dict[str, str] = {
    "darwin": "macOS",
    "windows": "Windows",
    LINUX: "Linux (all distributions)",
    "ubuntu": "Ubuntu",
    "debian": "Debian",
    "rhel": "Red Hat",
    "centos": "CentOS",
    "fedora": "Fedora",
    "amzn": "Amazon Linux",
    "chrome": "ChromeOS",
}
_PLATFORMS_CACHE_KEY = "hosts:platforms"
_PLATFORMS_CACHE_TTL = 600


def filter_platform(queryset: QuerySet, platform: str) -> QuerySet:
    """Hosts of one platform; ``linux`` means every Linux distribution, as in Fleet."""
    if platform == LINUX:
        return queryset.filter(platform__in=LINUX_PLATFORMS | {LINUX})
    return queryset.filter(platform=platform)


def filter_team(queryset: QuerySet, team_id: int) -> QuerySet:
    """Hosts of one team; ``0`` means hosts with no team."""
    if team_id == NO_TEAM:
        return queryset.filter(team__isnull=True)
    return queryset.filter(team_id=team_id)


def platform_choices() -> list[tuple[str, str]]:
    """Known platforms plus those hosts actually report, the latter cached for ten minutes."""
    seen = cache.get(_PLATFORMS_CACHE_KEY)
    if seen is None:
        seen = sorted(p for p in Host.objects.order_by().values_list("platform", flat=True).distinct() if p)
        cache.set(_PLATFORMS_CACHE_KEY, seen, _PLATFORMS_CACHE_TTL)
    choices = dict(KNOWN_PLATFORMS)
    for platform in seen:
        choices.setdefault(platform, platform)
    return list(choices.items())


class HostFilterSet(django_filters.FilterSet):
    """``?team_id=``, ``?platform=`` and ``?status=`` for the REST host list."""

    team_id = django_filters.NumberFilter(method="_team", help_text="Team id; 0 for hosts with no team.")
    platform = django_filters.CharFilter(
        method="_platform",
        help_text="osquery platform (darwin, windows, ubuntu, ...); linux matches every Linux distribution.",
    )
    status = django_filters.ChoiceFilter(
        choices=HostStatus.choices, method="_status", help_text="online, offline, missing or new."
    )

    class Meta:
        model = Host
        fields = ["team_id", "platform", "status"]

    def _team(self, queryset: QuerySet, name: str, value: Any) -> QuerySet:
        return filter_team(queryset, int(value))

    def _platform(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return filter_platform(queryset, value.strip().lower())

    def _status(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return filter_by_status(queryset, value)


# --- Console list filters -------------------------------------------------------------------


def _counts(request: Any) -> Any:
    """The dashboard's kept counts for the list's current team filter (cached; no scan here)."""
    from hosts.dashboard import dashboard_for

    cached = getattr(request, "_fleet_filter_counts", None)
    if cached is None:
        cached = dashboard_for(request.user, parse_id(request.GET.get("team_id")))
        request._fleet_filter_counts = cached
    return cached


def _with_count(label: str, count: int | None) -> str:
    return label if count is None else f"{label} ({count:,})"


class StatusListFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: Any, model_admin: Any) -> list[tuple[str, str]]:
        counts = _counts(request).hosts
        return [(value, _with_count(label, counts.get(value))) for value, label in HostStatus.choices]

    def queryset(self, request: Any, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value in HostStatus.values:
            return filter_by_status(queryset, value)
        return queryset


class PlatformListFilter(admin.SimpleListFilter):
    title = "platform"
    parameter_name = "platform"

    def lookups(self, request: Any, model_admin: Any) -> list[tuple[str, str]]:
        counts = {row["platform"]: row["total"] for row in _counts(request).platforms}
        return [(value, _with_count(label, counts.get(value))) for value, label in platform_choices()]

    def queryset(self, request: Any, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return filter_platform(queryset, value) if value else queryset


class TeamListFilter(admin.SimpleListFilter):
    """Teams the user can see, plus "No team" (the stock related filter would list every team)."""

    title = "team"
    parameter_name = "team_id"

    def lookups(self, request: Any, model_admin: Any) -> list[tuple[str, str]]:
        team_ids = visible_team_ids(request.user)
        teams = Team.objects.all() if team_ids is None else Team.objects.filter(id__in=team_ids)
        from hosts.dashboard import dashboard_for

        counts = {row["id"]: row["total"] for row in dashboard_for(request.user).teams}
        choices = [(str(t.id), _with_count(t.name, counts.get(t.id, 0))) for t in teams.only("id", "name")]
        if team_ids is None:
            choices.append((str(NO_TEAM), _with_count("No team", counts.get(NO_TEAM, 0))))
        return choices

    def queryset(self, request: Any, queryset: QuerySet) -> QuerySet:
        value = self.value()
        team_id = parse_id(value)
        if team_id is None:
            return queryset
        return filter_team(queryset, team_id)


class EnrollSecretFilterSet(django_filters.FilterSet):
    """``?team_id=`` for the enroll secret list (0: the global secrets)."""

    team_id = django_filters.NumberFilter(method="_team", help_text="Team id; 0 for global secrets.")

    class Meta:
        model = EnrollSecret
        fields = ["team_id"]

    def _team(self, queryset: QuerySet, name: str, value: Any) -> QuerySet:
        return filter_team(queryset, int(value))


def with_host_counts(teams: QuerySet) -> QuerySet:
    """Annotate teams with ``host_count`` by a correlated, indexed count (no join of all hosts)."""
    per_team = (
        Host.objects.filter(team=OuterRef("pk")).order_by().values("team").annotate(n=Count("*")).values("n")
    )
    return teams.annotate(host_count=Coalesce(Subquery(per_team, output_field=IntegerField()), 0))
