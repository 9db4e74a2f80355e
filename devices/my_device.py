"""What the My device page shows: an end user's view of their own computer, nothing more.

The reader is the person at the computer, not an admin: the vitals they would be asked for on a
support call, whether the computer is online and locked, the groups it is in, whom to contact,
and what IT ran on it (name, kind, who, when, status; never a script's output, which may hold
admin data). Nothing here reads another host, and nothing links into the console.
Each part is one bounded, indexed query.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from devices.fleet_shapes import host_status, seen_time
from devices.org import org_settings
from hosts.details import platform_family
from hosts.host_page import duration
from hosts.models import FleetSettings, Host
from hostscripts.device_status import DeviceStatus, device_status
from hostscripts.models import ScriptKind, ScriptRun

RUNS_SHOWN = 20
_DEVICE_STATUS_TEXT = {"unlocked": "Unlocked", "locked": "Locked", "wiped": "Wiped"}
_PENDING_TEXT = {"lock": "Lock pending", "unlock": "Unlock pending", "wipe": "Wipe pending"}


@dataclass(frozen=True)
class Vital:
    label: str
    value: str
    code: bool = False  # shown in a fixed-width font (serials, addresses)


def memory_text(size: int) -> str:
    """Bytes of memory as people say it: ``17179869184`` -> ``"16 GB"``."""
    if size <= 0:
        return ""
    for unit, scale in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20)):
        if size >= scale:
            amount = size / scale
            return f"{amount:.0f} {unit}" if amount >= 10 or amount.is_integer() else f"{amount:.1f} {unit}"
    return f"{size} bytes"


def _processor(host: Host) -> str:
    name = host.cpu_brand or host.cpu_type
    cores = host.cpu_physical_cores or host.cpu_logical_cores
    if name and cores:
        return f"{name} ({cores} cores)"
    return name or (f"{cores} cores" if cores else "")


def vitals(host: Host) -> list[Vital]:
    """The facts about the computer an end user may be asked for; empty ones are left out."""
    items = [
        Vital("Computer name", host.display_name),
        Vital("Hostname", host.hostname if host.hostname != host.display_name else ""),
        Vital("Operating system", host.os_version or host.platform),
        Vital("Model", " ".join(p for p in (host.hardware_vendor, host.hardware_model) if p)),
        Vital("Serial number", host.hardware_serial, code=True),
        Vital("Processor", _processor(host)),
        Vital("Memory", memory_text(host.memory)),
        Vital("Uptime", duration(host.uptime)),
        Vital("IP address", host.primary_ip, code=True),
        Vital("Public IP address", host.public_ip, code=True),
        Vital("MAC address", host.primary_mac, code=True),
        Vital("osquery", host.osquery_version),
        Vital("orbit", host.orbit_version),
        Vital("Fleet Desktop", host.desktop_version),
    ]
    return [v for v in items if v.value]


@dataclass(frozen=True)
class RunRow:
    """One script or device action run on this computer, as the end user sees it."""

    name: str
    kind: str
    requested_by: str
    requested_at: datetime
    finished_at: datetime | None
    status: str


def recent_runs(host: Host, limit: int = RUNS_SHOWN) -> list[RunRow]:
    """The latest scripts and lock/unlock/wipe actions on this host, newest first (one query)."""
    runs = (
        ScriptRun.objects.filter(host_id=host.id)
        .only(
            "kind", "script_name", "requested_by_name", "created_at", "finished_at", "exit_code", "cancelled"
        )
        .order_by("-created_at", "-id")[:limit]
    )
    rows = []
    for run in runs:
        kind = ScriptKind(run.kind).label if run.kind in ScriptKind.values else run.kind
        name = run.script_name or (kind if run.kind != ScriptKind.SCRIPT else "Script")
        rows.append(
            RunRow(
                name=name,
                kind=kind,
                requested_by=run.requested_by_name or "IT",
                requested_at=run.created_at,
                finished_at=run.finished_at,
                status=run.status,
            )
        )
    return rows


def _origin(url: str) -> str:
    """``https://cdn.example.com`` for a logo URL, or ``""`` when it is not http(s)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        return ""
    return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True)
class Organisation:
    name: str
    logo_url: str
    logo_origin: str
    contact_url: str
    transparency_url: str


def organisation(fleet_settings: FleetSettings) -> Organisation:
    """The organisation's name, logo (the light-background one: the page is light) and links."""
    logo = fleet_settings.org_logo_url_light_background or fleet_settings.org_logo_url
    origin = _origin(logo)
    return Organisation(
        name=fleet_settings.org_name,
        logo_url=logo if origin else "",
        logo_origin=origin,
        contact_url=fleet_settings.contact_url if _origin(fleet_settings.contact_url) else "",
        transparency_url=fleet_settings.transparency_url if _origin(fleet_settings.transparency_url) else "",
    )


def device_state_text(state: DeviceStatus) -> tuple[str, str]:
    return _DEVICE_STATUS_TEXT.get(state.status, state.status), _PENDING_TEXT.get(state.pending_action, "")


def page_context(host: Host) -> dict[str, Any]:
    """Everything the template needs, read in a fixed number of queries."""
    state = device_status(host)
    state_text, pending_text = device_state_text(state)
    return {
        "host": host,
        "status": host_status(host),
        "seen_time": seen_time(host),
        "vitals": vitals(host),
        "device_status": state.status,
        "device_status_text": state_text,
        "pending_action_text": pending_text,
        "labels": list(host.labels.order_by("name").values_list("name", flat=True)),
        "runs": recent_runs(host),
        "org": organisation(org_settings()),
        "mdm_offer": mdm_offer(host),
    }


def mdm_offer(host: Host) -> bool:
    """Whether to offer "Turn on MDM": a Mac not enrolled yet, on a server that can enroll it."""
    if platform_family(host.platform, host.platform_like) != "darwin":
        return False
    from mdm import conf, push_certificate
    from mdm.models import Enrollment

    if Enrollment.objects.filter(host_id=host.pk, enrolled=True).exists():
        return False
    return conf.configured() and bool(push_certificate.topic())
