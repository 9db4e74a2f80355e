"""Packs in the console: their scheduled queries inline, and the hosts, labels and teams they target.

Checks go through ``packs.services`` (reserved names, osquery's interval/shard/platform rules);
saving a pack, a scheduled query or a target invalidates the served configs (``packs.signals``).
Packs are global objects: global roles see them, global admins, maintainers and gitops change
them (``packs.api``).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from packs import services
from packs.api import may_read_packs, may_write_packs
from packs.models import Pack, ScheduledQuery
from queries.admin import add_service_errors


class PackForm(forms.ModelForm):
    class Meta:
        model = Pack
        fields = [
            "name",
            "description",
            "platform",
            "disabled",
            "target_hosts",
            "target_labels",
            "target_teams",
        ]
        labels = {"target_hosts": "Hosts", "target_labels": "Labels", "target_teams": "Teams"}
        help_texts = {
            "platform": "Optional osquery platform filter, e.g. darwin or windows,linux (empty: all).",
            "target_labels": "Hosts in any of these labels get the pack.",
            "target_teams": "Hosts of any of these teams get the pack.",
        }

    def _post_clean(self) -> None:
        super()._post_clean()
        try:
            services.check_pack(self.instance)
        except ValidationError as exc:
            add_service_errors(self, exc)

    def validate_unique(self) -> None:
        """Name uniqueness is ``services.check_pack``'s (the constraint still guards races)."""


class ScheduledQueryForm(forms.ModelForm):
    class Meta:
        model = ScheduledQuery
        fields = [
            "query",
            "name",
            "interval",
            "snapshot",
            "removed",
            "platform",
            "version",
            "shard",
            "denylist",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["name"].required = False
        self.fields["name"].help_text = "Defaults to the query's name."

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if not data.get("name") and data.get("query"):
            data["name"] = data["query"].name
        return data

    def _post_clean(self) -> None:
        super()._post_clean()
        if self.errors or not self.instance.query_id:
            return
        try:
            services.check_scheduled(self.instance)
        except ValidationError as exc:
            add_service_errors(self, exc)


class ScheduledQueryInline(admin.TabularInline):
    model = ScheduledQuery
    form = ScheduledQueryForm
    autocomplete_fields = ["query"]
    extra = 1
    verbose_name = "scheduled query"


@admin.register(Pack)
class PackAdmin(admin.ModelAdmin):
    form = PackForm
    inlines = [ScheduledQueryInline]
    list_display = ["name", "platform_display", "disabled", "query_count", "targets"]
    list_filter = ["disabled"]
    search_fields = ["name", "description"]
    autocomplete_fields = ["target_hosts"]
    filter_horizontal = ["target_labels", "target_teams"]
    fieldsets = [
        (None, {"fields": ["name", "description", "platform", "disabled"]}),
        ("Targets", {"fields": ["target_labels", "target_teams", "target_hosts"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Pack]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                query_count=Count("scheduled", distinct=True),
                host_targets=Count("target_hosts", distinct=True),
                label_targets=Count("target_labels", distinct=True),
                team_targets=Count("target_teams", distinct=True),
            )
        )

    # --- who may do what ------------------------------------------------------------------------
    def has_module_permission(self, request: HttpRequest) -> bool:
        return super().has_module_permission(request) and may_read_packs(request.user)

    def has_view_permission(self, request: HttpRequest, obj: Pack | None = None) -> bool:
        return super().has_view_permission(request, obj) and may_read_packs(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and may_write_packs(request.user)

    def has_change_permission(self, request: HttpRequest, obj: Pack | None = None) -> bool:
        return super().has_change_permission(request, obj) and may_write_packs(request.user)

    def has_delete_permission(self, request: HttpRequest, obj: Pack | None = None) -> bool:
        return super().has_delete_permission(request, obj) and may_write_packs(request.user)

    # --- list columns -----------------------------------------------------------------------------
    @admin.display(description="platform", ordering="platform")
    def platform_display(self, pack: Pack) -> str:
        return pack.platform or "all"

    @admin.display(description="queries", ordering="query_count")
    def query_count(self, pack: Pack) -> int:
        return pack.query_count

    @admin.display(description="targets")
    def targets(self, pack: Pack) -> str:
        parts = [
            f"{count} {name}"
            for count, name in (
                (pack.label_targets, "label(s)"),
                (pack.team_targets, "team(s)"),
                (pack.host_targets, "host(s)"),
            )
            if count
        ]
        return ", ".join(parts) or "none"
