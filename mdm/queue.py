"""Each device's command queue, with Apple's rules (nanomdm's ``storage/mysql/queue.go``).

The next command is the oldest of the highest priority that has no result yet, or that the device
answered ``NotNow`` to, except while the device is itself reporting ``NotNow``: a command the device
put off waits for its next ``Idle``, so a busy device is not asked the same thing in a loop. Every
enqueue sends a push; the beat task re-pushes devices that stay silent (:mod:`mdm.tasks`).
"""

from __future__ import annotations

import plistlib
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from mdm import commands
from mdm.models import FINAL_STATUSES, Command, CommandStatus, Enrollment

MAX_RESULT_BYTES = 1024 * 1024  # a stored report; bigger ones keep their status, not their body
MAX_ERROR_CHAIN = 20


def _display_name(user: Any) -> str:
    if not getattr(user, "is_authenticated", False):
        return ""
    return user.get_full_name() or user.get_username()


def enqueue(
    enrollment: Enrollment,
    request_type: str,
    fields: dict[str, Any] | None = None,
    *,
    priority: int = 0,
    user: Any = None,
    raw: bool = False,
    sealed_pin: str = "",
    command_uuid: str | None = None,
    push: bool = True,
) -> Command:
    """Queue one command for one device and push it (after the transaction commits)."""
    command = Command(
        enrollment=enrollment,
        request_type=request_type,
        priority=priority,
        raw=raw,
        sealed_pin=sealed_pin,
        requested_by=user if getattr(user, "is_authenticated", False) else None,
        requested_by_name=_display_name(user),
    )
    if command_uuid:
        command.uuid = command_uuid
    command.payload = commands.encode(command.uuid, request_type, fields)
    command.save()
    if push:
        schedule_push([enrollment.pk])
    return command


def schedule_push(enrollment_ids: list[int]) -> None:
    """Push these devices once the current transaction commits (a Celery task; in-process when
    Celery runs eagerly)."""
    if settings.MDM["PUSH_DISABLED"] or not enrollment_ids:
        return
    from mdm.tasks import push  # tasks import this module

    ids = list(enrollment_ids)
    transaction.on_commit(lambda: push.delay(ids))


def next_command(enrollment: Enrollment, *, reporting_not_now: bool) -> Command | None:
    """The command to send now, marked delivered; ``None`` when nothing is due."""
    eligible = [CommandStatus.QUEUED] if reporting_not_now else [CommandStatus.QUEUED, CommandStatus.NOT_NOW]
    command = (
        Command.objects.filter(enrollment=enrollment, cancelled=False, status__in=eligible)
        .order_by("-priority", "created_at", "id")
        .first()
    )
    if command is None:
        return None
    Command.objects.filter(pk=command.pk).update(
        delivered_at=timezone.now(), delivery_count=F("delivery_count") + 1
    )
    return command


def record_report(enrollment: Enrollment, report: dict[str, Any], body: bytes) -> Command | None:
    """Store the device's answer to a command; returns the command when its state changed.

    A report for a command that is not this device's, or that already has a final result, changes
    nothing (devices resend after a network error; a result is written once).
    """
    status = report.get("Status")
    command_uuid = report.get("CommandUUID")
    if status not in (*FINAL_STATUSES, CommandStatus.NOT_NOW) or not isinstance(command_uuid, str):
        return None
    with transaction.atomic():
        command = (
            Command.objects.select_for_update()
            .filter(enrollment=enrollment, uuid=command_uuid)
            .exclude(status__in=FINAL_STATUSES)
            .first()
        )
        if command is None:
            return None
        command.result_at = timezone.now()
        command.status = status
        if status == CommandStatus.NOT_NOW:
            command.not_now_count += 1
        else:
            command.result = body if len(body) <= MAX_RESULT_BYTES else None
            command.error_chain = _error_chain(report.get("ErrorChain"))
        command.save(update_fields=["result_at", "status", "not_now_count", "result", "error_chain"])
    return command


def _error_chain(chain: Any) -> list[dict[str, Any]]:
    """The device's ErrorChain, reduced to JSON-safe fields admins read."""
    if not isinstance(chain, list):
        return []
    kept = []
    for item in chain[:MAX_ERROR_CHAIN]:
        if not isinstance(item, dict):
            continue
        entry: dict[str, Any] = {}
        for key in ("ErrorCode", "ErrorDomain", "LocalizedDescription", "USEnglishDescription"):
            value = item.get(key)
            if isinstance(value, str):
                entry[key] = value[:1000]
            elif isinstance(value, int) and not isinstance(value, bool):
                entry[key] = value
        kept.append(entry)
    return kept


def result_plist(command: Command) -> dict[str, Any] | None:
    """The device's stored report, decoded; ``None`` when there is none (or it was too big)."""
    if not command.result:
        return None
    try:
        body = plistlib.loads(bytes(command.result))
    except Exception:
        return None
    return body if isinstance(body, dict) else None


def cancel_pending(enrollment: Enrollment) -> int:
    """Drop every command not yet answered (the device checked out)."""
    return (
        Command.objects.filter(enrollment=enrollment, cancelled=False)
        .exclude(status__in=FINAL_STATUSES)
        .update(cancelled=True)
    )


def pending_count(enrollment_id: int) -> int:
    return (
        Command.objects.filter(enrollment_id=enrollment_id, cancelled=False)
        .exclude(status__in=FINAL_STATUSES)
        .count()
    )
