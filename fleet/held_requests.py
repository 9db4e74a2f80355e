"""Requests that wait: a bounded number per process, so they can never take every thread.

Two REST calls hold their request while they wait for agents: a live query run synchronously
(``POST /api/v1/campaigns/run/``, up to 120 s) and a script run synchronously
(``POST /api/v1/scripts/run/sync/``, up to ``SCRIPTS_SYNC_MAX_WAIT``). Each holds a thread for that
long. In production they belong to the ws role (daphne gives every request a thread of its own,
and the proxy routes these two paths there: docker/nginx/fleet.conf, deploy/kubernetes), because
a web process runs agent requests on two threads, the fewest that keep its core busy
(docs/architecture.md, "Serving"): two held requests there would stop its agents.

So each process lets ``FLEET_HELD_REQUESTS`` of them (32) wait at once, and its entry point lowers
that to what its threads allow (``cap``): a web process one less than its threads, the embedded
server half of its request threads. One more is answered ``503`` with a message that says where
it should go, before anything is started, so a refused run leaves nothing behind.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.core.signals import setting_changed
from rest_framework import status
from rest_framework.exceptions import APIException

from fleet.metrics import HELD_REQUESTS_REFUSED

RETRY_AFTER_SECONDS = 10
HELD_PATHS = ("/api/v1/campaigns/run/", "/api/v1/scripts/run/sync/")  # what the proxies route to ws

_lock = threading.Lock()
_cap: int | None = None  # set by the process's entry point; None: the setting alone
_slots: threading.BoundedSemaphore | None = None
_limit = 0


class HeldRequestsFull(APIException):
    """503 with ``Retry-After``: this process already holds as many waiting requests as it may."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    wait = RETRY_AFTER_SECONDS  # DRF's handler turns it into Retry-After

    def __init__(self, limit: int) -> None:
        if limit:
            detail = f"this server process already holds {limit} requests that wait for agents; retry later"
        else:
            detail = "this server process does not hold requests that wait for agents"
        super().__init__(
            f"{detail} (in production {' and '.join(HELD_PATHS)} belong to the ws role: "
            'docs/deployment.md, "Requests that wait")'
        )


def cap(limit: int | None) -> None:
    """Let this process hold at most ``limit`` waiting requests, whatever the setting says (None:
    the setting alone)."""
    global _cap, _slots
    with _lock:
        _cap = None if limit is None else max(0, limit)
        _slots = None


def current_limit() -> int:
    """How many waiting requests this process may hold at once."""
    limit = max(0, settings.HELD_REQUESTS)
    return limit if _cap is None else min(limit, _cap)


def _semaphore() -> tuple[threading.BoundedSemaphore | None, int]:
    global _slots, _limit
    with _lock:
        if _slots is None:
            _limit = current_limit()
            _slots = threading.BoundedSemaphore(_limit) if _limit else None
        return _slots, _limit


@contextmanager
def held_request() -> Iterator[None]:
    """A slot for a request that is about to wait, or ``HeldRequestsFull`` at once."""
    slots, limit = _semaphore()
    if slots is None or not slots.acquire(blocking=False):
        HELD_REQUESTS_REFUSED.inc()
        raise HeldRequestsFull(limit)
    try:
        yield
    finally:
        slots.release()


def _reset(*, setting: str, **kwargs: object) -> None:
    """Tests change ``HELD_REQUESTS`` with ``override_settings``: build the slots again."""
    global _slots
    if setting == "HELD_REQUESTS":
        with _lock:
            _slots = None


setting_changed.connect(_reset)
