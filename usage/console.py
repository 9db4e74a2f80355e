"""The "Usage statistics" section of the console's Fleet settings page (global admins only).

``hosts.admin.FleetSettingsAdmin`` mixes in :class:`UsageStatisticsSettingsAdmin` and its form
:class:`UsageSwitchFormMixin`: the checkbox (stored in ``usage.UsageStatistics``, not in the
settings row), the state (on or off and why, the endpoint, the last send and error), and a page
showing exactly the JSON that would be sent. Saving the page records the usual settings activity,
with the switch among its changes (``activities.snapshots`` includes it).
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from usage import sending, statistics
from usage.models import UsageStatistics

SWITCH = "send_usage_statistics"
STATUS = "usage_statistics_status"
FIELDSET = ("Usage statistics", {"fields": [SWITCH, STATUS]})


class UsageSwitchFormMixin(forms.Form):
    """The checkbox, on the Fleet settings form; disabled while the environment turns it off."""

    send_usage_statistics = forms.BooleanField(
        required=False,
        label="Send anonymous usage statistics",
        help_text="Counts and versions only, once a day (Fleet's usage statistics): no hostnames, "
        "serial numbers, addresses, emails or names.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields[SWITCH]
        field.initial = UsageStatistics.load().enabled
        if not settings.USAGE_STATISTICS["ENABLED"]:
            field.disabled = True
            field.help_text = "FLEET_USAGE_STATISTICS_ENABLED=false is set: nothing is sent, checked or not."


class UsageStatisticsSettingsAdmin:
    """ModelAdmin mixin for the Fleet settings page (add :data:`FIELDSET` to its fieldsets)."""

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [*super().get_readonly_fields(request, obj), STATUS]  # type: ignore[misc]

    @admin.display(description="State")
    def usage_statistics_status(self, obj: Any = None) -> SafeString:
        return status_html()

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)  # type: ignore[misc]
        field = form.fields.get(SWITCH)
        if field is not None and not field.disabled:
            sending.set_console_switch(bool(form.cleaned_data.get(SWITCH)))

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.usage_statistics_view)  # type: ignore[attr-defined]
        return [path("usage-statistics/", view, name="usage_statistics"), *super().get_urls()]  # type: ignore[misc]

    def usage_statistics_view(self, request: HttpRequest) -> HttpResponse:
        """Exactly what would be sent now (``manage.py usage_stats --print``), read-only."""
        if not self.has_view_or_change_permission(request):  # type: ignore[attr-defined]
            raise PermissionDenied
        row = UsageStatistics.load()
        context = {
            **self.admin_site.each_context(request),  # type: ignore[attr-defined]
            "title": "Usage statistics",
            "opts": self.model._meta,  # type: ignore[attr-defined]
            "state": sending.state(row)[1],
            "row": row,
            "payload": json.dumps(statistics.build(), indent=2),
        }
        return TemplateResponse(request, "admin/usage/statistics.html", context)


def status_html() -> SafeString:
    row = UsageStatistics.load()
    lines: list[tuple[str, str]] = [("Sending", sending.state(row)[1])]
    sent = row.last_sent_at
    lines.append(("Last sent", f"{sent:%Y-%m-%d %H:%M:%S} UTC" if sent else "never"))
    if row.last_error:
        lines.append(("Last error", f"{row.last_error} ({row.last_error_at:%Y-%m-%d %H:%M:%S} UTC)"))
    lines.append(("Anonymous identifier", str(row.anonymous_identifier)))
    return format_html(
        '<div id="usage-statistics-status">{}<p><a href="{}">See exactly what is sent</a></p></div>',
        format_html_join("", "<p><strong>{}:</strong> {}</p>", lines),
        reverse("admin:usage_statistics"),
    )
