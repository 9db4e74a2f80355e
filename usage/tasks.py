"""Sending usage statistics in the background.

Production: beat sends ``usage.send_statistics`` every ``USAGE_STATISTICS["CHECK_INTERVAL"]``
seconds (an hour, like Fleet's ``stats`` cron); the task sends when the last send is older than
``FREQUENCY`` (a day) and returns at once otherwise. Several beats or workers send once between
them (``usage.sending`` claims each send with a conditional UPDATE).

Embedded default (Celery eager, no beat): as the MDM and live-query upkeep do, a job runs at most
once per interval per process (``fleet.due``) when something that happens anyway gives it the
chance, here the end of any HTTP request (``request_finished``, connected in ``usage.apps``).
Unlike that upkeep it never runs in the request's thread: a POST may wait ``TIMEOUT`` seconds
for an endpoint that does not answer, so it runs in a daemon thread of its own. The request pays
one clock comparison; a check-in is never slowed or failed by the endpoint.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import current_app, shared_task
from django.conf import settings
from django.db import connections

from fleet.due import DueClock
from usage import sending

logger = logging.getLogger(__name__)

TASK_NAME = "usage.send_statistics"

_clock = DueClock()


@shared_task(name=TASK_NAME, ignore_result=True)
def send_statistics(force: bool = False) -> dict[str, Any]:
    """Send the statistics if they are on and due (``force``: whatever the last send). Never
    raises; returns what happened (``usage.sending.Outcome``)."""
    return sending.send(force=force).as_dict()


def send_in_background_if_due(now: float | None = None) -> threading.Thread | None:
    """Embedded default only: start a send in a daemon thread at most once per ``CHECK_INTERVAL``
    in this process; returns the thread (tests wait for it). Never raises."""
    conf = settings.USAGE_STATISTICS
    # Cheapest first: this runs at the end of every request, and with no URL (the default) it
    # stops at a dict lookup.
    if not conf["URL"] or not conf["ENABLED"] or not current_app.conf.task_always_eager:
        return None  # nothing would be sent; or beat and the workers send
    now = time.monotonic() if now is None else now
    if not _clock.due("send", float(conf["CHECK_INTERVAL"]), now):
        return None
    thread = threading.Thread(target=_send_in_thread, name="usage-statistics", daemon=True)
    thread.start()
    return thread


def _send_in_thread() -> None:
    try:
        send_statistics()
    finally:
        connections.close_all()  # this thread's own connections


def on_request_finished(sender: Any = None, **kwargs: Any) -> None:
    try:
        send_in_background_if_due()
    except Exception:  # e.g. no thread can be started: try again next interval
        logger.warning("usage statistics: could not start the sender", exc_info=True)


def reset_clock() -> None:
    """Forget when this process last looked (tests)."""
    _clock.reset()
