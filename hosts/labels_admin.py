"""The console for labels: the list with host counts, a label's page with its members, and the
host list's "label" filter.

Writes go through ``hosts.labels`` like REST does, so the SQL check, reserved names and the
invalidation of what depends on labels are the same. Builtin labels are read-only; every role may
look at labels, global admins and maintainers change them.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from fleet.numbers import parse_id
from hosts import labels
from hosts.admin_forms import _raise_on_field
from hosts.labels_api import LABEL_WRITE_ROLES, with_label_host_counts
from hosts.models import Host, Label, LabelMembershipType, LabelType
from hosts.permissions import ALL_ROLES, HOST_READ_ROLES, has_any_role, has_team_role, scope_queryset

MEMBERS_SHOWN = 50
_EDITABLE = ["name", "description", "label_membership_type", "platform", "query"]
_READ_ONLY = ["kind", "name", "description", "label_membership_type", "platform", "sql"]
_MONOSPACE = {"class": "vLargeTextField", "style": "font-family: monospace", "spellcheck": "false"}


def _host_list_url(label: Label) -> str:
    return reverse("admin:hosts_host_changelist") + f"?label_id={label.pk}"


class LabelForm(forms.ModelForm):
    """A label; manual labels list their hosts one per line (id, hostname, UUID or serial)."""

    hosts = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 8, "cols": 60, **_MONOSPACE}),
        help_text="Manual labels only: one host per line (id, hostname, UUID or serial). Replaces the list.",
    )

    class Meta:
        model = Label
        fields = ["name", "description", "label_membership_type", "platform", "query", "hosts"]
        widgets = {
            "query": forms.Textarea(attrs={"rows": 10, "cols": 100, **_MONOSPACE}),
            "description": forms.Textarea(attrs={"rows": 2, "cols": 100}),
        }
        help_texts = {
            "platform": "Comma-separated osquery platforms (darwin, windows, linux, ubuntu...); empty: all.",
            "query": "Dynamic labels: osquery SQL; a host is a member when it returns at least one row.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and "label_membership_type" in self.fields:
            self.fields["label_membership_type"].disabled = True  # fixed once created
        if self.instance.pk and self.instance.label_membership_type == LabelMembershipType.MANUAL:
            # UUIDs (or ids) name exactly one host each; hostnames may be shared.
            members = self.instance.hosts.order_by("id").values_list("uuid", "id")
            self.initial["hosts"] = "\n".join(uuid or str(pk) for uuid, pk in members)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        lines = [line.strip() for line in (data.get("hosts") or "").splitlines() if line.strip()]
        membership = data.get("label_membership_type") or LabelMembershipType.DYNAMIC
        data["host_list"] = lines if membership == LabelMembershipType.MANUAL else (lines or None)
        try:
            labels.clean_label_fields(
                name=data.get("name", ""),
                query=data.get("query", ""),
                platform=data.get("platform", ""),
                label_membership_type=membership,
                hosts=data["host_list"],
                instance=self.instance if self.instance.pk else None,
            )
        except ValidationError as exc:
            _raise_on_field(self, exc)
        return data


class LabelHostListFilter(admin.SimpleListFilter):
    """The host list's "label" filter (``?label_id=``): one indexed join on the membership table."""

    title = "label"
    parameter_name = "label_id"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            (str(pk), name)
            for pk, name in Label.objects.order_by("label_type", "name").values_list("pk", "name")
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Host]) -> QuerySet[Host]:
        value = self.value()
        label_id = parse_id(value)
        if label_id is None:
            return queryset
        return queryset.filter(label_memberships__label_id=label_id)


@admin.register(Label)
class LabelAdmin(admin.ModelAdmin):
    form = LabelForm
    list_display = ["name", "kind", "label_membership_type", "platform_display", "host_count", "updated_at"]
    list_filter = ["label_type", "label_membership_type"]
    search_fields = ["name", "description"]
    search_help_text = "Name or description (any part)."
    ordering = ["label_type", "name"]
    list_select_related = ["author"]

    # --- who may do what ------------------------------------------------------------------------
    def get_queryset(self, request: HttpRequest) -> QuerySet[Label]:
        return with_label_host_counts(super().get_queryset(request), request.user)

    def _may_write(self, request: HttpRequest, obj: Label | None) -> bool:
        writer = has_team_role(request.user, None, LABEL_WRITE_ROLES)
        return writer and (obj is None or obj.label_type != LabelType.BUILTIN)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return super().has_module_permission(request) and has_any_role(request.user, ALL_ROLES)

    def has_view_permission(self, request: HttpRequest, obj: Label | None = None) -> bool:
        return super().has_view_permission(request, obj) and has_any_role(request.user, ALL_ROLES)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and self._may_write(request, None)

    def has_change_permission(self, request: HttpRequest, obj: Label | None = None) -> bool:
        return super().has_change_permission(request, obj) and self._may_write(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Label | None = None) -> bool:
        return super().has_delete_permission(request, obj) and self._may_write(request, obj)

    # --- pages ------------------------------------------------------------------------------------
    def get_fieldsets(self, request: HttpRequest, obj: Label | None = None) -> list:
        if obj is None:
            return [(None, {"fields": [*_EDITABLE, "hosts"]})]
        if self.has_change_permission(request, obj):
            main = [
                *_EDITABLE,
                *(["hosts"] if obj.label_membership_type == LabelMembershipType.MANUAL else []),
            ]
        else:
            main = _READ_ONLY
        return [(None, {"fields": main}), ("Members", {"fields": ["members"]})]

    def get_readonly_fields(self, request: HttpRequest, obj: Label | None = None) -> list[str]:
        if obj is None:
            return []
        return ["members"] if self.has_change_permission(request, obj) else [*_READ_ONLY, "members"]

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Label | None:
        label = super().get_object(request, object_id, from_field)
        if label is not None:
            label.viewer = request.user  # ``members`` lists only the hosts this user may see
        return label

    @admin.display(description="type", ordering="label_type")
    def kind(self, label: Label) -> str:
        return "Builtin (maintained by Fleet)" if label.label_type == LabelType.BUILTIN else "Regular"

    @admin.display(description="platform", ordering="platform")
    def platform_display(self, label: Label) -> str:
        return label.platform or "all"

    @admin.display(description="hosts", ordering="host_count")
    def host_count(self, label: Label) -> str:
        return format_html('<a href="{}">{}</a>', _host_list_url(label), label.host_count)

    @admin.display(description="query")
    def sql(self, label: Label) -> str:
        return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', label.query or "—")

    @admin.display(description="members")
    def members(self, label: Label) -> str:
        viewer = getattr(label, "viewer", None)
        hosts = scope_queryset(Host.objects.filter(label_memberships__label=label), viewer, HOST_READ_ROLES)
        hosts = hosts.order_by("-id")
        shown = list(
            hosts.values_list("id", "hostname", "computer_name", "osquery_host_id", "platform")[
                :MEMBERS_SHOWN
            ]
        )
        if not shown:
            return (
                "No hosts yet." if label.label_membership_type == LabelMembershipType.DYNAMIC else "No hosts."
            )
        rows = format_html_join(
            "",
            '<li><a href="{}">{}</a> <span class="quiet">{}</span></li>',
            (
                (reverse("admin:hosts_host_change", args=[pk]), computer or hostname or ident, platform)
                for pk, hostname, computer, ident, platform in shown
            ),
        )
        count = getattr(label, "host_count", None)
        more = format_html('<a href="{}">All {} host(s) in the host list</a>', _host_list_url(label), count)
        return format_html('<ul style="margin-left: 0">{}</ul>{}', rows, more)

    # --- writes -----------------------------------------------------------------------------------
    def save_model(self, request: HttpRequest, obj: Label, form: LabelForm, change: bool) -> None:
        data = form.cleaned_data
        fields = {
            "name": data["name"],
            "description": data.get("description", ""),
            "query": data.get("query", ""),
            "platform": data.get("platform", ""),
            "hosts": data.get("host_list"),
        }
        if change:
            saved = labels.update_label(obj, **fields)
        else:
            membership = data.get("label_membership_type") or LabelMembershipType.DYNAMIC
            saved = labels.create_label(author=request.user, label_membership_type=membership, **fields)
        obj.pk = saved.pk
        obj.refresh_from_db()

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        pass  # memberships are the engine's to write (hosts is not a form field of the model)

    def delete_model(self, request: HttpRequest, obj: Label) -> None:
        labels.delete_label(obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Label]) -> None:
        for label in queryset.exclude(label_type=LabelType.BUILTIN):
            labels.delete_label(label)
