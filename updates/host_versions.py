"""Which hosts run the version their update channel offers, and which are behind.

For each component (orbit, osqueryd, Fleet Desktop) a host follows one channel: its team's agent
options ``update_channels`` when the team has options (they replace the global ones, as in the
orbit config), else the global ones, else ``stable``. The version it should run is the
``custom.version`` of that channel's target for its platform (``darwin`` -> ``macos``, or
``macos-app`` for osqueryd; every Linux distribution -> ``linux``; ``windows``). A host is
*outdated* when the version it reports differs from that one.

Only hosts running orbit (a reported orbit version) are counted: a host running bare osquery is
not updated through this repository. The counts come from one grouped query per component over
the hosts the user may see, never a query per host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from django.db.models import Count
from django.urls import reverse

from hosts.filters import NO_TEAM
from hosts.models import FleetSettings, Host, Team
from hosts.permissions import HOST_READ_ROLES, scope_queryset
from updates.naming import (
    COMPONENT_LABELS,
    DEFAULT_CHANNEL,
    HOST_VERSION_FIELDS,
    is_safe_segment,
    update_platforms,
)
from updates.repository import TargetEntry

# The host list's platform filter value for hosts served by each repository platform.
_HOST_LIST_PLATFORM = {"macos": "darwin", "macos-app": "darwin", "linux": "linux", "windows": "windows"}


@dataclass
class VersionRow:
    """Hosts of one platform and channel that report one version."""

    platform: str
    channel: str
    reported: str
    expected: str
    hosts: int = 0
    team_ids: set[int | None] = field(default_factory=set)
    url: str = ""

    @property
    def outdated(self) -> bool:
        return bool(self.expected) and self.reported != self.expected

    @property
    def state(self) -> str:
        if not self.expected:
            return "no target"
        return "outdated" if self.outdated else "current"


@dataclass
class ComponentVersions:
    component: str
    label: str
    rows: list[VersionRow]

    @property
    def outdated_hosts(self) -> int:
        return sum(row.hosts for row in self.rows if row.outdated)

    @property
    def hosts(self) -> int:
        return sum(row.hosts for row in self.rows)


def channel_versions(entries: list[TargetEntry]) -> dict[tuple[str, str, str], str]:
    """``(name, platform, channel) -> version`` of every target in the repository."""
    return {(e.name, e.platform, e.channel): e.version for e in entries}


def _channels(options: dict[str, Any]) -> dict[str, str]:
    chosen = options.get("update_channels")
    if not isinstance(chosen, dict):
        chosen = {}
    return {
        component: chosen[component] if is_safe_segment(chosen.get(component)) else DEFAULT_CHANNEL
        for component in HOST_VERSION_FIELDS
    }


def channels_by_team() -> dict[int | None, dict[str, str]]:
    """The channel of each component for each team's hosts (``None``: hosts with no team)."""
    global_options = FleetSettings.load().agent_options or {}
    result: dict[int | None, dict[str, str]] = {None: _channels(global_options)}
    for team_id, options in Team.objects.values_list("id", "agent_options"):
        result[team_id] = _channels(options or global_options)
    return result


def _host_list_url(field_name: str, row: VersionRow) -> str:
    params = {field_name: row.reported, "platform": _HOST_LIST_PLATFORM.get(row.platform, row.platform)}
    if len(row.team_ids) == 1:
        (team_id,) = row.team_ids
        params["team_id"] = str(NO_TEAM if team_id is None else team_id)
    return reverse("admin:hosts_host_changelist") + "?" + urlencode(params)


def versions_for(user: Any, entries: list[TargetEntry]) -> list[ComponentVersions]:
    """Per component, the hosts the user may see grouped by platform, channel and version."""
    available = channel_versions(entries)
    channels = channels_by_team()
    hosts = scope_queryset(Host.objects.all(), user, HOST_READ_ROLES).exclude(orbit_version="")
    summaries = []
    for component, field_name in HOST_VERSION_FIELDS.items():
        grouped = (
            hosts.exclude(**{field_name: ""})
            .order_by()
            .values("team_id", "platform", field_name)
            .annotate(n=Count("id"))
        )
        rows: dict[tuple[str, str, str], VersionRow] = {}
        for group in grouped:
            candidates = update_platforms(component, group["platform"])
            if not candidates:
                continue  # a platform orbit does not run on
            channel = channels.get(group["team_id"], channels[None])[component]
            platform = next((p for p in candidates if (component, p, channel) in available), candidates[0])
            key = (platform, channel, group[field_name])
            row = rows.get(key)
            if row is None:
                expected = available.get((component, platform, channel), "")
                row = rows[key] = VersionRow(platform, channel, group[field_name], expected)
            row.hosts += group["n"]
            row.team_ids.add(group["team_id"])
        for row in rows.values():
            row.url = _host_list_url(field_name, row)
        ordered = sorted(rows.values(), key=lambda r: (r.platform, r.channel, not r.outdated, r.reported))
        summaries.append(ComponentVersions(component, COMPONENT_LABELS[component], ordered))
    return summaries
