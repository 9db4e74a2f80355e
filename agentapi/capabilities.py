"""What this server tells orbit it can do: Fleet's ``X-Fleet-Capabilities`` header.

orbit reads the header from every orbit endpoint's response and from ``HEAD /api/fleet/orbit/ping``,
and only uses a feature the server lists: without ``token_rotation`` it never posts a Fleet
Desktop token, and Desktop cannot reach the device API. Only what is implemented is listed
(no ``end_user_email``, ``escrow_buddy``, disk-encryption escrow or setup experience yet): a
capability claimed but missing would make orbit call endpoints that answer 404.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

HEADER = "X-Fleet-Capabilities"
ORBIT_CAPABILITIES = "orbit_endpoints,token_rotation"


def advertise(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Add the orbit capabilities header to every response of ``view``, errors included."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        response = view(request, *args, **kwargs)
        response[HEADER] = ORBIT_CAPABILITIES
        return response

    return wrapped


@csrf_exempt
@advertise
def orbit_ping(request: HttpRequest) -> HttpResponse:
    """``HEAD /api/fleet/orbit/ping`` (GET too): no authentication, no database, the header only."""
    if request.method not in ("HEAD", "GET"):
        response = HttpResponse(status=405)
        response["Allow"] = "HEAD, GET"
        return response
    return HttpResponse(status=200)
