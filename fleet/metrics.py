"""Prometheus metrics at ``/metrics``, behind a bearer token (``METRICS_TOKEN``).

Production (``DATABASE_URL`` or ``REDIS_URL`` set) never serves metrics openly: with no token
configured the endpoint answers 403 and says what to set, and ``manage.py check --deploy`` warns
(``fleet.W001``, ``fleet.checks``). The embedded default listens on loopback only, so there an
unset token leaves the endpoint open for a local Prometheus.

Besides django-prometheus' own metrics, apps add collectors that read their values at scrape time
with :func:`register` (e.g. the task agents' metrics, ``taskserver.metric_store``).
"""

from __future__ import annotations

import hmac
from typing import Any

import prometheus_client
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django_prometheus.exports import ExportToDjangoView

NOT_CONFIGURED = (
    "/metrics is disabled: set METRICS_TOKEN (or METRICS_TOKEN_FILE) on the server and have "
    "Prometheus send Authorization: Bearer <METRICS_TOKEN>"
)
TOKEN_NEEDED = "metrics need Authorization: Bearer <METRICS_TOKEN>"


def register(collector: Any) -> None:
    """Serve a collector's metrics here too. It should read its values when scraped (from the
    database, so every server process answers alike) and define ``describe()``, which is what
    registration calls instead of a first ``collect()``."""
    prometheus_client.REGISTRY.register(collector)


def _refuse(message: str, status: int) -> JsonResponse:
    # "message" is the project's error key; "error" is kept for scrapers that read the old one.
    return JsonResponse({"message": message, "error": message}, status=status)


def metrics(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_TOKEN
    if not token:
        if not settings.EMBEDDED:
            return _refuse(NOT_CONFIGURED, 403)
        return ExportToDjangoView(request)
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), token.encode()):
        response = _refuse(TOKEN_NEEDED, 401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return ExportToDjangoView(request)
