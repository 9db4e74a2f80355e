"""Where the agents' result and status logs go: filesystem, stdout, an HTTP webhook, NATS.

Each stream (``result``, ``status``) has its own list of destinations
(``settings.OSQUERY_LOGGING``; docs/logging.md). A batch is delivered to each of them in turn; if
any cannot take it, :func:`deliver` raises :class:`DeliveryError` and the agent is answered with
an ``error``, so osquery keeps the lines and sends them again later (at-least-once delivery,
osquery-protocol.md §7 and §10). Destinations that took the batch before the failure get it again
on the retry: duplicates are possible, losses are not.

A log request must stay well inside osquery's 16 s request timeout, and while a network
destination is down thousands of agents keep retrying: every request shares one time budget
(``DELIVERY_BUDGET``), and a network destination that failed fails fast (a per-process circuit
breaker) for ``CIRCUIT_OPEN_SECONDS`` before it is tried again.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import fcntl
import json
import logging
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from fleet.metrics import count_log_lines

logger = logging.getLogger(__name__)
PLUGINS = ("filesystem", "stdout", "webhook", "nats")


class DeliveryError(Exception):
    """A destination could not take a batch; nothing of it may be considered delivered."""


class Destination(Protocol):
    """Takes a whole batch of encoded JSON lines (no newlines) before ``deadline`` or raises."""

    name: str

    def write(self, lines: Sequence[bytes], deadline: float) -> None: ...


def encode(lines: Sequence[dict[str, Any]]) -> list[bytes]:
    """Each line as compact JSON, encoded once for every destination."""
    return [json.dumps(line, separators=(",", ":")).encode() for line in lines]


# --- filesystem ------------------------------------------------------------------------------------


class FileDestination:
    """JSON lines appended to a file, rotated by size into ``path.1`` .. ``path.N``.

    Several processes may append to the same file: each batch is one ``write`` under an exclusive
    ``flock``, and a writer that finds its file renamed by another's rotation reopens the path.
    Rotation happens before a batch that would push the file over ``max_bytes`` (0: never).
    """

    def __init__(self, path: str, max_bytes: int = 0, backups: int = 3) -> None:
        self.name = f"filesystem:{path}"
        self.path = path
        self.max_bytes = max_bytes
        self.backups = max(backups, 0)

    def write(self, lines: Sequence[bytes], deadline: float) -> None:
        if not lines:
            return
        payload = b"".join(line + b"\n" for line in lines)
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            fd = self._open_locked()
            try:
                size = os.fstat(fd).st_size
                if self.max_bytes and size and size + len(payload) > self.max_bytes:
                    self._rotate()
                    os.close(fd)
                    fd = self._open_locked()
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)  # also releases the lock
        except OSError as exc:
            raise DeliveryError(f"cannot write to {self.path}: {exc.strerror}") from exc

    def _open_locked(self) -> int:
        """An append descriptor on the current file at ``path``, holding its exclusive lock."""
        while True:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)  # rotated away while we waited for the lock: open the new file

    def _rotate(self) -> None:
        """``path.(N-1)`` -> ``path.N`` ... ``path`` -> ``path.1``; the oldest falls off the end."""
        if self.backups == 0:
            os.unlink(self.path)
            return
        for index in range(self.backups - 1, 0, -1):
            older = f"{self.path}.{index}"
            if os.path.exists(older):
                os.replace(older, f"{self.path}.{index + 1}")
        os.replace(self.path, f"{self.path}.1")


# --- stdout ----------------------------------------------------------------------------------------


class StdoutDestination:
    """JSON lines on the process's standard output, for container log collectors."""

    _lock = threading.Lock()

    def __init__(self) -> None:
        self.name = "stdout"

    def write(self, lines: Sequence[bytes], deadline: float) -> None:
        if not lines:
            return
        payload = b"".join(line + b"\n" for line in lines)
        try:
            with self._lock:  # one batch at a time, so lines of two requests never interleave
                stream = sys.stdout.buffer
                stream.write(payload)
                stream.flush()
        except (OSError, ValueError, AttributeError) as exc:
            raise DeliveryError(f"cannot write to stdout: {exc}") from exc


# --- circuit breaker for network destinations -----------------------------------------------------


class CircuitBreaker:
    """Fail fast for ``open_seconds`` after a failure, then let one request try again.

    Without it, every agent's log request would wait out the whole retry budget while a
    destination is down, tying up a server thread per agent for seconds.
    """

    def __init__(self, open_seconds: float) -> None:
        self.open_seconds = open_seconds
        self._open_until = 0.0
        self._probing = False
        self._lock = threading.Lock()
        self.last_error = ""

    def allow(self) -> str:
        """``"closed"``: go ahead; ``"probe"``: the one trial after a wait; ``""``: fail fast."""
        with self._lock:
            if not self._open_until:
                return "closed"
            if time.monotonic() < self._open_until or self._probing:
                return ""
            self._probing = True
            return "probe"

    def succeeded(self) -> None:
        with self._lock:
            self._open_until = 0.0
            self._probing = False

    def failed(self, error: str) -> None:
        with self._lock:
            self._open_until = time.monotonic() + self.open_seconds
            self._probing = False
            self.last_error = error


class _Guarded:
    """Wraps a network destination's ``_send`` with the circuit breaker."""

    name: str
    breaker: CircuitBreaker

    def write(self, lines: Sequence[bytes], deadline: float) -> None:
        if not lines:
            return
        state = self.breaker.allow()
        if not state:
            raise DeliveryError(f"{self.name} is unavailable ({self.breaker.last_error}); not retried yet")
        try:
            self._send(lines, deadline, probe=state == "probe")
        except DeliveryError as exc:
            self.breaker.failed(str(exc))
            raise
        except Exception as exc:  # an unexpected client error must still open the breaker
            self.breaker.failed(repr(exc))
            raise DeliveryError(f"{self.name}: {exc!r}") from exc
        self.breaker.succeeded()

    def _send(self, lines: Sequence[bytes], deadline: float, probe: bool) -> None:
        """Deliver or raise; a ``probe`` (the first try after an outage) makes a single attempt."""
        raise NotImplementedError


# --- webhook ---------------------------------------------------------------------------------------

_RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


class WebhookDestination(_Guarded):
    """POSTs the lines as JSON arrays of at most ``batch_lines`` lines each.

    Each POST is retried on connection errors, timeouts and 408/429/5xx with exponential backoff
    (0.1 s, 0.2 s, 0.4 s, ...) until ``retry_budget`` or the request's deadline runs out; any
    other status fails at once (the receiver refuses the data, retrying now will not help). The
    probe after an outage makes one attempt: a receiver still down costs one timeout per
    ``CIRCUIT_OPEN_SECONDS`` and process, not a retry budget.
    """

    def __init__(
        self,
        url: str,
        token: str = "",
        timeout: float = 3.0,
        retry_budget: float = 6.0,
        batch_lines: int = 500,
        open_seconds: float = 10.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ImproperlyConfigured(f"webhook log destination needs an http(s) URL, not {url!r}")
        self.name = f"webhook:{url}"
        self.url = url
        self.timeout = timeout
        self.retry_budget = retry_budget
        self.batch_lines = max(batch_lines, 1)
        self.breaker = CircuitBreaker(open_seconds)
        self.headers = {"Content-Type": "application/json", "User-Agent": "fleet-django"}
        if token.startswith("basic:"):
            basic = base64.b64encode(token.removeprefix("basic:").encode()).decode()
            self.headers["Authorization"] = f"Basic {basic}"
        elif token:
            self.headers["Authorization"] = f"Bearer {token}"

    def _send(self, lines: Sequence[bytes], deadline: float, probe: bool) -> None:
        deadline = min(deadline, time.monotonic() + self.retry_budget)
        for start in range(0, len(lines), self.batch_lines):
            chunk = lines[start : start + self.batch_lines]
            self._post_with_retries(b"[" + b",".join(chunk) + b"]", deadline, retry=not probe)

    def _post_with_retries(self, body: bytes, deadline: float, retry: bool = True) -> None:
        delay = 0.1
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeliveryError(f"{self.name}: no time left for attempt {attempt}")
            error, retryable = self._post(body, min(self.timeout, remaining))
            if error is None:
                return
            if not (retry and retryable) or time.monotonic() + delay >= deadline:
                raise DeliveryError(f"{self.name}: {error} (after {attempt} attempts)")
            time.sleep(delay)
            delay *= 2

    def _post(self, body: bytes, timeout: float) -> tuple[str | None, bool]:
        """``(None, _)`` on success, else ``(error, retryable)``."""
        request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read(1024)
                return None, False
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}", exc.code in _RETRYABLE_STATUS
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return f"{type(reason).__name__}: {reason}", True


# --- NATS ------------------------------------------------------------------------------------------


class _EventLoopThread:
    """One asyncio loop per process, in a daemon thread, for the async NATS client.

    Log views are synchronous (web server threads); they hand coroutines to this loop and wait for
    the result. A forked child (a web server's workers) starts its own loop on first use.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float) -> Any:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._ensure())
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def owner_pid(self) -> int:
        return self._pid

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="nats-log-loop", daemon=True).start()
                self._loop, self._pid = loop, os.getpid()
            return self._loop


_LOOP = _EventLoopThread()


class NatsDestination(_Guarded):
    """Publishes each line as one message on ``subject`` with nats-py, then waits for the server.

    Core NATS: ``flush`` (PING/PONG) confirms the server has every message before the batch
    counts as delivered. JetStream: every publish waits for the stream's ack instead (the lines
    are then stored by NATS, not only passed to current subscribers). On any failure the
    connection is dropped, so nothing buffered in it is sent later behind osquery's back, and the
    next try connects afresh.
    """

    def __init__(
        self,
        servers: list[str],
        subject: str,
        timeout: float = 3.0,
        jetstream: bool = False,
        creds_file: str = "",
        token: str = "",
        open_seconds: float = 10.0,
    ) -> None:
        if not servers or not subject:
            raise ImproperlyConfigured("nats log destination needs OSQUERY_NATS_SERVER and a subject")
        self.name = f"nats:{subject}@{','.join(servers)}"
        self.servers = servers
        self.subject = subject
        self.timeout = timeout
        self.jetstream = jetstream
        self.options: dict[str, Any] = {}
        if creds_file:
            self.options["user_credentials"] = creds_file
        if token:
            self.options["token"] = token
        self.breaker = CircuitBreaker(open_seconds)
        self._client: Any = None
        self._client_pid = 0
        self._connect_lock = asyncio.Lock()
        self._lock_pid = 0

    def _send(self, lines: Sequence[bytes], deadline: float, probe: bool) -> None:
        budget = min(self.timeout, deadline - time.monotonic())
        if budget <= 0:
            raise DeliveryError(f"{self.name}: no time left")
        try:
            _LOOP.run(self._publish(lines, budget), budget + 0.5)
        except Exception as exc:  # the coroutine has already dropped the connection
            raise DeliveryError(f"{self.name}: {type(exc).__name__}: {exc}") from exc

    async def _connect(self, timeout: float) -> Any:
        import nats

        if self._lock_pid != os.getpid():  # none yet, or inherited through fork from the parent's loop
            self._client, self._connect_lock = None, asyncio.Lock()  # in the loop thread: no race
            self._lock_pid = os.getpid()
        async with self._connect_lock:  # concurrent requests share one connection
            if self._client is not None and self._client.is_connected:
                return self._client
            await self._drop()
            self._client = await nats.connect(
                servers=self.servers,
                connect_timeout=max(timeout, 0.1),
                allow_reconnect=False,
                # nats-py reads 0 as "no limit" (it would retry a dead server forever): 1 means
                # two immediate attempts per server, then NoServersError.
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                name="fleet-django-logs",
                error_cb=_log_nats_error,
                **self.options,
            )
            self._client_pid = os.getpid()
            return self._client

    async def _publish(self, lines: Sequence[bytes], budget: float) -> None:
        async def publish_all() -> None:
            client = await self._connect(budget)
            limit = client.max_payload
            payloads = [line for line in lines if len(line) <= limit]
            if len(payloads) != len(lines):
                # Never deliverable: refusing the batch would block this host's logs forever.
                dropped = len(lines) - len(payloads)
                logger.warning("%s: dropped %d lines over %d bytes", self.name, dropped, limit)
            if self.jetstream:
                stream = client.jetstream(timeout=budget)
                await asyncio.gather(*(stream.publish(self.subject, p) for p in payloads))
            else:
                for payload in payloads:
                    await client.publish(self.subject, payload)
                await client.flush(timeout=budget)

        try:
            await asyncio.wait_for(publish_all(), budget)
        except BaseException:
            await self._drop()
            raise

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._client_pid == os.getpid() and not client.is_closed:
            try:
                await asyncio.wait_for(client.close(), 1.0)
            except Exception:  # closing a broken connection may fail; it is gone either way
                logger.debug("%s: error while closing", self.name, exc_info=True)


async def _log_nats_error(exc: Exception) -> None:
    logger.warning("nats log destination: %s", exc)


# --- configuration ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Key:
    log_type: str
    config: str


_instances: dict[_Key, list[Destination]] = {}
_MAX_CONFIGURATIONS = 8
_instances_lock = threading.Lock()


NETWORK_PLUGINS = ("webhook", "nats")


def network_bound() -> bool:
    """Whether a log batch may wait on the network (a webhook or NATS destination) on either
    stream: the embedded server then runs log requests on a thread, not on its event loop."""
    cfg = settings.OSQUERY_LOGGING
    plugins = {p for log_type in ("result", "status") for p in _plugins(log_type, cfg)}
    return bool(plugins & set(NETWORK_PLUGINS))


def _plugins(log_type: str, cfg: dict[str, Any]) -> list[str]:
    """The stream's configured plugin names, normalised, in order (repeats kept)."""
    return [p.strip().lower() for p in cfg[f"{log_type.upper()}_PLUGINS"] if p.strip()]


def _build(log_type: str, cfg: dict[str, Any]) -> list[Destination]:
    plugins = _plugins(log_type, cfg)
    unknown = sorted(set(plugins) - set(PLUGINS))
    if unknown:
        raise ImproperlyConfigured(f"unknown {log_type} log plugin(s) {unknown}; expected {PLUGINS}")
    built: list[Destination] = []
    open_seconds = cfg["CIRCUIT_OPEN_SECONDS"]
    for plugin in dict.fromkeys(plugins):  # keep order, drop repeats
        if plugin == "filesystem":
            path = settings.OSQUERY["RESULT_LOG_FILE" if log_type == "result" else "STATUS_LOG_FILE"]
            built.append(FileDestination(path, cfg["FILESYSTEM_MAX_BYTES"], cfg["FILESYSTEM_MAX_BACKUPS"]))
        elif plugin == "stdout":
            built.append(StdoutDestination())
        elif plugin == "webhook":
            built.append(
                WebhookDestination(
                    cfg[f"WEBHOOK_{log_type.upper()}_URL"],
                    cfg["WEBHOOK_TOKEN"],
                    cfg["WEBHOOK_TIMEOUT"],
                    cfg["WEBHOOK_RETRY_BUDGET"],
                    cfg["WEBHOOK_BATCH_LINES"],
                    open_seconds,
                )  # fmt: skip
            )
        else:
            built.append(
                NatsDestination(
                    cfg["NATS_SERVERS"],
                    cfg[f"NATS_{log_type.upper()}_SUBJECT"],
                    cfg["NATS_TIMEOUT"],
                    cfg["NATS_JETSTREAM"],
                    cfg["NATS_CREDS_FILE"],
                    cfg["NATS_TOKEN"],
                    open_seconds,
                )  # fmt: skip
            )
    return built


def for_log_type(log_type: str) -> list[Destination]:
    """The destinations configured for ``result`` or ``status`` logs (built once per configuration).

    Instances are kept so that breakers and NATS connections live across requests; a changed
    setting (tests, a reload) builds new ones.
    """
    cfg = settings.OSQUERY_LOGGING
    key = _Key(log_type, repr((sorted(cfg.items()), settings.OSQUERY["RESULT_LOG_FILE"],
                               settings.OSQUERY["STATUS_LOG_FILE"])))  # fmt: skip
    evicted: list[list[Destination]] = []
    with _instances_lock:
        found = _instances.get(key)
        if found is None:
            found = _instances[key] = _build(log_type, cfg)
            while len(_instances) > _MAX_CONFIGURATIONS:  # settings changed many times (tests)
                evicted.append(_instances.pop(next(iter(_instances))))
    _close(evicted)
    return found


def deliver(log_type: str, lines: Sequence[dict[str, Any]]) -> None:
    """Hand the batch to every destination of the stream, or raise :class:`DeliveryError`.

    Every destination is tried even after one failed, so a webhook outage does not also hold
    back NATS consumers; the failed ones (and, on osquery's retry, duplicates to the others) are
    the price of at-least-once delivery.
    """
    if not lines:
        return
    destinations = for_log_type(log_type)
    encoded = encode(lines)
    deadline = time.monotonic() + settings.OSQUERY_LOGGING["DELIVERY_BUDGET"]
    errors: list[str] = []
    for destination in destinations:
        try:
            destination.write(encoded, deadline)
        except DeliveryError as exc:
            logger.warning("%s log delivery failed: %s", log_type, exc)
            errors.append(str(exc))
            count_log_lines(log_type, destination.name, len(encoded), delivered=False)
        else:
            count_log_lines(log_type, destination.name, len(encoded), delivered=True)
    if errors:
        raise DeliveryError("; ".join(errors))


def reset() -> None:
    """Forget built destinations (breakers, connections); for tests and configuration reloads."""
    with _instances_lock:
        old = list(_instances.values())
        _instances.clear()
    _close(old)


def _close(old: list[list[Destination]]) -> None:
    for destinations in old:
        for destination in destinations:
            if isinstance(destination, NatsDestination) and _LOOP.owner_pid() == os.getpid():
                try:
                    _LOOP.run(destination._drop(), 2.0)
                except Exception:  # best effort: the connection is being thrown away
                    logger.debug("closing %s failed", destination.name, exc_info=True)
