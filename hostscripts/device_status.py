"""A host's device status (Fleet's ``mdm.device_status`` and ``pending_action``), from its lock,
unlock and wipe runs: the last one that succeeded decides the status, the oldest pending one is
the pending action."""

from __future__ import annotations

from dataclasses import dataclass

from hostscripts.models import ScriptKind, ScriptRun

DEVICE_ACTION_KINDS = (ScriptKind.LOCK, ScriptKind.UNLOCK, ScriptKind.WIPE)
_STATUS_AFTER = {ScriptKind.LOCK: "locked", ScriptKind.UNLOCK: "unlocked", ScriptKind.WIPE: "wiped"}
_PENDING_NAME = {ScriptKind.LOCK: "lock", ScriptKind.UNLOCK: "unlock", ScriptKind.WIPE: "wipe"}


@dataclass(frozen=True)
class DeviceStatus:
    status: str  # "unlocked", "locked" or "wiped"
    pending_action: str  # "", "lock", "unlock" or "wipe"

    def as_fleet(self) -> dict[str, str]:
        """The two fields as Fleet's host ``mdm`` object carries them."""
        return {"device_status": self.status, "pending_action": self.pending_action}


def device_status(host_id: int) -> DeviceStatus:
    """Two indexed queries on the host's device-action runs."""
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
