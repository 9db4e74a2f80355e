"""Agent options: Fleet's defaults, and how global, team and platform options combine.

Fleet's agent options document has ``config`` (what osquery receives: ``options``,
``decorators``, ...), ``overrides.platforms`` (a whole ``config`` per platform) and
``command_line_flags`` (for orbit). A team's options, when set, replace the global ones; a
platform override then replaces ``config`` for hosts of that platform.
"""

from __future__ import annotations

import copy
from typing import Any


def default_agent_options() -> dict[str, Any]:
    """The options a new Fleet server starts with (fleet-reference, osquery-protocol §11)."""
    return {
        "config": {
            "options": {
                "pack_delimiter": "/",
                "logger_tls_period": 10,
                "distributed_plugin": "tls",
                "disable_distributed": False,
                "logger_tls_endpoint": "/api/osquery/log",
                "distributed_interval": 10,
                "distributed_tls_max_attempts": 3,
            },
            "decorators": {
                "load": [
                    "SELECT uuid AS host_uuid FROM system_info;",
                    "SELECT hostname AS hostname FROM system_info;",
                ]
            },
        },
        "overrides": {},
    }


def platform_override_key(platform: str) -> str:
    """Fleet keys overrides by osquery platform names (darwin, windows, linux, ...)."""
    from hosts.choices import LINUX_PLATFORMS

    return "linux" if platform in LINUX_PLATFORMS else platform


def effective_config(
    global_options: dict[str, Any], team_options: dict[str, Any] | None, platform: str
) -> dict[str, Any]:
    """The osquery ``config`` object for a host of this team and platform (a fresh copy)."""
    options = team_options if team_options else global_options
    overrides = (options.get("overrides") or {}).get("platforms") or {}
    key = platform_override_key(platform)
    config = overrides.get(key) or overrides.get(platform) or options.get("config") or {}
    return copy.deepcopy(config)


def validate_agent_options(options: Any) -> list[str]:
    """Problems that would make osquery reject or ignore the options (empty list when fine)."""
    problems: list[str] = []
    if not isinstance(options, dict):
        return ["agent options must be a JSON object"]
    unknown = set(options) - {
        "config",
        "overrides",
        "command_line_flags",
        "extensions",
        "update_channels",
        "script_execution_timeout",
    }
    if unknown:
        problems.append(f"unknown keys: {', '.join(sorted(unknown))}")
    config = options.get("config", {})
    if not isinstance(config, dict):
        problems.append("config must be a JSON object")
    elif not isinstance(config.get("options", {}), dict):
        problems.append("config.options must be a JSON object")
    overrides = options.get("overrides", {})
    if not isinstance(overrides, dict) or not isinstance(overrides.get("platforms", {}), dict):
        problems.append("overrides.platforms must be a JSON object of platform name to config")
    problems.extend(update_channel_problems(options.get("update_channels")))
    return problems


def update_channel_problems(channels: Any) -> list[str]:
    """orbit's ``update_channels``: the channel of the update repository each component follows
    (``stable``, ``edge``, a pinned version). Each becomes a path segment of the URL orbit fetches,
    so only safe names pass (``updates.naming``)."""
    from updates.naming import COMPONENTS, is_safe_segment

    if channels is None:
        return []
    if not isinstance(channels, dict):
        return ["update_channels must be a JSON object with orbit, osqueryd and/or desktop"]
    problems = []
    unknown = set(channels) - set(COMPONENTS)
    if unknown:
        problems.append(f"update_channels: unknown keys: {', '.join(sorted(map(str, unknown)))}")
    for component in COMPONENTS:
        if component in channels and not is_safe_segment(channels[component]):
            problems.append(
                f"update_channels.{component} must be a channel name such as stable, edge or 1.38.1 "
                "(letters, digits, '.', '-' and '_', starting with a letter or digit)"
            )
    return problems
