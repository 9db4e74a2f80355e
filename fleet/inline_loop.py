"""Sync code run inline on the embedded server's event loop, and async calls made from it.

The embedded default (``make run``) runs an agent's request on the event loop's own thread
(:mod:`fleet.wsgi_bridge`): one Python interpreter has one core, and handing each request to a
worker thread cost more in GIL handoffs than the request itself (docs/architecture.md, Serving).
While such a request runs, the loop is not running anything else, so:

- Django's guard against blocking calls in async code must not see the loop: :func:`running_inline`
  hides it for the duration (the blocking is the point: the request is short and nothing else
  could use the core meanwhile).
- ``async_to_sync`` cannot be used (it would wait for the loop that is busy running the caller,
  or start a loop of its own in another thread, out of reach of the in-process channel layer's
  consumers). :func:`call_async` schedules the coroutine on the server's loop instead; it runs as
  soon as the request returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from asgiref.sync import async_to_sync

logger = logging.getLogger(__name__)

_server_loop: contextvars.ContextVar[asyncio.AbstractEventLoop | None] = contextvars.ContextVar(
    "fleet_inline_server_loop", default=None
)


@contextlib.contextmanager
def running_inline() -> Iterator[None]:
    """Within: sync code runs on the loop's thread, with the loop hidden from it (it is not
    running anything else meanwhile) and remembered for :func:`call_async`."""
    loop = asyncio.get_running_loop()
    token = _server_loop.set(loop)
    asyncio._set_running_loop(None)
    try:
        yield
    finally:
        asyncio._set_running_loop(loop)
        _server_loop.reset(token)


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("an async call from an inline request failed: %s", task.exception())


def call_async(function: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
    """Call ``function(*args)`` from sync code: scheduled on the server's loop when this code runs
    inline on it (failures logged, not raised), else through ``async_to_sync``, which waits and
    raises."""
    loop = _server_loop.get()
    if loop is None:
        async_to_sync(function)(*args)
        return
    loop.create_task(function(*args)).add_done_callback(_log_failure)
