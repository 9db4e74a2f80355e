"""osquery's endpoints answered straight from WSGI, past Django's request handler.

Every host calls ``distributed/read`` every few seconds, and ``log`` and ``config`` nearly as
often, so what Django's handler costs around the view is paid by the whole fleet: the
``request_started`` and ``request_finished`` signals (each a locked walk over the receivers),
the middleware chain with its exception wrappers, the URL resolution, and the response's
``close``. ``AgentFastPathMiddleware`` already skips the middleware meant for people; this skips
the rest for osquery's five endpoints and does, by hand, only what those steps do for them:

- the database connections' upkeep the signals run (``close_old_connections`` before and after;
  ``reset_queries`` when ``DEBUG`` keeps a query log), and the usage-statistics chance
  (``usage.tasks.on_request_finished``). ``tests/test_direct_agent_routes.py`` fails when another
  receiver is connected to either signal, so a new one cannot be skipped unnoticed;
- ``SecurityMiddleware``'s response headers, and the headers ``AgentFastPathMiddleware`` adds;
- the agent request metrics (``fleet.request_metrics``).

Anything unusual goes through Django's whole path instead, unchanged: another method than POST,
a script prefix (``SCRIPT_NAME``, ``FORCE_SCRIPT_NAME``), a Host outside ``ALLOWED_HOSTS``,
``DISALLOWED_USER_AGENTS``, an HTTPS redirect due. The views are the same functions
(``agentapi.views``) and answer every error of their own as osquery's JSON; anything else they
raise (or a streamed response, which none of them sends) becomes osquery's JSON 500 here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from time import perf_counter
from typing import Any

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.wsgi import WSGIHandler, WSGIRequest
from django.db import close_old_connections, reset_queries
from django.middleware.security import SecurityMiddleware
from django.urls import ResolverMatch, get_resolver

from agentapi.middleware import add_agent_headers
from agentapi.wire import AgentError, error_response
from fleet.request_metrics import count_agent_request
from usage.tasks import on_request_finished

logger = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
ROUTES = ("enroll", "config", "distributed/read", "distributed/write", "log")
PREFIXES = ("/api/osquery/", "/api/v1/osquery/")


def _not_called(request: Any) -> None:  # SecurityMiddleware wants a get_response; never called
    raise AssertionError


class DirectAgentRoutes:
    """WSGI application: osquery's endpoints by their views, everything else by Django."""

    def __init__(self, django_app: WSGIHandler) -> None:
        self.django_app = django_app
        self._security = SecurityMiddleware(_not_called)
        self._routes: dict[str, ResolverMatch] | None = None

    def routes(self) -> dict[str, ResolverMatch]:
        """The path -> route table, resolved through the URLconf once (so a view or a name changed
        in ``agentapi.urls`` is followed here)."""
        if self._routes is None:
            resolver = get_resolver()
            self._routes = {
                path: resolver.resolve(path) for prefix in PREFIXES for path in (prefix + r for r in ROUTES)
            }
        return self._routes

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        match = self.routes().get(environ.get("PATH_INFO", ""))
        if (
            match is None
            or environ.get("REQUEST_METHOD") != "POST"
            or environ.get("SCRIPT_NAME")
            or "SCRIPT_URL" in environ
            or "REDIRECT_URL" in environ
            or settings.FORCE_SCRIPT_NAME is not None
        ):
            return self.django_app(environ, start_response)
        if settings.DEBUG:
            reset_queries()
        close_old_connections()
        request = WSGIRequest(environ)
        if not self._usual(request):
            return self.django_app(environ, start_response)
        start = perf_counter()
        request.resolver_match = match  # as Django's handler sets it (the error log reads it)
        try:
            response = match.func(request)  # answers every error of its own as osquery's JSON
            if response.streaming:
                raise TypeError(f"{match.view_name} streamed its response; agent views must not")
        except Exception:
            logger.exception("unexpected error on %s", request.path)
            response = error_response(AgentError("internal server error", status=500))
        response = self._security.process_response(request, add_agent_headers(response))
        count_agent_request(match.view_name, response.status_code, perf_counter() - start)
        start_response(
            f"{response.status_code} {response.reason_phrase}",
            [*response.items(), *(("Set-Cookie", c.output(header="")) for c in response.cookies.values())],
        )
        body = [response.content]
        request.close()
        close_old_connections()
        on_request_finished()
        return body

    def _usual(self, request: WSGIRequest) -> bool:
        """Whether Django's path would do nothing more than this one: the Host allowed, the user
        agent not refused, no HTTPS redirect due."""
        try:
            request.get_host()
        except DisallowedHost:
            return False
        if settings.DISALLOWED_USER_AGENTS:
            return False
        return self._security.process_request(request) is None


def direct_agent_routes(django_app: WSGIHandler) -> WSGIApp:
    """``django_app`` with osquery's endpoints answered directly (see the module's docstring)."""
    return DirectAgentRoutes(django_app)
