"""Fleet's builtin labels: their names and SQL, and how the server decides who is in them.

Fleet sends its builtin labels to every agent as label queries. Here the server decides their
membership itself, from the vitals the host already reported (``platform``, ``platform_like``,
``os_version``): the answer is the same as the SQL's, it is known at enrolment (before any label
query could run), and it spares every host a dozen extra queries an hour. The SQL is kept so
the labels look and export as in Fleet.

This module is plain data and functions (no models) so that migrations can use it too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from hosts.details import platform_family


@dataclass(frozen=True)
class Vitals:
    """What builtin membership is computed from."""

    platform: str = ""
    platform_like: str = ""
    os_version: str = ""

    @property
    def os_name(self) -> str:
        return self.os_version.lower()


def _macos_major(vitals: Vitals) -> int:
    match = re.search(r"(\d+)", vitals.os_version)
    return int(match.group(1)) if match else 0


@dataclass(frozen=True)
class BuiltinLabel:
    name: str
    description: str
    query: str
    platform: str
    matches: Callable[[Vitals], bool]
    membership_type: str = "dynamic"


BUILTIN_LABELS: tuple[BuiltinLabel, ...] = (
    BuiltinLabel("All Hosts", "All hosts which have enrolled in Fleet", "SELECT 1;", "", lambda v: True),
    BuiltinLabel(
        "macOS",
        "All macOS hosts",
        "SELECT 1 FROM os_version WHERE platform = 'darwin';",
        "darwin",
        lambda v: v.platform == "darwin",
    ),
    BuiltinLabel(
        "Ubuntu Linux",
        "All Ubuntu hosts",
        "SELECT 1 FROM os_version WHERE platform = 'ubuntu';",
        "ubuntu",
        lambda v: v.platform == "ubuntu",
    ),
    BuiltinLabel(
        "CentOS Linux",
        "All CentOS hosts",
        "SELECT 1 FROM os_version WHERE platform = 'centos' OR name LIKE '%centos%'",
        "",
        lambda v: v.platform == "centos" or "centos" in v.os_name,
    ),
    BuiltinLabel(
        "MS Windows",
        "All Windows hosts",
        "SELECT 1 FROM os_version WHERE platform = 'windows';",
        "windows",
        lambda v: v.platform == "windows",
    ),
    BuiltinLabel(
        "Red Hat Linux",
        "All Red Hat Enterprise Linux hosts",
        "SELECT 1 FROM os_version WHERE name LIKE '%red hat%'",
        "",
        lambda v: "red hat" in v.os_name,
    ),
    BuiltinLabel(
        "All Linux",
        "All Linux distributions",
        "SELECT 1 FROM osquery_info WHERE build_platform LIKE '%ubuntu%' OR build_distro LIKE '%centos%';",
        "",
        lambda v: platform_family(v.platform, v.platform_like) == "linux",
    ),
    BuiltinLabel(
        "Fedora Linux",
        "All Fedora hosts",
        "SELECT 1 FROM os_version WHERE name = 'Fedora Linux';",
        "rhel",
        lambda v: v.platform == "fedora" or v.os_name.startswith("fedora"),
    ),
    BuiltinLabel(
        "chrome",
        "All Chrome hosts",
        "SELECT 1 FROM os_version WHERE platform = 'chrome';",
        "chrome",
        lambda v: v.platform == "chrome",
    ),
    BuiltinLabel(
        "macOS 14+ (Sonoma+)",
        "macOS hosts with version 14 and above",
        "SELECT 1 FROM os_version WHERE platform = 'darwin' AND major >= 14;",
        "darwin",
        lambda v: v.platform == "darwin" and _macos_major(v) >= 14,
    ),
    # Fleet's MDM-only builtins: manual there, maintained by MDM enrolment; here by platform.
    BuiltinLabel("iOS", "All iOS hosts", "", "ios", lambda v: v.platform == "ios", "manual"),
    BuiltinLabel("iPadOS", "All iPadOS hosts", "", "ipados", lambda v: v.platform == "ipados", "manual"),
    BuiltinLabel("Android", "All Android hosts", "", "android", lambda v: v.platform == "android", "manual"),
)
BUILTIN_NAMES = frozenset(label.name for label in BUILTIN_LABELS)
RESERVED_NAMES = frozenset(name.lower() for name in BUILTIN_NAMES)


def builtin_names_for(vitals: Vitals) -> set[str]:
    """The builtin labels a host with these vitals belongs to."""
    return {label.name for label in BUILTIN_LABELS if label.matches(vitals)}


def install(label_model, membership_model, host_model, batch: int = 2000) -> list[int]:
    """Create or refresh the builtin labels and fill their membership from the hosts' vitals.

    Takes the model classes so the data migration (historical models) and
    ``hosts.labels.ensure_builtin_labels`` (current ones) share it. Idempotent: existing
    memberships are kept, missing ones added. Returns the builtin labels' ids.
    """
    ids: dict[str, int] = {}
    for spec in BUILTIN_LABELS:
        label, _ = label_model.objects.update_or_create(
            name=spec.name,
            defaults={
                "description": spec.description,
                "query": spec.query,
                "platform": spec.platform,
                "label_type": "builtin",
                "label_membership_type": spec.membership_type,
            },
        )
        ids[spec.name] = label.pk
    last_id = 0
    while True:
        rows = list(
            host_model.objects.filter(id__gt=last_id)
            .order_by("id")
            .values_list("id", "platform", "platform_like", "os_version")[:batch]
        )
        if not rows:
            break
        last_id = rows[-1][0]
        membership_model.objects.bulk_create(
            [
                membership_model(label_id=ids[name], host_id=host_id)
                for host_id, platform, like, os_version in rows
                for name in builtin_names_for(Vitals(platform, like, os_version))
            ],
            ignore_conflicts=True,
        )
    return sorted(ids.values())
