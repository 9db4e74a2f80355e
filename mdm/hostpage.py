"""The host page's MDM block: is this Mac enrolled, how its pushes go, its recent commands, and
(for admins and maintainers of its team) a form to send a command; admins also get a raw one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.urls import reverse

from hosts.details import platform_family
from hosts.models import Host
from mdm import access, conf, queue
from mdm.models import Command, Enrollment

COMMANDS_SHOWN = 10
SENDABLE = ("DeviceInformation", "InstalledApplicationList", "ProfileList", "RestartDevice")


@dataclass
class MdmSection:
    enrollment: Enrollment | None
    commands: list[Command] = field(default_factory=list)
    pending: int = 0
    may_command: bool = False
    may_send_raw: bool = False
    send_url: str = ""
    sendable: tuple[str, ...] = SENDABLE
    enroll_url: str = ""


def mdm_for_host(host: Host, user: Any) -> MdmSection | None:
    """``None`` for hosts MDM has nothing to say about (not Apple, MDM not set up)."""
    enrollment = Enrollment.objects.filter(host_id=host.pk).first()
    if enrollment is None and (
        platform_family(host.platform, host.platform_like) != "darwin" or not conf.configured()
    ):
        return None
    section = MdmSection(enrollment=enrollment)
    if enrollment is not None:
        recent = Command.objects.filter(enrollment=enrollment).defer("payload", "result")
        section.commands = list(recent.order_by("-created_at", "-id")[:COMMANDS_SHOWN])
        section.pending = queue.pending_count(enrollment.pk)
    if enrollment is not None and enrollment.enrolled:
        section.may_command = access.may_command(user, host.team_id)
        section.may_send_raw = access.may_send_raw(user, host.team_id)
        section.send_url = reverse("admin:mdm_command_host_send", args=[host.pk])
    elif access.may_manage_team(user, host.team_id):
        base = reverse("mdm-enrollment-profile")
        section.enroll_url = f"{base}?team_id={host.team_id}" if host.team_id else base
    return section
