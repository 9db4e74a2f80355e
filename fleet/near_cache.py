"""This process's own copies of hot Redis cache entries, dropped as soon as any process changes one.

A check-in reads its host's state from the shared cache (``hosts.nodekeys``): a Redis GET and an
unpickle, about a tenth of a web worker's Python time under load, for an entry that changes about
once an hour. A ``NearCache`` keeps what a process read, in a dict, and every process that changes
an entry says so on a Redis pub/sub channel (``changed``); a thread in each process listens and
drops the copies named. The copies are exactly as fresh as the entries, give or take the time a
message takes to arrive (milliseconds), except when messages can be lost, which is handled so:

- **The listener is not connected** (not yet, Redis away, a dropped connection): nothing is served
  from or stored in the copies, and every copy is dropped when it connects again, since the
  messages sent meanwhile are gone.
- **The connection went quiet** without an error (a dead peer): the listener pings every
  ``PING_SECONDS`` and the copies are not used while nothing was heard for ``QUIET_SECONDS``; past
  twice that, it reconnects (and so drops every copy).
- **A read raced a change:** a copy is stored only if no message arrived between the read and the
  store (``epoch``), so a change made while a read was in flight cannot be overwritten by it.
- **A publish failed** (Redis timed out on it): the copies elsewhere live at most ``max_age``
  seconds, as the entry itself would have stayed stale in Redis when its write failed.

Pub/sub channels are shared by every database of a Redis server, so the channel's name carries the
database number: two servers sharing one Redis (or the test workers) drop only their own copies.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fleet.cache import CircuitOpen

if TYPE_CHECKING:
    from fleet.cache import Circuit

logger = logging.getLogger(__name__)

PING_SECONDS = 2.0  # the listener's liveness check
QUIET_SECONDS = 5.0  # copies are not used once nothing was heard for this long
CLEAR_ALL = "*"  # the message that drops every copy (cache.clear())
RECONNECT_SECONDS = (0.5, 1.0, 2.0, 5.0)  # back-off while Redis is away


_instances: list[NearCache] = []  # every NearCache of this process, for ``cache_cleared``


def cache_cleared() -> None:
    """The shared cache was emptied (``cache.clear()``): every process drops every copy."""
    for near in list(_instances):
        near.clear_everywhere()


def channel_for(redis_url: str, name: str) -> str:
    """``fleet:near:<db>:<name>``: one channel per Redis database and kind of entry."""
    path = urlsplit(redis_url).path.strip("/")
    return f"fleet:near:{path or '0'}:{name}"


class NearCache:
    """Copies of cache entries for ``max_age`` seconds at most, ``max_entries`` of them at most."""

    def __init__(
        self, redis_url: str, name: str, max_entries: int, max_age: float, circuit: Circuit | None = None
    ) -> None:
        self.redis_url = redis_url
        self.circuit = circuit  # the cache's: while Redis is known to be away, publishing is skipped
        self.channel = channel_for(redis_url, name)
        self.max_entries = max_entries
        self.max_age = max_age
        self._items: dict[str, tuple[float, Any]] = {}
        self._epoch = 0  # bumped by every drop, so a store can tell a change raced its read
        self._connected = False
        self._heard = 0.0  # monotonic time of the listener's last message
        self._publisher: Any = None
        self._started_in: int | None = None  # the process whose listener runs
        self._start_lock = threading.Lock()
        self._stopping = threading.Event()
        _instances.append(self)

    # --- the request path: no I/O, no lock ------------------------------------------------------

    def get(self, key: str) -> Any | None:
        """The copy of ``key``, or ``None`` (none, too old, or the copies cannot be trusted now)."""
        if self._started_in != os.getpid():
            self._start()
            return None
        item = self._items.get(key)
        if item is None:
            return None
        now = time.monotonic()
        if not self._connected or now - self._heard > QUIET_SECONDS or now - item[0] > self.max_age:
            self._items.pop(key, None)
            return None
        return item[1]

    def epoch(self) -> int:
        """Take before reading the shared entry; hand to :meth:`put` with what was read."""
        return self._epoch

    def put(self, key: str, value: Any, epoch: int) -> None:
        """Keep a copy of what was read, unless a change arrived since ``epoch`` was taken.

        Checked again after storing: the listener may run between the check and the store, and it
        moves the epoch before it drops anything, so one of the two checks sees it."""
        if not self._connected or epoch != self._epoch or self._started_in != os.getpid():
            return
        if len(self._items) >= self.max_entries:
            self._items.clear()  # rare (more hosts than copies): they refill from Redis
        self._items[key] = (time.monotonic(), value)
        if epoch != self._epoch:
            self._items.pop(key, None)

    # --- changes ------------------------------------------------------------------------------

    def changed(self, keys: list[str]) -> None:
        """After this process changed (or dropped) these entries in Redis: drop every copy of them,
        here at once and in the other processes through the channel."""
        self._drop(keys)
        self._publish("\n".join(keys))

    def clear_everywhere(self) -> None:
        """After the whole cache was emptied."""
        self.clear()
        self._publish(CLEAR_ALL)

    def clear(self) -> None:
        """Drop this process's copies."""
        self._epoch += 1
        self._items.clear()

    def _drop(self, keys: list[str]) -> None:
        self._epoch += 1
        for key in keys:
            self._items.pop(key, None)

    def _publish(self, message: str) -> None:
        try:
            if self._publisher is None:
                self._publisher = self._client(socket_timeout=1.0)
            if self.circuit is None:
                self._publisher.publish(self.channel, message)
            else:
                self.circuit.call(self._publisher.publish, self.channel, message)
        except CircuitOpen:
            return  # Redis is known to be away: the cache said so once already, not once per write
        except Exception as exc:  # noqa: BLE001 - the copies elsewhere expire on their own
            logger.warning("could not announce a cache change on %s: %s", self.channel, exc)

    # --- the listener -------------------------------------------------------------------------

    def _client(self, **options: Any) -> Any:
        import redis

        return redis.Redis.from_url(self.redis_url, socket_connect_timeout=2.0, **options)

    def _start(self) -> None:
        """Start listening in this process (the first call after start-up or a fork)."""
        with self._start_lock:
            pid = os.getpid()
            if self._started_in == pid:
                return
            self._items.clear()
            self._connected = False
            self._publisher = None
            self._stopping.clear()
            self._started_in = pid
            threading.Thread(target=self._listen, name=f"near-cache {self.channel}", daemon=True).start()

    def stop(self) -> None:
        """Stop listening (tests); the next ``get`` starts again."""
        self._stopping.set()
        self._started_in = None
        self._connected = False
        self.clear()

    def _listen(self) -> None:
        pid = os.getpid()
        failures = 0
        while not self._stopping.is_set() and self._started_in == pid:
            try:
                self._follow()
                return
            except Exception as exc:  # noqa: BLE001 - any failure: drop the copies, reconnect
                self._connected = False
                self.clear()
                delay = RECONNECT_SECONDS[min(failures, len(RECONNECT_SECONDS) - 1)]
                failures += 1
                if failures == 1:
                    logger.warning("cache change listener on %s lost: %s; reconnecting", self.channel, exc)
                self._stopping.wait(delay)

    def _follow(self) -> None:
        """Subscribe and apply messages until told to stop; raises when the connection fails."""
        client = self._client(socket_timeout=PING_SECONDS * 4)
        pubsub = client.pubsub()
        try:
            pubsub.subscribe(self.channel)
            pinged = began = time.monotonic()
            while not self._stopping.is_set():
                message = pubsub.get_message(timeout=PING_SECONDS / 2)
                now = time.monotonic()
                if message is not None:
                    self._heard = now
                    self._apply(message)
                if now - pinged >= PING_SECONDS:
                    pubsub.ping()
                    pinged = now
                if now - max(self._heard, began) > 2 * QUIET_SECONDS:
                    raise ConnectionError(f"nothing heard for {now - max(self._heard, began):.0f} s")
        finally:
            self._connected = False
            pubsub.close()
            client.close()

    def _apply(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "subscribe":
            self.clear()  # whatever was sent before we listened is lost to us
            self._connected = True
        elif kind == "message":
            data = message["data"].decode() if isinstance(message["data"], bytes) else str(message["data"])
            if data == CLEAR_ALL:
                self.clear()
            else:
                self._drop(data.split("\n"))
