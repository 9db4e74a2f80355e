"""The osquery config a host receives from ``/api/osquery/config``.

Rendered once per distinct input (team, platform family) and cached as ready-to-send JSON, so a
host's config request costs one cache read and no joins. Anything that changes an input (global
or team agent options, later packs and labels) calls :func:`invalidate`.
"""

from __future__ import annotations

import json

from django.core.cache import cache

from hosts.agent_options import effective_config
from hosts.details import platform_family
from hosts.models import FleetSettings, Team

_PREFIX = "cfg:"
_TTL = 3600
FAMILIES = ("darwin", "windows", "linux", "chrome", "freebsd", "")


def _key(team_id: int | None, family: str) -> str:
    return f"{_PREFIX}{team_id or 0}:{family}"


def render(team_id: int | None, platform: str, platform_like: str = "") -> bytes:
    """The config JSON for a host of this team and platform."""
    family = platform_family(platform, platform_like)
    key = _key(team_id, family)
    body = cache.get(key)
    if body is None:
        body = json.dumps(build(team_id, family), separators=(",", ":")).encode()
        cache.set(key, body, _TTL)
    return body


def build(team_id: int | None, family: str) -> dict:
    """Assemble the config: the agent options' ``config`` (team replaces global, platform overrides)."""
    global_options = FleetSettings.load().agent_options
    team_options = None
    if team_id:
        team_options = Team.objects.filter(id=team_id).values_list("agent_options", flat=True).first()
    return effective_config(global_options, team_options, family)


def invalidate() -> None:
    """Drop every cached config (inputs changed). Teams are few; families are a fixed list."""
    team_ids = [None, *Team.objects.values_list("id", flat=True)]
    cache.delete_many([_key(t, f) for t in team_ids for f in FAMILIES])
