"""Scripts in the console: the library (an editor with upload) and the runs (read-only, cancellable).

The library is team-scoped like queries: everyone with a console role reads the global scripts
and their teams'; admins and maintainers write them (global ones need a global role). Saves go
through ``hostscripts.services.save_script``, which records ``added_script`` / ``edited_script``;
the generic console records are therefore left out here, so each change is in the trail once.

Runs are what hosts were asked to do and what they answered: nobody edits them. A pending run
has a Cancel button for those who may run scripts on its host. The pages that act on a host (run,
lock, unlock, wipe) hang off this admin's URLs (``hostscripts.admin_views``).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from activities.admin_hooks import AuditedModelAdmin
from hosts.models import Team
from hosts.paginators import CappedPaginationAdminMixin
from hosts.permissions import visible_team_ids
from hostscripts import access, admin_views, library, messages, services
from hostscripts.admin_forms import ScriptForm
from hostscripts.filters import filter_status, filter_team
from hostscripts.models import RunStatus, Script, ScriptRun


def status_badge(run: ScriptRun) -> str:
    """The run's status as a coloured badge (static/hostscripts/scripts.css)."""
    status = RunStatus(run.status)
    return format_html('<span class="run-status run-status-{}">{}</span>', status.value, status.label)


class TeamFilter(admin.SimpleListFilter):
    """Global, or one of the teams the user may see (``team_field``: the object's team)."""

    title = "team"
    parameter_name = "team_id"
    team_field = "team"
    none_label = "Global"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        team_ids = visible_team_ids(request.user)
        teams = Team.objects.all() if team_ids is None else Team.objects.filter(id__in=team_ids)
        first = [("0", self.none_label)] if team_ids is None else []
        return [*first, *((str(t.pk), t.name) for t in teams.only("id", "name"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value is None or not value.isascii() or not value.isdigit() or len(value) > 18:
            return queryset
        return filter_team(queryset, int(value), field=self.team_field)


class HostTeamFilter(TeamFilter):
    team_field = "host__team"
    none_label = "No team"


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(RunStatus.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return filter_status(queryset, self.value()) if self.value() else queryset


@admin.register(Script)
class ScriptAdmin(AuditedModelAdmin, admin.ModelAdmin):
    form = ScriptForm
    list_display = ["name", "team_display", "platforms", "author", "updated_at"]
    list_filter = [TeamFilter]
    search_fields = ["name"]
    list_select_related = ["team", "author"]
    fieldsets = [
        (None, {"fields": ["name", "team", "contents", "upload"]}),
        ("History", {"fields": ["author", "created_at", "updated_at"]}),
    ]
    readonly_fields = ["author", "created_at", "updated_at"]

    # --- who may do what ------------------------------------------------------------------------
    def get_queryset(self, request: HttpRequest) -> QuerySet[Script]:
        scripts = super().get_queryset(request)
        if (getattr(request.resolver_match, "url_name", "") or "").endswith("changelist"):
            scripts = scripts.defer("contents")
        return access.readable_scripts(scripts, request.user)

    def _may_write(self, request: HttpRequest, obj: Script | None) -> bool:
        if obj is None:
            return access.may_write_any_script(request.user)
        return access.may_write_script(request.user, obj.team_id)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and self._may_write(request, None)

    def has_change_permission(self, request: HttpRequest, obj: Script | None = None) -> bool:
        return super().has_change_permission(request, obj) and self._may_write(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Script | None = None) -> bool:
        return super().has_delete_permission(request, obj) and self._may_write(request, obj)

    def get_form(self, request: HttpRequest, obj: Script | None = None, change: bool = False, **kwargs: Any):
        form = super().get_form(request, obj, change, **kwargs)
        return type(form.__name__, (form,), {"user": request.user})

    def get_fieldsets(self, request: HttpRequest, obj: Script | None = None) -> list:
        if obj is not None and not self.has_change_permission(request, obj):
            return [(None, {"fields": ["name", "team", "contents"]}), *self.fieldsets[1:]]
        return self.fieldsets

    # --- list columns -----------------------------------------------------------------------------
    @admin.display(description="team", ordering="team__name")
    def team_display(self, script: Script) -> str:
        return script.team.name if script.team_id else "Global"

    # --- writes: through the service, which records the activity ---------------------------------
    def save_model(self, request: HttpRequest, obj: Script, form: ScriptForm, change: bool) -> None:
        saved = services.save_script(
            name=obj.name,
            contents=obj.contents,
            team_id=obj.team_id,
            author=request.user,
            script=obj if change else None,
        )
        obj.pk, obj.author, obj.created_at, obj.updated_at = (
            saved.pk,
            saved.author,
            saved.created_at,
            saved.updated_at,
        )

    def delete_model(self, request: HttpRequest, obj: Script) -> None:
        library.delete_script(obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Script]) -> None:
        for script in queryset.select_related("team"):
            library.delete_script(script)

    # The service and ``library.delete_script`` record added/edited/deleted_script themselves, so
    # the generic console hooks (activities.admin_hooks) neither announce nor record here.
    def save_form(self, request: HttpRequest, form: Any, change: bool) -> Any:
        return admin.ModelAdmin.save_form(self, request, form, change)

    def log_addition(self, request: HttpRequest, obj: Script, message: Any) -> Any:
        return admin.ModelAdmin.log_addition(self, request, obj, message)

    def log_change(self, request: HttpRequest, obj: Script, message: Any) -> Any:
        return admin.ModelAdmin.log_change(self, request, obj, message)

    def log_deletions(self, request: HttpRequest, queryset: Any) -> Any:
        return admin.ModelAdmin.log_deletions(self, request, queryset)


@admin.register(ScriptRun)
class ScriptRunAdmin(CappedPaginationAdminMixin, admin.ModelAdmin):
    list_display = [
        "created_at",
        "host_link",
        "script_display",
        "kind",
        "status_display",
        "requested",
        "exit_code",
    ]
    list_display_links = ["created_at"]
    list_filter = [StatusFilter, "kind", HostTeamFilter]
    search_fields = ["=execution_id", "host__hostname", "host__computer_name", "script_name"]
    search_help_text = "Execution id (exact), host name or script name (any part)."
    list_select_related = ["host", "host__team"]
    list_per_page = 50
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    change_form_template = "admin/hostscripts/scriptrun/change_form.html"

    class Media:
        css = {"all": ["hostscripts/scripts.css"]}

    fields = [
        "execution_id",
        "host_link",
        "kind",
        "script_display",
        "status_display",
        "exit_code_display",
        "runtime_display",
        "timeout",
        "requested",
        "created_at",
        "sent_at",
        "finished_at",
        "cancelled_at",
        "contents_display",
        "output_display",
    ]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[ScriptRun]:
        runs = super().get_queryset(request).select_related("host", "host__team", "script")
        return access.visible_runs(runs, request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ScriptRun | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ScriptRun | None = None) -> bool:
        return False

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        run = self.get_object(request, object_id)
        extra = {"may_cancel": False, **(extra_context or {})}
        if run is not None:
            pending = run.exit_code is None and not run.cancelled
            extra["may_cancel"] = pending and access.may_run_on(request.user, run.host)
            extra["run"] = run
        return super().change_view(request, object_id, form_url, extra)

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path(
                "host/<int:host_id>/run/",
                view(admin_views.run_on_host_view),
                name="hostscripts_scriptrun_host_run",
            ),
            path(
                "host/<int:host_id>/<str:kind>/",
                view(admin_views.device_action_view),
                name="hostscripts_scriptrun_host_action",
            ),
            path(
                "cancel/<str:execution_id>/",
                view(admin_views.cancel_view),
                name="hostscripts_scriptrun_cancel",
            ),
            *super().get_urls(),
        ]

    # --- columns and fields -------------------------------------------------------------------------
    @admin.display(description="host", ordering="host__hostname")
    def host_link(self, run: ScriptRun) -> str:
        url = reverse("admin:hosts_host_change", args=[run.host_id])
        return format_html('<a href="{}">{}</a>', url, run.host.display_name)

    @admin.display(description="script", ordering="script_name")
    def script_display(self, run: ScriptRun) -> str:
        if run.script_id:
            url = reverse("admin:hostscripts_script_change", args=[run.script_id])
            return format_html('<a href="{}">{}</a>', url, run.script_name)
        return run.script_name or "—"

    @admin.display(description="status")
    def status_display(self, run: ScriptRun) -> str:
        return status_badge(run)

    @admin.display(description="requested by", ordering="requested_by_name")
    def requested(self, run: ScriptRun) -> str:
        return run.requested_by_name or "—"

    @admin.display(description="exit code")
    def exit_code_display(self, run: ScriptRun) -> str:
        message = messages.result_message(run)
        code = "—" if run.exit_code is None else str(run.exit_code)
        return format_html("{} <span class='help'>{}</span>", code, message) if message else code

    @admin.display(description="runtime")
    def runtime_display(self, run: ScriptRun) -> str:
        return f"{run.runtime} s" if run.exit_code is not None else "—"

    @admin.display(description="script contents")
    def contents_display(self, run: ScriptRun) -> str:
        return format_html('<pre class="script-contents">{}</pre>', run.contents)

    @admin.display(description="output")
    def output_display(self, run: ScriptRun) -> str:
        if not run.output:
            return "—"
        return format_html('<pre class="script-output">{}</pre>', run.output)
