"""Keeping timestamp.json fresh: it expires after 14 days, and then every orbit stops updating.

Production: beat sends ``updates.refresh_timestamp`` every
``AGENT_UPDATES["TIMESTAMP_CHECK_INTERVAL"]`` seconds (4 h); the task re-signs the timestamp
when fewer than ``TIMESTAMP_REFRESH_DAYS`` (7) are left, so a week of failed runs is noticed
before agents are. It needs the timestamp key's passphrase in ``FLEET_TIMESTAMP_PASSPHRASE``
(or ``_FILE``); without it, it logs an error each run rather than failing silently. A repository
that is not initialised is not an error: most servers never host one. The repository's file
lock makes two runs at once harmless, and the second sees the fresh timestamp and does nothing.

Embedded default (Celery eager, no beat): serving ``/tuf/timestamp.json`` calls
``refresh_timestamp_if_due``, which runs the same task at most once per interval in this
process. The demo repository (``updates.demo``) is re-signed with its public demo passphrase.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Any

from celery import current_app, shared_task
from django.conf import settings

from updates import demo, keys
from updates import tuf_metadata as tm
from updates.passphrases import from_environment, variable_for
from updates.repository import RepositoryError, UpdateRepository

logger = logging.getLogger(__name__)

TASK_NAME = "updates.refresh_timestamp"


def refresh_before() -> timedelta:
    return timedelta(days=float(settings.AGENT_UPDATES.get("TIMESTAMP_REFRESH_DAYS", 7.0)))


def timestamp_passphrase(repository: UpdateRepository) -> str | None:
    """``FLEET_TIMESTAMP_PASSPHRASE(_FILE)``; for the demo repository, its public passphrase."""
    passphrase = from_environment("timestamp")
    if passphrase is None and demo.is_demo_repository(repository):
        passphrase = demo.DEMO_PASSPHRASES["timestamp"]
    return passphrase


@shared_task(name=TASK_NAME, ignore_result=True)
def refresh_timestamp() -> dict[str, Any]:
    """Re-sign timestamp.json if it expires within ``TIMESTAMP_REFRESH_DAYS``; returns what it did."""
    repository = UpdateRepository.from_settings()
    if not repository.is_initialised():
        return {"skipped": "no repository"}
    try:
        expires = repository.timestamp_expires()
        if expires - tm.utcnow() > refresh_before():
            return {"skipped": "fresh", "expires": expires.isoformat()}
        passphrase = timestamp_passphrase(repository)
        if passphrase is None:
            logger.error(
                "the agent-update timestamp expires at %s and cannot be re-signed: %s is not set",
                expires.isoformat(),
                variable_for("timestamp"),
            )
            return {"error": f"{variable_for('timestamp')} is not set", "expires": expires.isoformat()}
        status = repository.refresh_timestamp(passphrase, unless_valid_for=refresh_before())
    except (RepositoryError, keys.KeyFileError, OSError) as exc:
        logger.error("the agent-update timestamp could not be re-signed: %s", exc)
        return {"error": str(exc)}
    logger.info("re-signed the agent-update timestamp: version %s, until %s", status.version, status.expires)
    return {"version": status.version, "expires": status.expires.isoformat()}


# --- the embedded default: no beat, so serving the timestamp does it -------------------------------
_clock_lock = threading.Lock()
_last_check: float | None = None


def refresh_timestamp_if_due(now: float | None = None) -> dict[str, Any]:
    """Run the task at most once per check interval, when Celery runs eagerly; never raises."""
    global _last_check
    if not current_app.conf.task_always_eager:
        return {}  # beat does it
    now = time.monotonic() if now is None else now
    interval = float(settings.AGENT_UPDATES.get("TIMESTAMP_CHECK_INTERVAL", 4 * 3600.0))
    with _clock_lock:
        if _last_check is not None and now - _last_check < interval:
            return {}
        _last_check = now
    try:
        return refresh_timestamp()
    except Exception:
        logger.warning("the agent-update timestamp check failed; it will be retried later", exc_info=True)
        return {}


def reset_clock() -> None:
    """Forget when the timestamp was last checked (tests)."""
    global _last_check
    with _clock_lock:
        _last_check = None
