"""The My device page, ``/device/{token}``: what Fleet Desktop's "My device" item opens.

No login: the token in the address is the credential, checked and throttled exactly as on the
device API (``devices.auth``). An expired or unknown token gets a page explaining how to get a
fresh link (401), never the console's login. Because the token is in the address, every
answer is private: not cached, not indexed (``X-Robots-Tag`` and the page's robots meta), and
``Referrer-Policy: no-referrer``, so no link or image on the page passes the address on.

The Refetch button posts a form with Django's CSRF token. Under ``no-referrer`` browsers send
``Origin: null`` and no ``Referer`` with that post, which Django's origin and referer checks
would refuse; :class:`TokenOnlyCsrf` keeps the token check and skips those two, which add
nothing here: the path already carries a secret a forging site does not know.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import messages
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import render
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.utils.decorators import decorator_from_middleware
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST, require_safe

from devices import api
from devices.auth import DeviceAuthError, authenticate
from devices.my_device import page_context

logger = logging.getLogger(__name__)

_PROBLEMS = {
    401: (
        "This link has expired",
        "My device links work for about an hour. Open My device again from the Fleet Desktop "
        "menu (in the menu bar or the system tray) to get a fresh one.",
    ),
    429: (
        "Too many attempts",
        "This network has opened too many links that do not work. Wait a minute, then open "
        "My device again from the Fleet Desktop menu.",
    ),
    503: ("Temporarily unavailable", "The server cannot show this page right now. Try again in a minute."),
}


class TokenOnlyCsrf(CsrfViewMiddleware):
    """Django's CSRF check without its Origin and Referer checks (see the module docstring)."""

    def _origin_verified(self, request: HttpRequest) -> bool:
        return True

    def _check_referer(self, request: HttpRequest) -> None:
        return None


token_only_csrf = decorator_from_middleware(TokenOnlyCsrf)


def _private(response: HttpResponse) -> HttpResponse:
    add_never_cache_headers(response)
    response["Referrer-Policy"] = "no-referrer"
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response


def _problem(request: HttpRequest, status: int, retry_after: int | None = None) -> HttpResponse:
    title, message = _PROBLEMS[status]
    response = render(request, "devices/problem.html", {"title": title, "message": message}, status=status)
    if retry_after:
        response["Retry-After"] = str(retry_after)
    return _private(response)


def _page(request: HttpRequest, token: str, context: dict[str, Any]) -> HttpResponse:
    response = render(request, "devices/my_device.html", {**context, "token": token})
    origin = context["org"].logo_origin
    if origin:
        # django-csp: this response alone may show the organisation's logo from its origin.
        response._csp_update = {"img-src": [origin]}  # type: ignore[attr-defined]
    return _private(response)


@require_safe
def my_device(request: HttpRequest, token: str) -> HttpResponse:
    try:
        host = authenticate(request, token)
        context = page_context(host)
    except DeviceAuthError as exc:
        return _problem(request, exc.status, exc.retry_after)
    except DatabaseError as exc:
        logger.error("database error on the My device page: %s", exc.__class__.__name__)
        return _problem(request, 503)
    return _page(request, token, context)


@require_safe
def section(request: HttpRequest, token: str, section: str) -> HttpResponse:
    """``/device/{token}/policies`` and the like, which newer Fleet Desktops open: the one page.

    No lookup here; the page itself checks the token (and counts a bad one).
    """
    return _private(HttpResponseRedirect(reverse("devices:my-device", args=[token])))


@csrf_exempt  # the site-wide check, replaced by the token-only one just below
@token_only_csrf
@require_POST
def refetch(request: HttpRequest, token: str) -> HttpResponse:
    """The page's Refetch button: ask for fresh details, then back to the page with a message."""
    try:
        host = authenticate(request, token)
        api.refetch_host(request, host)
    except DeviceAuthError as exc:
        return _problem(request, exc.status, exc.retry_after)
    except DatabaseError as exc:
        logger.error("database error on the My device refetch: %s", exc.__class__.__name__)
        return _problem(request, 503)
    messages.success(
        request, "Refetch requested. Your computer will send fresh details the next time it checks in."
    )
    response = HttpResponseRedirect(reverse("devices:my-device", args=[token]), status=303)
    return _private(response)


@require_safe
def mdm_enrollment(request: HttpRequest, token: str) -> HttpResponse:
    """The enrollment profile for this host's team, for the end user to install ("Turn on MDM")."""
    from mdm.views import profile_response  # devices does not depend on mdm otherwise

    try:
        host = authenticate(request, token)
    except DeviceAuthError as exc:
        return _problem(request, exc.status, exc.retry_after)
    return _private(profile_response(host.team, request))
