"""Liveness and readiness endpoints for load balancers and orchestrators."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from django.conf import settings
from django.db import connections
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache

READY_DEADLINE = 1.5  # seconds: /readyz answers within 2 s whatever its dependencies do
# Checks run on their own threads so a hung dependency cannot hold the request past the deadline.
# A check stuck on a dead server stays stuck until its own timeout; a small pool bounds how many.
_checks = ThreadPoolExecutor(max_workers=4, thread_name_prefix="readyz")
_redis_clients: dict[str, object] = {}
_redis_lock = threading.Lock()


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. No I/O, so a slow database never restarts healthy pods."""
    return JsonResponse({"status": "ok"})


def _check_database() -> str:
    connection = connections["default"]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    finally:
        connection.close()  # this thread's own connection: never leave it behind


def _redis_client():
    import redis

    with _redis_lock:
        client = _redis_clients.get(settings.REDIS_URL)
        if client is None:
            client = redis.Redis.from_url(
                settings.REDIS_URL, socket_connect_timeout=READY_DEADLINE, socket_timeout=READY_DEADLINE
            )
            _redis_clients[settings.REDIS_URL] = client
        return client


def _check_redis() -> str:
    _redis_client().ping()
    return "ok"


@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: the database (and, in production, Redis) answer; 503 with the failing checks."""
    probes = {"database": _check_database}
    if settings.REDIS_URL:
        probes["redis"] = _check_redis
    futures = {name: _checks.submit(probe) for name, probe in probes.items()}
    deadline = time.monotonic() + READY_DEADLINE
    checks: dict[str, str] = {}
    for name, future in futures.items():
        try:
            checks[name] = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            checks[name] = f"error: no answer within {READY_DEADLINE:g} s"
        except Exception as exc:  # any driver error means "not ready"
            checks[name] = f"error: {exc.__class__.__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503
    )
