"""Lock, unlock and erase Macs through MDM, with the same rules and device status as the
Linux and Windows actions (``hostscripts.device_actions``).

Lock is ``DeviceLock`` with a random 6-digit PIN, erase is ``EraseDevice``; both PINs are sealed
and an admin can reveal them later. A locked Mac is unlocked by typing the PIN on it: "unlock"
reveals the PIN and marks the unlock pending, and the Mac counts as unlocked once it talks to us
again (Fleet does the same). Status: wiped once an erase was acknowledged; locked once a lock was
acknowledged and no unlock completed since; pending while the device has not answered.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from fleet.sealing import seal, unseal
from hosts.models import Host
from mdm import commands, queue
from mdm.models import Command, CommandStatus, Enrollment

PIN_PURPOSE = "mdm-device-pin"
LOCK, UNLOCK, WIPE = "lock", "unlock", "wipe"
_WAITING = (CommandStatus.QUEUED, CommandStatus.NOT_NOW)


def enrollment_of(host: Host) -> Enrollment | None:
    return Enrollment.objects.filter(host_id=host.pk, enrolled=True).first()


def _latest(enrollment: Enrollment, request_type: str) -> Command | None:
    return (
        Command.objects.filter(enrollment=enrollment, request_type=request_type, cancelled=False)
        .exclude(status__in=(CommandStatus.ERROR, CommandStatus.FORMAT_ERROR))
        .order_by("-created_at", "-id")
        .first()
    )


def status_for(enrollment: Enrollment) -> tuple[str, str]:
    """``(status, pending_action)`` as Fleet names them."""
    erase = _latest(enrollment, "EraseDevice")
    if erase is not None and erase.status == CommandStatus.ACKNOWLEDGED:
        return "wiped", ""
    lock = _latest(enrollment, "DeviceLock")
    locked = (
        lock is not None
        and lock.status == CommandStatus.ACKNOWLEDGED
        and (enrollment.unlocked_at is None or enrollment.unlocked_at < lock.result_at)
    )
    if erase is not None:  # waiting for the device
        return ("locked" if locked else "unlocked"), WIPE
    if lock is not None and lock.status in _WAITING:
        return "unlocked", LOCK
    if locked and enrollment.unlock_requested_at and enrollment.unlock_requested_at > lock.result_at:
        return "locked", UNLOCK
    return ("locked" if locked else "unlocked"), ""


def refusal(host: Host, kind: str) -> str | None:
    enrollment = enrollment_of(host)
    if enrollment is None:
        return (
            "This Mac is not enrolled in MDM: install the enrollment profile on it (My device, or the "
            "console's MDM page) to lock or erase it."
        )
    status, pending = status_for(enrollment)
    if pending:
        return f"The host already has a pending {pending}; wait for it."
    if status == "wiped":
        return "The host was wiped."
    if kind == LOCK and status == "locked":
        return "The host is already locked."
    if kind == UNLOCK and status != "locked":
        return "The host is not locked."
    return None


def request(host: Host, kind: str, user: Any = None) -> Command:
    """Queue the lock or erase (or start an unlock); returns the command (for unlock, the lock
    whose PIN unlocks the Mac). The caller checked :func:`refusal`."""
    enrollment = enrollment_of(host)
    if enrollment is None:
        raise ValueError("not enrolled in MDM")
    if kind == UNLOCK:
        lock = _latest(enrollment, "DeviceLock")
        Enrollment.objects.filter(pk=enrollment.pk).update(unlock_requested_at=timezone.now())
        return lock
    pin = commands.new_pin()
    request_type, fields = (
        ("DeviceLock", commands.device_lock(pin))
        if kind == LOCK
        else ("EraseDevice", commands.erase_device(pin))
    )
    return queue.enqueue(
        enrollment, request_type, fields, priority=10, user=user, sealed_pin=seal(pin.encode(), PIN_PURPOSE)
    )


def pin_of(command: Command) -> str:
    """The PIN a DeviceLock or EraseDevice carried (admins only; the caller records who asked)."""
    if not command.sealed_pin:
        return ""
    return unseal(command.sealed_pin, PIN_PURPOSE).decode()
