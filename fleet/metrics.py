"""Prometheus metrics at ``/metrics``, behind a bearer token (``METRICS_TOKEN``); docs/metrics.md.

Production (``DATABASE_URL`` or ``REDIS_URL`` set) never serves metrics openly: with no token
configured the endpoint answers 403 and says what to set, and ``manage.py check --deploy`` warns
(``fleet.W001``, ``fleet.checks``). The embedded default listens on loopback only, so there an
unset token leaves the endpoint open for a local Prometheus.

Two kinds of metrics, kept apart because they aggregate differently across processes:

- **Events** (the counters below, and the agent request metrics of ``fleet.request_metrics``) are
  counted in the process where they happen. The web server runs several worker processes and a scrape
  reaches one of them, so with ``PROMETHEUS_MULTIPROC_DIR`` set every process writes its counts
  to a file there (prometheus_client's multiprocess mode) and a scrape sums the files of all of
  them. Without it (the embedded default: one server process) they live in the process.
- **State** (hosts by status, active campaigns, script runs, task-agent sessions;
  ``fleet.prometheus_collectors``) is read from the database at scrape time by collectors added
  with :func:`register`, so every process answers alike whatever their number.

The Celery worker counts its task outcomes in its own processes; ``WORKER_METRICS_PORT`` makes it
serve them itself (:func:`serve_worker_metrics`, started from ``fleet.celery``).
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
from typing import Any

import prometheus_client
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CollectorRegistry, Counter, multiprocess

from fleet.metrics_dir import MULTIPROC_ENV

logger = logging.getLogger(__name__)

NOT_CONFIGURED = (
    "/metrics is disabled: set METRICS_TOKEN (or METRICS_TOKEN_FILE) on the server and have "
    "Prometheus send Authorization: Bearer <METRICS_TOKEN>"
)
TOKEN_NEEDED = "metrics need Authorization: Bearer <METRICS_TOKEN>"

# --- event counters (the agent request metrics are in fleet.request_metrics) -----------------------
# Labels take a handful of values each, fixed by this code, never by what an agent sends.

ENROLLMENTS = Counter(
    "fleet_enrollments_total",
    "Successful agent enrolments, by agent (osquery, orbit) and whether the host was new or existing.",
    ["agent", "host"],
)
LIVE_QUERY_ANSWERS = Counter(
    "fleet_live_query_answers_total",
    "Live-query answers received from hosts and kept, by result state (rows, no_rows, failed).",
    ["state"],
)
LIVE_QUERY_HANDOUTS_DEFERRED = Counter(
    "fleet_live_query_handouts_deferred_total",
    "Live queries a checking-in host was not given yet because this process had handed out its "
    "share for the moment (LIVE_QUERY_HANDOUT_RATE); the host gets them at a later check-in.",
)
LOG_LINES_FORWARDED = Counter(
    "fleet_log_lines_forwarded_total",
    "osquery log lines a destination took, by log type (result, status) and destination plugin.",
    ["log_type", "destination"],
)
LOG_LINES_FAILED = Counter(
    "fleet_log_lines_failed_total",
    "osquery log lines a destination refused (the agent keeps and resends them), by log type and "
    "destination plugin.",
    ["log_type", "destination"],
)
AGENT_REQUESTS_SHED = Counter(
    "fleet_agent_requests_shed_total",
    "Agent requests answered 503 without running them, because they had waited too long for an "
    "agent thread (make run) or slot (a production web process): the process is over its capacity.",
)
HELD_REQUESTS_REFUSED = Counter(
    "fleet_held_requests_refused_total",
    "REST calls that wait for agents (a synchronous live query or script run) answered 503 because "
    "this process already held as many as it may (FLEET_HELD_REQUESTS, capped by its threads).",
)
CELERY_TASKS = Counter(
    "fleet_celery_tasks_total",
    "Celery task outcomes (success, failure, retry, revoked, expired), by registered task name.",
    ["task", "outcome"],
)


def count_enrollment(agent: str, created: bool) -> None:
    ENROLLMENTS.labels(agent, "new" if created else "existing").inc()


def count_log_lines(log_type: str, destination_name: str, lines: int, delivered: bool) -> None:
    """``destination_name`` is a destination's ``name`` (``webhook:<url>``): only its plugin, the
    part before the colon, becomes the label, so no URL or path reaches the metrics."""
    plugin = destination_name.partition(":")[0]
    (LOG_LINES_FORWARDED if delivered else LOG_LINES_FAILED).labels(log_type, plugin).inc(lines)


# --- scrape-time collectors and the registry a scrape reads -------------------------------------------

_scrape_collectors: list[Any] = []
_state_registered = False
_state_lock = threading.Lock()


def register(collector: Any) -> None:
    """Serve a collector's metrics here too. It should read its values when scraped (from the
    database, so every server process answers alike) and define ``describe()``, which is what
    registration calls instead of a first ``collect()``."""
    prometheus_client.REGISTRY.register(collector)
    _scrape_collectors.append(collector)


def _register_state_collectors() -> None:
    """This project's database gauges, added on the first scrape (they import the apps' models)."""
    global _state_registered
    with _state_lock:
        if _state_registered:
            return
        from fleet.prometheus_collectors import state_collectors

        for collector in state_collectors():
            register(collector)
        _state_registered = True


def multiprocess_dir() -> str:
    return os.environ.get(MULTIPROC_ENV, "")


def scrape_registry(*, state: bool = True) -> CollectorRegistry:
    """What a scrape reads. In multiprocess mode: a fresh registry summing every process's files,
    plus the scrape-time collectors and the CPU and memory of the live processes; otherwise the
    process's default registry. ``state=False`` (multiprocess mode only) leaves out the database
    collectors: a Celery worker serves only what it counted."""
    if state:
        _register_state_collectors()
    if not multiprocess_dir():
        return prometheus_client.REGISTRY
    from fleet.prometheus_collectors import LiveProcessesCollector

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(LiveProcessesCollector(multiprocess_dir()))
    if state:
        for collector in _scrape_collectors:
            registry.register(collector)
    return registry


# --- serving ---------------------------------------------------------------------------------------


def refusal(authorization: str) -> tuple[int, str] | None:
    """``None`` if a scrape with this ``Authorization`` header may read the metrics, else the
    status and message to refuse it with."""
    token = settings.METRICS_TOKEN
    if not token:
        return None if settings.EMBEDDED else (403, NOT_CONFIGURED)
    given = authorization.removeprefix("Bearer ").strip()
    if hmac.compare_digest(given.encode(), token.encode()):
        return None
    return 401, TOKEN_NEEDED


def _refuse(status: int, message: str) -> JsonResponse:
    # "message" is the project's error key; "error" is kept for scrapers that read the old one.
    response = JsonResponse({"message": message, "error": message}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


def metrics(request: HttpRequest) -> HttpResponse:
    refused = refusal(request.headers.get("Authorization", ""))
    if refused:
        return _refuse(*refused)
    page = prometheus_client.generate_latest(scrape_registry())
    return HttpResponse(page, content_type=prometheus_client.CONTENT_TYPE_LATEST)


def serve_worker_metrics(port: int, addr: str = "0.0.0.0") -> Any:
    """Serve a Celery worker's own metrics (its task outcomes, its processes) on ``port``, behind
    the same token as ``/metrics``; returns the server (its thread is a daemon), or ``None`` when
    ``PROMETHEUS_MULTIPROC_DIR`` is unset: the tasks run in the pool's child processes, whose
    counts only reach the process serving them through that directory."""
    if not multiprocess_dir():
        logger.error("WORKER_METRICS_PORT needs PROMETHEUS_MULTIPROC_DIR: worker metrics not served")
        return None
    from wsgiref.simple_server import WSGIRequestHandler

    from prometheus_client.exposition import ThreadingWSGIServer, make_server, make_wsgi_app

    inner = make_wsgi_app(scrape_registry(state=False))

    def app(environ: dict, start_response: Any) -> Any:
        refused = refusal(environ.get("HTTP_AUTHORIZATION", ""))
        if refused:
            status, message = refused
            headers = [("Content-Type", "text/plain; charset=utf-8")]
            if status == 401:
                headers.append(("WWW-Authenticate", 'Bearer realm="metrics"'))
            start_response(f"{status} {'Unauthorized' if status == 401 else 'Forbidden'}", headers)
            return [message.encode()]
        return inner(environ, start_response)

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # one line per scrape is noise
            pass

    server = make_server(addr, port, app, ThreadingWSGIServer, handler_class=Quiet)
    threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True).start()
    logger.info("worker metrics on %s:%s", addr, server.server_port)
    return server
