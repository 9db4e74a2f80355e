"""Banning addresses that guess device tokens, at a constant cost and never slowing good tokens.

Fleet puts every device route behind an IP banner: 1,000 failed authentications from one
address within a minute ban it for a minute (device-management.md §1). Here, in the Django
cache (local memory on the embedded default, Redis in production, so every process shares the
count):

- every request reads one key, the address's ban, and is refused with 429 while it is set;
- a failed token costs one ``incr`` of the address's failure counter, whose life (the window)
  starts at its first failure; reaching the limit sets the ban.

A good token therefore pays one cache read and writes nothing. Counting is best effort: while
the cache is unavailable, nothing is banned and nothing is counted, and requests go on.
Addresses come from :func:`agentapi.wire.client_ip` (Fleet's header order), and are hashed into
the keys so any header value makes a valid, bounded key.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from typing import Any

from django.conf import settings
from django.core.cache import cache

logger = logging.getLogger(__name__)

_BAN_PREFIX = "devban:"
_FAILURE_PREFIX = "devfail:"


def _ident(address: str) -> str:
    return hashlib.blake2b(address.encode(errors="replace"), digest_size=16).hexdigest()


def _config() -> dict[str, Any]:
    return settings.FLEET_DESKTOP


def banned_for(address: str) -> int:
    """Seconds the address is still banned for (0: not banned). One cache read."""
    try:
        until = cache.get(_BAN_PREFIX + _ident(address))
    except Exception:  # the cache is down: serve rather than refuse everyone
        return 0
    if not isinstance(until, int | float):
        return 0
    return max(1, math.ceil(until - time.time())) if until > time.time() else 0


def _incr(key: str) -> int:
    """``cache.incr`` through the Redis circuit breaker when the cache has one (fleet.cache)."""
    circuit = getattr(cache, "circuit", None)
    return circuit.call(cache.incr, key) if circuit is not None else cache.incr(key)


def record_failure(address: str) -> bool:
    """Count a failed token from ``address``; ``True`` when that failure banned it."""
    config = _config()
    key = _FAILURE_PREFIX + _ident(address)
    try:
        try:
            count = _incr(key)
        except ValueError:  # the first failure of a window
            count = 1 if cache.add(key, 1, timeout=config["FAILURE_WINDOW"]) else _incr(key)
        if count < config["FAILURE_LIMIT"]:
            return False
        ban = config["BAN_SECONDS"]
        cache.set(_BAN_PREFIX + _ident(address), time.time() + ban, timeout=ban)
        cache.delete(key)
    except Exception as exc:  # counting is best effort; a cache outage must not fail the request
        logger.warning("device token throttle unavailable: %s", exc.__class__.__name__)
        return False
    logger.warning("banned %r for %d s after %d failed device tokens", address[:45], ban, count)
    return True
