"""Top-level URLs: one module per surface (agents, REST, console, health and metrics)."""

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import include, path
from django.views.generic import RedirectView

from fleet.health import healthz, readyz
from fleet.metrics import metrics

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
    path("", include("agentapi.urls")),
    path("", include("devices.urls")),  # Fleet Desktop's device API, orbit's device_token, My device
    path("", include("mdm.urls")),  # Apple MDM: SCEP, check-in and commands, enrollment profile
    path("tuf/", include("updates.urls")),  # agent updates (read-only TUF repository)
    path("api/v1/", include("fleet.api_urls")),
    path("admin/", admin.site.urls),
    path("", include("users.urls")),  # invitation and set-password pages (/invite/<token>/)
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
]
handler400 = "fleet.errors.bad_request"

if settings.BENCH_MODE:  # scripts/bench.py sets FLEET_BENCH: production never serves this

    def bench_floor(request: HttpRequest) -> JsonResponse:
        """The cheapest view there is (a constant JSON answer through every middleware): the floor
        agent requests are measured against."""
        return JsonResponse({"status": "ok"})

    urlpatterns.insert(0, path("bench/floor", bench_floor, name="bench-floor"))
