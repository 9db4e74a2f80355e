"""Turning "which profiles each Mac should have" into commands (Fleet's ``mdm_apple_profile_manager``).

For every enrolled Mac that has a host, :func:`reconcile` compares the profiles it should have
(:mod:`mdm.profiles.scope`) with its rows in ``HostProfile``:

- a profile it should have, with no row, a row for other contents (checksum), another profile
  with the same identifier (the host changed team), or a removal under way: one
  ``InstallProfile``, row ``install``/``pending``;
- a row being installed whose profile it should no longer have (deleted, labels or team changed):
  one ``RemoveProfile``, row ``remove``/``pending``; the row goes when the device acknowledges
  (:mod:`mdm.profiles.status`). A failed install is simply forgotten: nothing was installed;
- stuck rows, pending or verifying for longer than ``MDM["STUCK_AFTER"]`` seconds, are sent again
  (a new command, ``resends`` + 1, counted in ``resent_stuck``), at most
  :data:`MAX_STUCK_RESENDS` times, then marked failed with the reason. Which rows count as
  stuck, and why the others do not:

  - pending, when the command is no longer waiting in the queue (cancelled, gone, or answered
    without the row following) or the device took it and never answered. Not when the device has
    not fetched it yet (an offline Mac: resending changes nothing, and the re-push task already
    wakes silent devices) nor when it said NotNow (Apple's protocol has it ask again at its next
    Idle);
  - verifying, when the host's osquery reported its details since the acknowledgement without
    the profile being seen. A Mac without osquery stays verifying, as in Fleet: nothing can say.

Cost: hosts are processed in chunks of :data:`CHUNK`: per chunk one query for the enrollments and
hosts, one for label memberships, one for the rows, one for the contents of the profiles to send,
one for the commands of stuck rows; then one write per command sent (each row update is
conditional on the row not having moved meanwhile, so a device's answer arriving during the pass
is never overwritten) and one push per device, after commit. A host whose rows are in order costs
nothing beyond the reads.

Runs: the beat task ``mdm.reconcile_profiles`` every ``MDM["RECONCILE_INTERVAL"]`` seconds, and
:func:`request_reconcile` after every change to profiles or enrollments. Only one pass runs at a
time across processes (a cache lock); a request arriving meanwhile makes the running pass go
around once more instead of being lost.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone

from mdm import commands, queue
from mdm.models import (
    FINAL_STATUSES,
    Command,
    CommandStatus,
    Enrollment,
    HostProfile,
    Profile,
    ProfileOperation,
    ProfileStatus,
    new_uuid,
)
from mdm.profiles.scope import Catalog, HostFacts, ScopedProfile

logger = logging.getLogger(__name__)

CHUNK = 500
MAX_STUCK_RESENDS = 3
MAX_PASSES = 3  # a pass, plus at most two more for changes requested while it ran
LOCK_KEY = "mdm:profiles:reconcile:lock"
AGAIN_KEY = "mdm:profiles:reconcile:again"
LOCK_SECONDS = 900  # a crashed worker's lock expires; a pass over 50k hosts takes far less
INSTALL, REMOVE = ProfileOperation.INSTALL, ProfileOperation.REMOVE
PENDING, VERIFYING, FAILED = ProfileStatus.PENDING, ProfileStatus.VERIFYING, ProfileStatus.FAILED

_local = threading.local()


# --- asking for a run ----------------------------------------------------------------------------


def request_reconcile() -> None:
    """Run the reconciler once the current transaction commits. Never raises."""
    try:
        transaction.on_commit(_run_requested)
    except Exception:  # never fail the caller's write because of scheduling
        logger.warning(
            "could not schedule the profile reconciler; its periodic run catches up", exc_info=True
        )


def _run_requested() -> None:
    """Eager Celery (the embedded default): run here, unless this thread is already reconciling
    (then that pass goes around once more). Otherwise: hand it to a worker."""
    try:
        from celery import current_app

        from mdm import tasks  # tasks import the queue, which imports this package's callers

        if current_app.conf.task_always_eager:
            if getattr(_local, "running", False):
                _ask_again()
                return
            tasks.reconcile_profiles()
        else:
            tasks.reconcile_profiles.delay()
    except Exception:
        logger.warning("the profile reconciler failed; its periodic run catches up", exc_info=True)


def running_here() -> bool:
    """Whether this thread is inside :func:`reconcile` (for callers that must not re-enter it)."""
    return bool(getattr(_local, "running", False))


# --- one lock across processes -------------------------------------------------------------------


def _acquire() -> str | None:
    """A token when this process may run; ``""`` when the cache is down (run without the lock)."""
    token = secrets.token_hex(8)
    try:
        return token if cache.add(LOCK_KEY, token, LOCK_SECONDS) else None
    except Exception:
        logger.warning("cache unavailable: reconciling profiles without the lock", exc_info=True)
        return ""


def _release(token: str) -> None:
    if not token:
        return
    try:
        if cache.get(LOCK_KEY) == token:
            cache.delete(LOCK_KEY)
    except Exception:
        logger.debug("could not release the reconcile lock; it expires by itself", exc_info=True)


def _ask_again() -> None:
    try:
        cache.set(AGAIN_KEY, 1, LOCK_SECONDS)
    except Exception:
        logger.debug("could not ask for another reconcile pass", exc_info=True)


def _take_again() -> bool:
    """Whether another pass was asked for (and clear the request)."""
    try:
        if cache.get(AGAIN_KEY):
            cache.delete(AGAIN_KEY)
            return True
    except Exception:
        logger.debug("could not read the reconcile re-run flag", exc_info=True)
    return False


# --- the pass ----------------------------------------------------------------------------------


@dataclass
class _Action:
    enrollment: Enrollment
    row: HostProfile | None
    profile: ScopedProfile | None  # None: a removal


def _empty() -> dict[str, int]:
    return {"installs": 0, "removals": 0, "resent_stuck": 0, "hosts": 0}


def reconcile() -> dict[str, int]:
    """Bring every enrolled Mac's profiles in line; ``{"installs", "removals", "resent_stuck",
    "hosts"}`` (commands sent, and hosts looked at in the last pass)."""
    totals = _empty()
    if running_here():
        _ask_again()
        return totals
    token = _acquire()
    if token is None:
        _ask_again()  # the running pass goes around once more and sees what changed
        logger.info("profile reconciler already running elsewhere; asked it to go around again")
        return totals
    _local.running = True
    gave_up = 0
    try:
        _take_again()
        for _ in range(MAX_PASSES):
            counts = _pass()
            for key in ("installs", "removals", "resent_stuck"):
                totals[key] += counts[key]
            totals["hosts"] = counts["hosts"]
            gave_up += counts["gave_up"]
            if not _take_again():
                break
    finally:
        _local.running = False
        _release(token)
    if totals["resent_stuck"] or gave_up:
        logger.warning(
            "profiles: re-sent %d stuck command(s); marked %d failed after %d resends",
            totals["resent_stuck"],
            gave_up,
            MAX_STUCK_RESENDS,
        )
    return totals


def _pass() -> dict[str, int]:
    now = timezone.now()
    cutoff = now - timedelta(seconds=float(settings.MDM["STUCK_AFTER"]))
    catalog = Catalog.load()
    counts = {**_empty(), "gave_up": 0}
    last = 0
    while True:
        chunk = list(
            Enrollment.objects.filter(enrolled=True, host__isnull=False, host_id__gt=last)
            .select_related("host")
            .only("id", "host__id", "host__team_id", "host__label_updated_at", "host__detail_updated_at")
            .order_by("host_id")[:CHUNK]
        )
        if not chunk:
            break
        last = chunk[-1].host_id
        counts["hosts"] += len(chunk)
        for key, value in _reconcile_chunk(chunk, catalog, now, cutoff).items():
            counts[key] += value
        if len(chunk) < CHUNK:
            break
    return counts


def _waiting(row: HostProfile, cutoff: datetime) -> bool:
    return row.status in (PENDING, VERIFYING) and row.updated_at < cutoff


def _plan(
    chunk: list[Enrollment], catalog: Catalog, cutoff: datetime
) -> tuple[list[_Action], list[_Action], list[_Action], list[int]]:
    """What to do for these hosts: installs, removals, stuck candidates, failed rows to forget."""
    desired = catalog.desired([HostFacts(e.host_id, e.host.team_id, e.host.label_updated_at) for e in chunk])
    rows: dict[int, dict[str, HostProfile]] = defaultdict(dict)
    fields = ("id", "host_id", "profile_id", "identifier", "checksum", "operation", "status")
    for row in HostProfile.objects.filter(host_id__in=[e.host_id for e in chunk]).only(
        *fields, "command_uuid", "resends", "updated_at"
    ):
        rows[row.host_id][row.identifier] = row
    installs, removals, stuck, forget = [], [], [], []
    for enrollment in chunk:
        want = {p.identifier: p for p in desired.get(enrollment.host_id, ())}
        have = rows.get(enrollment.host_id, {})
        for identifier, profile in want.items():
            row = have.get(identifier)
            if (
                row is None
                or row.operation != INSTALL
                or row.checksum != profile.checksum
                or row.profile_id != profile.id
            ):
                installs.append(_Action(enrollment, row, profile))
            elif _waiting(row, cutoff):
                stuck.append(_Action(enrollment, row, profile))
        for identifier, row in have.items():
            if identifier in want:
                continue
            if row.operation == INSTALL:
                if row.status == FAILED:
                    forget.append(row.pk)
                else:
                    removals.append(_Action(enrollment, row, None))
            elif _waiting(row, cutoff):
                stuck.append(_Action(enrollment, row, None))
    return installs, removals, stuck, forget


def _stuck_reason(action: _Action, command: tuple | None) -> str | None:
    """Why this waiting row is stuck (the detail it gets), or ``None`` when it is merely waiting."""
    row = action.row
    assert row is not None
    if row.status == VERIFYING:
        detail_at = action.enrollment.host.detail_updated_at
        if row.operation == INSTALL and detail_at is not None and detail_at > row.updated_at:
            return "osquery on the host has not reported this profile since it was installed"
        return None
    if command is None:
        return "its command is no longer queued"
    status, cancelled, delivered_at = command
    if cancelled or status in FINAL_STATUSES:
        return "its command is no longer queued"
    if status == CommandStatus.QUEUED and delivered_at is not None:
        return "the device took the command and never answered"
    return None  # not fetched yet (offline), or NotNow (the device asks again when ready)


def _contents(profile_ids: Iterable[int]) -> dict[int, bytes]:
    ids = sorted(set(profile_ids))
    if not ids:
        return {}
    return {
        pk: bytes(data) for pk, data in Profile.objects.filter(pk__in=ids).values_list("pk", "mobileconfig")
    }


def _send(action: _Action, contents: dict[int, bytes], command_uuid: str) -> None:
    if action.profile is not None:
        fields = commands.install_profile(contents[action.profile.id])
        queue.enqueue(action.enrollment, "InstallProfile", fields, command_uuid=command_uuid, push=False)
    else:
        assert action.row is not None
        fields = commands.remove_profile(action.row.identifier)
        queue.enqueue(action.enrollment, "RemoveProfile", fields, command_uuid=command_uuid, push=False)


def _moved(row: HostProfile) -> Any:
    """The row as it was read: an update through this matches nothing if it moved since."""
    return HostProfile.objects.filter(pk=row.pk, command_uuid=row.command_uuid, status=row.status)


def _reconcile_chunk(
    chunk: list[Enrollment], catalog: Catalog, now: datetime, cutoff: datetime
) -> dict[str, int]:
    installs, removals, stuck, forget = _plan(chunk, catalog, cutoff)
    counts = {"installs": 0, "removals": 0, "resent_stuck": 0, "gave_up": 0}
    if not (installs or removals or stuck or forget):
        return counts
    answered: dict[str, tuple] = {}
    if stuck:
        found = Command.objects.filter(uuid__in=[a.row.command_uuid for a in stuck if a.row.command_uuid])
        answered = {
            u: (s, c, d) for u, s, c, d in found.values_list("uuid", "status", "cancelled", "delivered_at")
        }
    contents = _contents(a.profile.id for a in (*installs, *stuck) if a.profile is not None)
    touched: set[int] = set()
    superseded: list[str] = []

    def resend(action: Any, **fields: Any) -> int:
        """Point the row at a new command (if nobody moved it meanwhile) and send that command."""
        command_uuid = new_uuid()
        if not _moved(action.row).update(command_uuid=command_uuid, updated_at=now, **fields):
            return 0
        superseded.append(action.row.command_uuid)
        _send(action, contents, command_uuid)
        touched.add(action.enrollment.pk)
        return 1

    with transaction.atomic():
        counts["installs"] += _create_rows(
            [a for a in installs if a.row is None and a.profile.id in contents], contents, now, touched
        )
        for action in installs:
            profile = action.profile
            if action.row is None or profile.id not in contents:
                continue
            counts["installs"] += resend(
                action,
                profile_id=profile.id,
                name=profile.name,
                checksum=profile.checksum,
                operation=INSTALL,
                status=PENDING,
                detail="",
                retries=0,
            )
        for action in removals:
            counts["removals"] += resend(action, operation=REMOVE, status=PENDING, detail="", retries=0)
        for action in stuck:
            row = action.row
            reason = _stuck_reason(action, answered.get(row.command_uuid))
            if reason is None or (action.profile is not None and action.profile.id not in contents):
                continue
            if row.resends >= MAX_STUCK_RESENDS:
                detail = (
                    f"Gave up after {row.resends} resends: {reason}. Resend it once the device is reachable."
                )
                counts["gave_up"] += _moved(row).update(status=FAILED, detail=detail, updated_at=now)
                continue
            counts["resent_stuck"] += resend(
                action, status=PENDING, detail=f"Sent again: {reason}.", resends=row.resends + 1
            )
        if forget:
            HostProfile.objects.filter(pk__in=forget, operation=INSTALL, status=FAILED).delete()
        cancel_unanswered(superseded)
        queue.schedule_push(sorted(touched))
    return counts


def _create_rows(actions: list[_Action], contents: dict[int, bytes], now: datetime, touched: set[int]) -> int:
    """Rows for profiles a host has never had, and their installs; 0 if another pass made them."""
    if not actions:
        return 0
    uuids = [new_uuid() for _ in actions]
    rows = [
        HostProfile(
            host_id=a.enrollment.host_id,
            profile_id=a.profile.id,
            identifier=a.profile.identifier,
            name=a.profile.name,
            checksum=a.profile.checksum,
            operation=INSTALL,
            status=PENDING,
            command_uuid=command_uuid,
            updated_at=now,
        )
        for a, command_uuid in zip(actions, uuids, strict=True)
    ]
    try:
        with transaction.atomic():
            HostProfile.objects.bulk_create(rows, batch_size=CHUNK)
    except IntegrityError:  # a concurrent pass (lock lost to a cache outage) made some: next pass
        logger.info("profiles: rows already created by another pass; leaving them to it")
        return 0
    for action, command_uuid in zip(actions, uuids, strict=True):
        _send(action, contents, command_uuid)
        touched.add(action.enrollment.pk)
    return len(actions)


def cancel_unanswered(command_uuids: Iterable[str]) -> int:
    """Cancel these commands where the device has not answered them yet (NotNow included)."""
    uuids = [u for u in command_uuids if u]
    if not uuids:
        return 0
    return (
        Command.objects.filter(uuid__in=uuids, cancelled=False)
        .exclude(status__in=FINAL_STATUSES)
        .update(cancelled=True)
    )
