"""Lock, unlock and wipe Linux and Windows hosts through orbit, with the built-in scripts.

Each action is a run in the host's queue (``kind`` lock, unlock or wipe) holding one of the scripts
in ``hostscripts/builtin/``; the host's device status follows from the runs that succeeded
(:mod:`hostscripts.device_status`). The rules are Fleet's: one pending action at a time, unlock
only a locked host, nothing after a wipe. Macs are locked and erased through MDM instead
(:mod:`mdm.actions`), with the same rules, from the same buttons and endpoints.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from activities import recording
from hosts.details import platform_family
from hosts.models import Host
from hostscripts.device_status import device_status
from hostscripts.models import ScriptKind, ScriptRun
from hostscripts.services import ScriptError, queue_runs
from mdm import actions as mdm_actions
from mdm.models import Command

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
_SUFFIX = {"linux": ".sh", "windows": ".ps1"}
_ACTIVITY = {
    ScriptKind.LOCK: "locked_host",
    ScriptKind.UNLOCK: "unlocked_host",
    ScriptKind.WIPE: "wiped_host",
}


@cache
def builtin_script(family: str, kind: str) -> tuple[str, str]:
    """The (name, contents) of the built-in script for a platform family and action."""
    name = f"{family}_{kind}{_SUFFIX[family]}"
    return name, (BUILTIN_DIR / name).read_text()


def refusal(host: Host, kind: str) -> str | None:
    """Why ``kind`` cannot be queued on ``host`` now, or ``None``."""
    family = platform_family(host.platform, host.platform_like)
    if family == "darwin":
        return mdm_actions.refusal(host, kind)
    if family not in _SUFFIX:
        return f"Lock and wipe are not available on {host.platform or 'this platform'}."
    if not host.orbit_node_key_hash:
        return "The host has no fleetd (orbit) enrolled."
    status = device_status(host)
    if status.pending_action:
        return f"The host already has a pending {status.pending_action}; wait for it or cancel it."
    if status.status == "wiped":
        return "The host was wiped."
    if kind == ScriptKind.LOCK and status.status == "locked":
        return "The host is already locked."
    if kind == ScriptKind.UNLOCK and status.status != "locked":
        return "The host is not locked."
    return None


def request_action(host: Host, kind: str, user: Any = None) -> ScriptRun | Command:
    """Queue a lock, unlock or wipe on one host; a refusal raises :class:`ScriptError` (409).
    A Mac gets an MDM command (:class:`~mdm.models.Command`), others a script run."""
    if kind not in _ACTIVITY:
        raise ScriptError(f"Unknown device action {kind!r}.", status=400)
    reason = refusal(host, kind)
    if reason is not None:
        raise ScriptError(reason, status=409)
    if platform_family(host.platform, host.platform_like) == "darwin":
        command = mdm_actions.request(host, kind, user=user)
        _record(host, kind, {"command_uuid": command.uuid if command else ""})
        return command
    name, contents = builtin_script(platform_family(host.platform, host.platform_like), kind)
    result = queue_runs([host], user=user, kind=kind, contents=contents, name=name)
    if not result.runs:
        raise ScriptError(next(iter(result.skipped)), status=409)
    run = result.runs[0]
    _record(host, kind, {"execution_id": run.execution_id})
    return run


def _record(host: Host, kind: str, extra: dict[str, str]) -> None:
    recording.record(
        _ACTIVITY[kind],
        object_type="host",
        object_id=host.pk,
        object_name=host.display_name,
        team=host.team_id,
        details={"host_id": host.pk, "host_display_name": host.display_name, **extra},
    )
