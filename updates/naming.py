"""Names in the update repository: components, platforms, channels, and where each file goes.

Fleet's layout, which orbit expects (``orbit/pkg/update/options.go``, ``ee/fleetctl/updates.go``):
``targets/<name>/<platform>/<channel>/<file>``. A channel is any tag the operator gives
(``stable``, ``edge``, ``1.15``, ``1``) plus the version itself, so a host can follow a moving
channel or pin a version. Every segment becomes a directory on disk and a URL path segment, so
each is checked here against one conservative pattern before it goes anywhere near a path.
"""

from __future__ import annotations

import re

COMPONENTS = ("orbit", "osqueryd", "desktop")
PLATFORMS = ("macos", "macos-app", "linux", "linux-arm64", "windows", "windows-arm64")
DEFAULT_CHANNEL = "stable"

# The host field that holds what each component reports, for the console's outdated counts.
HOST_VERSION_FIELDS = {"orbit": "orbit_version", "osqueryd": "osquery_version", "desktop": "desktop_version"}
COMPONENT_LABELS = {"orbit": "orbit", "osqueryd": "osquery", "desktop": "Fleet Desktop"}

# Starts with a letter or digit (so never "." or ".."), then letters, digits, dot, dash, underscore.
_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def is_safe_segment(value: object) -> bool:
    """Whether ``value`` can be one path segment of the repository (a channel, tag or version)."""
    return isinstance(value, str) and _SAFE_SEGMENT.fullmatch(value) is not None


def check_component(name: str) -> str:
    if name not in COMPONENTS:
        raise ValueError(f"unknown target name {name!r}: use one of {', '.join(COMPONENTS)}")
    return name


def check_platform(platform: str) -> str:
    if platform not in PLATFORMS:
        raise ValueError(f"unknown platform {platform!r}: use one of {', '.join(PLATFORMS)}")
    return platform


def check_segment(value: str, what: str) -> str:
    if not is_safe_segment(value):
        raise ValueError(
            f"invalid {what} {value!r}: use 1 to 64 letters, digits, '.', '-' or '_', "
            "starting with a letter or digit"
        )
    return value


def target_filename(name: str, platform: str, source_name: str) -> str:
    """The file name orbit looks for, from the component, platform and the file being added.

    As ``fleetctl updates add``: the file is named after the component, with the source's
    meaningful suffix kept (``.exe``, ``.app.tar.gz``, ``.pkg``); Fleet Desktop is
    ``fleet-desktop.exe`` on Windows and ``desktop.tar.gz`` on Linux.
    """
    if name == "desktop" and platform.startswith("windows"):
        return "fleet-desktop.exe"
    if name == "desktop" and platform.startswith("linux"):
        return "desktop.tar.gz"
    for suffix in (".app.tar.gz", ".exe", ".pkg"):
        if source_name.endswith(suffix):
            return name + suffix
    return name


def agent_filename(name: str, platform: str) -> str:
    """The file orbit fetches for a component on a platform (``orbit/pkg/update/options.go``)."""
    if name == "osqueryd" and platform == "macos-app":
        return "osqueryd.app.tar.gz"
    if name == "desktop" and platform.startswith("macos"):
        return "desktop.app.tar.gz"
    source = name + ".exe" if platform.startswith("windows") else name
    return target_filename(name, platform, source)


def target_path(name: str, platform: str, channel: str, filename: str) -> str:
    """The TUF target path (relative to ``targets/``), e.g. ``orbit/linux/stable/orbit``."""
    return f"{name}/{platform}/{channel}/{filename}"


def split_target_path(path: str) -> tuple[str, str, str, str] | None:
    """``(name, platform, channel, filename)`` of a path in Fleet's layout, else ``None``."""
    parts = path.split("/")
    if len(parts) != 4:
        return None
    name, platform, channel, filename = parts
    return name, platform, channel, filename


def update_platforms(component: str, host_platform: str) -> tuple[str, ...]:
    """The repository platforms that serve a host of this osquery platform, preferred first.

    osquery reports ``darwin``, ``windows`` or a Linux distribution; orbit fetches osqueryd for
    macOS as an app bundle (``macos-app``) and everything else per OS. Arm builds cannot be told
    apart from the host's platform alone, so they are not guessed here.
    """
    from hosts.choices import LINUX_PLATFORMS

    if host_platform == "darwin":
        return ("macos-app", "macos") if component == "osqueryd" else ("macos",)
    if host_platform == "windows":
        return ("windows",)
    if host_platform in LINUX_PLATFORMS or host_platform == "linux":
        return ("linux",)
    return ()
