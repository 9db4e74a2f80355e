"""Sets the activity context of each request: surface from the path, actor from the request.

``/admin/`` is the console and ``/api/v1/`` the REST API; the agent API (``/api/osquery/``,
``/api/v1/osquery/``, ``/api/fleet/orbit/``) gets no context, since agents' own writes are not
activities. The request object itself is kept, not its user: DRF authenticates API tokens inside
the view, after this middleware, and then sets the user on this same request, where
``activities.context.Acting.actor`` reads it when an activity is recorded.

Must come after ``AuthenticationMiddleware`` (the console's session user).
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from activities.choices import Surface
from activities.context import acting_as
from agentapi.errorlog import OSQUERY_ORBIT_PREFIXES

CONSOLE_PREFIX = "/admin/"
REST_PREFIX = "/api/v1/"


def surface_for_path(path: str) -> str | None:
    """The surface a request path belongs to, or ``None`` for paths that record nothing."""
    if path.startswith(OSQUERY_ORBIT_PREFIXES):
        return None
    if path.startswith(CONSOLE_PREFIX):
        return Surface.CONSOLE
    if path.startswith(REST_PREFIX):
        return Surface.REST
    return None


class ActivityContextMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        surface = surface_for_path(request.path_info)
        if surface is None:
            return self.get_response(request)
        with acting_as(surface=surface, request=request):
            return self.get_response(request)
