"""The console's home page: the fleet at a glance, for the teams the user may see.

Everything on the page comes from two grouped queries (hosts by team, platform and osquery
version with conditional status counts; label memberships by label), whatever the fleet's size,
and the result is kept in the cache for ``DASHBOARD_CACHE_SECONDS`` per scope, so that a hundred
admins reloading the page cost one aggregation, not a hundred. Recent live queries are an
indexed ``ORDER BY created_at LIMIT``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from hosts.choices import HostStatus
from hosts.console_permissions import CONSOLE_ROLES
from hosts.details import platform_family
from hosts.filters import KNOWN_PLATFORMS, NO_TEAM, filter_team
from hosts.models import Host, LabelMembership, LabelType, Team
from hosts.permissions import SECRET_READ_ROLES, has_any_role, scope_queryset, visible_team_ids
from hosts.status import MISSING_AFTER, NEW_FOR

TOP_LABELS = 8
RECENT_CAMPAIGNS = 8
_STATUSES = (HostStatus.ONLINE, HostStatus.OFFLINE, HostStatus.NEW, HostStatus.MISSING)


@dataclass
class Tally:
    """Host counts by status for one slice of the fleet (a platform, a team, or all of it)."""

    total: int = 0
    online: int = 0
    new: int = 0
    missing: int = 0

    @property
    def offline(self) -> int:
        return self.total - self.online

    def add(self, row: dict[str, Any]) -> None:
        self.total += row["total"]
        self.online += row["online"]
        self.new += row["new"]
        self.missing += row["missing"]

    def as_dict(self) -> dict[str, int]:
        return {"total": self.total, **{status.value: getattr(self, status.value) for status in _STATUSES}}


@dataclass
class Summary:
    """What the dashboard shows; plain data so that it can be cached and served as JSON."""

    hosts: dict[str, int]
    platforms: list[dict[str, Any]]
    teams: list[dict[str, Any]]
    osquery_versions: list[dict[str, Any]]
    labels: list[dict[str, Any]]
    computed_at: str
    extra: dict[str, Any] = field(default_factory=dict)


def _grouped(hosts: QuerySet[Host]) -> list[dict[str, Any]]:
    now = timezone.now()
    return list(
        hosts.order_by()
        .values("team_id", "platform", "platform_like", "osquery_version")
        .annotate(
            total=Count("id"),
            online=Count("id", filter=Q(seen__offline_after__gte=now)),
            missing=Count("id", filter=Q(seen__seen_time__lt=now - MISSING_AFTER)),
            new=Count("id", filter=Q(created_at__gte=now - NEW_FOR)),
        )
    )


def _top_labels(team_filter: Q | None) -> list[dict[str, Any]]:
    """The labels with most members among the visible hosts: a join on the host's team (an
    ``IN (SELECT id ...)`` of the visible hosts made MariaDB take a second on 100,000 hosts)."""
    memberships = LabelMembership.objects.order_by()
    if team_filter is not None:
        memberships = memberships.filter(team_filter)
    rows = (
        memberships.values("label_id", "label__name", "label__label_type")
        .annotate(hosts=Count("host_id"))
        .order_by("-hosts", "label__name")[:TOP_LABELS]
    )
    return [
        {
            "id": r["label_id"],
            "name": r["label__name"],
            "builtin": r["label__label_type"] == LabelType.BUILTIN,
            "hosts": r["hosts"],
        }
        for r in rows
    ]


def summarize(hosts: QuerySet[Host], *, team_names: dict[int, str], team_filter: Q | None) -> Summary:
    """Count ``hosts`` (already narrowed to what the viewer may see) for the dashboard."""
    overall = Tally()
    by_platform: dict[str, Tally] = defaultdict(Tally)
    by_team: dict[int, Tally] = defaultdict(Tally)
    versions: Counter[str] = Counter()
    for row in _grouped(hosts):
        overall.add(row)
        by_platform[platform_family(row["platform"], row["platform_like"]) or "unknown"].add(row)
        by_team[row["team_id"] or NO_TEAM].add(row)
        versions[row["osquery_version"] or "unknown"] += row["total"]
    platforms = [
        {"platform": name, "label": KNOWN_PLATFORMS.get(name, name.title()), **tally.as_dict()}
        for name, tally in sorted(by_platform.items(), key=lambda item: -item[1].total)
    ]
    teams = [
        {"id": team_id, "name": team_names.get(team_id, "No team"), **tally.as_dict()}
        for team_id, tally in sorted(by_team.items(), key=lambda item: -item[1].total)
    ]
    return Summary(
        hosts=overall.as_dict(),
        platforms=platforms,
        teams=teams,
        osquery_versions=[{"version": v, "hosts": n} for v, n in versions.most_common(10)],
        labels=_top_labels(team_filter),
        computed_at=timezone.now().isoformat(),
    )


def _cache_seconds() -> int:
    return int(getattr(settings, "DASHBOARD_CACHE_SECONDS", 30))


def dashboard_for(user: Any, team_id: int | None = None) -> Summary:
    """The dashboard summary for ``user``, optionally narrowed to one team (``0``: no team).

    Cached per (visible teams, chosen team): users with the same scope share one computation.
    """
    team_ids = visible_team_ids(user, CONSOLE_ROLES)
    scope = "all" if team_ids is None else ",".join(map(str, sorted(team_ids))) or "none"
    key = f"dashboard:v1:{scope}:{'' if team_id is None else team_id}"
    cached = cache.get(key)
    if cached is not None:
        return Summary(**cached)
    hosts = scope_queryset(Host.objects.all(), user, CONSOLE_ROLES)
    team_filter = None if team_ids is None else Q(host__team_id__in=team_ids)
    if team_id is not None:
        hosts = filter_team(hosts, team_id)
        team_filter = Q(host__team__isnull=True) if team_id == NO_TEAM else Q(host__team_id=team_id)
    teams = Team.objects.all() if team_ids is None else Team.objects.filter(id__in=team_ids)
    summary = summarize(hosts, team_names=dict(teams.values_list("id", "name")), team_filter=team_filter)
    cache.set(key, summary.__dict__, _cache_seconds())
    return summary


def recent_campaigns(user: Any) -> list[Any]:
    """The newest live queries the user may watch (admins: all; others: their own)."""
    from campaigns.models import Campaign
    from campaigns.services import watchable

    campaigns = Campaign.objects.select_related("created_by").defer("host_ids").order_by("-created_at")
    return list(watchable(campaigns, user)[:RECENT_CAMPAIGNS])


def _host_list_url(**params: Any) -> str:
    from urllib.parse import urlencode

    from django.urls import reverse

    query = urlencode({k: v for k, v in params.items() if v is not None})
    return reverse("admin:hosts_host_changelist") + (f"?{query}" if query else "")


def dashboard_context(request: Any, team_id: int | None) -> dict[str, Any]:
    """Template context of the dashboard: counts with links into the filtered host list."""
    from campaigns.admin_views import may_run_live_queries

    user = request.user
    team_ids = visible_team_ids(user, CONSOLE_ROLES)
    teams = Team.objects.order_by("name") if team_ids is None else Team.objects.filter(id__in=team_ids)
    choices = [(team.id, team.name) for team in teams.only("id", "name")]
    if team_ids is None:
        choices.append((NO_TEAM, "No team"))
    if team_id is not None and team_id not in {c[0] for c in choices}:
        team_id = None  # a team the user may not see: show their whole scope instead
    summary = dashboard_for(user, team_id)
    scope = {"team_id": team_id}
    cards = [
        {"status": status.value, "label": status.label, "count": summary.hosts[status.value],
         "url": _host_list_url(status=status.value, **scope)}
        for status in _STATUSES
    ]
    for row in summary.platforms:
        row["url"] = _host_list_url(platform=row["platform"], **scope)
        row["online_url"] = _host_list_url(platform=row["platform"], status="online", **scope)
    for row in summary.teams:
        row["url"] = _host_list_url(team_id=row["id"])
    for row in summary.labels:
        row["url"] = _host_list_url(label_id=row["id"], **scope)
    return {
        "dashboard": summary,
        "status_cards": cards,
        "all_hosts_url": _host_list_url(**scope),
        "team_choices": choices,
        "chosen_team": team_id,
        "recent_campaigns": recent_campaigns(user) if may_run_live_queries(user) else [],
        "may_run_live_queries": may_run_live_queries(user),
        "may_add_hosts": has_any_role(user, SECRET_READ_ROLES),  # Add hosts shows enroll secrets
        "computed_at": datetime.fromisoformat(summary.computed_at),
        "cache_seconds": _cache_seconds(),
    }
