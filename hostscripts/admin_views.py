"""Console pages that act on hosts: run a script, lock, unlock, wipe, cancel, and the host list's
"Run script" action.

Mounted by ``ScriptRunAdmin.get_urls`` (so they sit under the admin's login and CSRF checks) and
reached from the host page. Every write goes through ``hostscripts.services`` and
``hostscripts.device_actions``, like REST's, with the same roles (``hostscripts.access``): a host
the user may not see is "not found", one they may see but not act on is refused (403).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme

from hosts.admin_actions import action_step_context
from hosts.details import platform_family
from hosts.models import Host
from hostscripts import access, device_actions, services, targets
from hostscripts.admin_forms import RunScriptForm, WipeConfirmForm, runnable_scripts
from hostscripts.device_status import device_status
from hostscripts.models import ScriptKind, ScriptRun
from mdm import actions as mdm_actions

ACTION_LABELS = {ScriptKind.LOCK: "Lock", ScriptKind.UNLOCK: "Unlock", ScriptKind.WIPE: "Wipe"}


def _host_page(host: Host, anchor: str = "host-scripts") -> str:
    return reverse("admin:hosts_host_change", args=[host.pk]) + f"#{anchor}"


def host_to_act_on(request: HttpRequest, host_id: int) -> Host:
    """The host, if the user may see it (404) and run scripts on it (403)."""
    host = access.visible_hosts(request.user, Host.objects.select_related("team")).filter(pk=host_id).first()
    if host is None:
        raise Http404("No such host.")
    if not access.may_run_on(request.user, host):
        raise PermissionDenied
    return host


def _context(request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
    return {**admin.site.each_context(request), "title": title, "opts": ScriptRun._meta, **extra}


def run_on_host_view(request: HttpRequest, host_id: int) -> HttpResponse:
    """The host page's "Run script" form: queue, then back to the host page where the row updates
    live. A refusal or an invalid script comes back here as a form error, with what was typed."""
    host = host_to_act_on(request, host_id)
    scripts = runnable_scripts(request.user, {None, host.team_id})
    form = RunScriptForm(request.POST or None, scripts=scripts)
    if request.method == "POST" and form.is_valid():
        try:
            run = services.run_on_host(host, user=request.user, **form.run_kwargs())
        except services.ScriptError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(
                request, f"Queued {run.script_name}: {host.display_name} runs it at its next check-in."
            )
            return HttpResponseRedirect(_host_page(host))
    context = _context(request, f"Run a script on {host.display_name}", host=host, form=form)
    return TemplateResponse(request, "admin/hostscripts/run_on_host.html", context)


def device_action_view(request: HttpRequest, host_id: int, kind: str) -> HttpResponse:
    """Lock, unlock or wipe: a confirmation page (GET), then the action (POST). Wiping asks for
    the host's name to be typed; a refusal (already locked, a pending action ...) is shown there."""
    if kind not in ACTION_LABELS:
        raise Http404("No such action.")
    host = host_to_act_on(request, host_id)
    form = WipeConfirmForm(request.POST or None, host=host) if kind == ScriptKind.WIPE else None
    refusal = device_actions.refusal(host, kind)
    is_mac = platform_family(host.platform, host.platform_like) == "darwin"
    if request.method == "POST" and refusal is None and (form is None or form.is_valid()):
        try:
            done_by = device_actions.request_action(host, kind, user=request.user)
        except services.ScriptError as exc:
            refusal = exc.message
        else:
            if is_mac and kind == ScriptKind.UNLOCK:
                pin = mdm_actions.pin_of(done_by) if done_by is not None else ""
                messages.success(request, f"Type the PIN {pin} on {host.display_name} to unlock it.")
            else:
                done = {"lock": "will lock", "unlock": "will unlock", "wipe": "will be wiped"}[kind]
                messages.success(request, f"{host.display_name} {done} at its next check-in.")
            return HttpResponseRedirect(_host_page(host))
    context = _context(
        request,
        f"{ACTION_LABELS[kind]} {host.display_name}",
        host=host,
        kind=kind,
        label=ACTION_LABELS[kind],
        form=form,
        refusal=refusal,
        device=device_status(host),
        is_mac=is_mac,
    )
    return TemplateResponse(request, "admin/hostscripts/device_action.html", context)


def cancel_view(request: HttpRequest, execution_id: str) -> HttpResponse:
    """Cancel a pending run (POST), then back to where the button was (the run or host page)."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    runs = access.visible_runs(ScriptRun.objects.select_related("host", "host__team"), request.user)
    run = runs.filter(execution_id=execution_id).first()
    if run is None:
        raise Http404("No such run.")
    if not access.may_run_on(request.user, run.host):
        raise PermissionDenied
    if services.cancel_run(run, user=request.user):
        messages.success(request, f"Cancelled {run.script_name} on {run.host.display_name}.")
    else:
        messages.error(request, "This run already has a result (or was cancelled): nothing to cancel.")
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, {request.get_host()}) or not back.startswith("/admin/"):
        back = reverse("admin:hostscripts_scriptrun_change", args=[run.pk])
    return HttpResponseRedirect(back)


# --- the host list's action ----------------------------------------------------------------------
@admin.action(description="Run a script on the selected hosts", permissions=["run_script"])
def run_script_hosts(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Host]) -> Any:
    """A second step, like "Transfer to team": choose the script, then queue it on every selected
    host that can run it; the list then says how many were queued and why the others were not."""
    form = RunScriptForm(
        request.POST if "apply" in request.POST else None, scripts=runnable_scripts(request.user)
    )
    if form.is_bound and form.is_valid():
        try:
            chosen = targets.resolve(request.user, queryset)
            result = targets.queue_on_targets(chosen, user=request.user, **form.run_kwargs())
        except services.ScriptError as exc:
            form.add_error(None, exc.message)
        else:
            _report(modeladmin, request, result)
            return None
    context = action_step_context(
        modeladmin, request, queryset, title="Run a script on hosts", form=form, action="run_script_hosts"
    )
    context["max_hosts"] = targets.max_hosts()
    return TemplateResponse(request, "admin/hostscripts/run_script_hosts.html", context)


def _report(modeladmin: admin.ModelAdmin, request: HttpRequest, result: services.QueueResult) -> None:
    queued = len(result.runs)
    if queued:
        url = reverse("admin:hostscripts_scriptrun_changelist") + "?status=pending"
        text = format_html(
            'Queued on {} host{}: each runs it at its next check-in. <a href="{}">Follow the runs</a>.',
            queued,
            "s" if queued != 1 else "",
            url,
        )
        modeladmin.message_user(request, text, messages.SUCCESS)
    else:
        modeladmin.message_user(request, "Queued on no host.", messages.WARNING)
    for reason, host_ids in result.skipped.items():
        count = len(host_ids)
        modeladmin.message_user(
            request, f"Skipped {count} host{'s' if count != 1 else ''}: {reason}", messages.WARNING
        )
