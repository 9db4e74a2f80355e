"""Whether usage statistics are sent, where, and sending them once per ``FREQUENCY``.

Three things must hold for a send: ``USAGE_STATISTICS["ENABLED"]`` (the environment's
``FLEET_USAGE_STATISTICS_ENABLED``; ``false`` wins over everything), the console's checkbox
(``UsageStatistics.enabled``), and an endpoint (``FLEET_USAGE_STATISTICS_URL``; none by default,
since this project runs no collector).

A send is *claimed* with one conditional ``UPDATE`` of the statistics row (last sent longer than
``FREQUENCY`` ago, no attempt within ``CHECK_INTERVAL``): of several beat runs, workers or server
processes asking at once exactly one gets it, and a restart does not send again. A failed attempt
keeps its claim, so it is retried after ``CHECK_INTERVAL`` (Fleet's cron retries hourly too), and a
worker that died mid-send frees it as late. :func:`send` never raises: an unreachable or hanging
endpoint costs at most ``TIMEOUT`` seconds of the thread that sends, one warning in the log, and
the error kept for the console.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from usage import statistics
from usage.models import UsageStatistics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What one call of :func:`send` did: ``sent``, or why not (``disabled``, ``no_url``,
    ``not_due``, ``failed`` with ``error``)."""

    result: str
    error: str = ""

    @property
    def sent(self) -> bool:
        return self.result == "sent"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- the switch ------------------------------------------------------------------------------------


def config() -> dict[str, Any]:
    return settings.USAGE_STATISTICS


def endpoint() -> str:
    return str(config()["URL"] or "").strip()


def display_url(url: str) -> str:
    """The endpoint without credentials or query string, for the console and the log."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def state(row: UsageStatistics | None = None) -> tuple[bool, str]:
    """``(on, why)``: whether statistics are sent, in a sentence for the console and the command."""
    if not config()["ENABLED"]:
        return False, "off: FLEET_USAGE_STATISTICS_ENABLED=false (the environment wins over the console)"
    row = row or UsageStatistics.load()
    if not row.enabled:
        return False, "off: turned off in the console (Fleet settings)"
    url = endpoint()
    if not url:
        return False, "on, but no endpoint is configured (FLEET_USAGE_STATISTICS_URL): nothing is sent"
    hours = config()["FREQUENCY"] / 3600
    return True, f"on: sent every {hours:g} hours to {display_url(url)}"


def set_console_switch(enabled: bool) -> bool:
    """Turn the console's switch on or off; returns whether it changed."""
    row = UsageStatistics.load()
    if row.enabled == enabled:
        return False
    UsageStatistics.objects.filter(pk=row.pk).update(enabled=enabled)
    return True


# --- sending ---------------------------------------------------------------------------------------


def send(force: bool = False, now: datetime | None = None) -> Outcome:
    """Send the payload if statistics are on and one is due (``force``: now, whatever the last
    send). Never raises."""
    try:
        return _send(force, now or timezone.now())
    except Exception as exc:  # a bug or a database outage must not reach beat, a request or a thread
        logger.warning("usage statistics: not sent", exc_info=True)
        _record_error(f"{type(exc).__name__}: {exc}")
        return Outcome("failed", f"{type(exc).__name__}: {exc}")


def _send(force: bool, now: datetime) -> Outcome:
    if not config()["ENABLED"]:
        return Outcome("disabled")
    url = endpoint()
    row = UsageStatistics.load()
    if not row.enabled:
        return Outcome("disabled")
    if not url:
        return Outcome("no_url")
    if not _claim(row.pk, now, force):
        return Outcome("not_due")
    payload = statistics.build(now)
    error = post(url, payload).replace(url, display_url(url))  # no credentials in the log
    if error:
        logger.warning("usage statistics: not sent to %s: %s", display_url(url), error)
        _record_error(error, now)
        return Outcome("failed", error)
    UsageStatistics.objects.filter(pk=row.pk).update(last_sent_at=now, last_error="", last_error_at=None)
    return Outcome("sent")


def _claim(pk: int, now: datetime, force: bool) -> bool:
    """Take the right to send now: one conditional UPDATE, so one caller of many gets it."""
    rows = UsageStatistics.objects.filter(pk=pk)
    if not force:
        frequency = timedelta(seconds=config()["FREQUENCY"])
        retry = timedelta(seconds=config()["CHECK_INTERVAL"])
        rows = rows.filter(Q(last_sent_at__isnull=True) | Q(last_sent_at__lte=now - frequency))
        rows = rows.filter(Q(last_attempt_at__isnull=True) | Q(last_attempt_at__lte=now - retry))
    return rows.update(last_attempt_at=now) == 1


def _record_error(error: str, now: datetime | None = None) -> None:
    try:
        UsageStatistics.objects.filter(pk=1).update(
            last_error=error[:500], last_error_at=now or timezone.now()
        )
    except Exception:  # the database is what failed: the log line is all there is
        logger.debug("usage statistics: could not record the error", exc_info=True)


def post(url: str, payload: dict[str, Any]) -> str:
    """POST the payload as JSON; ``""`` on a 2xx answer, else the error. Returns within
    ``TIMEOUT`` seconds whatever the endpoint does: the request runs in a daemon thread that
    httpx's own timeouts end soon after, even if the answer is trickled."""
    timeout = float(config()["TIMEOUT"])
    connect = min(float(config()["CONNECT_TIMEOUT"]), timeout)
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "User-Agent": f"fleet-django/{statistics.fleet_version()}"}
    outcome: list[str] = []

    def request() -> None:
        try:
            with httpx.Client(timeout=httpx.Timeout(timeout, connect=connect)) as client:
                response = client.post(url, content=body, headers=headers)
            outcome.append("" if response.is_success else f"HTTP {response.status_code}")
        except httpx.HTTPError as exc:
            outcome.append(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        except Exception as exc:  # an invalid URL, a TLS library error ...
            outcome.append(f"{type(exc).__name__}: {exc}")

    started = time.monotonic()
    worker = threading.Thread(target=request, name="usage-statistics-post", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        return f"no answer within {time.monotonic() - started:.0f} s"
    return outcome[0]
