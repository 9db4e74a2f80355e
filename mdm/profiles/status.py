"""A profile's state on one host, from what the device answers and what osquery sees.

``pending`` (a command is queued) -> ``verifying`` (the device acknowledged ``InstallProfile``)
-> ``verified`` (osquery's ``macos_profiles`` table, or a ``ProfileList`` answer, lists it).
``failed`` comes from an error after :data:`MAX_RETRIES` retry (Fleet's ``MaxProfileRetries``),
or from a verified profile that osquery no longer sees, twice. A removal's row disappears when
the device acknowledges it (or says the profile was not there).

Every write is conditional on the row still being the one the command was for (its
``command_uuid``): an answer to a command the reconciler or an admin has since replaced changes
nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.utils import timezone

from mdm import commands, queue
from mdm.models import (
    Command,
    CommandStatus,
    Enrollment,
    HostProfile,
    Profile,
    ProfileOperation,
    ProfileStatus,
    new_uuid,
)

logger = logging.getLogger(__name__)

MAX_RETRIES = 1
MAX_DETAIL = 2000
NOT_NOW_DETAIL = "The device said NotNow; waiting for it to be ready."
MISSING_DETAIL = "The host's osquery does not report this profile"
# RemoveProfile for a profile the device does not have: nothing left to remove. macOS answers
# MDMClientError 89 (what Fleet matches on); MCMDMErrorDomain 89 is accepted as the same.
_NOT_INSTALLED = {("MDMClientError", 89), ("MCMDMErrorDomain", 89)}


def describe_errors(chain: Iterable[dict[str, Any]]) -> str:
    """A device's ErrorChain as one line per error: ``description (domain code)``."""
    lines = []
    for item in chain:
        if not isinstance(item, dict):
            continue
        text = item.get("USEnglishDescription") or item.get("LocalizedDescription") or "Unknown error"
        where = " ".join(str(item[key]) for key in ("ErrorDomain", "ErrorCode") if key in item)
        lines.append(f"{text} ({where})" if where else str(text))
    return "\n".join(lines)[:MAX_DETAIL]


def _error_text(command: Command) -> str:
    return describe_errors(command.error_chain or []) or f"The device answered {command.status}."


def on_command_result(command: Command, report: dict[str, Any]) -> None:
    """The device answered an InstallProfile, RemoveProfile or ProfileList (``command.status`` is
    the new state, ``report`` the device's plist)."""
    if command.request_type == "ProfileList":
        if command.status == CommandStatus.ACKNOWLEDGED:
            _profile_list(command, report)
        return
    row = HostProfile.objects.filter(command_uuid=command.uuid).first()
    if row is None:
        return  # superseded by a newer command for the same profile, or the row is gone
    host_id = Enrollment.objects.filter(pk=command.enrollment_id).values_list("host_id", flat=True).first()
    if host_id != row.host_id:
        logger.warning("command %s answered by a device that is not host %s's", command.uuid, row.host_id)
        return
    if command.request_type == "InstallProfile" and row.operation == ProfileOperation.INSTALL:
        _install_result(command, row)
    elif command.request_type == "RemoveProfile" and row.operation == ProfileOperation.REMOVE:
        _remove_result(command, row)


def _this(row: HostProfile, command: Command) -> Any:
    return HostProfile.objects.filter(pk=row.pk, command_uuid=command.uuid)


def _install_result(command: Command, row: HostProfile) -> None:
    now = timezone.now()
    if command.status == CommandStatus.ACKNOWLEDGED:
        _this(row, command).update(status=ProfileStatus.VERIFYING, detail="", updated_at=now)
    elif command.status == CommandStatus.NOT_NOW:
        _this(row, command).update(detail=NOT_NOW_DETAIL)
    elif command.status in (CommandStatus.ERROR, CommandStatus.FORMAT_ERROR):
        error = _error_text(command)
        if row.retries < MAX_RETRIES and _retry(row, command, error):
            return
        _this(row, command).update(status=ProfileStatus.FAILED, detail=error, updated_at=now)


def _retry(row: HostProfile, command: Command, error: str) -> bool:
    """Send the install once more; ``False`` when it cannot be (profile deleted, not enrolled)."""
    profile = Profile.objects.filter(pk=row.profile_id).only("pk", "checksum", "mobileconfig").first()
    enrollment = Enrollment.objects.filter(pk=command.enrollment_id, enrolled=True).first()
    if profile is None or enrollment is None:
        return False
    command_uuid = new_uuid()
    with transaction.atomic():
        changed = _this(row, command).update(
            status=ProfileStatus.PENDING,
            checksum=profile.checksum,
            command_uuid=command_uuid,
            retries=row.retries + 1,
            detail=f"The device refused it; trying once more. {error}"[:MAX_DETAIL],
            updated_at=timezone.now(),
        )
        if changed:
            fields = commands.install_profile(bytes(profile.mobileconfig))
            queue.enqueue(enrollment, "InstallProfile", fields, command_uuid=command_uuid)
    return True


def _remove_result(command: Command, row: HostProfile) -> None:
    if command.status == CommandStatus.ACKNOWLEDGED:
        _this(row, command).delete()
    elif command.status == CommandStatus.NOT_NOW:
        _this(row, command).update(detail=NOT_NOW_DETAIL)
    elif command.status in (CommandStatus.ERROR, CommandStatus.FORMAT_ERROR):
        codes = {(e.get("ErrorDomain"), e.get("ErrorCode")) for e in command.error_chain or []}
        if codes & _NOT_INSTALLED:
            _this(row, command).delete()
            return
        detail = f"Removal failed: {_error_text(command)}"[:MAX_DETAIL]
        _this(row, command).update(status=ProfileStatus.FAILED, detail=detail, updated_at=timezone.now())


def _profile_list(command: Command, report: dict[str, Any]) -> None:
    items = report.get("ProfileList")
    if not isinstance(items, list):
        return
    host_id = Enrollment.objects.filter(pk=command.enrollment_id).values_list("host_id", flat=True).first()
    if host_id is None:
        return
    identifiers = {
        item["PayloadIdentifier"]
        for item in items
        if isinstance(item, dict) and isinstance(item.get("PayloadIdentifier"), str)
    }
    verify_installed(host_id, identifiers)


# --- verification -------------------------------------------------------------------------------


def verify_from_osquery(host: Any, rows: list[dict[str, str]]) -> None:
    """The ``macos_profiles`` detail query's ingest: the identifiers osquery sees on the Mac.

    Runs inside the agent's ``distributed/write``: it never raises, and costs one query for the
    host's rows plus one update when something changed (more only to re-send a missing profile).
    Nothing at all while MDM is not set up (no CA: no Mac can hold our profiles), as Fleet only
    asks for profiles when MDM is on; the check is two ``stat`` calls, no query.
    """
    try:
        from mdm import conf  # the CA module pulls in cryptography: not for every import of status

        if not conf.configured():
            return
        identifiers = {
            row["identifier"]
            for row in rows
            if isinstance(row, dict) and isinstance(row.get("identifier"), str) and row["identifier"]
        }
        verify_installed(host.pk, identifiers)
    except Exception:  # verification is best effort; the agent's write must still succeed
        logger.warning(
            "host %s: could not verify MDM profiles from osquery", getattr(host, "pk", "?"), exc_info=True
        )


def verify_installed(host_id: int, identifiers: set[str]) -> dict[str, int]:
    """Profiles seen installed: ``verifying`` ones become ``verified``; a ``verified`` one no longer
    seen is sent once more, and fails the second time. ``verifying`` ones not seen yet wait (the
    reconciler re-sends them if that lasts)."""
    rows = list(
        HostProfile.objects.filter(
            host_id=host_id,
            operation=ProfileOperation.INSTALL,
            status__in=(ProfileStatus.VERIFYING, ProfileStatus.VERIFIED),
        ).values_list("pk", "identifier", "status", "retries", "profile_id", "command_uuid")
    )
    seen = [
        pk
        for pk, identifier, status, *_ in rows
        if status == ProfileStatus.VERIFYING and identifier in identifiers
    ]
    missing = [row for row in rows if row[2] == ProfileStatus.VERIFIED and row[1] not in identifiers]
    now = timezone.now()
    if seen:
        HostProfile.objects.filter(pk__in=seen, status=ProfileStatus.VERIFYING).update(
            status=ProfileStatus.VERIFIED, detail="", updated_at=now
        )
    failed = [pk for pk, _, _, retries, *_ in missing if retries >= MAX_RETRIES]
    resend = [row for row in missing if row[3] < MAX_RETRIES]
    cannot = _resend_missing(host_id, resend) if resend else []
    failed.extend(cannot)
    if failed:
        HostProfile.objects.filter(pk__in=failed, status=ProfileStatus.VERIFIED).update(
            status=ProfileStatus.FAILED, detail=f"{MISSING_DETAIL}.", updated_at=now
        )
    return {"verified": len(seen), "resent": len(resend) - len(cannot), "failed": len(failed)}


def _resend_missing(host_id: int, rows: list[tuple]) -> list[int]:
    """Install these verified-but-missing profiles again; returns the rows that cannot be (to fail)."""
    enrollment = Enrollment.objects.filter(host_id=host_id, enrolled=True).first()
    contents = dict(
        Profile.objects.filter(pk__in=[row[4] for row in rows if row[4]]).values_list("pk", "mobileconfig")
    )
    cannot = []
    for pk, _identifier, _status, retries, profile_id, command_uuid in rows:
        if enrollment is None or profile_id not in contents:
            cannot.append(pk)
            continue
        new = new_uuid()
        with transaction.atomic():
            changed = HostProfile.objects.filter(
                pk=pk, status=ProfileStatus.VERIFIED, command_uuid=command_uuid
            ).update(
                status=ProfileStatus.PENDING,
                command_uuid=new,
                retries=retries + 1,
                detail=f"{MISSING_DETAIL} any more; sent it again.",
                updated_at=timezone.now(),
            )
            if changed:
                fields = commands.install_profile(bytes(contents[profile_id]))
                queue.enqueue(enrollment, "InstallProfile", fields, command_uuid=new)
    return cannot
