"""The "MDM profiles" block of the console's host page (``hosts.host_page`` calls
:func:`profiles_for_host`): each profile's status on the host with its detail, and a Resend
button (a POST) for admins and maintainers of the host's team while the Mac is enrolled."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.urls import reverse

from hosts.details import platform_family
from hosts.models import Host
from mdm import access
from mdm.models import Enrollment, ProfileOperation
from mdm.profiles import reads

_APPLE = frozenset({"darwin", "ios", "ipados"})


@dataclass(frozen=True)
class ProfileLine:
    entry: reads.HostProfileEntry
    resend_url: str = ""


@dataclass
class MdmProfilesSection:
    enrolled: bool
    lines: list[ProfileLine] = field(default_factory=list)
    may_resend: bool = False
    profiles_url: str = ""  # the REST list of the same rows


def profiles_for_host(host: Host, user: Any) -> MdmProfilesSection | None:
    """The block for ``host`` as ``user`` may act on it; ``None`` for hosts MDM cannot manage
    (not Apple, never enrolled, nothing recorded)."""
    enrolled = Enrollment.objects.filter(host_id=host.pk, enrolled=True).exists()
    entries = reads.host_entries(host)
    if not (enrolled or entries or platform_family(host.platform, host.platform_like) in _APPLE):
        return None
    may_resend = enrolled and access.may_manage_team(user, host.team_id)
    lines = []
    for entry in entries:
        url = ""
        if may_resend and entry.row_id and entry.profile_uuid and entry.operation == ProfileOperation.INSTALL:
            url = reverse("admin:mdm_profile_resend", args=[host.pk, entry.row_id])
        lines.append(ProfileLine(entry, url))
    return MdmProfilesSection(
        enrolled=enrolled,
        lines=lines,
        may_resend=may_resend,
        profiles_url=reverse("host-configuration-profile-list", args=[host.pk]),
    )
