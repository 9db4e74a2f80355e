"""Fleet Desktop's device API: ``/api/{latest,v1,2022-04}/fleet/device/{token}/...``.

The token in the path is the only credential (no cookies, so no CSRF check applies). Every
route shares :func:`device_endpoint`: method check, the address ban, the token lookup, JSON
errors in Fleet's shape (``{"message", "errors": [{"name": "base", "reason"}]}``) and no
caching. Each request costs a fixed number of queries, whatever the fleet's size.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.utils.cache import add_never_cache_headers
from django.utils.encoding import iri_to_uri
from django.views.decorators.csrf import csrf_exempt

from activities.choices import Surface
from activities.context import acting_as
from agentapi.wire import client_ip
from devices import fleet_shapes
from devices.auth import DeviceAuthError, authenticate
from devices.org import org_settings
from hosts import services
from hosts.models import Host
from hostscripts.device_status import device_status
from software.hostpage import software_for_host
from software.ingest import MAX_ITEMS as SOFTWARE_ITEMS_KEPT

logger = logging.getLogger(__name__)
DeviceHandler = Callable[[HttpRequest, Host], "dict[str, Any] | HttpResponse"]

# Fleet's header, and the capabilities its device routes advertise (GetServerDeviceCapabilities):
# none, unless its debug error reporting is switched on, which this server does not offer.
# Fleet sends no header at all when the set is empty, and neither does this server.
CAPABILITIES_HEADER = "X-Fleet-Capabilities"
DEVICE_CAPABILITIES: tuple[str, ...] = ()
DEFAULT_TRANSPARENCY_URL = "https://fleetdm.com/transparency"
# Go's strconv.ParseBool, which Fleet uses for boolean query parameters.
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


class BadRequest(Exception):
    """Input the device API refuses with a 400."""


def json_body(body: dict[str, Any], status: int = 200) -> HttpResponse:
    return HttpResponse(
        json.dumps(body, separators=(",", ":")), status=status, content_type="application/json"
    )


def device_error(status: int, message: str, retry_after: int | None = None) -> HttpResponse:
    """Fleet's error body, with ``Retry-After`` for a banned address."""
    response = json_body({"message": message, "errors": [{"name": "base", "reason": message}]}, status)
    if retry_after:
        response["Retry-After"] = str(retry_after)
    return response


def _private(response: HttpResponse) -> HttpResponse:
    """The token is in the URL: never cached, never sent on as a referrer."""
    add_never_cache_headers(response)
    response["Referrer-Policy"] = "no-referrer"
    return response


def _with_capabilities(response: HttpResponse) -> HttpResponse:
    if DEVICE_CAPABILITIES:
        response[CAPABILITIES_HEADER] = ",".join(DEVICE_CAPABILITIES)
    return response


def _run(request: HttpRequest, token: str, handler: DeviceHandler) -> HttpResponse:
    try:
        host = authenticate(request, token)
        result = handler(request, host)
    except DeviceAuthError as exc:
        return device_error(exc.status, exc.message, exc.retry_after)
    except BadRequest as exc:
        return device_error(400, str(exc))
    except DatabaseError as exc:
        logger.error("database error on the device API: %s", exc.__class__.__name__)
        return device_error(503, "database unavailable, retry later")
    except Exception:
        logger.exception("unexpected error on the device API")
        return device_error(500, "internal server error")
    return result if isinstance(result, HttpResponse) else json_body(result)


def device_endpoint(*methods: str) -> Callable[[DeviceHandler], Callable[..., HttpResponse]]:
    """Wrap ``handler(request, host)`` with the device API's rules (see the module docstring)."""

    def decorate(handler: DeviceHandler) -> Callable[..., HttpResponse]:
        @csrf_exempt
        @functools.wraps(handler)
        def view(request: HttpRequest, token: str) -> HttpResponse:
            if request.method not in methods:
                response = device_error(405, f"method {request.method} is not allowed here")
                response["Allow"] = ", ".join(methods)
                return _private(response)
            return _private(_run(request, token, handler))

        return view

    return decorate


def _flag(request: HttpRequest, name: str) -> bool:
    value = request.GET.get(name)
    if value is None or value in _FALSE:
        return False
    if value in _TRUE:
        return True
    raise BadRequest(f"invalid value for {name}: expected a boolean")


@device_endpoint("GET")
def device_host(request: HttpRequest, host: Host) -> dict[str, Any]:
    """``GET ""``: the host's details for the My device page, as Fleet returns them."""
    exclude_software = _flag(request, "exclude_software")
    labels = host.labels.defer("query").order_by("name")
    software = None if exclude_software else software_for_host(host, SOFTWARE_ITEMS_KEPT)
    body = fleet_shapes.host_detail(host, labels, device_status(host).as_fleet(), software)
    return fleet_shapes.device_host_response(body, org_settings())


@device_endpoint("GET")
def desktop(request: HttpRequest, host: Host) -> dict[str, Any]:
    """``GET /desktop``: the only call the tray makes; it carries nothing about the host."""
    return fleet_shapes.desktop_summary(org_settings())


@device_endpoint("HEAD")
def authenticated_ping(request: HttpRequest, host: Host) -> HttpResponse:
    """``HEAD /ping``: Fleet Desktop checks its token and reads the server's capabilities."""
    return _with_capabilities(HttpResponse(status=200))


@csrf_exempt
def ping(request: HttpRequest) -> HttpResponse:
    """``HEAD /api/fleet/device/ping``: unauthenticated; the capabilities header only."""
    if request.method != "HEAD":
        response = device_error(405, f"method {request.method} is not allowed here")
        response["Allow"] = "HEAD"
        return response
    return _with_capabilities(HttpResponse(status=200))


def refetch_host(request: HttpRequest, host: Host) -> None:
    """Ask the host for fresh details, through the write path the console and REST use.

    Recorded in the audit trail as the end user's request, from the device's address.
    """
    with acting_as(None, Surface.SYSTEM, actor_name="End user (My device)", address=client_ip(request)):
        services.request_refetch([host.id])


@device_endpoint("POST")
def refetch(request: HttpRequest, host: Host) -> dict[str, Any]:
    """``POST /refetch``: Fleet's answer is an empty object."""
    refetch_host(request, host)
    return {}


def transparency_url() -> str:
    url = org_settings().transparency_url
    return url if url.startswith(("https://", "http://")) else DEFAULT_TRANSPARENCY_URL


@device_endpoint("GET")
def transparency(request: HttpRequest, host: Host) -> HttpResponse:
    """``GET /transparency``: a 307 to the organisation's transparency page (Fleet's default)."""
    response = HttpResponse(status=307)
    response["Location"] = iri_to_uri(transparency_url())
    return response
