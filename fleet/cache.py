"""A Redis cache that degrades to "always a miss" while Redis is down, instead of failing requests.

Everything cached in this project can be rebuilt from the database (node-key states, rendered
configs, label lists), so an unreachable Redis must make the agent API slower, never refuse it.
Django's ``RedisCache`` raises on every call while Redis is down, and each call first waits for
its connect timeout; here the first failure opens a circuit for ``retry_seconds`` during which
every call answers at once as a miss (reads) or a no-op (writes), then one call tries Redis again.
Failures are logged once per outage, not once per request.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from django.core.cache.backends.redis import RedisCache
from redis import ConnectionError as RedisConnectionError
from redis import RedisError

logger = logging.getLogger(__name__)
T = TypeVar("T")


class Circuit:
    """Open after a failure; half-open (one caller tries) once ``retry_seconds`` have passed.

    ``name`` says in the log what is unavailable; an outage is logged when it starts and ends.
    """

    def __init__(self, retry_seconds: float, name: str = "Redis") -> None:
        self.retry_seconds = retry_seconds
        self.name = name
        self._open_until = 0.0
        self._outage_started = 0.0
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        """Whether an outage is going on (the last call failed, or calls are being skipped)."""
        return bool(self._outage_started)

    def allows(self) -> bool:
        """Whether to call Redis now: always when it works; during an outage, one probe a period."""
        now = time.monotonic()
        if now < self._open_until:
            return False
        if not self._outage_started:
            return True
        with self._lock:  # the first caller after the period probes; the others keep skipping
            if now < self._open_until:
                return False
            self._open_until = now + self.retry_seconds
            return True

    def failed(self, exc: Exception) -> None:
        with self._lock:
            first = self._outage_started == 0.0
            now = time.monotonic()
            self._open_until = now + self.retry_seconds
            if first:
                self._outage_started = now
        if first:
            logger.warning("%s unavailable until it is back: %s", self.name, exc.__class__.__name__)

    def succeeded(self) -> None:
        if self._outage_started:
            with self._lock:
                started, self._outage_started = self._outage_started, 0.0
                self._open_until = 0.0
            if started:
                logger.warning("%s is back after %.0f s", self.name, time.monotonic() - started)

    def call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``method(*args, **kwargs)`` through the circuit: ``CircuitOpen`` while it is open, and a
        Redis failure opens it (then propagates)."""
        if not self.allows():
            raise CircuitOpen(f"{self.name} is unavailable (retrying shortly)")
        try:
            result = method(*args, **kwargs)
        except (RedisError, OSError) as exc:
            self.failed(exc)
            raise
        self.succeeded()
        return result


class CircuitOpen(RedisConnectionError):
    """Redis is skipped for now; a ``RedisError``, so callers handle it like a refused connection."""


_circuits: dict[str, Circuit] = {}
_circuits_lock = threading.Lock()


def circuit_for(url: str, retry_seconds: float) -> Circuit:
    """The process's circuit for one Redis server, shared by the cache and the live-query store.

    One server, one verdict: while it hangs, a process then pays one timeout per retry period in
    all, not one per client.
    """
    with _circuits_lock:
        circuit = _circuits.get(url)
        if circuit is None:
            circuit = _circuits[url] = Circuit(retry_seconds, "Redis")
        return circuit


def _guarded(default: Callable[..., Any]) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Run the cache call through the circuit; on failure answer ``default(*args, **kwargs)``."""

    def decorate(method: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(method)
        def call(self: ResilientRedisCache, *args: Any, **kwargs: Any) -> T:
            try:
                return self.circuit.call(method, self, *args, **kwargs)
            except (RedisError, OSError):
                return default(*args, **kwargs)

        return call

    return decorate


def _given_default(key: Any, default: Any = None, *args: Any, **kwargs: Any) -> Any:
    return default


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


def _false(*args: Any, **kwargs: Any) -> bool:
    return False


def _empty_dict(*args: Any, **kwargs: Any) -> dict:
    return {}


def _all_failed(data: dict, *args: Any, **kwargs: Any) -> list:
    return list(data)


_clients: dict[tuple[str, str], Any] = {}
_clients_lock = threading.Lock()


class ResilientRedisCache(RedisCache):
    """``RedisCache`` with a circuit breaker; ``OPTIONS["RETRY_SECONDS"]`` tunes it (settings: 10 s).

    One Redis client (and connection pool) per process and server: Django makes a cache object
    per async context, so every WebSocket consumer got a pool of its own and never closed it
    (3,000 task agents held 3,000 Redis connections; Redis refuses clients past 10,000)."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        options = dict(params.get("OPTIONS") or {})
        retry_seconds = float(options.pop("RETRY_SECONDS", 5.0))
        super().__init__(server, {**params, "OPTIONS": options})
        self.circuit = circuit_for(server, retry_seconds)

    @property
    def _cache(self) -> Any:  # Django's is a cached_property per cache object
        client = self.__dict__.get("_shared_client")
        if client is None:  # found once per cache object: every cache call reads this property
            key = (repr(self._servers), repr(sorted(self._options.items(), key=lambda item: item[0])))
            with _clients_lock:
                client = _clients.get(key)
                if client is None:
                    client = _clients[key] = self._class(self._servers, **self._options)
            self.__dict__["_shared_client"] = client
        return client

    def validate_key(self, key: str) -> None:
        """Nothing to check: Django's checks warn about keys memcached would refuse, and Redis
        takes any key. They walked every character of every key on every call (node-key lookups
        included)."""

    def clear(self) -> bool:
        """Empty the cache, and every process's copies of its entries (``fleet.near_cache``)."""
        from fleet.near_cache import cache_cleared

        try:
            return super().clear()
        finally:
            cache_cleared()

    get = _guarded(_given_default)(RedisCache.get)
    get_many = _guarded(_empty_dict)(RedisCache.get_many)
    has_key = _guarded(_false)(RedisCache.has_key)
    set = _guarded(_nothing)(RedisCache.set)
    add = _guarded(_false)(RedisCache.add)
    touch = _guarded(_false)(RedisCache.touch)
    delete = _guarded(_false)(RedisCache.delete)
    set_many = _guarded(_all_failed)(RedisCache.set_many)
    delete_many = _guarded(_nothing)(RedisCache.delete_many)
    get_or_set = _guarded(lambda key, default, *a, **k: default() if callable(default) else default)(
        RedisCache.get_or_set
    )
