"""The scripts block of the console's host page (``hosts.host_page`` calls ``scripts_for_host``).

The host's recent runs (lock, unlock and wipe included), the form to run a script, and the device
actions with the host's device status. The page stays current without a reload: a static script
(``static/hostscripts/host_scripts.js``) polls ``GET /api/v1/hosts/<id>/scripts/`` while a run is
pending and updates the rows in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.urls import reverse

from hosts.details import platform_family
from hosts.models import Host
from hostscripts import access, device_actions, messages, services
from hostscripts.admin_forms import RunScriptForm, runnable_scripts
from hostscripts.device_status import DeviceStatus, device_status
from hostscripts.models import RunStatus, ScriptKind, ScriptRun
from mdm import actions as mdm_actions

RUNS_SHOWN = 20


@dataclass(frozen=True)
class DeviceAction:
    """A lock, unlock or wipe button: where it posts, and why it is off when it is."""

    kind: str
    label: str
    url: str
    refusal: str | None


@dataclass
class ScriptsSection:
    runs: list[ScriptRun]
    device: DeviceStatus
    runs_url: str  # the REST list the page polls
    limit: int  # how many runs are shown (and polled)
    host_url: str  # the REST host detail (device status after an action finishes)
    may_run: bool = False
    run_form: RunScriptForm | None = None
    run_url: str = ""
    scripts_disabled: bool = False
    refusal: str | None = None  # why this host cannot run scripts at all, if it cannot
    actions: list[DeviceAction] = field(default_factory=list)
    device_note: str = ""

    @property
    def any_pending(self) -> bool:
        return any(run.exit_code is None and not run.cancelled for run in self.runs)


def recent_runs(host: Host, limit: int = RUNS_SHOWN) -> list[ScriptRun]:
    """The host's latest runs, newest first, each with its message (one indexed query)."""
    runs = list(ScriptRun.objects.filter(host_id=host.pk).order_by("-created_at", "-id")[: max(0, limit)])
    labels = dict(RunStatus.choices)
    for run in runs:
        run.message = messages.result_message(run)
        run.status_label = labels[run.status]
    return runs


def _device_actions(host: Host, status: DeviceStatus) -> list[DeviceAction]:
    family = platform_family(host.platform, host.platform_like)
    if family not in ("linux", "windows", "darwin"):
        return []  # other platforms have no action at all
    if family == "darwin" and mdm_actions.enrollment_of(host) is None:
        return []  # a Mac needs MDM: the note below says so
    wanted = [(ScriptKind.UNLOCK, "Unlock")] if status.status == "locked" else [(ScriptKind.LOCK, "Lock")]
    wanted.append((ScriptKind.WIPE, "Wipe"))
    return [
        DeviceAction(
            kind=kind,
            label=label,
            url=reverse("admin:hostscripts_scriptrun_host_action", args=[host.pk, kind]),
            refusal=device_actions.refusal(host, kind),
        )
        for kind, label in wanted
    ]


def scripts_for_host(host: Host, user: Any, limit: int = RUNS_SHOWN) -> ScriptsSection:
    """Everything the host page's "Scripts" block shows, for what ``user`` may do on ``host``."""
    status = device_status(host)
    section = ScriptsSection(
        runs=recent_runs(host, limit),
        device=status,
        runs_url=reverse("host-scripts-list", args=[host.pk]),
        limit=limit,
        host_url=reverse("host-detail", args=[host.pk]),
    )
    if not access.may_run_on(user, host):
        return section
    section.may_run = True
    section.scripts_disabled = services.scripts_disabled()
    section.refusal = services.refusal(host, "script.ps1" if _is_windows(host) else "script.sh")
    section.run_form = RunScriptForm(scripts=runnable_scripts(user, {None, host.team_id}))
    section.run_url = reverse("admin:hostscripts_scriptrun_host_run", args=[host.pk])
    section.actions = _device_actions(host, status)
    if not section.actions:  # say why there is no Lock or Wipe (macOS: MDM; ChromeOS ...)
        section.device_note = device_actions.refusal(host, ScriptKind.LOCK) or ""
    return section


def _is_windows(host: Host) -> bool:
    return platform_family(host.platform, host.platform_like) == "windows"
