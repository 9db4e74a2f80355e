"""The interactive API docs page: Swagger UI served from this server, behind the console login.

Logged out, the page sends people to the console's login form and back here (a bare 401 left
them stuck); logged in, Swagger UI calls the API with their session.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.urls import reverse
from drf_spectacular.views import SpectacularSwaggerSplitView
from rest_framework.exceptions import AuthenticationFailed, NotAuthenticated


class ApiDocsView(SpectacularSwaggerSplitView):
    def handle_exception(self, exc: Exception) -> Any:
        page = self.request.GET.get("script") is None  # not Swagger UI's own script
        if isinstance(exc, NotAuthenticated | AuthenticationFailed) and page:
            return redirect_to_login(self.request.get_full_path(), reverse("admin:login"))
        return super().handle_exception(exc)
