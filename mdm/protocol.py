"""The check-in and command channel (``/mdm/apple/mdm``), after the signature was verified.

Check-in messages (``MessageType``) record the device's enrollment; command reports (``Status``)
store the answer to the last command and get the next one. The bodies are Apple's plists
(apple/device-management ``mdm/checkin`` and ``mdm/commands``); every field we keep is checked
for type and bounded in length before it touches the database.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from activities import recording
from mdm import devices, queue, results
from mdm.models import Command, DeviceIdentity, Enrollment

logger = logging.getLogger(__name__)

MAX_UDID = 64


class ProtocolError(Exception):
    """A message we cannot act on (HTTP 400, or ``status`` when given)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Reply:
    """What the view sends back: a plist body (or none) and a status."""

    body: bytes = b""
    status: int = 200


def _text(message: dict[str, Any], key: str, limit: int, *, required: bool = False) -> str:
    value = message.get(key, "")
    if not isinstance(value, str):
        raise ProtocolError(f"{key} must be a string")
    if required and not value.strip():
        raise ProtocolError(f"{key} is required")
    if len(value) > limit:
        raise ProtocolError(f"{key} is longer than {limit} characters")
    return value.strip()


def device_id(message: dict[str, Any]) -> str:
    """The device channel's id (UDID, or EnrollmentID for user enrollments)."""
    udid = message.get("UDID") or message.get("EnrollmentID")
    if not isinstance(udid, str) or not udid.strip() or len(udid) > MAX_UDID:
        raise ProtocolError("UDID is missing or invalid")
    return udid.strip()


# --- Check-in --------------------------------------------------------------------------------------


def checkin(message: dict[str, Any], signer: str) -> Reply:
    """A check-in signed by the certificate whose SHA-256 is ``signer`` (already verified)."""
    kind = message.get("MessageType")
    handler = {
        "Authenticate": _authenticate,
        "TokenUpdate": _token_update,
        "CheckOut": _check_out,
        "GetBootstrapToken": lambda m, i: Reply(_plist({})),
        "SetBootstrapToken": lambda m, i: Reply(),
        "UserAuthenticate": lambda m, i: Reply(status=410),  # no user channel: Apple's "Gone"
        "DeclarativeManagement": lambda m, i: Reply(status=404),
    }.get(kind)
    if handler is None:
        raise ProtocolError(f"unknown MessageType {str(kind)[:40]!r}")
    return handler(message, signer)


def _authenticate(message: dict[str, Any], signer: str) -> Reply:
    udid = device_id(message)
    identity = DeviceIdentity.objects.filter(sha256=signer).first()
    if identity is None:
        raise ProtocolError("unknown device certificate", status=401)
    fields = {
        "serial_number": _text(message, "SerialNumber", 64),
        "model": _text(message, "Model", 100),
        "model_name": _text(message, "ModelName", 100),
        "product_name": _text(message, "ProductName", 100),
        "os_version": _text(message, "OSVersion", 50),
        "device_name": _text(message, "DeviceName", 255),
        "topic": _text(message, "Topic", 255),
    }
    # A certificate belongs to the one device that enrolled with it (nanomdm's certauth): another
    # device's UDID would re-bind that device's enrollment, and move its host to our team.
    if Enrollment.objects.filter(identity=identity).exclude(udid=udid).exists():
        raise ProtocolError("this certificate belongs to another device", status=403)
    now = timezone.now()
    with transaction.atomic():
        enrollment, _ = Enrollment.objects.select_for_update().get_or_create(udid=udid)
        # A new Authenticate is a new enrollment: the old push token is void until TokenUpdate.
        for name, value in fields.items():
            if value or name == "topic":
                setattr(enrollment, name, value)
        enrollment.identity = identity
        enrollment.enrolled = False
        enrollment.push_token = ""
        enrollment.push_magic = ""
        enrollment.authenticated_at = now
        enrollment.last_seen_at = now
        enrollment.checked_out_at = None
        enrollment.host = devices.host_for(enrollment, identity.team_id)
        enrollment.save()
    return Reply()


def _enrollment_for(message: dict[str, Any], signer: str) -> Enrollment:
    """The device's enrollment, which must be bound to the certificate that signed the message
    (one query: the enrollment with its identity)."""
    enrollment = Enrollment.objects.select_related("identity").filter(udid=device_id(message)).first()
    if enrollment is None:
        raise ProtocolError("unknown device: send Authenticate first", status=404)
    if enrollment.identity is None or enrollment.identity.sha256 != signer:
        raise ProtocolError("this device enrolled with another certificate", status=403)
    return enrollment


def _token_update(message: dict[str, Any], signer: str) -> Reply:
    if message.get("UserID") or message.get("UserShortName"):
        return Reply()  # the user channel: nothing of ours runs there
    enrollment = _enrollment_for(message, signer)
    token = message.get("Token")
    magic = message.get("PushMagic")
    if not isinstance(token, bytes) or not 0 < len(token) <= 100:
        raise ProtocolError("Token must be data of at most 100 bytes")
    if not isinstance(magic, str) or not magic.strip() or len(magic) > 100:
        raise ProtocolError("PushMagic is missing or invalid")
    first = not enrollment.enrolled
    now = timezone.now()
    enrollment.push_token = token.hex()
    enrollment.push_magic = magic.strip()
    enrollment.enrolled = True
    enrollment.last_seen_at = now
    if first:
        enrollment.enrolled_at = now
    enrollment.save(update_fields=["push_token", "push_magic", "enrolled", "last_seen_at", "enrolled_at"])
    if first:
        results.on_enrolled(enrollment)
        _record(enrollment, "mdm_enrolled")
    return Reply()


def _check_out(message: dict[str, Any], signer: str) -> Reply:
    enrollment = _enrollment_for(message, signer)
    enrollment.enrolled = False
    enrollment.checked_out_at = timezone.now()
    enrollment.push_token = ""
    enrollment.push_magic = ""
    enrollment.save(update_fields=["enrolled", "checked_out_at", "push_token", "push_magic"])
    queue.cancel_pending(enrollment)
    results.on_checked_out(enrollment)
    _record(enrollment, "mdm_unenrolled")
    return Reply()


def _record(enrollment: Enrollment, kind: str) -> None:
    host = enrollment.host
    recording.record(
        kind,
        object_type="host",
        object_id=host.pk if host else None,
        object_name=host.display_name if host else enrollment.udid,
        team=host.team_id if host else None,
        details={
            "host_serial": enrollment.serial_number,
            "host_display_name": host.display_name if host else enrollment.device_name,
            "installed_from_dep": False,
        },
    )


# --- Command channel -------------------------------------------------------------------------------


def report(message: dict[str, Any], signer: str, body: bytes) -> Reply:
    """A command report: store it, then answer with the next command (or an empty 200).

    An ``Idle`` with nothing queued, what every device sends on every push and poll, costs two
    indexed reads: the enrollment (with its identity) and the queue.
    """
    status = message.get("Status")
    if status not in ("Idle", "Acknowledged", "Error", "CommandFormatError", "NotNow"):
        raise ProtocolError(f"unknown Status {str(status)[:40]!r}")
    enrollment = _enrollment_for(message, signer)
    if message.get("UserID"):
        return Reply()  # user channel: no commands
    _seen(enrollment)
    if status != "Idle":
        with transaction.atomic():
            command = queue.record_report(enrollment, message, body)
            if command is not None:
                results.on_result(command, message)
    following = queue.next_command(enrollment, reporting_not_now=status == "NotNow")
    if status == "Idle":
        from mdm.tasks import run_upkeep_if_due  # embedded default only; a no-op under beat

        run_upkeep_if_due()
    return Reply(bytes(following.payload)) if following is not None else Reply()


SEEN_RESOLUTION = 30  # seconds: last_seen_at is written at most this often per device


def _seen(enrollment: Enrollment) -> None:
    """Remember the device is alive (and finish a pending macOS unlock: it is talking again)."""
    now = timezone.now()
    last = enrollment.last_seen_at
    if last is None or (now - last).total_seconds() >= SEEN_RESOLUTION:
        Enrollment.objects.filter(pk=enrollment.pk).update(last_seen_at=now)
    results.on_seen(enrollment)


def _plist(value: dict[str, Any]) -> bytes:
    import plistlib

    return plistlib.dumps(value, fmt=plistlib.FMT_XML)


__all__ = ["Command", "ProtocolError", "Reply", "checkin", "report"]
