"""Running scripts on hosts: the library, the per-host queue, results, cancellation.

Every surface (console, REST, ``manage.py run_script``, lock/unlock/wipe) goes through these
functions, so the rules are checked in one place:

- a script runs only on a host with orbit (fleetd) enrolled, whose platform fits the script
  (``.ps1`` on Windows, ``.sh`` on macOS and Linux), and whose orbit has not reported scripts as
  disabled;
- the server-wide switch (``FleetSettings.scripts_disabled``) refuses new script runs, and orbit
  is no longer handed the ones still queued; the built-in device actions are not scripts in that
  sense and keep working, as in Fleet;
- each host has one queue, served to orbit oldest first.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from activities import recording
from hosts.details import platform_family
from hosts.models import FleetSettings, Host
from hostscripts.models import Script, ScriptKind, ScriptRun
from hostscripts.validation import script_fits_platform, validate_contents, validate_name

DEFAULT_TIMEOUT = 300
MAX_TIMEOUT = 3600
MIN_TIMEOUT = 5
MAX_OUTPUT_CHARS = 10_000  # Fleet keeps the last 10,000 characters of a script's output
_DISABLED_KEY = "hostscripts:disabled:1"


class ScriptError(Exception):
    """A run refused, with a message for the admin (a 4xx on REST, a form error in the console)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# --- The server-wide switch -----------------------------------------------------------------------


def scripts_disabled() -> bool:
    """The switch, read on every orbit config: one cache read (the settings row on a miss)."""
    value = cache.get(_DISABLED_KEY)
    if value is None:
        value = bool(FleetSettings.objects.filter(pk=1).values_list("scripts_disabled", flat=True).first())
        cache.set(_DISABLED_KEY, value, 5)  # short: every web process sees a change within 5 s
    return value


def forget_switch() -> None:
    """Called whenever the settings row is saved."""
    cache.delete(_DISABLED_KEY)


# --- The library ------------------------------------------------------------------------------


def check_unique_name(name: str, team_id: int | None, exclude_id: int | None = None) -> None:
    others = Script.objects.filter(name=name, team_id=team_id)
    if exclude_id is not None:
        others = others.exclude(pk=exclude_id)
    if others.exists():
        where = "in this team" if team_id else "globally"
        raise ValidationError(f"A script named {name!r} already exists {where}.")


def save_script(
    *, name: str, contents: str, team_id: int | None, author: Any = None, script: Script | None = None
) -> Script:
    """Create a script, or replace a saved one's name and contents (the team does not change)."""
    name = validate_name(name)
    if isinstance(contents, str):
        contents = contents.replace("\r\n", "\n")
    contents = validate_contents(contents, saved=True)
    team_id = script.team_id if script is not None else team_id
    check_unique_name(name, team_id, exclude_id=script.pk if script is not None else None)
    if script is None:
        script = Script.objects.create(name=name, contents=contents, team_id=team_id, author=author)
        recording.record("added_script", script, details={"script_name": name})
        return script
    script.name, script.contents = name, contents
    script.save(update_fields=["name", "contents", "updated_at"])
    recording.record("edited_script", script, details={"script_name": name})
    return script


# --- Queueing runs -----------------------------------------------------------------------------


def timeout_for(agent_options: dict | None) -> int:
    """``script_execution_timeout`` from the agent options, bounded to 5 s .. 1 h (Fleet's limits)."""
    value = (agent_options or {}).get("script_execution_timeout", DEFAULT_TIMEOUT)
    if not isinstance(value, int) or isinstance(value, bool):
        return DEFAULT_TIMEOUT
    return max(MIN_TIMEOUT, min(MAX_TIMEOUT, value))


def refusal(host: Host, name: str, kind: str = ScriptKind.SCRIPT) -> str | None:
    """Why ``name`` cannot be queued on ``host``, or ``None`` when it can."""
    if not host.orbit_node_key_hash:
        return "Script can't run: the host has no fleetd (orbit) enrolled."
    if kind == ScriptKind.SCRIPT and host.scripts_enabled is False:
        return "Scripts are disabled for this host. To run scripts, deploy fleetd with scripts enabled."
    family = platform_family(host.platform, host.platform_like)
    if family not in ("darwin", "linux", "windows"):
        return f"Scripts can't run on {host.platform or 'this platform'}."
    if not script_fits_platform(name, family):
        return "PowerShell (.ps1) scripts run on Windows only; shell (.sh) scripts on macOS and Linux only."
    return None


def _display_name(user: Any) -> str:
    if user is None:
        return ""
    return user.get_full_name() or user.get_username() if hasattr(user, "get_username") else str(user)


def _adhoc_name(host: Host) -> str:
    return "script.ps1" if platform_family(host.platform, host.platform_like) == "windows" else "script.sh"


@dataclass
class QueueResult:
    """What a run on many hosts did: the runs queued and, per reason, the hosts skipped."""

    runs: list[ScriptRun] = field(default_factory=list)
    skipped: dict[str, list[int]] = field(default_factory=dict)


def queue_runs(
    hosts: Iterable[Host],
    *,
    user: Any = None,
    script: Script | None = None,
    contents: str | None = None,
    kind: str = ScriptKind.SCRIPT,
    name: str = "",
    sync: bool = False,
) -> QueueResult:
    """Queue a saved script (``script``) or ad-hoc ``contents`` on every host that can run it."""
    if kind == ScriptKind.SCRIPT:
        if scripts_disabled():
            raise ScriptError("Scripts are disabled on this server (Fleet settings).", status=403)
        if (script is None) == (contents is None):
            raise ScriptError("Give exactly one of a saved script or script contents.", status=400)
        if contents is not None:
            try:
                contents = validate_contents(contents, saved=False)
            except ValidationError as exc:
                raise ScriptError(exc.messages[0], status=422) from None
    result = QueueResult()
    now = timezone.now()
    actor_name = _display_name(user)
    global_options = None
    for host in hosts:
        run_name = script.name if script is not None else name or _adhoc_name(host)
        if script is not None and script.team_id is not None and script.team_id != host.team_id:
            result.skipped.setdefault("The script belongs to another team.", []).append(host.pk)
            continue
        reason = refusal(host, run_name, kind)
        if reason is not None:
            result.skipped.setdefault(reason, []).append(host.pk)
            continue
        team_options = host.team.agent_options if host.team_id and host.team is not None else None
        if not team_options and global_options is None:
            global_options = FleetSettings.load().agent_options
        result.runs.append(
            ScriptRun(
                host=host,
                kind=kind,
                script=script,
                script_name=run_name,
                contents=script.contents if script is not None else contents or "",
                timeout=timeout_for(team_options or global_options),
                requested_by=user if user is not None and getattr(user, "is_authenticated", False) else None,
                requested_by_name=actor_name,
                created_at=now,
                sync_request=sync,
            )
        )
    with transaction.atomic():
        ScriptRun.objects.bulk_create(result.runs, batch_size=500)
        if kind == ScriptKind.SCRIPT:
            recording.record_many(
                "ran_script",
                [
                    (
                        ("host", str(run.host.pk), run.host.display_name),
                        run.host.team_id,
                        {"script_name": run.script_name, "execution_id": run.execution_id, "async": not sync},
                    )
                    for run in result.runs
                ],
            )
    return result


def run_on_host(host: Host, **kwargs: Any) -> ScriptRun:
    """One host: a refusal is an error (:class:`ScriptError`), not a skipped host."""
    result = queue_runs([host], **kwargs)
    if not result.runs:
        raise ScriptError(next(iter(result.skipped)))
    return result.runs[0]


def cancel_run(run: ScriptRun, user: Any = None) -> bool:
    """Cancel a pending run; ``False`` when it has a result already (nothing changes)."""
    changed = ScriptRun.objects.filter(pk=run.pk, exit_code__isnull=True, cancelled=False).update(
        cancelled=True, cancelled_at=timezone.now()
    )
    if not changed:
        return False
    run.refresh_from_db()
    recording.record(
        "canceled_run_script" if run.kind == ScriptKind.SCRIPT else f"canceled_{run.kind}_host",
        object_type="host",
        object_id=run.host_id,
        object_name=run.host.display_name,
        team=run.host.team_id,
        details={"script_name": run.script_name, "execution_id": run.execution_id},
    )
    return True


# --- What orbit sees ----------------------------------------------------------------------------

MAX_PENDING_IDS = 20  # a bounded config; the rest follow as the first ones finish


def pending_execution_ids(host_id: int, include_scripts: bool) -> list[str]:
    """The host's queue, oldest first (one indexed query); scripts left out while switched off
    (``include_scripts`` False: the caller read the switch along with the host)."""
    pending = ScriptRun.objects.filter(host_id=host_id, exit_code__isnull=True, cancelled=False)
    if not include_scripts:
        pending = pending.exclude(kind=ScriptKind.SCRIPT)
    return list(pending.order_by("created_at", "id").values_list("execution_id", flat=True)[:MAX_PENDING_IDS])


def store_result(run: ScriptRun, *, output: str, runtime: int, exit_code: int) -> bool:
    """Store the host's answer once; a second answer, or one for a cancelled run, is ignored."""
    output = output[-MAX_OUTPUT_CHARS:] if len(output) > MAX_OUTPUT_CHARS else output
    stored = ScriptRun.objects.filter(pk=run.pk, exit_code__isnull=True, cancelled=False).update(
        output=output, runtime=max(0, runtime), exit_code=exit_code, finished_at=timezone.now()
    )
    return bool(stored)


# --- Waiting for a result (the synchronous REST form) ------------------------------------------


def wait_for_result(run: ScriptRun, seconds: float) -> ScriptRun:
    """Poll the run until it has a result or ``seconds`` pass; returns the fresh row."""
    deadline = time.monotonic() + seconds
    interval = settings.SCRIPTS["SYNC_POLL_INTERVAL"]
    while True:
        run.refresh_from_db()
        if run.exit_code is not None or run.cancelled or time.monotonic() >= deadline:
            return run
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
