"""What the server does with what a device tells it: enrollment side effects and each command's
result (profiles, device information, lock and erase, unlock)."""

from __future__ import annotations

import logging
from typing import Any

from django.db.models import Q
from django.utils import timezone

from hosts.models import Host
from mdm import commands, queue
from mdm.models import Command, CommandStatus, Enrollment

logger = logging.getLogger(__name__)

# DeviceInformation answers copied onto the host (when osquery has not filled them already).
_HOST_FIELDS = {
    "DeviceName": "computer_name",
    "OSVersion": "os_version",
    "SerialNumber": "hardware_serial",
    "ProductName": "hardware_model",
    "BuildVersion": "build",
}
_ENROLLMENT_FIELDS = {
    "DeviceName": ("device_name", 255),
    "OSVersion": ("os_version", 50),
    "ModelName": ("model_name", 100),
    "Model": ("model", 100),
    "ProductName": ("product_name", 100),
    "SerialNumber": ("serial_number", 64),
}


def on_enrolled(enrollment: Enrollment) -> None:
    """A new enrollment: ask who the device is, and let the reconciler queue its profiles."""
    queue.enqueue(enrollment, "DeviceInformation", commands.device_information(), priority=1)
    from mdm.profiles import reconciler

    reconciler.request_reconcile()


def on_checked_out(enrollment: Enrollment) -> None:
    """The device removed its MDM profile: every profile MDM installed is gone with it."""
    if enrollment.host_id:
        from mdm.models import HostProfile

        HostProfile.objects.filter(host_id=enrollment.host_id).delete()


def on_seen(enrollment: Enrollment) -> None:
    """A device that talks after an unlock was requested has been unlocked (macOS shows the lock
    screen until its PIN is typed, and says nothing meanwhile)."""
    if enrollment.unlock_requested_at and (
        enrollment.unlocked_at is None or enrollment.unlocked_at < enrollment.unlock_requested_at
    ):
        Enrollment.objects.filter(pk=enrollment.pk).filter(
            Q(unlocked_at__isnull=True) | Q(unlocked_at__lt=enrollment.unlock_requested_at)
        ).update(unlocked_at=timezone.now())


def on_result(command: Command, report: dict[str, Any]) -> None:
    """Dispatch a command's new state to whoever tracks it."""
    handler = _HANDLERS.get(command.request_type)
    if handler is None:
        return
    try:
        handler(command, report)
    except Exception:  # a bookkeeping failure must not lose the stored result or the next command
        logger.exception("handling the result of %s %s failed", command.request_type, command.uuid)


def _profiles(command: Command, report: dict[str, Any]) -> None:
    from mdm.profiles import status

    status.on_command_result(command, report)


def _device_information(command: Command, report: dict[str, Any]) -> None:
    if command.status != CommandStatus.ACKNOWLEDGED:
        return
    answers = report.get("QueryResponses")
    if not isinstance(answers, dict):
        return
    enrollment = command.enrollment
    changed = []
    for key, (field, limit) in _ENROLLMENT_FIELDS.items():
        value = answers.get(key)
        if isinstance(value, str) and value.strip():
            setattr(enrollment, field, value.strip()[:limit])
            changed.append(field)
    if changed:
        enrollment.save(update_fields=changed)
    if enrollment.host_id:
        host = Host.objects.get(pk=enrollment.host_id)
        host_changed = []
        for key, field in _HOST_FIELDS.items():
            value = answers.get(key)
            if isinstance(value, str) and value.strip() and not getattr(host, field):
                setattr(host, field, value.strip()[:255])
                host_changed.append(field)
        if host_changed:
            host.save(update_fields=host_changed)


_HANDLERS = {
    "InstallProfile": _profiles,
    "RemoveProfile": _profiles,
    "ProfileList": _profiles,
    "DeviceInformation": _device_information,
}
