"""The console's admin site: Fleet roles open it, and its home page is the dashboard.

Django's stock site admits only ``is_staff`` users and shows an app index. Here a user's Fleet
role is all that is needed (``hosts.console_permissions``), gitops users are told to use the API,
and the index is the fleet dashboard (``hosts.dashboard``).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.admin import AdminSite
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from activities.admin_hooks import ActivityLoggingSiteMixin
from fleet.numbers import parse_id
from hosts.console_permissions import may_use_console
from hosts.permissions import roles_of


class FleetLoginForm(AdminAuthenticationForm):
    """Admits active users with a console role, whatever their ``is_staff`` flag."""

    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "no_role": "This account has no Fleet role yet. Ask a Fleet admin to give you one.",
        "gitops": "GitOps accounts work through the REST API, not the console.",
    }

    def confirm_login_allowed(self, user: Any) -> None:
        AuthenticationForm.confirm_login_allowed(self, user)  # the "inactive" check
        if not may_use_console(user):
            held = roles_of(user)
            code = "gitops" if held.any else "no_role"
            raise ValidationError(self.error_messages[code], code=code)


class FleetAdminSite(ActivityLoggingSiteMixin, AdminSite):
    """The admin site; every ModelAdmin's writes also become activities (the audit trail)."""

    site_header = "Fleet"
    site_title = "Fleet console"
    index_title = "Dashboard"
    login_form = FleetLoginForm
    index_template = "admin/dashboard.html"

    def has_permission(self, request: HttpRequest) -> bool:
        return may_use_console(request.user)

    def password_change(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        """Django's page, with wrong old passwords counted like failed logins (django-axes does
        not see them: the old password is checked without logging in)."""
        key = f"console:password-change-failures:{request.user.pk}"
        limit = settings.AXES_FAILURE_LIMIT
        if request.method == "POST" and cache.get(key, 0) >= limit:
            return HttpResponse(
                "Too many wrong passwords: try again later.", status=429, content_type="text/plain"
            )
        response = super().password_change(request, extra_context)
        form = getattr(response, "context_data", {}) or {}
        form = form.get("form")
        if request.method == "POST" and form is not None and "old_password" in form.errors:
            cooloff = int(settings.AXES_COOLOFF_TIME.total_seconds())
            if not cache.add(key, 1, cooloff):
                cache.incr(key)
        return response

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        from hosts.dashboard import dashboard_context

        team_id = parse_id(request.GET.get("team_id", ""))
        return super().index(request, {**dashboard_context(request, team_id), **(extra_context or {})})
