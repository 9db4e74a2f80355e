"""Agent requests in a production web process: a few at a time, and the rest shed when they waited too long.

Only for a worker given more threads than ``FLEET_AGENT_CONCURRENCY``: production's default of
two threads needs no gate (``admit_agents`` leaves it out), since the REST calls that wait for
agents are served by the ws role (``fleet.held_requests``). An operator who keeps them on the web
processes gives those more threads, and then the gate matters. A granian worker runs requests on
``FLEET_WEB_THREADS`` threads, and a synchronous API (a live query run through REST waits up to
120 s) waits on a thread without holding the whole process. But the agent requests (every host,
every few seconds) are short bursts of Python between Redis and database round trips, and with
eight of them at once the threads mostly queued for the GIL. In the
load report's mix (3,000 hosts, a live query always running, one worker) eight threads cost
1.158 ms of CPU per request with p50 100 ms and p99 5 s; two threads cost 1.003 ms with p50 10 ms
and p99 400 ms (docs/benchmarks.md, "Load report").

So at most ``FLEET_AGENT_CONCURRENCY`` agent requests (2) run Django at once in a process; the
others wait for a slot, asleep rather than contending for the GIL, while the console, the REST API
and ``/metrics`` keep the remaining threads. A request that waited ``FLEET_SHED_AFTER`` seconds (8)
for a slot is answered ``503`` with ``{"error": ...}`` and ``Retry-After`` without running Django:
its agent has given up or soon will (osquery waits 16 s) and retries on its own schedule, and
serving it late would only make every later request wait longer, until all of them time out and
are retried (the load report's 5,000-host priming did exactly that, with 48,550 client errors).
The embedded server sheds the same way (``fleet.wsgi_bridge``).

The wait counted is the wait for a slot: granian does not tell the application how long a request
queued before a thread took it. While agent requests are shed fast, that queue stays short.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from fleet.metrics import AGENT_REQUESTS_SHED
from fleet.request_metrics import ALL_AGENT_PREFIXES

logger = logging.getLogger("fleet.admission")

BUSY_BODY = b'{"error": "the server is busy; retry later"}'
RETRY_AFTER_SECONDS = 10
REPORT_INTERVAL = 60.0  # the shed requests are logged as one line at most this often

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class ShedReport:
    """Counts shed agent requests and says so in the log at most once a minute."""

    def __init__(self, where: str) -> None:
        self._where = where
        self._lock = threading.Lock()
        self._last = 0.0
        self._count = 0

    def shed(self, path: str) -> None:
        AGENT_REQUESTS_SHED.inc()
        now = time.monotonic()
        with self._lock:
            self._count += 1
            if now - self._last < REPORT_INTERVAL:
                return
            count, self._count, self._last = self._count, 0, now
        logger.warning(
            "over capacity: %d agent requests answered 503 (busy) since the last report by %s; agents "
            "retry on their own, see docs/architecture.md, Serving",
            count,
            self._where,
        )


class AgentAdmission:
    """WSGI middleware: at most ``limit`` agent requests in the application at once."""

    def __init__(
        self,
        application: WSGIApp,
        limit: int,
        shed_after: float,
        prefixes: tuple[str, ...] = ALL_AGENT_PREFIXES,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.application = application
        self.limit = limit
        self.shed_after = shed_after
        self.prefixes = prefixes
        self._slots = threading.BoundedSemaphore(limit)
        self._report = ShedReport("this web process")

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if not path.startswith(self.prefixes):
            return self.application(environ, start_response)
        if not self._slots.acquire(timeout=self.shed_after):
            self._report.shed(path)
            start_response(
                "503 Service Unavailable",
                [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(BUSY_BODY))),
                    ("Retry-After", str(RETRY_AFTER_SECONDS)),
                ],
            )
            return [BUSY_BODY]
        try:
            # Django has built the whole response by now (a streamed one is read by the server
            # afterwards, outside the slot; the request ends when the server closes it).
            return self.application(environ, start_response)
        finally:
            self._slots.release()


def admit_agents(application: WSGIApp, threads: int = 0) -> WSGIApp:
    """``application`` behind the agent gate the settings ask for: none with a concurrency of 0, nor
    in a process of ``threads`` request threads (0: not known) that could not exceed it anyway."""
    from django.conf import settings

    limit = settings.AGENT_CONCURRENCY
    if limit < 1 or 0 < threads <= limit:
        return application
    return AgentAdmission(application, limit, settings.AGENT_SHED_AFTER)
