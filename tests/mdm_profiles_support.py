"""Shared pieces of the configuration-profile tests (``tests/test_mdm_profiles_*.py``): profiles
as a Mac admin writes them, enrolled Macs, and the device's side of the command channel, played
through the real queue (``mdm.queue.record_report``) and result dispatch (``mdm.results``)."""

from __future__ import annotations

import plistlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from django.utils import timezone

from hosts.models import Host, Team
from mdm import queue, results
from mdm.models import Command, Enrollment, HostProfile
from tests.factories import make_host

PROFILES = "/api/v1/configuration-profiles/"


def payload(
    payload_type: str = "com.apple.wifi.managed", identifier: str | None = None, **extra: Any
) -> dict:
    return {
        "PayloadType": payload_type,
        "PayloadIdentifier": identifier or f"com.example.payload.{uuid.uuid4().hex[:8]}",
        "PayloadUUID": str(uuid.uuid4()).upper(),
        "PayloadVersion": 1,
        **extra,
    }


def profile_dict(identifier: str = "com.example.wifi", name: str = "Office Wi-Fi", **top: Any) -> dict:
    body = {
        "PayloadType": "Configuration",
        "PayloadIdentifier": identifier,
        "PayloadDisplayName": name,
        "PayloadUUID": str(uuid.uuid4()).upper(),
        "PayloadVersion": 1,
        "PayloadContent": [payload(SSID_STR="Office")],
    }
    body.update(top)
    return {k: v for k, v in body.items() if v is not None}


def mobileconfig(identifier: str = "com.example.wifi", name: str = "Office Wi-Fi", **top: Any) -> bytes:
    """A valid XML .mobileconfig (``top`` overrides top-level keys; ``None`` drops one)."""
    return plistlib.dumps(profile_dict(identifier, name, **top), fmt=plistlib.FMT_XML)


def enrolled_mac(name: str, team: Team | None = None, **fields: Any) -> tuple[Host, Enrollment]:
    """A Mac with osquery (a host) and an MDM enrollment, as TokenUpdate leaves it."""
    host = make_host(name, team=team, platform="darwin", platform_like="darwin", **fields)
    enrollment = Enrollment.objects.create(
        udid=f"UDID-{name}", host=host, enrolled=True, push_token="ab" * 32, push_magic="m", topic="t"
    )
    return host, enrollment


def queued(enrollment: Enrollment, request_type: str | None = None) -> list[Command]:
    """The device's unanswered, uncancelled commands, oldest first."""
    commands = Command.objects.filter(enrollment=enrollment, cancelled=False, status="").order_by(
        "created_at", "id"
    )
    if request_type:
        commands = commands.filter(request_type=request_type)
    return list(commands)


def answer(
    enrollment: Enrollment, command: Command | str, status: str = "Acknowledged", **extra: Any
) -> Command | None:
    """The device reporting on a command, through the queue and the result handlers."""
    command_uuid = command if isinstance(command, str) else command.uuid
    report = {"UDID": enrollment.udid, "Status": status, "CommandUUID": command_uuid, **extra}
    body = plistlib.dumps(report)
    recorded = queue.record_report(enrollment, report, body)
    if recorded is not None:
        results.on_result(recorded, report)
    return recorded


def error_chain(code: int = 4001, domain: str = "MCProfileErrorDomain", text: str = "Bad payload") -> list:
    return [
        {"ErrorCode": code, "ErrorDomain": domain, "LocalizedDescription": text, "USEnglishDescription": text}
    ]


def row(host: Host, identifier: str = "com.example.wifi") -> HostProfile:
    return HostProfile.objects.get(host=host, identifier=identifier)


def age(host_profile: HostProfile, seconds: float) -> None:
    """Make a row look as if it had been in its status for ``seconds``."""
    HostProfile.objects.filter(pk=host_profile.pk).update(
        updated_at=timezone.now() - timedelta(seconds=seconds)
    )


LONG_AGO = datetime(2001, 1, 1, tzinfo=UTC)
