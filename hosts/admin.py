"""The console for teams, enroll secrets, hosts, Fleet settings and user roles.

Hosts are reported by agents, so their vitals are read-only here; an admin may only move them
between teams, ask for a refetch or delete them. Every write goes through ``hosts.services``.
The host list stays fast on 100,000 hosts: joined seen/team rows, indexed filters, and a
paginator that never counts the whole table (``hosts.paginators``).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from campaigns.admin_views import live_query_hosts, may_run_live_queries
from fleet.numbers import parse_id
from hosts import admin_views, services
from hosts.admin_forms import (
    EnrollSecretForm,
    FleetSettingsForm,
    TeamForm,
    TeamSecretFormSet,
    TeamSecretInlineForm,
    TransferHostsForm,
    UserRoleForm,
    UserRoleFormSet,
)
from hosts.choices import HostStatus, Role
from hosts.filters import PlatformListFilter, StatusListFilter, TeamListFilter, with_host_counts
from hosts.labels_admin import LabelHostListFilter  # also registers the label console
from hosts.models import EnrollSecret, FleetSettings, Host, Team, UserRole
from hosts.paginators import CappedCountPaginator
from hosts.permissions import (
    ADMIN_ROLES,
    ALL_ROLES,
    HOST_READ_ROLES,
    SECRET_READ_ROLES,
    has_team_role,
    scope_queryset,
    visible_team_ids,
)
from hosts.status import NEW_FOR, status_of

admin.site.site_header = "Fleet"
admin.site.site_title = "Fleet console"
admin.site.index_title = "Fleet console"

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


_HOST_FIELDSETS = [
    (None, {"fields": ["display_name", "status", "team", "refetch_requested"]}),
    ("Identity", {"fields": ["hostname", "computer_name", "uuid", "osquery_host_id", "hardware_serial"]}),
    ("Activity", {"fields": ["seen_time", "created_at", "last_enrolled_at", "detail_updated_at"]}),
    (
        "Operating system",
        {
            "fields": [
                "platform",
                "platform_like",
                "os_version",
                "code_name",
                "build",
                "kernel_version",
                "uptime_display",
            ]
        },
    ),
    (
        "Agent",
        {
            "fields": [
                "osquery_version",
                "orbit_version",
                "distributed_interval",
                "config_tls_refresh",
                "logger_tls_period",
            ]
        },
    ),
    (
        "Hardware",
        {
            "fields": [
                "hardware_vendor",
                "hardware_model",
                "hardware_version",
                "cpu_type",
                "cpu_subtype",
                "cpu_brand",
                "cpu_physical_cores",
                "cpu_logical_cores",
                "memory_display",
            ]
        },
    ),
    ("Network", {"fields": ["primary_ip", "primary_mac", "public_ip"]}),
]


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = [
        "status",
        "display_name",
        "platform",
        "os_version",
        "osquery_version",
        "team",
        "last_seen",
    ]
    list_display_links = ["display_name"]
    list_filter = [StatusListFilter, TeamListFilter, PlatformListFilter, LabelHostListFilter]
    search_fields = ["hostname", "=uuid", "=hardware_serial", "^primary_ip"]
    search_help_text = "Hostname (any part), UUID or serial (exact), IP address (prefix)."
    list_select_related = ["team", "seen"]
    list_per_page = 100
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    fieldsets = _HOST_FIELDSETS
    actions = ["refetch_hosts", "transfer_hosts", live_query_hosts]  # and the stock delete (delete_queryset)
    change_form_template = "admin/hosts/host/change_form.html"
    change_list_template = "admin/hosts/host/change_list.html"

    # --- list and page --------------------------------------------------------------------------
    def get_queryset(self, request: HttpRequest) -> QuerySet[Host]:
        hosts = super().get_queryset(request).select_related("team", "seen")
        return scope_queryset(hosts, request.user, HOST_READ_ROLES)

    def get_paginator(
        self,
        request: HttpRequest,
        queryset: QuerySet,
        per_page: int,
        orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> CappedCountPaginator:
        page = request.GET.get("p", "1")
        return CappedCountPaginator(
            queryset,
            per_page,
            orphans,
            allow_empty_first_page,
            page_number=parse_id(page) or 1,
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Host | None = None) -> list[str]:
        fields = [f for _name, opts in _HOST_FIELDSETS for f in opts["fields"]]
        may_move = obj is not None and has_team_role(request.user, obj.team_id, _HOST_WRITE_ROLES)
        return [f for f in fields if f != "team" or not may_move]

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "team":
            kwargs["queryset"] = _teams_for(request.user, _HOST_WRITE_ROLES)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # hosts come from enrolment

    def has_live_query_permission(self, request: HttpRequest) -> bool:
        return may_run_live_queries(request.user)  # the "Live query the selected hosts" action

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
        return seen.seen_time if seen else None

    @admin.display(description="seen time", empty_value="never")
    def seen_time(self, host: Host) -> Any:
        return self.last_seen(host)

    @admin.display(description="memory")
    def memory_display(self, host: Host) -> str:
        return f"{host.memory / 2**30:.1f} GiB" if host.memory else "unknown"

    @admin.display(description="uptime")
    def uptime_display(self, host: Host) -> str:
        days, rest = divmod(host.uptime, 86400)
        return f"{days} d {rest // 3600} h" if host.uptime else "unknown"

    # --- writes -----------------------------------------------------------------------------------
    def save_model(self, request: HttpRequest, obj: Host, form: Any, change: bool) -> None:
        # Only the team is editable; saving the whole row would overwrite fresher agent data.
        if "team" in form.changed_data:
            services.transfer_hosts([obj.pk], obj.team)

    def delete_model(self, request: HttpRequest, obj: Host) -> None:
        services.delete_hosts([obj.pk])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Host]) -> None:
        services.delete_hosts(queryset.values_list("pk", flat=True))

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
        context = {
            **self.admin_site.each_context(request),
            "title": "Transfer hosts to a team",
            "opts": self.model._meta,
            "form": form,
            "hosts": queryset[:20],
            "host_count": queryset.count() if "select_across" not in request.POST else None,
            "selected": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
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
            path("<int:object_id>/refetch/", view(self.refetch_view), name="hosts_host_refetch"),
            *super().get_urls(),
        ]

    def refetch_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """The "Refetch" button of the host page (POST only: it changes the host)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        host = get_object_or_404(self.get_queryset(request), pk=object_id)
        if not self.has_view_permission(request, host):
            raise PermissionDenied
        services.request_refetch([host.pk])
        messages.success(request, f"{host.display_name} will send its details at its next check-in.")
        return HttpResponseRedirect(reverse("admin:hosts_host_change", args=[host.pk]))


@admin.register(FleetSettings)
class FleetSettingsAdmin(admin.ModelAdmin):
    """A single row: the list page goes straight to it."""

    form = FleetSettingsForm

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: FleetSettings | None = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        settings_row = FleetSettings.load()
        return HttpResponseRedirect(reverse("admin:hosts_fleetsettings_change", args=[settings_row.pk]))


@admin.register(UserRole)
class UserRoleAdmin(admin.ModelAdmin):
    form = UserRoleForm
    list_display = ["user", "scope", "role"]
    list_filter = ["role", ("team", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["user__username", "user__email", "team__name"]
    list_select_related = ["user", "team"]
    autocomplete_fields = ["user"]

    @admin.display(description="team", ordering="team__name")
    def scope(self, role: UserRole) -> str:
        return role.team.name if role.team_id else "All teams (global)"


class UserRoleInline(admin.TabularInline):
    model = UserRole
    formset = UserRoleFormSet
    fields = ["team", "role"]
    extra = 0
    verbose_name = "Fleet role"
    verbose_name_plural = "Fleet roles (one global role, or one role per team; superusers are global admins)"


User = get_user_model()
if admin.site.is_registered(User):
    _base_user_admin = type(admin.site.get_model_admin(User))
    admin.site.unregister(User)
else:  # pragma: no cover - a project without the auth admin
    _base_user_admin = UserAdmin


@admin.register(User)
class FleetUserAdmin(_base_user_admin):  # type: ignore[misc, valid-type]
    """The stock user admin, with the user's Fleet roles inline."""

    inlines = [*getattr(_base_user_admin, "inlines", []), UserRoleInline]
