"""The APNs HTTP/2 client that wakes Macs up for MDM ("go check in, there are commands").

Design: one `httpx.AsyncClient(http2=True)` limited to a single connection lives on a private event
loop in a daemon thread owned by the `ApnsClient`; `push()` hands each batch to that loop and blocks
until every target has an outcome. Why this shape:

* Concurrency without threads per push: the pushes of a batch are `asyncio.gather`ed, so they go out
  as parallel HTTP/2 streams multiplexed over ONE TLS connection (APNs allows ~1000 streams), not
  one thread each.
* The connection outlives a call. Apple asks providers to keep connections open and treats rapid
  connect/disconnect as abuse; a fresh `asyncio.run` per call would need a fresh client (an async
  client is tied to its loop) and so a fresh TLS handshake every time.
* `push()` stays a plain blocking call that works from any thread, including one that already runs
  an event loop (where `asyncio.run` would raise).

Network failures never raise: every target gets a `PushOutcome`. Status 0 means no HTTP response
(reason "connection failed: ..."). Logs carry at most the first 8 hex chars of a token and never
the PushMagic or key material.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType

import httpx

from . import redact
from .tls import client_context

__all__ = [
    "CHUNK_SIZE",
    "PRODUCTION_URL",
    "ApnsClient",
    "PushOutcome",
    "PushTarget",
    "is_valid_token",
    "token_prefix",
]

logger = logging.getLogger(__name__)
redact.install()  # httpx logs request URLs, which hold the full device token

PRODUCTION_URL = "https://api.push.apple.com"
#: APNs keeps an undeliverable push this long (the Mac may be asleep or offline).
EXPIRATION_SECONDS = 24 * 60 * 60
#: Pushes sent per round; bounds memory and in-flight streams for very large fleets.
CHUNK_SIZE = 500
MAX_TOKEN_HEX = 200
_HEX = re.compile(r"[0-9a-fA-F]+")
#: Answers after which the same push may succeed later; everything else is final for that token.
_RETRYABLE_STATUSES = frozenset({0, 429, 500, 503})


def token_prefix(token_hex: str) -> str:
    """The loggable part of a device token (first 8 hex chars)."""
    return f"{token_hex[:8]}…"


def is_valid_token(token_hex: str) -> bool:
    """A device token as APNs accepts it in the path: non-empty hex, whole bytes, at most 200 chars."""
    return (
        isinstance(token_hex, str)
        and 0 < len(token_hex) <= MAX_TOKEN_HEX
        and len(token_hex) % 2 == 0
        and _HEX.fullmatch(token_hex) is not None
    )


@dataclass(frozen=True)
class PushTarget:
    """One Mac to wake: its APNs token (hex) and the PushMagic it gave at TokenUpdate."""

    token_hex: str
    push_magic: str = field(repr=False)

    def __repr__(self) -> str:  # never the full token or the magic, even in a traceback
        return f"PushTarget(token={token_prefix(self.token_hex)})"


@dataclass
class PushOutcome:
    """What became of one push. `status` is the HTTP status, or 0 when no response came back."""

    token_hex: str
    ok: bool
    status: int
    reason: str
    apns_id: str

    def __repr__(self) -> str:
        return (
            f"PushOutcome(token={token_prefix(self.token_hex)}, ok={self.ok}, status={self.status}, "
            f"reason={self.reason!r}, apns_id={self.apns_id!r})"
        )

    @property
    def retryable(self) -> bool:
        """True when trying again later may succeed (connection trouble, throttling, APNs outage)."""
        return not self.ok and self.status in _RETRYABLE_STATUSES

    @property
    def token_dead(self) -> bool:
        """True when APNs says this token will never work again; stop pushing to it."""
        return self.status == 410 or self.reason == "BadDeviceToken"


class _LoopThread:
    """An event loop running forever in a daemon thread, plus the HTTP client that lives on it."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.http: httpx.AsyncClient | None = None
        self.thread = threading.Thread(target=self._run, name="apns-client", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def stop(self, timeout: float) -> None:
        if self.http is not None:
            future = asyncio.run_coroutine_threadsafe(self.http.aclose(), self.loop)
            try:
                future.result(timeout=timeout)
            except Exception:  # closing is best effort; the thread is a daemon anyway
                logger.debug("APNs client: error while closing the connection", exc_info=True)
        # Pushes still in flight on other threads end now (as "client closed"), not at their deadline.
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_cancel_other_tasks(), self.loop).result(timeout=timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout)


async def _cancel_other_tasks() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class ApnsClient:
    """Sends MDM pushes to APNs (or the local stand-in) over one HTTP/2 connection.

    `cert_pem`/`key_pem` are the push certificate and its key (TLS client authentication), `topic`
    the certificate's UID. `ca_file` replaces system trust, for the stand-in's private CA.
    Construction raises `PushCertificateError` when the certificate and key cannot be loaded.
    """

    def __init__(
        self,
        *,
        base_url: str,
        cert_pem: bytes,
        key_pem: bytes,
        topic: str,
        ca_file: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        url = httpx.URL(base_url)
        if url.scheme != "https" or not url.host:
            raise ValueError(f"APNs base URL must be https://host[:port], not {base_url!r}")
        if not topic:
            raise ValueError("an APNs topic is required (the push certificate's UID)")
        self._base_url = str(url.copy_with(path="/", query=None, fragment=None)).rstrip("/")
        self._topic = topic
        self._timeout = timeout
        self._ssl = client_context(cert_pem, key_pem, str(ca_file) if ca_file else None)
        self._lock = threading.Lock()
        self._runner: _LoopThread | None = None
        self._closed = False

    @property
    def topic(self) -> str:
        return self._topic

    # --- public API ---------------------------------------------------------------------------------

    def push(self, targets: Iterable[PushTarget]) -> list[PushOutcome]:
        """Push to every target; outcomes come back in the order of `targets`, one each, never raising
        for network or APNs errors. Invalid tokens are answered locally (400 BadDeviceToken, as APNs
        would) and empty PushMagic likewise (400 PayloadEmpty): neither goes on the wire."""
        if self._closed:
            raise RuntimeError("this ApnsClient is closed")
        targets = list(targets)
        outcomes: list[PushOutcome | None] = [None] * len(targets)
        to_send: list[int] = []
        for index, target in enumerate(targets):
            if not is_valid_token(target.token_hex):
                outcomes[index] = PushOutcome(str(target.token_hex), False, 400, "BadDeviceToken", "")
            elif not isinstance(target.push_magic, str) or not target.push_magic:
                outcomes[index] = PushOutcome(target.token_hex, False, 400, "PayloadEmpty", "")
            else:
                to_send.append(index)
        for start in range(0, len(to_send), CHUNK_SIZE):
            chunk = to_send[start : start + CHUNK_SIZE]
            for index, outcome in zip(chunk, self._push_chunk([targets[i] for i in chunk]), strict=True):
                outcomes[index] = outcome
        done = [o for o in outcomes if o is not None]
        _log_summary(done)
        return done

    def close(self) -> None:
        """Close the connection and stop the loop thread. Idempotent."""
        with self._lock:
            self._closed = True
            runner, self._runner = self._runner, None
        if runner is not None and runner.pid == os.getpid():
            runner.stop(timeout=5.0)

    def __enter__(self) -> ApnsClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- internals ----------------------------------------------------------------------------------

    def _runner_for_call(self) -> _LoopThread:
        with self._lock:
            if self._closed:
                raise RuntimeError("this ApnsClient is closed")
            # After a fork (e.g. a prefork worker pool) the parent's loop thread does not exist here.
            if self._runner is None or self._runner.pid != os.getpid():
                self._runner = _LoopThread()
            return self._runner

    def _push_chunk(self, targets: Sequence[PushTarget]) -> list[PushOutcome]:
        runner = self._runner_for_call()
        results: dict[int, PushOutcome] = {}
        future = asyncio.run_coroutine_threadsafe(self._send_all(runner, targets, results), runner.loop)
        # httpx bounds each phase (connect, write, read, pool wait); this bounds the whole round.
        deadline = self._timeout * 4 + 5.0
        failure = "connection failed: timed out"
        try:
            future.result(timeout=deadline)
        except concurrent.futures.TimeoutError:
            future.cancel()
        except concurrent.futures.CancelledError:
            failure = "connection failed: client closed"
        except Exception as exc:  # a bug rather than the network; still answer every target
            logger.exception("APNs client: unexpected error while pushing")
            failure = f"connection failed: {type(exc).__name__}"
        return [
            results.get(i) or PushOutcome(t.token_hex, False, 0, failure, "") for i, t in enumerate(targets)
        ]

    def _http(self, runner: _LoopThread) -> httpx.AsyncClient:
        """The runner's client, created on its loop (an async client belongs to one loop)."""
        if runner.http is None:
            runner.http = httpx.AsyncClient(
                http2=True,
                verify=self._ssl,
                timeout=httpx.Timeout(self._timeout),
                # One connection: every stream multiplexes over it (see the module docstring).
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=300),
                # Proxies from the environment must not silently reroute (or break) TLS client auth.
                trust_env=False,
            )
        return runner.http

    async def _send_all(
        self, runner: _LoopThread, targets: Sequence[PushTarget], results: dict[int, PushOutcome]
    ) -> None:
        http = self._http(runner)
        expiration = str(int(time.time()) + EXPIRATION_SECONDS)

        async def send(index: int, target: PushTarget) -> None:
            results[index] = await self._send_one(http, target, expiration)

        await asyncio.gather(*(send(i, t) for i, t in enumerate(targets)))

    async def _send_one(self, http: httpx.AsyncClient, target: PushTarget, expiration: str) -> PushOutcome:
        token = target.token_hex.lower()
        headers = {
            "apns-topic": self._topic,
            "apns-push-type": "mdm",
            "apns-priority": "10",
            "apns-expiration": expiration,
            "content-type": "application/json",
        }
        body = json.dumps({"mdm": target.push_magic}, separators=(",", ":")).encode()
        try:
            response = await http.post(f"{self._base_url}/3/device/{token}", content=body, headers=headers)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # httpx.HTTPError, ssl/OS errors, h2 surprises: all "no response"
            detail = _describe_error(exc)
            detail = redact.redact(detail.replace(token, token_prefix(token)))[:300]
            return PushOutcome(target.token_hex, False, 0, f"connection failed: {detail}", "")
        apns_id = response.headers.get("apns-id", "")
        if response.status_code == 200:
            return PushOutcome(target.token_hex, True, 200, "", apns_id)
        return PushOutcome(target.token_hex, False, response.status_code, _reason(response), apns_id)


def _describe_error(exc: BaseException) -> str:
    """`Type: message`, taking the message from the cause when httpx wraps one without a message
    (a refused client certificate surfaces as a bare WriteError caused by the TLS alert)."""
    message, cause = str(exc), exc.__cause__ or exc.__context__
    for _ in range(5):
        if message or cause is None:
            break
        message, cause = str(cause), cause.__cause__ or cause.__context__
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _reason(response: httpx.Response) -> str:
    try:
        reason = response.json().get("reason")
    except (ValueError, AttributeError):
        reason = None
    return reason if isinstance(reason, str) and reason else f"HTTP {response.status_code}"


def _log_summary(outcomes: list[PushOutcome]) -> None:
    failed = [o for o in outcomes if not o.ok]
    if not failed:
        if outcomes:
            logger.info("APNs: %d pushes sent", len(outcomes))
        return
    reasons = Counter(": ".join(o.reason.split(": ")[:2]) if o.status == 0 else o.reason for o in failed)
    logger.warning(
        "APNs: %d of %d pushes failed (%s)",
        len(failed),
        len(outcomes),
        ", ".join(f"{reason}: {count}" for reason, count in reasons.most_common()),
    )
    for outcome in failed[:20]:
        logger.debug(
            "APNs push to %s failed: %s %s", token_prefix(outcome.token_hex), outcome.status, outcome.reason
        )
