"""Prometheus metrics, protected by a bearer token when ``METRICS_TOKEN`` is set."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django_prometheus.exports import ExportToDjangoView


def metrics(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            return JsonResponse({"error": "metrics need Authorization: Bearer <METRICS_TOKEN>"}, status=401)
    return ExportToDjangoView(request)
