"""What every MDM surface (REST, console, ``manage.py mdm``) does the same way: set the MDM up,
send commands to hosts, reveal a lock PIN. Each write is recorded in the audit trail."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from activities import recording
from hosts.models import Host
from mdm import actions, commands, conf, push_certificate, queue
from mdm.apns import certificate as apns_cert
from mdm.models import Command, Enrollment
from mdm.pki.ca import CertificateAuthority, create_ca


class MdmError(Exception):
    """A refusal with an HTTP status (400 bad input, 403 role, 404 unknown, 409 state)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def setup(*, dev: bool = False, force: bool = False) -> tuple[CertificateAuthority, bool]:
    """Create the MDM CA once (``force`` replaces it: every enrolled device must enroll again);
    with ``dev``, also a stand-in push certificate and the local APNs stand-in's certificates.
    Returns the CA and whether it was created now."""
    created = False
    if force or not conf.configured():
        authority = create_ca(conf.ca_dir(), force=force)
        created = True
    else:
        authority = conf.ca()
    if dev:
        row = push_certificate.current()
        if force or not row.certificate_pem or (row.is_dev and not (conf.standin_dir() / "ca.pem").exists()):
            bundle = apns_cert.make_dev_bundle()
            apns_cert.write_dev_bundle(conf.standin_dir(), bundle)
            push_certificate.install_dev(bundle)
    return authority, created


@dataclass
class Sent:
    commands: list[Command] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)  # host id -> why


def send(
    hosts: list[Host],
    request_type: str,
    *,
    user: Any = None,
    fields: dict[str, Any] | None = None,
    raw: bytes | str | None = None,
) -> Sent:
    """Queue one command on each host's device and push them. A host that is not an enrolled
    Apple device is skipped with its reason. ``raw`` is an admin's own command plist."""
    command_uuid = None
    if raw is not None:
        request_type, fields, command_uuid = commands.parse_raw(raw)
        if command_uuid and (len(hosts) != 1 or Command.objects.filter(uuid=command_uuid).exists()):
            raise MdmError("CommandUUID must be unique (and a raw command with one goes to one host).", 409)
    elif request_type in ("DeviceLock", "EraseDevice"):
        raise MdmError("Lock and erase go through the host's lock and wipe actions.", 400)
    elif request_type in ("InstallProfile", "RemoveProfile"):
        raise MdmError("Profiles are installed and removed by the reconciler; add or delete a profile.", 400)
    elif fields is None:
        try:
            fields = commands.fields_for(request_type)
        except commands.CommandError as exc:
            raise MdmError(str(exc)) from None
    enrollments = {
        e.host_id: e for e in Enrollment.objects.filter(host__in=hosts, enrolled=True).select_related("host")
    }
    sent = Sent()
    for host in hosts:
        enrollment = enrollments.get(host.pk)
        if enrollment is None:
            sent.skipped[host.pk] = "not enrolled in MDM"
            continue
        command = queue.enqueue(
            enrollment,
            request_type,
            fields,
            user=user,
            raw=raw is not None,
            command_uuid=command_uuid,
            push=False,
        )
        sent.commands.append(command)
        recording.record(
            "ran_mdm_command",
            object_type="host",
            object_id=host.pk,
            object_name=host.display_name,
            team=host.team_id,
            details={
                "host_id": host.pk,
                "host_display_name": host.display_name,
                "request_type": request_type,
                "command_uuid": command.uuid,
                "raw": raw is not None,
            },
        )
    queue.schedule_push([c.enrollment_id for c in sent.commands])
    return sent


def reveal_pin(command: Command, *, user: Any = None) -> str:
    """The PIN of a DeviceLock or EraseDevice, recorded as revealed by ``user``."""
    if command.request_type not in ("DeviceLock", "EraseDevice") or not command.sealed_pin:
        raise MdmError("This command has no PIN.", 404)
    pin = actions.pin_of(command)
    host = command.enrollment.host
    recording.record(
        "revealed_lock_pin",
        object_type="host",
        object_id=host.pk if host else None,
        object_name=host.display_name if host else command.enrollment.udid,
        team=host.team_id if host else None,
        details={"command_uuid": command.uuid, "request_type": command.request_type},
    )
    return pin


def upload_push_certificate(data: bytes, *, user: Any = None, key_pem: bytes | None = None) -> Any:
    """Install the APNs certificate (refusals are MdmError 400 with the reason) and record it."""
    try:
        row = push_certificate.upload(data, user=user, key_pem=key_pem)
    except apns_cert.PushCertificateError as exc:
        raise MdmError(str(exc)) from None
    recording.record(
        "uploaded_apns_certificate",
        object_type="apns_certificate",
        object_name=row.topic,
        details={"topic": row.topic, "not_after": row.not_after.isoformat() if row.not_after else None},
    )
    return row
