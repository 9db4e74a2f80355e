"""The console for teams, enroll secrets, hosts and Fleet settings (users and roles: ``users/admin.py``).

Hosts are reported by agents, so their vitals are read-only here; an admin may only move them
between teams, ask for a refetch or delete them. Every write goes through ``hosts.services``.
The host list stays fast on 100,000 hosts: joined seen/team rows, indexed filters, and a
paginator that never counts the whole table (``hosts.paginators``).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db import models, transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.timesince import timesince

from campaigns.admin_views import live_query_hosts, may_run_live_queries
from hosts import admin_views, host_export, host_page, services
from hosts.admin_actions import action_step_context
from hosts.admin_forms import (
    EnrollSecretForm,
    FleetSettingsForm,
    TeamForm,
    TeamSecretFormSet,
    TeamSecretInlineForm,
    TransferHostsForm,
)
from hosts.choices import HostStatus, Role
from hosts.filters import PlatformListFilter, StatusListFilter, TeamListFilter, with_host_counts
from hosts.labels_admin import LabelHostListFilter  # also registers the label console
from hosts.models import EnrollSecret, FleetSettings, Host, Team
from hosts.paginators import CappedPaginationAdminMixin
from hosts.permissions import (
    ADMIN_ROLES,
    ALL_ROLES,
    HOST_READ_ROLES,
    SECRET_READ_ROLES,
    has_any_role,
    has_team_role,
    scope_queryset,
    visible_team_ids,
)
from hosts.status import NEW_FOR, status_of
from hostscripts import access as script_access
from hostscripts import services as script_services
from hostscripts.admin_views import run_script_hosts
from software.filters import SoftwareHostListFilter
from usage.console import FIELDSET as USAGE_FIELDSET
from usage.console import UsageStatisticsSettingsAdmin

STATUS_COLOURS = {
    HostStatus.ONLINE: "#1a7f37",
    HostStatus.OFFLINE: "#6e7781",
    HostStatus.MISSING: "#cf222e",
    HostStatus.NEW: "#0969da",
}
_HOST_WRITE_ROLES = frozenset({Role.ADMIN, Role.MAINTAINER})


def _badge(label: str, colour: str) -> str:
    return format_html(
        '<span style="background:{};color:#fff;border-radius:8px;padding:1px 8px;font-size:11px;'
        'white-space:nowrap">{}</span>',
        colour,
        label,
    )


def _teams_for(user: Any, roles: frozenset[str]) -> QuerySet[Team]:
    team_ids = visible_team_ids(user, roles)
    return Team.objects.all() if team_ids is None else Team.objects.filter(id__in=team_ids)


def _is_global_admin(user: Any) -> bool:
    return visible_team_ids(user, ADMIN_ROLES) is None


class EnrollSecretInline(admin.TabularInline):
    model = EnrollSecret
    form = TeamSecretInlineForm
    formset = TeamSecretFormSet
    fields = ["secret", "created_at"]
    readonly_fields = ["created_at"]
    extra = 0
    verbose_name = "enroll secret"


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    form = TeamForm
    inlines = [EnrollSecretInline]
    list_display = ["name", "description", "host_count", "created_at"]
    search_fields = ["name"]
    ordering = ["name"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Team]:
        teams = with_host_counts(super().get_queryset(request))
        return scope_queryset(teams, request.user, ALL_ROLES, team_field="id")

    @admin.display(description="hosts", ordering="host_count")
    def host_count(self, team: Team) -> str:
        url = reverse("admin:hosts_host_changelist") + f"?team_id={team.pk}"
        return format_html('<a href="{}">{}</a>', url, team.host_count)

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Creating and deleting teams is for global admins (Fleet: team admins manage their team).
        return super().has_add_permission(request) and _is_global_admin(request.user)

    def has_delete_permission(self, request: HttpRequest, obj: Team | None = None) -> bool:
        return super().has_delete_permission(request, obj) and _is_global_admin(request.user)

    def has_change_permission(self, request: HttpRequest, obj: Team | None = None) -> bool:
        allowed = super().has_change_permission(request, obj)
        return allowed and (obj is None or has_team_role(request.user, obj.pk, ADMIN_ROLES))

    def get_inlines(self, request: HttpRequest, obj: Team | None) -> list:
        # Secrets are sensitive: only the scope's admins and maintainers see them.
        return self.inlines if has_team_role(request.user, obj.pk if obj else None, SECRET_READ_ROLES) else []

    def save_model(self, request: HttpRequest, obj: Team, form: Any, change: bool) -> None:
        if change:
            obj.save()
            return
        team = services.create_team(obj.name, obj.description, with_secret=False)
        obj.pk, obj.created_at = team.pk, team.created_at
        if obj.agent_options is not None:
            Team.objects.filter(pk=team.pk).update(agent_options=obj.agent_options)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        if not change and not form.instance.secrets.exists():
            # Like Fleet, a new team gets a secret so hosts can join it at once.
            services.add_enroll_secret(team=form.instance)


@admin.register(EnrollSecret)
class EnrollSecretAdmin(admin.ModelAdmin):
    form = EnrollSecretForm
    list_display = ["secret_value", "scope", "created_at"]
    list_filter = [("team", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["=secret", "team__name"]
    list_select_related = ["team"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[EnrollSecret]:
        return scope_queryset(super().get_queryset(request), request.user, SECRET_READ_ROLES)

    @admin.display(description="secret", ordering="secret")
    def secret_value(self, secret: EnrollSecret) -> str:
        return format_html("<code>{}</code>", secret.secret)

    @admin.display(description="team", ordering="team__name")
    def scope(self, secret: EnrollSecret) -> str:
        return secret.team.name if secret.team_id else "No team (global)"

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "team":
            kwargs["queryset"] = _teams_for(request.user, ADMIN_ROLES)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def _may_write(self, request: HttpRequest, obj: EnrollSecret | None) -> bool:
        if obj is None:
            return visible_team_ids(request.user, ADMIN_ROLES) != frozenset()
        return has_team_role(request.user, obj.team_id, ADMIN_ROLES)

    def has_change_permission(self, request: HttpRequest, obj: EnrollSecret | None = None) -> bool:
        return super().has_change_permission(request, obj) and self._may_write(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: EnrollSecret | None = None) -> bool:
        return super().has_delete_permission(request, obj) and self._may_write(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and self._may_write(request, None)

    def save_model(self, request: HttpRequest, obj: EnrollSecret, form: Any, change: bool) -> None:
        if not has_team_role(request.user, obj.team_id, ADMIN_ROLES):
            raise PermissionDenied
        obj.save()


# Columns a user may add to the host list, beyond the fixed ones (chosen on the page, kept in the
# session): name -> label.
OPTIONAL_HOST_COLUMNS = {
    "primary_ip": "IP address",
    "os_version": "OS",
    "memory_display": "Memory",
    "uptime_display": "Uptime",
    "hardware_serial": "Serial number",
    "osquery_version": "osquery",
    "team": "Team",
}
DEFAULT_HOST_COLUMNS = ["os_version", "osquery_version", "team"]
_COLUMNS_SESSION_KEY = "hosts:list_columns"
CSV_COLUMNS = [
    ("id", "id"),
    ("display_name", "name"),
    ("hostname", "hostname"),
    ("status_text", "status"),
    ("platform", "platform"),
    ("os_version", "os_version"),
    ("osquery_version", "osquery_version"),
    ("team_name", "team"),
    ("primary_ip", "primary_ip"),
    ("hardware_serial", "hardware_serial"),
    ("uuid", "uuid"),
    ("memory", "memory"),
    ("uptime", "uptime"),
    ("last_seen_iso", "last_seen"),
]


def chosen_columns(request: HttpRequest) -> list[str]:
    chosen = request.session.get(_COLUMNS_SESSION_KEY, DEFAULT_HOST_COLUMNS)
    return [c for c in OPTIONAL_HOST_COLUMNS if c in chosen]


@admin.register(Host)
class HostAdmin(CappedPaginationAdminMixin, admin.ModelAdmin):
    list_display_links = ["display_name"]
    list_filter = [
        StatusListFilter,
        TeamListFilter,
        PlatformListFilter,
        LabelHostListFilter,
        SoftwareHostListFilter,  # ?software_title_id= / ?software_version_id=, from the Software pages
    ]
    search_fields = ["hostname", "computer_name", "=uuid", "=hardware_serial", "^primary_ip"]
    search_help_text = "Name or hostname (any part), UUID or serial (exact), IP address (prefix)."
    list_select_related = ["team", "seen"]
    list_per_page = 100
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # counts come from the dashboard's kept aggregates instead
    # and the stock delete (delete_queryset)
    actions = ["refetch_hosts", "transfer_hosts", live_query_hosts, run_script_hosts]
    change_list_template = "admin/hosts/host/change_list.html"

    # --- list and page --------------------------------------------------------------------------
    def get_queryset(self, request: HttpRequest) -> QuerySet[Host]:
        hosts = super().get_queryset(request).select_related("team", "seen")
        return scope_queryset(hosts, request.user, HOST_READ_ROLES)

    def get_list_display(self, request: HttpRequest) -> list[str]:
        return ["status", "display_name", "platform", *chosen_columns(request), "last_seen"]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        chosen = chosen_columns(request)
        options = OPTIONAL_HOST_COLUMNS.items()
        columns = [{"name": c, "label": text, "chosen": c in chosen} for c, text in options]
        query = request.GET.urlencode()
        extra = {
            "title": "Hosts",  # not Django's "Select host to change"
            # Adding hosts needs an enroll secret, which only admins and maintainers may read.
            "may_add_hosts": has_any_role(request.user, SECRET_READ_ROLES),
            "host_columns": columns,
            "csv_url": reverse("admin:hosts_host_export") + (f"?{query}" if query else ""),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # hosts come from enrolment

    def has_live_query_permission(self, request: HttpRequest) -> bool:
        return may_run_live_queries(request.user)  # the "Live query the selected hosts" action

    def has_run_script_permission(self, request: HttpRequest) -> bool:
        return script_access.may_run_anywhere(request.user)  # the "Run a script" action

    @admin.display(description="status")
    def status(self, host: Host) -> str:
        seen = getattr(host, "seen", None)
        state = status_of(seen and seen.seen_time, seen and seen.offline_after)
        badge = _badge(HostStatus(state).label, STATUS_COLOURS[state])
        if host.created_at >= timezone.now() - NEW_FOR:
            badge = format_html("{} {}", badge, _badge(HostStatus.NEW.label, STATUS_COLOURS[HostStatus.NEW]))
        return badge

    @admin.display(description="host", ordering="hostname")
    def display_name(self, host: Host) -> str:
        return host.display_name

    @admin.display(description="last seen", ordering="seen__seen_time", empty_value="never")
    def last_seen(self, host: Host) -> Any:
        seen = getattr(host, "seen", None)
        if not seen:
            return None
        return format_html(
            '<time datetime="{}" title="{}">{} ago</time>',
            seen.seen_time.isoformat(),
            date_format(timezone.localtime(seen.seen_time), "DATETIME_FORMAT"),
            timesince(seen.seen_time).split(",")[0],
        )

    @admin.display(description="memory", ordering="memory")
    def memory_display(self, host: Host) -> str:
        return f"{host.memory / 2**30:.1f} GiB" if host.memory else "—"

    @admin.display(description="uptime", ordering="uptime")
    def uptime_display(self, host: Host) -> str:
        return host_page.duration(host.uptime).split(",")[0] if host.uptime else "—"

    # --- the host page ------------------------------------------------------------------------------
    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        """The host page: a read-only view of the host (agents own its vitals), with its actions."""
        host = self.get_object(request, unquote(object_id))
        if host is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_permission(request, host):
            raise PermissionDenied
        if request.method != "GET":
            return HttpResponseNotAllowed(["GET"])
        user = request.user
        may_write = has_team_role(user, host.team_id, _HOST_WRITE_ROLES)
        transfer_form = None
        if may_write:
            teams = _teams_for(user, _HOST_WRITE_ROLES)
            transfer_form = TransferHostsForm(teams=teams, initial={"team": host.team_id})
        context = {
            **self.admin_site.each_context(request),
            "title": host.display_name,
            "subtitle": None,
            "opts": self.opts,
            "host": host,
            "original": host,
            "status_badges": [
                {"status": s, "label": HostStatus(s).label} for s in host_page.status_badges(host)
            ],
            "vitals": host_page.vitals(host),
            "labels": host_page.labels_of(host),
            "scheduled": host_page.scheduled_for(host),
            "reports": host_page.query_reports(host),
            "live_queries": host_page.live_query_history(host, user),
            "may_run_live_queries": may_run_live_queries(user),
            "may_write": may_write,
            "transfer_form": transfer_form,
            **host_page.extra_sections(host, user),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/hosts/host/detail.html", context)

    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: dict | None = None
    ) -> HttpResponse:
        return HttpResponseRedirect(reverse("admin:hosts_host_change", args=[object_id]))

    # --- writes -----------------------------------------------------------------------------------
    def delete_model(self, request: HttpRequest, obj: Host) -> None:
        services.delete_hosts([obj.pk])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Host]) -> None:
        services.delete_hosts(queryset.values_list("pk", flat=True))

    def has_delete_permission(self, request: HttpRequest, obj: Host | None = None) -> bool:
        allowed = super().has_delete_permission(request, obj)
        return allowed and (obj is None or has_team_role(request.user, obj.team_id, _HOST_WRITE_ROLES))

    def has_change_permission(self, request: HttpRequest, obj: Host | None = None) -> bool:
        allowed = super().has_change_permission(request, obj)
        return allowed and (obj is None or has_team_role(request.user, obj.team_id, _HOST_WRITE_ROLES))

    @admin.action(description="Refetch host details", permissions=["view"])
    def refetch_hosts(self, request: HttpRequest, queryset: QuerySet[Host]) -> None:
        count = services.request_refetch(queryset.values_list("pk", flat=True))
        self.message_user(request, f"Asked {count} host(s) to send their details at the next check-in.")

    @admin.action(description="Transfer to team", permissions=["change"])
    def transfer_hosts(self, request: HttpRequest, queryset: QuerySet[Host]) -> TemplateResponse | None:
        team_ids = visible_team_ids(request.user, _HOST_WRITE_ROLES)
        if team_ids is not None:
            queryset = queryset.filter(team_id__in=team_ids)
        form = TransferHostsForm(
            request.POST if "apply" in request.POST else None,
            teams=_teams_for(request.user, _HOST_WRITE_ROLES),
        )
        if team_ids is not None:  # only global roles may leave hosts without a team
            form.fields["team"].required = True
        if form.is_bound and form.is_valid():
            team = form.cleaned_data["team"]
            count = services.transfer_hosts(queryset.values_list("pk", flat=True), team)
            self.message_user(request, f"Moved {count} host(s) to {team.name if team else 'No team'}.")
            return None
        context = action_step_context(
            self, request, queryset, title="Transfer hosts to a team", form=form, action="transfer_hosts"
        )
        return TemplateResponse(request, "admin/hosts/host/transfer_hosts.html", context)

    # --- extra pages ------------------------------------------------------------------------------
    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("add-hosts/", view(admin_views.add_hosts), name="hosts_host_add_hosts"),
            path(
                "add-hosts/fleet.pem", view(admin_views.download_certificate), name="hosts_host_certificate"
            ),
            path("add-hosts/flagfile.txt", view(admin_views.download_flagfile), name="hosts_host_flagfile"),
            path(
                "add-hosts/secret/<int:secret_id>/secret.txt",
                view(admin_views.download_secret),
                name="hosts_host_secret",
            ),
            path("export.csv", view(self.export_view), name="hosts_host_export"),
            path("columns/", view(self.columns_view), name="hosts_host_columns"),
            path("<int:object_id>/refetch/", view(self.refetch_view), name="hosts_host_refetch"),
            path("<int:object_id>/transfer/", view(self.transfer_view), name="hosts_host_transfer"),
            *super().get_urls(),
        ]

    def _host_or_404(self, request: HttpRequest, object_id: int) -> Host:
        host = get_object_or_404(self.get_queryset(request), pk=object_id)
        if not self.has_view_permission(request, host):
            raise PermissionDenied
        return host

    def refetch_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """The "Refetch" button of the host page (POST only: it changes the host)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        host = self._host_or_404(request, object_id)
        services.request_refetch([host.pk])
        messages.success(request, f"{host.display_name} will send its details at its next check-in.")
        return HttpResponseRedirect(reverse("admin:hosts_host_change", args=[host.pk]))

    def transfer_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """The host page's "Transfer" form: move this host to another team (admins, maintainers)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        host = self._host_or_404(request, object_id)
        if not has_team_role(request.user, host.team_id, _HOST_WRITE_ROLES):
            raise PermissionDenied
        form = TransferHostsForm(request.POST, teams=_teams_for(request.user, _HOST_WRITE_ROLES))
        if visible_team_ids(request.user, _HOST_WRITE_ROLES) is not None:
            form.fields["team"].required = True
        if form.is_valid():
            team = form.cleaned_data["team"]
            services.transfer_hosts([host.pk], team)
            messages.success(request, f"Moved {host.display_name} to {team.name if team else 'No team'}.")
        else:
            messages.error(request, " ".join(e for errors in form.errors.values() for e in errors))
        return HttpResponseRedirect(reverse("admin:hosts_host_change", args=[host.pk]))

    def columns_view(self, request: HttpRequest) -> HttpResponse:
        """Keep the host list's chosen columns in the session, then go back to the list."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_view_permission(request):
            raise PermissionDenied
        wanted = [c for c in request.POST.getlist("columns") if c in OPTIONAL_HOST_COLUMNS]
        request.session[_COLUMNS_SESSION_KEY] = wanted
        back = request.POST.get("next", "")
        changelist = reverse("admin:hosts_host_changelist")
        return HttpResponseRedirect(back if back.startswith(changelist + "?") else changelist)

    def export_view(self, request: HttpRequest) -> HttpResponse:
        """The host list as CSV, with the list's filters and search applied (every page)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        changelist = self.get_changelist_instance(request)
        hosts = changelist.queryset.select_related("team", "seen")
        return host_export.csv_response(hosts, CSV_COLUMNS)


@admin.register(FleetSettings)
class FleetSettingsAdmin(UsageStatisticsSettingsAdmin, admin.ModelAdmin):
    """A single row: the list page goes straight to it (usage statistics: ``usage.console``)."""

    form = FleetSettingsForm
    fieldsets = [
        (
            "Organisation (shown to end users)",
            {
                "fields": [
                    "org_name",
                    "org_logo_url",
                    "org_logo_url_light_background",
                    "contact_url",
                    "transparency_url",
                ]
            },
        ),
        ("Scripts", {"fields": ["scripts_disabled"]}),
        ("Agent options", {"fields": ["agent_options"]}),
        USAGE_FIELDSET,
    ]

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if isinstance(db_field, models.URLField):
            kwargs.setdefault("assume_scheme", "https")  # Django 6's default; it warns until then
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: FleetSettings | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: FleetSettings, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        # scripts_disabled takes effect at once: the cached switch is dropped now and after commit
        # (a process reading it in between would otherwise keep the old value a few seconds).
        script_services.forget_switch()
        transaction.on_commit(script_services.forget_switch)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        settings_row = FleetSettings.load()
        return HttpResponseRedirect(reverse("admin:hosts_fleetsettings_change", args=[settings_row.pk]))
