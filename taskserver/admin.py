"""Tasks in the console: tasks, agents, agent keys and metric destinations, scoped by team.

Writes go through :mod:`taskserver.services` (which records the activities, without settings
or header values), so the console's generic activity hooks are bypassed here, as scripts do.
Secrets are never rendered back: settings and headers show ``"<secret>"`` for sealed values, and
a form sent back with the marker keeps the stored value. A new agent key is shown once, in the
message after saving. Task and agent pages end with a Metrics section (``taskserver/charts.py``):
the series agents sent to the ``server`` destination, shown to whoever may see the page.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from activities.admin_hooks import AuditedModelAdmin
from hosts.models import Host, Team
from hosts.permissions import visible_team_ids
from hostscripts.admin import TeamFilter
from taskserver import access, charts, plugins, routing, sealed, services
from taskserver.models import AgentKey, MetricDestination, Task, TaskAgent

JSON_AREA = forms.Textarea(attrs={"rows": 8, "cols": 90, "spellcheck": "false", "class": "vLargeTextField"})


class ScopedAdmin(AuditedModelAdmin, admin.ModelAdmin):
    """Team scoping (taskserver.access) and service writes; the generic activity hooks are off."""

    read_roles: frozenset[str] = access.TASK_READ_ROLES
    write_roles: frozenset[str] = access.TASK_WRITE_ROLES
    list_filter = [TeamFilter]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return access.visible(
            super().get_queryset(request).select_related("team"), request.user, self.read_roles
        )

    def _may_write(self, request: HttpRequest, obj: Any) -> bool:
        if obj is None:
            return visible_team_ids(request.user, self.write_roles) != frozenset()
        return access.may_write(request.user, obj.team_id, self.write_roles)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and self._may_write(request, None)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_change_permission(request, obj) and self._may_write(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_delete_permission(request, obj) and self._may_write(request, obj)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        return type(form.__name__, (form,), {"user": request.user, "write_roles": self.write_roles})

    @admin.display(description="team", ordering="team__name")
    def team_display(self, obj: Any) -> str:
        return obj.team.name if obj.team_id else "Global"

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for obj in queryset:
            self.delete_model(request, obj)

    # The services record the activities; the generic console records would repeat them.
    def save_form(self, request: HttpRequest, form: Any, change: bool) -> Any:
        return admin.ModelAdmin.save_form(self, request, form, change)

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        return admin.ModelAdmin.log_addition(self, request, obj, message)

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        return admin.ModelAdmin.log_change(self, request, obj, message)

    def log_deletions(self, request: HttpRequest, queryset: Any) -> Any:
        return admin.ModelAdmin.log_deletions(self, request, queryset)


class MetricsSectionMixin:
    """The change page ends with the object's Metrics section, for anyone who may see the object."""

    change_form_template = "admin/taskserver/change_form.html"
    metrics_of: str  # "task" or "agent"

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        obj = self.get_object(request, unquote(object_id))  # type: ignore[attr-defined]
        if obj is not None and self.has_view_or_change_permission(request, obj):  # type: ignore[attr-defined]
            section = charts.section(**{f"{self.metrics_of}_id": obj.pk})
            extra_context = {**(extra_context or {}), "metrics": section}
        return super().change_view(request, object_id, form_url, extra_context)  # type: ignore[misc]


class TeamScopedForm(forms.ModelForm):
    """The team field lists the teams the user may write in; a saved object keeps its team."""

    user: Any = None
    write_roles: frozenset[str] = frozenset()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        team_field = self.fields.get("team")
        if team_field is None:
            return
        for flag in ("can_add_related", "can_change_related", "can_delete_related", "can_view_related"):
            setattr(team_field.widget, flag, False)
        team_field.empty_label = "Global"
        if self.instance.pk:
            team_field.disabled = True
            return
        team_ids = visible_team_ids(self.user, self.write_roles) if self.user else None
        if team_ids is not None:
            team_field.queryset = Team.objects.filter(id__in=team_ids)
            team_field.required = True

    def _json(self, field: str) -> Any:
        text = self.cleaned_data.get(field) or ""
        if not text.strip():
            return {}
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ValidationError({field: f"Not valid JSON: {exc}"}) from None

    def _check_name(self, team_id: int | None) -> None:
        """The name's rules and its uniqueness in the scope, as a form error (not a 409)."""
        try:
            name = services.clean_name(self.cleaned_data.get("name"))
        except ValidationError as exc:
            self._service_errors(exc, {})
            return
        others = type(self.instance).objects.filter(scope=team_id or 0, name=name)
        if others.exclude(pk=self.instance.pk).exists():
            self.add_error("name", "This name is already used in this team (or globally).")

    def _service_errors(self, exc: ValidationError, mapping: dict[str, str]) -> None:
        for field, errors in exc.message_dict.items():
            target = mapping.get(field, field)
            self.add_error(target if target in self.fields else None, errors)


# --- Tasks -----------------------------------------------------------------------------------------


class TaskForm(TeamScopedForm):
    settings_json = forms.CharField(
        label="settings",
        required=False,
        widget=JSON_AREA,
        help_text='The plugin\'s settings as a JSON object. Secret values show "<secret>": leave them so '
        "to keep them, or type a new value.",
    )
    route_config_json = forms.CharField(
        label="route config",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 90, "spellcheck": "false"}),
        help_text='any: {} · byTags: {"tags": ["dc1"]} · byIds: {"ids": [3, 4]} · '
        'byLabels: {"labels": ["Ubuntu"]}',
    )

    class Meta:
        model = Task
        fields = ["name", "team", "plugin", "interval", "route_type", "enabled"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = plugins.available()
        if names and "plugin" in self.fields:
            current = self.instance.plugin if self.instance.pk else None
            choices = sorted({*names, *([current] if current else [])})
            self.fields["plugin"] = forms.ChoiceField(choices=[(n, n) for n in choices])
        if self.instance.pk:
            self.initial["settings_json"] = json.dumps(sealed.masked(self.instance.settings), indent=2)
            self.initial["route_config_json"] = json.dumps(self.instance.route_config or {})
        else:
            self.initial.setdefault("route_config_json", "{}")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        settings_value = self._json("settings_json")
        route_config = self._json("route_config_json")
        if self.errors:
            return data
        task = self.instance if self.instance.pk else None
        team = data.get("team") if task is None else task.team
        self.service_kwargs = {
            "name": data.get("name"),
            "plugin": data.get("plugin"),
            "settings": settings_value,
            "interval": data.get("interval"),
            "route_type": data.get("route_type"),
            "route_config": route_config,
            "enabled": data.get("enabled"),
            "team_id": team.pk if team else None,
        }
        team_id = self.service_kwargs["team_id"]
        self._check_name(team_id)
        for check in (
            lambda: services.clean_interval(data.get("interval")),
            lambda: services.clean_route(data.get("route_type"), route_config, team_id, self.user),
            lambda: services.clean_settings(data.get("plugin"), settings_value, task),
        ):
            try:
                check()
            except ValidationError as exc:
                self._service_errors(exc, {"settings": "settings_json", "route": "route_config_json"})
        return data


@admin.register(Task)
class TaskAdmin(MetricsSectionMixin, ScopedAdmin):
    metrics_of = "task"
    form = TaskForm
    list_display = ["name", "team_display", "plugin", "interval", "route_type", "enabled", "updated_at"]
    list_filter = [TeamFilter, "route_type", "enabled"]
    search_fields = ["name", "plugin"]
    fieldsets = [
        (None, {"fields": ["name", "team", "plugin", "settings_json", "interval", "enabled"]}),
        ("Route", {"fields": ["route_type", "route_config_json"]}),
        ("History", {"fields": ["revision", "created_at", "updated_at"]}),
    ]
    readonly_fields = ["revision", "created_at", "updated_at"]

    def get_fieldsets(self, request: HttpRequest, obj: Task | None = None) -> list:
        if obj is not None and not self.has_change_permission(request, obj):
            return [(None, {"fields": ["name", "team", "plugin", "masked_settings", "interval", "enabled"]}),
                    ("Route", {"fields": ["route_type", "route_config"]}), self.fieldsets[2]]  # fmt: skip
        return self.fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: Task | None = None) -> list[str]:
        if obj is not None and not self.has_change_permission(request, obj):
            return ["masked_settings", *self.readonly_fields]
        return self.readonly_fields

    @admin.display(description="settings")
    def masked_settings(self, task: Task) -> str:
        return json.dumps(sealed.masked(task.settings), indent=2)

    def save_model(self, request: HttpRequest, obj: Task, form: TaskForm, change: bool) -> None:
        kwargs = dict(form.service_kwargs)
        if change:
            kwargs.pop("team_id")
        saved = services.save_task(task=obj if change else None, user=request.user, **kwargs)
        obj.pk, obj.revision, obj.created_at, obj.updated_at = (
            saved.pk,
            saved.revision,
            saved.created_at,
            saved.updated_at,
        )

    def delete_model(self, request: HttpRequest, obj: Task) -> None:
        services.delete_task(obj)


# --- Agents ------------------------------------------------------------------------------------------


class TaskAgentForm(TeamScopedForm):
    tags_text = forms.CharField(
        label="tags", required=False, help_text="Separated by commas or spaces; byTags routes match them."
    )

    class Meta:
        model = TaskAgent
        fields = ["enabled", "host"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial["tags_text"] = ", ".join(self.instance.tags or [])
        if "host" in self.fields:
            if self.instance.team_id is not None:  # another team's host ids are not even confirmed
                self.fields["host"].queryset = Host.objects.filter(team_id=self.instance.team_id)
            self.fields["host"].help_text = (
                "The enrolled host it runs on (a host of the agent's team): byLabels routes match its "
                "labels. Set by the agent itself when it sends its hardware UUID."
            )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        raw = (data.get("tags_text") or "").replace(",", " ").split()
        try:
            data["tags"] = services.clean_tags(raw)
        except ValidationError as exc:
            self._service_errors(exc, {"tags": "tags_text"})
        host = data.get("host")
        try:
            data["host_id"] = services.host_for_agent(self.instance.team_id, host.pk if host else None)
        except ValidationError as exc:
            self._service_errors(exc, {"host_id": "host"})
        return data


@admin.register(TaskAgent)
class TaskAgentAdmin(MetricsSectionMixin, ScopedAdmin):
    metrics_of = "agent"
    form = TaskAgentForm
    read_roles = access.AGENT_READ_ROLES
    write_roles = access.AGENT_WRITE_ROLES
    list_display = ["name", "team_display", "tags_display", "online", "enabled", "last_seen_at", "task_count"]
    list_filter = [TeamFilter, "online", "enabled"]
    search_fields = ["name"]
    fields = [
        "name",
        "team",
        "host",
        "tags_text",
        "enabled",
        "online",
        "version",
        "created_at",
        "last_seen_at",
    ]
    readonly_fields = ["name", "team", "online", "version", "created_at", "last_seen_at"]
    raw_id_fields = ["host"]  # a select of every host would not scale

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # agents appear when they connect with an agent key

    def get_fields(self, request: HttpRequest, obj: TaskAgent | None = None) -> list[str]:
        if obj is not None and not self.has_change_permission(request, obj):
            return ["name", "team", "host", "tags", "enabled", *self.readonly_fields[2:]]
        return self.fields

    def get_readonly_fields(self, request: HttpRequest, obj: TaskAgent | None = None) -> list[str]:
        if obj is not None and not self.has_change_permission(request, obj):
            return ["host", "tags", "enabled", *self.readonly_fields]
        return self.readonly_fields

    @admin.display(description="tags")
    def tags_display(self, agent: TaskAgent) -> str:
        return ", ".join(agent.tags or []) or "—"

    @admin.display(description="tasks")
    def task_count(self, agent: TaskAgent) -> int:
        return len(routing.tasks_for(agent))

    def save_model(self, request: HttpRequest, obj: TaskAgent, form: TaskAgentForm, change: bool) -> None:
        data = form.cleaned_data
        services.update_agent(obj, tags=data["tags"], enabled=data["enabled"], host_id=data["host_id"])

    def delete_model(self, request: HttpRequest, obj: TaskAgent) -> None:
        services.delete_agent(obj)


# --- Agent keys ---------------------------------------------------------------------------------------


class AgentKeyForm(TeamScopedForm):
    class Meta:
        model = AgentKey
        fields = ["name", "team"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        self._check_name(data["team"].pk if data.get("team") else None)
        return data


@admin.register(AgentKey)
class AgentKeyAdmin(ScopedAdmin):
    form = AgentKeyForm
    read_roles = access.KEY_READ_ROLES
    write_roles = access.KEY_WRITE_ROLES
    list_display = ["name", "team_display", "created_by", "created_at", "last_used_at"]
    search_fields = ["name"]
    readonly_fields = ["created_by", "created_at", "last_used_at"]

    def has_change_permission(self, request: HttpRequest, obj: AgentKey | None = None) -> bool:
        return False  # a key is created and deleted, never edited

    def save_model(self, request: HttpRequest, obj: AgentKey, form: AgentKeyForm, change: bool) -> None:
        key, raw = services.create_agent_key(name=obj.name, team_id=obj.team_id, user=request.user)
        obj.pk, obj.created_at = key.pk, key.created_at
        messages.warning(
            request,
            f"The agent key {key.name!r} is: {raw} — copy it now: it is shown this once and never again.",
        )

    def delete_model(self, request: HttpRequest, obj: AgentKey) -> None:
        services.delete_agent_key(obj)


# --- Metric destinations ----------------------------------------------------------------------------


class MetricDestinationForm(TeamScopedForm):
    headers_json = forms.CharField(
        label="headers",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 90, "spellcheck": "false"}),
        help_text='A JSON object of header names to values. Values show "<secret>": '
        "leave them so to keep them.",
    )

    class Meta:
        model = MetricDestination
        fields = ["name", "team", "kind", "url", "enabled"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        headers = {name: sealed.MARKER for name in self.instance.headers or {}}
        self.initial["headers_json"] = json.dumps(headers)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        team = data.get("team") if not self.instance.pk else self.instance.team
        self._check_name(team.pk if team else None)
        headers = self._json("headers_json")
        try:
            services.clean_url(data.get("kind"), data.get("url"))
            data["headers"] = services.clean_headers(headers, self.instance.headers or {})
            data["headers_input"] = headers
        except ValidationError as exc:
            self._service_errors(exc, {"headers": "headers_json"})
        return data


@admin.register(MetricDestination)
class MetricDestinationAdmin(ScopedAdmin):
    form = MetricDestinationForm
    read_roles = access.DESTINATION_READ_ROLES
    write_roles = access.DESTINATION_WRITE_ROLES
    list_display = ["name", "team_display", "kind", "url", "enabled"]
    list_filter = [TeamFilter, "kind", "enabled"]
    search_fields = ["name", "url"]

    def save_model(
        self, request: HttpRequest, obj: MetricDestination, form: MetricDestinationForm, change: bool
    ) -> None:
        data = form.cleaned_data
        current = MetricDestination.objects.get(pk=obj.pk) if change else None
        saved = services.save_destination(
            destination=current,
            name=data["name"],
            kind=data["kind"],
            url=data.get("url") or "",
            headers=data.get("headers_input"),
            enabled=data.get("enabled"),
            team_id=data["team"].pk if data.get("team") else None,
        )
        obj.pk = saved.pk

    def delete_model(self, request: HttpRequest, obj: MetricDestination) -> None:
        services.delete_destination(obj)
