"""A host's device status (Fleet's ``mdm.device_status`` and ``pending_action``), from its lock,
unlock and wipe runs: the last one that succeeded decides the status, the oldest pending one is
the pending action."""

from __future__ import annotations

from dataclasses import dataclass

from hosts.details import platform_family
from hosts.models import Host
from hostscripts.models import ScriptKind, ScriptRun

DEVICE_ACTION_KINDS = (ScriptKind.LOCK, ScriptKind.UNLOCK, ScriptKind.WIPE)
_STATUS_AFTER = {ScriptKind.LOCK: "locked", ScriptKind.UNLOCK: "unlocked", ScriptKind.WIPE: "wiped"}
_PENDING_NAME = {ScriptKind.LOCK: "lock", ScriptKind.UNLOCK: "unlock", ScriptKind.WIPE: "wipe"}


def is_apple(host: Host) -> bool:
    """macOS, iOS or iPadOS: the hosts Apple MDM manages."""
    return platform_family(host.platform, host.platform_like) == "darwin" or host.platform in (
        "ios",
        "ipados",
    )


@dataclass(frozen=True)
class DeviceStatus:
    status: str  # "unlocked", "locked" or "wiped"
    pending_action: str  # "", "lock", "unlock" or "wipe"

    def as_fleet(self) -> dict[str, str]:
        """The two fields as Fleet's host ``mdm`` object carries them."""
        return {"device_status": self.status, "pending_action": self.pending_action}


def device_status(host: Host | int) -> DeviceStatus:
    """An Apple device enrolled in MDM: from its lock and erase commands (:mod:`mdm.actions`).
    Any other host: two indexed queries on its device-action runs. Given a host (not an id), a
    host that is not Apple's costs no MDM lookup."""
    host_id = host if isinstance(host, int) else host.pk
    if isinstance(host, int) or is_apple(host):
        from mdm.actions import status_for  # mdm builds on hostscripts
        from mdm.models import Enrollment

        enrollment = Enrollment.objects.filter(host_id=host_id, enrolled=True).first()
        if enrollment is not None:
            status, pending = status_for(enrollment)
            return DeviceStatus(status=status, pending_action=pending)
    runs = ScriptRun.objects.filter(host_id=host_id, kind__in=DEVICE_ACTION_KINDS, cancelled=False)
    done = runs.filter(exit_code=0).order_by("-finished_at", "-id").values_list("kind", flat=True).first()
    pending = (
        runs.filter(exit_code__isnull=True)
        .order_by("created_at", "id")
        .values_list("kind", flat=True)
        .first()
    )
    return DeviceStatus(
        status=_STATUS_AFTER[done] if done else "unlocked",
        pending_action=_PENDING_NAME[pending] if pending else "",
    )
