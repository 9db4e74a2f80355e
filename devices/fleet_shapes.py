"""The device API's JSON bodies, in the shapes Fleet's server returns them.

Sources (fleetdm/fleet): ``server/service/devices.go`` (``getDeviceHostResponse``: host,
self_service, org logo and contact URLs, license, global_config), ``server/service/hosts.go``
(``HostDetailResponse``: the host detail plus status, display_text, display_name),
``server/fleet/hosts.go`` (``Host`` and ``MDMHostData`` field names) and
``server/fleet/device.go`` (``DesktopSummary``). Where this server has no such feature the
value is Fleet's own "nothing here" (no policies, no MDM, no self-service, no packs).

Two choices differ on purpose: label ``query`` text is left out (an admin's SQL can name other
hosts, and the token holder is an end user), and the free license is reported (nothing here is
tiered, so no premium-only feature is promised to Fleet's front end).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from hosts.choices import HostStatus
from hosts.models import NEVER, FleetSettings, Host, Label
from hosts.status import status_of

# Go's zero time, which Fleet's JSON carries for "never" in its non-pointer time fields.
GO_ZERO_TIME = "0001-01-01T00:00:00Z"
NANOSECONDS = 1_000_000_000


def fleet_time(moment: datetime | None) -> str | None:
    """RFC 3339 in UTC with a ``Z``, as Go marshals ``time.Time``; ``None`` stays ``None``."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def host_status(host: Host, now: datetime | None = None) -> str:
    """``online`` or ``offline``: the two statuses Fleet's host detail reports (missing is offline)."""
    seen = getattr(host, "seen", None)
    status = status_of(seen and seen.seen_time, seen and seen.offline_after, now)
    return HostStatus.ONLINE if status == HostStatus.ONLINE else HostStatus.OFFLINE


def seen_time(host: Host) -> datetime | None:
    seen = getattr(host, "seen", None)
    return seen.seen_time if seen is not None else None


def _restarted_at(host: Host) -> str | None:
    """Fleet's ``last_restarted_at``: when the details were read, minus the uptime they gave."""
    if host.uptime <= 0 or host.detail_updated_at.year < 2000:
        return GO_ZERO_TIME
    return fleet_time(host.detail_updated_at - timedelta(seconds=host.uptime))


def _label(label: Label) -> dict[str, Any]:
    return {
        "id": label.id,
        "created_at": fleet_time(label.created_at),
        "updated_at": fleet_time(label.updated_at),
        "name": label.name,
        "description": label.description,
        "platform": label.platform,
        "label_type": label.label_type,
        "label_membership_type": label.label_membership_type,
    }


def _software(item: Any) -> dict[str, Any]:
    """One ``software`` entry (Fleet's ``HostSoftwareEntry``) from ``software.hostpage``'s item."""
    return {
        "id": item.version_id,
        "name": item.name,
        "version": item.version,
        "source": item.source_id,
        "browser": item.extension_for,
        "bundle_identifier": item.bundle_identifier,
        "generated_cpe": "",
        "vulnerabilities": None,
        "installed_paths": [item.installed_path] if item.installed_path else [],
        "last_opened_at": fleet_time(item.last_opened_at),
    }


def _optional(value: str) -> str | None:
    """Fleet's ``*string`` fields: ``null`` until the agent has reported a value."""
    return value or None


def host_detail(
    host: Host,
    labels: Iterable[Label],
    device_status: dict[str, str],
    software: Iterable[Any] | None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Fleet's ``HostDetailResponse`` for one host, as ``GET /device/{token}`` returns it.

    ``software`` ``None`` leaves the key out (``exclude_software``), as Fleet's ``omitempty``
    does; ``device_status`` is ``{"device_status", "pending_action"}``.
    """
    body: dict[str, Any] = {
        "id": host.id,
        "created_at": fleet_time(host.created_at),
        "updated_at": fleet_time(host.detail_updated_at),
        "detail_updated_at": fleet_time(host.detail_updated_at),
        "label_updated_at": fleet_time(host.label_updated_at),
        "policy_updated_at": fleet_time(NEVER),  # no policies here: never
        "last_enrolled_at": fleet_time(host.last_enrolled_at),
        "seen_time": fleet_time(seen_time(host)),
        "refetch_requested": host.refetch_requested,
        "refetch_critical_queries_until": None,
        "hostname": host.hostname,
        "uuid": host.uuid,
        "platform": host.platform,
        "osquery_version": host.osquery_version,
        "orbit_version": _optional(host.orbit_version),
        "fleet_desktop_version": _optional(host.desktop_version),
        "scripts_enabled": host.scripts_enabled,
        "os_version": host.os_version,
        "build": host.build,
        "platform_like": host.platform_like,
        "code_name": host.code_name,
        "uptime": host.uptime * NANOSECONDS,  # a Go time.Duration
        "memory": host.memory,
        "cpu_type": host.cpu_type,
        "cpu_subtype": host.cpu_subtype,
        "cpu_brand": host.cpu_brand,
        "cpu_physical_cores": host.cpu_physical_cores,
        "cpu_logical_cores": host.cpu_logical_cores,
        "hardware_vendor": host.hardware_vendor,
        "hardware_model": host.hardware_model,
        "hardware_version": host.hardware_version,
        "hardware_serial": host.hardware_serial,
        "computer_name": host.computer_name,
        "public_ip": host.public_ip,
        "primary_ip": host.primary_ip,
        "primary_mac": host.primary_mac,
        "distributed_interval": host.distributed_interval,
        "config_tls_refresh": host.config_tls_refresh,
        "logger_tls_period": host.logger_tls_period,
        "team_id": host.team_id,
        "pack_stats": None,
        "team_name": host.team.name if host.team_id else None,
        "gigs_disk_space_available": 0,
        "percent_disk_space_available": 0,
        "gigs_total_disk_space": 0,
        "issues": {"failing_policies_count": 0, "critical_vulnerabilities_count": 0, "total_issues_count": 0},
        "mdm": {
            "enrollment_status": None,
            "dep_profile_error": False,
            "server_url": None,
            "name": "",
            "encryption_key_available": False,
            "connected_to_fleet": False,
            **device_status,
        },
        "dep_assigned_to_fleet": False,
        "last_restarted_at": _restarted_at(host),
        "labels": [_label(label) for label in labels],
        "packs": [],
        "policies": [],
        "batteries": [],
        "maintenance_window": None,
        "status": host_status(host, now),
        "display_text": host.hostname,
        "display_name": host.display_name,
    }
    if software is not None:
        body["software"] = [_software(item) for item in software]
    return body


def org_info(fleet_settings: FleetSettings) -> dict[str, str]:
    """Fleet's ``org_info`` as Fleet Desktop reads it (``DesktopOrgInfo``)."""
    return {
        "org_name": fleet_settings.org_name,
        "org_logo_url": fleet_settings.org_logo_url,
        "org_logo_url_light_background": fleet_settings.org_logo_url_light_background,
        "contact_url": fleet_settings.contact_url,
    }


FREE_LICENSE = {
    "tier": "free",
    "organization": "",
    "device_count": 0,
    "expiration": GO_ZERO_TIME,
    "note": "",
}


def device_host_response(host_body: dict[str, Any], fleet_settings: FleetSettings) -> dict[str, Any]:
    """The whole ``GET /api/latest/fleet/device/{token}`` body (Fleet's ``getDeviceHostResponse``)."""
    return {
        "host": host_body,
        "self_service": False,
        "org_logo_url": fleet_settings.org_logo_url,
        "org_logo_url_light_background": fleet_settings.org_logo_url_light_background,
        "org_contact_url": fleet_settings.contact_url,
        "license": dict(FREE_LICENSE),
        "global_config": {
            "mdm": {"enabled_and_configured": False},
            "features": {"enable_software_inventory": True},
        },
    }


def desktop_summary(fleet_settings: FleetSettings) -> dict[str, Any]:
    """``GET /device/{token}/desktop``: what the tray needs, nothing that identifies the host.

    Fleet answers a free-tier server with a license error here; this server has no tiers and
    answers the summary, with no policies (so none failing) and no MDM migration to offer.
    """
    return {
        "failing_policies_count": 0,
        "self_service": False,
        "notifications": {"needs_mdm_migration": False, "renew_enrollment_profile": False},
        "config": {
            "org_info": org_info(fleet_settings),
            "mdm": {"macos_migration": {"mode": ""}},
        },
        "alternative_browser_host": "",
    }
