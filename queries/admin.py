"""The query library in the console: saved queries with a monospace SQL editor.

The form checks through ``queries.services`` like REST does: a parser error is a form error on
the SQL field; tables osquery lacks on the chosen platforms are shown as warnings once saved (the
query is still saved) and on the query's page. Who may change what follows the Fleet roles
(``queries.api``): team roles edit their team's queries, global roles any.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from hosts.models import Team
from hosts.permissions import visible_team_ids
from queries import services
from queries.api import QUERY_WRITE_ROLES, may_write_query, readable_queries
from queries.models import Query
from queries.report_admin import report_link  # also registers the query reports console
from queries.sql import MAX_SQL_LENGTH

SQL_WIDGET_ATTRS = {
    "rows": 14,
    "cols": 110,
    "spellcheck": "false",
    "class": "vLargeTextField",
    "maxlength": MAX_SQL_LENGTH,  # the browser stops there, before the server must refuse
    "style": "font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px",
}
PLATFORM_CHOICES = [
    ("darwin", "macOS"),
    ("windows", "Windows"),
    ("linux", "Linux"),
    ("chrome", "ChromeOS"),
    ("freebsd", "FreeBSD"),
]


def add_service_errors(form: forms.BaseForm, exc: ValidationError) -> None:
    """Attach a service's ``ValidationError`` to the form's fields (or to the whole form)."""
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc)


class QueryForm(forms.ModelForm):
    platform = forms.MultipleChoiceField(
        choices=PLATFORM_CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None checked: every platform.",
    )
    user: Any = None  # set by QueryAdmin.get_form
    warnings: list[str]

    class Meta:
        model = Query
        fields = [
            "name",
            "description",
            "query",
            "team",
            "platform",
            "min_osquery_version",
            "interval",
            "logging",
            "automations_enabled",
            "discard_data",
            "observer_can_run",
        ]
        widgets = {
            "query": forms.Textarea(attrs=SQL_WIDGET_ATTRS),
            "description": forms.Textarea(attrs={"rows": 3}),
        }
        labels = {"query": "SQL"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.warnings = []
        if self.instance.pk:
            self.initial["platform"] = self.instance.platforms
        team_field = self.fields.get("team")  # absent on the read-only view
        if team_field is None:
            return
        team_ids = visible_team_ids(self.user, QUERY_WRITE_ROLES) if self.user else None
        if team_ids is not None:
            team_field.queryset = Team.objects.filter(id__in=team_ids)
            team_field.required = True  # only global roles may save global queries
        team_field.empty_label = "Global (all hosts)"

    def clean_platform(self) -> str:
        return ",".join(self.cleaned_data.get("platform") or [])

    def clean_team(self) -> Team | None:
        team = self.cleaned_data.get("team")
        if self.user is not None and not may_write_query(self.user, team.pk if team else None):
            raise ValidationError("Your role does not allow saving queries here.")
        return team

    def _post_clean(self) -> None:
        super()._post_clean()
        if self.errors.get("query"):
            return
        try:
            self.warnings = services.check_query(self.instance)
        except ValidationError as exc:
            add_service_errors(self, exc)

    def validate_unique(self) -> None:
        """Name uniqueness per team is ``services.check_query``'s (the constraint still guards races)."""


class ScheduledListFilter(admin.SimpleListFilter):
    title = "schedule"
    parameter_name = "scheduled"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("1", "Scheduled (interval > 0)"), ("0", "Not scheduled")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "1":
            return queryset.filter(interval__gt=0)
        if self.value() == "0":
            return queryset.filter(interval=0)
        return queryset


class QueryTeamListFilter(admin.SimpleListFilter):
    title = "team"
    parameter_name = "team_id"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        team_ids = visible_team_ids(request.user)
        teams = Team.objects.all() if team_ids is None else Team.objects.filter(id__in=team_ids)
        return [("0", "Global"), *((str(t.pk), t.name) for t in teams.only("id", "name"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value == "0":
            return queryset.filter(team__isnull=True)
        return queryset.filter(team_id=int(value)) if value and value.isdigit() else queryset


@admin.register(Query)
class QueryAdmin(admin.ModelAdmin):
    form = QueryForm
    list_display = ["name", "team_display", "platform_display", "interval_display", "logging",
                    "automations_enabled", "observer_can_run", "author", "updated_at", "report",
                    "live_query"]  # fmt: skip
    list_filter = [QueryTeamListFilter, ScheduledListFilter, "logging", "automations_enabled"]
    search_fields = ["name", "description", "query"]
    search_help_text = "Name, description or SQL (any part)."
    list_select_related = ["team", "author"]
    readonly_fields = ["schema_warnings", "author", "created_at", "updated_at", "report"]
    fieldsets = [
        (None, {"fields": ["name", "description", "query", "schema_warnings", "team"]}),
        ("Where and when", {"fields": ["platform", "min_osquery_version", "interval", "logging"]}),
        ("Results", {"fields": ["automations_enabled", "discard_data", "observer_can_run", "report"]}),
        ("History", {"fields": ["author", "created_at", "updated_at"]}),
    ]

    # --- who may do what ------------------------------------------------------------------------
    def get_queryset(self, request: HttpRequest) -> QuerySet[Query]:
        return readable_queries(super().get_queryset(request), request.user)

    def _may_write(self, request: HttpRequest, obj: Query | None) -> bool:
        if obj is None:
            return visible_team_ids(request.user, QUERY_WRITE_ROLES) != frozenset()
        return may_write_query(request.user, obj.team_id)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and self._may_write(request, None)

    def has_change_permission(self, request: HttpRequest, obj: Query | None = None) -> bool:
        return super().has_change_permission(request, obj) and self._may_write(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Query | None = None) -> bool:
        return super().has_delete_permission(request, obj) and self._may_write(request, obj)

    def get_form(self, request: HttpRequest, obj: Query | None = None, change: bool = False, **kwargs: Any):
        form = super().get_form(request, obj, change, **kwargs)
        return type(form.__name__, (form,), {"user": request.user})

    # --- list columns -----------------------------------------------------------------------------
    @admin.display(description="team", ordering="team__name")
    def team_display(self, query: Query) -> str:
        return query.team.name if query.team_id else "Global"

    @admin.display(description="platforms", ordering="platform")
    def platform_display(self, query: Query) -> str:
        return query.platform.replace(",", ", ") if query.platform else "all"

    @admin.display(description="interval", ordering="interval")
    def interval_display(self, query: Query) -> str:
        if not query.interval:
            return "not scheduled"
        minutes, seconds = divmod(query.interval, 60)
        hours, minutes = divmod(minutes, 60)
        parts = [
            f"{hours} h" if hours else "",
            f"{minutes} min" if minutes else "",
            f"{seconds} s" if seconds else "",
        ]
        return " ".join(p for p in parts if p)

    @admin.display(description="live")
    def live_query(self, query: Query) -> str:
        """Opens the live-query page for this saved query (observers may run those marked for them)."""
        url = reverse("admin:campaigns_campaign_new") + "?" + urlencode({"query_id": query.pk})
        return format_html('<a href="{}">Run live</a>', url)

    @admin.display(description="report")
    def report(self, query: Query) -> str:
        return report_link(query) if query.pk else "-"

    @admin.display(description="schema check")
    def schema_warnings(self, query: Query) -> str:
        if not query.pk:
            return "Checked when saved."
        warnings = services.query_warnings(query)
        if not warnings:
            return "Every table exists in osquery on the query's platforms."
        return format_html(
            '<ul class="messagelist" style="margin:0">{}</ul>',
            format_html_join("", '<li class="warning">{}</li>', ((w,) for w in warnings)),
        )

    # --- writes -----------------------------------------------------------------------------------
    def save_model(self, request: HttpRequest, obj: Query, form: QueryForm, change: bool) -> None:
        if not change and obj.author_id is None:
            obj.author = request.user
        warnings = services.save_query(obj)
        for warning in warnings:
            messages.warning(request, warning)
