"""The agent paths' middleware: JSON errors whoever answered, and a short path to the views.

``AgentJsonErrorsMiddleware``: every error an agent gets is JSON with an ``error`` key, even when
Django itself answered. Some errors happen before an agent view runs: a Host header outside
``ALLOWED_HOSTS``, a path that is not an endpoint, an exception in another middleware. Django
answers those with HTML or an empty body, which osquery takes for success (and then drops the
logs it sent). This middleware, near the outside, rewrites such replies on the agent paths.

``AgentFastPathMiddleware``: the agent endpoints skip the middleware that serves people.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from csp.utils import build_policy
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, ResolverMatch, get_resolver, set_urlconf

from agentapi.errorlog import OSQUERY_ORBIT_PREFIXES
from agentapi.wire import AgentError, error_response


class AgentJsonErrorsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            response.status_code >= 400
            and request.path.startswith(OSQUERY_ORBIT_PREFIXES)
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            reason = response.reason_phrase or "error"
            replaced = error_response(AgentError(f"request refused: {reason}", status=response.status_code))
            if response.has_header("Allow"):
                replaced["Allow"] = response["Allow"]
            return replaced
        return response


class AgentFastPathMiddleware:
    """osquery's and orbit's endpoints are served straight from here, past the middleware for people.

    Every host calls them every few seconds, and what follows in ``MIDDLEWARE`` is for browsers
    and API users: sessions, CSRF (the agent views are exempt), users, messages, activity
    context, login lockouts, static files and django-prometheus' per-view metrics (agent requests
    are counted by ``fleet.request_metrics`` instead). Running it cost an agent request about as
    much again as the view itself. Placed after ``SecurityMiddleware`` (the HTTPS redirect, HSTS,
    nosniff and referrer headers still apply) and inside ``AgentJsonErrorsMiddleware`` (every
    error is still JSON). The response gets the headers the skipped middleware would have added
    (``X-Frame-Options``, the Content-Security-Policy, ``Content-Length``) and the request the checks
    CommonMiddleware made (``ALLOWED_HOSTS``, ``DISALLOWED_USER_AGENTS``), so agents see the same
    replies as before.

    Only views marked ``csrf_exempt`` (``agentapi.endpoint.agent_endpoint``) take this path; any
    other view under these prefixes, and paths that match no route, go through the whole chain.
    The agent routes are fixed paths, so each one's match is kept once resolved (walking the
    URLconf again cost a tenth of a check-in).
    """

    MAX_ROUTES = 64  # resolved agent paths kept (there are 15; routes with arguments are not kept)

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self._matches = _matches

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        if not path.startswith(OSQUERY_ORBIT_PREFIXES):
            return self.get_response(request)
        urlconf = getattr(request, "urlconf", None)
        match = self._matches.get((urlconf, path))
        if match is None:
            match = self._resolve(urlconf, path)
            if match is None:
                return self.get_response(request)
        # What CommonMiddleware refused before any view ran: a Host outside ALLOWED_HOSTS (400) and
        # a user agent in DISALLOWED_USER_AGENTS (403).
        request.get_host()
        user_agent = request.META.get("HTTP_USER_AGENT")
        if user_agent is not None and any(p.search(user_agent) for p in settings.DISALLOWED_USER_AGENTS):
            raise PermissionDenied("Forbidden user agent")
        if urlconf is not None:
            set_urlconf(urlconf)
        request.resolver_match = match  # as Django's handler sets it (fleet.request_metrics reads it)
        response = match.func(request, *match.args, **match.kwargs)
        if response is None:
            raise ValueError(f"The view {match.view_name} didn't return an HttpResponse object.")
        return add_agent_headers(response)

    def _resolve(self, urlconf: str | None, path: str) -> ResolverMatch | None:
        """The path's route if its view is an agent endpoint (``csrf_exempt``), else ``None``."""
        try:
            match = get_resolver(urlconf).resolve(path)
        except Resolver404:
            return None
        if not getattr(match.func, "csrf_exempt", False):
            return None
        if not (match.args or match.kwargs) and len(self._matches) < self.MAX_ROUTES:
            self._matches[(urlconf, path)] = match
        return match


def add_agent_headers(response: HttpResponse) -> HttpResponse:
    """The headers XFrameOptionsMiddleware, CSPMiddleware and CommonMiddleware would add."""
    headers = response.headers
    if "X-Frame-Options" not in headers and not getattr(response, "xframe_options_exempt", False):
        headers["X-Frame-Options"] = getattr(settings, "X_FRAME_OPTIONS", "DENY").upper()
    if not (settings.DEBUG and response.status_code in (404, 500)):
        policy, report_only = _policies()
        if policy and "Content-Security-Policy" not in headers:
            headers["Content-Security-Policy"] = policy
        if report_only and "Content-Security-Policy-Report-Only" not in headers:
            headers["Content-Security-Policy-Report-Only"] = report_only
    if not response.streaming and "Content-Length" not in headers:
        headers["Content-Length"] = str(len(response.content))
    return response


# (urlconf, path) -> the agent route's match; emptied when the URLconf setting changes (tests).
_matches: dict[tuple[str | None, str], ResolverMatch] = {}


@functools.cache
def _policies() -> tuple[str, str]:
    """The CSP headers CSPMiddleware sends on a response without a policy of its own or a nonce:
    built once (again when the settings change), not on every request."""
    return build_policy(), build_policy(report_only=True)


@receiver(setting_changed, dispatch_uid="agentapi.middleware.settings_changed")
def _settings_changed(setting: str, **kwargs: Any) -> None:
    if setting.startswith("CONTENT_SECURITY_POLICY"):
        _policies.cache_clear()
    elif setting == "ROOT_URLCONF":
        _matches.clear()
