"""Matching an MDM device to its host: one Mac is one host, whichever of MDM and osquery came
first. MDM knows the UDID (on a Mac, the hardware UUID osquery reports as ``system_info.uuid``) and
the serial number; a device nobody knows yet gets a new host that osquery later takes over
(``hosts.enrollment._mdm_only_host``)."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils import timezone

from hosts import nodekeys
from hosts.models import NEVER, Host
from mdm.models import Enrollment

_PLATFORMS = {"Mac": "darwin", "iPhone": "ios", "iPad": "ipados"}


def platform_for(model_name: str, product_name: str) -> str:
    for prefix, platform in _PLATFORMS.items():
        if model_name.startswith(prefix) or product_name.startswith(prefix):
            return platform
    return "darwin"


def host_for(enrollment: Enrollment, team_id: int | None) -> Host:
    """The host for this device, found by UDID then serial, or created; it joins ``team_id`` (the
    team of the profile the device enrolled with)."""
    host = enrollment.host
    if host is None:
        host = Host.objects.filter(uuid__iexact=enrollment.udid).first()
    if host is None and enrollment.serial_number:
        host = Host.objects.filter(hardware_serial=enrollment.serial_number).order_by("id").first()
    if host is None:
        host = _create(enrollment, team_id)
    elif host.team_id != team_id:
        host.team_id = team_id
        host.save(update_fields=["team"])
        nodekeys.forget([host.node_key_hash])  # its osquery gets the new team's config at once
    return host


def _create(enrollment: Enrollment, team_id: int | None) -> Host:
    now = timezone.now()
    try:
        with transaction.atomic():
            return Host.objects.create(
                osquery_host_id=enrollment.udid,
                team_id=team_id,
                uuid=enrollment.udid,
                hardware_serial=enrollment.serial_number,
                hardware_model=enrollment.product_name or enrollment.model,
                hardware_vendor="Apple Inc.",
                computer_name=enrollment.device_name,
                hostname=enrollment.device_name,
                platform=platform_for(enrollment.model_name, enrollment.product_name),
                os_version=enrollment.os_version,
                created_at=now,
                last_enrolled_at=now,
                detail_updated_at=NEVER,
            )
    except IntegrityError:  # the UDID is already some host's osquery identifier
        return Host.objects.get(osquery_host_id=enrollment.udid)
