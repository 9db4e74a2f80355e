"""Agent request metrics: requests by endpoint and status, and the check-in latency histogram.

This middleware sits on the hot path (every host calls ``distributed/read`` every few seconds),
so it does as little as it can: other paths cost one ``str.startswith`` on a tuple; an agent
request costs two clock reads, a dictionary lookup that finds the counter's child for its
(route, status) pair, one increment and, for a check-in, one histogram observation (about 2 µs
together on these machines; docs/metrics.md has the measurement).

The ``endpoint`` label is the matched URL route's name, never the path (paths carry device
tokens and TUF file names): a handful of values, with the aliases of one endpoint folded into
one (``/api/v1/osquery/config`` is ``osquery-config``, Fleet Desktop's ``latest``, ``v1`` and
``2022-04`` prefixes are one ``device-*``). A path under these prefixes that matches no route is
``unmatched``. ``status`` is the HTTP status code the agent got (a few dozen values at most).
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter
from typing import Any

from django.http import HttpRequest, HttpResponse
from prometheus_client import Counter, Histogram

# Every agent's endpoints (metrics by endpoint; the embedded server's agent threads and shedding).
# osquery and orbit alone, for the fast path, are agentapi.errorlog's OSQUERY_ORBIT_PREFIXES.
ALL_AGENT_PREFIXES = (
    "/api/osquery/",
    "/api/v1/osquery/",
    "/api/fleet/orbit/",
    "/api/fleet/device/",
    "/api/latest/fleet/device/",
    "/api/v1/fleet/device/",
    "/api/2022-04/fleet/device/",
    "/mdm/apple/",
    "/tuf/",
)
CHECKIN_ENDPOINT = "osquery-distributed-read"
UNMATCHED = "unmatched"
_DEVICE_VERSIONS = ("-latest", "-v1", "-2022-04")

AGENT_REQUESTS = Counter(
    "fleet_agent_requests_total",
    "Requests from agents (osquery, orbit, Fleet Desktop, Apple MDM, TUF updates), by endpoint "
    "(URL route name) and HTTP status code.",
    ["endpoint", "status"],
)
CHECKIN_DURATION = Histogram(
    "fleet_checkin_duration_seconds",
    "Time to answer osquery's check-in (distributed/read), from this middleware in and out.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 16.0),
)


def endpoint_label(view_name: str | None) -> str:
    """The ``endpoint`` label of a resolved route (``ResolverMatch.view_name``)."""
    if not view_name:
        return UNMATCHED
    name = view_name.rpartition(":")[2]  # devices:device-ping-v1, mdm:channel
    if name.startswith("osquery-v1-"):
        return "osquery-" + name.removeprefix("osquery-v1-")
    if name.startswith("device-"):
        for suffix in _DEVICE_VERSIONS:
            if name.endswith(suffix):
                return name.removesuffix(suffix)
    if view_name.startswith("mdm:"):
        return "mdm-" + name
    return name


# (view name, status) -> (counter child, is a check-in). Bounded: routes x status codes.
_children: dict[tuple[str | None, int], tuple[Any, bool]] = {}


def count_agent_request(view_name: str | None, status: int, elapsed: float) -> None:
    """Count one agent request (``view_name``: its route's, ``None`` when nothing matched) and
    time it if it is a check-in. Shared by the middleware and ``agentapi.direct``."""
    found = _children.get((view_name, status))
    if found is None:
        endpoint = endpoint_label(view_name)
        found = _children[(view_name, status)] = (
            AGENT_REQUESTS.labels(endpoint, str(status)),
            endpoint == CHECKIN_ENDPOINT,
        )
    child, checkin = found
    child.inc()
    if checkin:
        CHECKIN_DURATION.observe(elapsed)


class AgentRequestMetricsMiddleware:
    """Counts agent requests; the outermost middleware, so it sees the status the agent got and
    times every other middleware too."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(ALL_AGENT_PREFIXES):
            return self.get_response(request)
        start = perf_counter()
        response = self.get_response(request)
        match = request.resolver_match  # set while the URL was resolved; None when nothing matched
        count_agent_request(
            match.view_name if match is not None else None, response.status_code, perf_counter() - start
        )
        return response
