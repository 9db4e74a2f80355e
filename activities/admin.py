"""The activity feed in the console: a read-only list and a page per activity with its diff.

Nobody may add, change or delete an activity here (no buttons, no "delete selected" action);
the rows are immutable anyway (``activities.models``). The list is scoped like the REST API
(``activities.access``), never counts the whole table (``hosts.paginators``), and filters on
indexed columns only: time, type, surface, actor, team.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from activities.access import visible_activities
from activities.choices import ActivityType
from activities.models import Activity
from fleet.numbers import parse_id
from hosts.models import Team
from hosts.paginators import CappedPaginationAdminMixin
from hosts.permissions import visible_team_ids

_PERIODS = {
    "1h": timedelta(hours=1),
    "24h": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
# Where an activity's object is shown in the console ("admin:<app>_<model>_change").
_OBJECT_PAGES = {
    "team": ("hosts_team",),
    "host": ("hosts_host",),
    "label": ("hosts_label",),
    "saved_query": ("queries_query",),
    "pack": ("packs_pack",),
    "user": ("users_user", "auth_user"),
    "campaign": ("campaigns_campaign",),
}


class PeriodListFilter(admin.SimpleListFilter):
    """A time window back from now (an indexed range; no date hierarchy over the whole table)."""

    title = "time"
    parameter_name = "period"

    def lookups(self, request: Any, model_admin: Any) -> list[tuple[str, str]]:
        return [("1h", "Last hour"), ("24h", "Last 24 hours"), ("7d", "Last 7 days"), ("30d", "Last 30 days")]

    def queryset(self, request: Any, queryset: QuerySet) -> QuerySet:
        period = _PERIODS.get(self.value() or "")
        return queryset.filter(created_at__gte=timezone.now() - period) if period else queryset


class TypeListFilter(admin.SimpleListFilter):
    title = "type"
    parameter_name = "type"

    def lookups(self, request: Any, model_admin: Any) -> list[tuple[str, str]]:
        return [(value, f"{label} ({value})") for value, label in ActivityType.choices]

    def queryset(self, request: Any, queryset: QuerySet) -> QuerySet:
        return queryset.filter(type=self.value()) if self.value() else queryset


class ActorListFilter(admin.SimpleListFilter):
    """Users who may have acted: everyone for global roles, the team's users for team roles."""

    title = "actor"
    parameter_name = "actor_id"

    def lookups(self, request: Any, model_admin: Any) -> list[tuple[str, str]]:
        users = get_user_model().objects.order_by("username")
        team_ids = visible_team_ids(request.user)
        if team_ids is not None:
            users = users.filter(fleet_roles__team_id__in=team_ids).distinct()
        return [(str(pk), name) for pk, name in users.values_list("pk", "username")[:200]]

    def queryset(self, request: Any, queryset: QuerySet) -> QuerySet:
        actor_id = parse_id(self.value())
        return queryset.filter(actor_id=actor_id) if actor_id is not None else queryset


class ActivityTeamListFilter(admin.SimpleListFilter):
    title = "team"
    parameter_name = "team_id"

    def lookups(self, request: Any, model_admin: Any) -> list[tuple[str, str]]:
        team_ids = visible_team_ids(request.user)
        teams = Team.objects.all() if team_ids is None else Team.objects.filter(id__in=team_ids)
        choices = [(str(pk), name) for pk, name in teams.values_list("pk", "name")]
        return [*choices, ("0", "Global (no team)")] if team_ids is None else choices

    def queryset(self, request: Any, queryset: QuerySet) -> QuerySet:
        team_id = parse_id(self.value())
        if team_id is None:
            return queryset
        return queryset.filter(team__isnull=True) if team_id == 0 else queryset.filter(team_id=team_id)


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


@admin.register(Activity)
class ActivityAdmin(CappedPaginationAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "actor_display", "surface", "type", "object_display", "team_id"]
    list_display_links = ["created_at"]
    list_filter = [PeriodListFilter, TypeListFilter, "surface", ActorListFilter, ActivityTeamListFilter]
    search_fields = ["object_name", "actor_name", "=object_id"]
    search_help_text = "Object name or actor username (any part), or an object id (exact)."
    list_per_page = 100
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    actions = None
    fieldsets = [
        (None, {"fields": ["created_at", "actor_display", "surface", "client_address", "type"]}),
        ("Object", {"fields": ["object_display", "team_id"]}),
        ("What changed", {"fields": ["changes_display"]}),
        ("Details", {"fields": ["details_display"]}),
    ]
    readonly_fields = [
        "created_at",
        "actor_display",
        "surface",
        "client_address",
        "type",
        "object_display",
        "team_id",
        "changes_display",
        "details_display",
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Activity]:
        return visible_activities(super().get_queryset(request), request.user)

    # The trail is written by the server only.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Activity | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Activity | None = None) -> bool:
        return False

    @admin.display(description="actor", ordering="actor_name")
    def actor_display(self, activity: Activity) -> str:
        if not activity.actor_name:
            return "Fleet" if not activity.actor_id else f"user {activity.actor_id}"
        return activity.actor_name

    @admin.display(description="object", ordering="object_name")
    def object_display(self, activity: Activity) -> str:
        label = activity.object_name or activity.object_id or "—"
        if activity.object_type:
            label = f"{activity.object_type}: {label}"
        if parse_id(activity.object_id) is None or activity.type.startswith("deleted_"):
            return label
        for page in _OBJECT_PAGES.get(activity.object_type, ()):
            try:
                url = reverse(f"admin:{page}_change", args=[activity.object_id])
            except NoReverseMatch:
                continue
            return format_html('<a href="{}">{}</a>', url, label)
        return label

    @admin.display(description="changes")
    def changes_display(self, activity: Activity) -> str:
        details = activity.details if isinstance(activity.details, dict) else {}
        if isinstance(details.get("changes"), dict) and details["changes"]:
            rows = format_html_join(
                "",
                "<tr><th>{}</th><td><pre>{}</pre></td><td><pre>{}</pre></td></tr>",
                (
                    (field, _pretty(change.get("before")), _pretty(change.get("after")))
                    for field, change in details["changes"].items()
                    if isinstance(change, dict)
                ),
            )
            return format_html(
                "<table><thead><tr><th>field</th><th>before</th><th>after</th></tr></thead>"
                "<tbody>{}</tbody></table>",
                rows,
            )
        for key, title in (("after", "values"), ("before", "values before the deletion")):
            if isinstance(details.get(key), dict):
                rows = format_html_join(
                    "",
                    "<tr><th>{}</th><td><pre>{}</pre></td></tr>",
                    ((field, _pretty(value)) for field, value in details[key].items()),
                )
                return format_html(
                    "<table><thead><tr><th>field</th><th>{}</th></tr></thead><tbody>{}</tbody></table>",
                    title,
                    rows,
                )
        return "—"

    @admin.display(description="details")
    def details_display(self, activity: Activity) -> str:
        return format_html("<pre>{}</pre>", _pretty(activity.details))
