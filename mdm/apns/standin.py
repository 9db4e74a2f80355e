"""A local APNs stand-in: an HTTP/2 + TLS server that answers MDM pushes the way APNs does.

There is no Apple account or network in development and CI, yet the push path (TLS client
authentication, HTTP/2, topic checks, APNs error answers) is exactly what breaks in production.
So the tests, the device simulator and `make run` push to this server for real instead of mocking
the client. It speaks HTTP/2 only (ALPN "h2", via the `h2` library), requires a client certificate
from the dev CA, takes the allowed topic from that certificate's UID like APNs does, and records
every accepted push for whoever is waiting for it.

Run it by hand with the dev bundle written by `manage.py mdm setup --dev`:

    python -m mdm.apns.standin --dir DIR [--port 2197]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import json
import logging
import re
import signal
import ssl
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from cryptography import x509

from .certificate import PushCertificateError, load_dev_bundle, topic_of
from .client import is_valid_token, token_prefix
from .tls import server_context

__all__ = ["MAX_PAYLOAD_BYTES", "ApnsStandIn", "ConnectionInfo", "Push", "main"]

logger = logging.getLogger(__name__)

#: APNs' limit for a notification payload; an MDM payload is ~60 bytes.
MAX_PAYLOAD_BYTES = 4096
_PATH = re.compile(r"/3/device/([^/?#]*)")


@dataclass
class Push:
    """One push the stand-in accepted (answered 200)."""

    token_hex: str
    push_magic: str = field(repr=False)
    topic: str
    received_at: dt.datetime
    connection_id: int = 0


@dataclass
class ConnectionInfo:
    """One TLS connection that completed its handshake (client certificate accepted)."""

    connection_id: int
    alpn_protocol: str | None
    client_topic: str | None
    opened_at: dt.datetime


@dataclass
class _Verdict:
    status: int
    reason: str = ""
    token_hex: str = ""
    push_magic: str = ""
    topic: str = ""


@dataclass
class _Stream:
    headers: list[tuple[str, str]]
    body: bytearray = field(default_factory=bytearray)
    too_large: bool = False

    def add(self, data: bytes) -> None:
        if len(self.body) + len(data) > MAX_PAYLOAD_BYTES:
            self.too_large = True
        else:
            self.body.extend(data)


class ApnsStandIn:
    """The stand-in server; `start()` serves from a daemon thread, `stop()` shuts it down.

    `tokens_unregistered` (hex tokens, any case) are answered 410 Unregistered, as APNs answers for
    a Mac that was wiped or unenrolled. `on_push` runs on the server thread for each accepted push:
    keep it short.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        server_cert_pem: bytes,
        server_key_pem: bytes,
        client_ca_pem: bytes,
        on_push: Callable[[Push], None] | None = None,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._ssl = server_context(server_cert_pem, server_key_pem, client_ca_pem)
        self.on_push = on_push
        self.tokens_unregistered: set[str] = set()
        self._cond = threading.Condition()
        self._pushes: list[Push] = []
        self._connections: list[ConnectionInfo] = []
        self._connection_ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._live: dict[asyncio.Task, tuple[h2.connection.H2Connection, asyncio.StreamWriter]] = {}

    @classmethod
    def from_dev_dir(cls, directory: Path, **kwargs) -> ApnsStandIn:
        """A stand-in using the CA and server certificate stored by `write_dev_bundle`."""
        material = load_dev_bundle(directory)
        return cls(
            server_cert_pem=material.server_cert_pem,
            server_key_pem=material.server_key_pem,
            client_ca_pem=material.ca_cert_pem,
            **kwargs,
        )

    # --- what arrived -------------------------------------------------------------------------------

    @property
    def pushes(self) -> list[Push]:
        """A snapshot of the accepted pushes, oldest first."""
        with self._cond:
            return list(self._pushes)

    @property
    def connections(self) -> list[ConnectionInfo]:
        """A snapshot of the connections that completed a TLS handshake."""
        with self._cond:
            return list(self._connections)

    def clear(self) -> None:
        """Forget recorded pushes and connections (between test steps)."""
        with self._cond:
            self._pushes.clear()
            self._connections.clear()

    def wait_for(self, predicate: Callable[[Push], bool] | None = None, timeout: float = 5.0) -> Push | None:
        """The first recorded push matching `predicate` (any push when None), waiting up to `timeout`
        seconds for one to arrive; None on timeout."""
        match = predicate or (lambda _push: True)
        with self._cond:
            found: list[Push] = []

            def ready() -> bool:
                found[:] = [p for p in self._pushes if match(p)][:1]
                return bool(found)

            self._cond.wait_for(ready, timeout=timeout)
            return found[0] if found else None

    # --- lifecycle ----------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the APNs stand-in is not started")
        return self._port

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"https://{host}:{self.port}"

    def start(self) -> ApnsStandIn:
        """Listen (in a daemon thread); returns once the socket accepts connections."""
        if self._thread is not None:
            return self
        self._ready.clear()
        self._startup_error = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="apns-standin", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=10)
        if self._startup_error is not None or self._port is None:
            self._thread.join(timeout=5)
            self._thread = self._loop = None
            raise self._startup_error or RuntimeError("the APNs stand-in did not start")
        logger.info("APNs stand-in listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Close the listening socket and every connection, then join the thread. Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            try:
                future.result(timeout=5)
            except Exception:
                logger.warning("APNs stand-in: unclean shutdown", exc_info=True)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        self._loop = self._thread = self._server = None
        self._port = None

    def __enter__(self) -> ApnsStandIn:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(_quiet_exception_handler)
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(
                    self._handle, self.host, self._requested_port, ssl=self._ssl, ssl_handshake_timeout=10
                )
            )
            self._port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:  # e.g. the port is taken: report it to start()
            self._startup_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn, writer in list(self._live.values()):  # a GOAWAY tells clients to reconnect later
            with contextlib.suppress(Exception):
                conn.close_connection()
                writer.write(conn.data_to_send())
        tasks = list(self._live)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # --- one connection -----------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self._live[task] = (conn, writer)
        try:
            await self._serve(conn, reader, writer)
        except asyncio.CancelledError:
            pass
        except (OSError, EOFError) as exc:
            logger.debug("APNs stand-in: connection ended: %s", exc)
        except Exception:
            logger.exception("APNs stand-in: error on a connection")
        finally:
            self._live.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), timeout=1)

    async def _serve(
        self, conn: h2.connection.H2Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object else None
        client_topic = _client_topic(ssl_object)
        with self._cond:
            connection_id = next(self._connection_ids)
            self._connections.append(ConnectionInfo(connection_id, alpn, client_topic, _now()))
        if alpn != "h2":
            return  # APNs speaks HTTP/2 only
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        streams: dict[int, _Stream] = {}
        while True:
            data = await reader.read(65536)
            if not data:
                return
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                writer.write(conn.data_to_send())  # h2 queued a GOAWAY
                await writer.drain()
                return
            terminated = False
            for event in events:
                if isinstance(event, h2.events.RequestReceived):
                    streams[event.stream_id] = _Stream(headers=list(event.headers))
                elif isinstance(event, h2.events.DataReceived):
                    with contextlib.suppress(h2.exceptions.StreamClosedError):
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    if event.stream_id in streams:
                        streams[event.stream_id].add(event.data)
                elif isinstance(event, h2.events.StreamEnded):
                    stream = streams.pop(event.stream_id, None)
                    if stream is not None:
                        self._answer(conn, event.stream_id, stream, client_topic, connection_id)
                elif isinstance(event, h2.events.StreamReset):
                    streams.pop(event.stream_id, None)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    terminated = True
            outgoing = conn.data_to_send()
            if outgoing:
                writer.write(outgoing)
                await writer.drain()
            if terminated:
                return

    def _answer(
        self,
        conn: h2.connection.H2Connection,
        stream_id: int,
        stream: _Stream,
        client_topic: str | None,
        connection_id: int,
    ) -> None:
        verdict = self._judge(stream, client_topic)
        apns_id = next((v for k, v in stream.headers if k == "apns-id"), "") or str(uuid.uuid4())
        headers = [(":status", str(verdict.status)), ("apns-id", apns_id)]
        body = b""
        if verdict.status != 200:
            error: dict[str, object] = {"reason": verdict.reason}
            if verdict.status == 410:
                error["timestamp"] = int(_now().timestamp() * 1000)
            body = json.dumps(error).encode()
            headers += [("content-type", "application/json"), ("content-length", str(len(body)))]
        try:
            conn.send_headers(stream_id, headers, end_stream=not body)
            if body:
                conn.send_data(stream_id, body, end_stream=True)
        except h2.exceptions.StreamClosedError:
            return
        if verdict.status == 200:
            self._record(Push(verdict.token_hex, verdict.push_magic, verdict.topic, _now(), connection_id))
        else:
            logger.debug(
                "APNs stand-in: %s %s for %s", verdict.status, verdict.reason, token_prefix(verdict.token_hex)
            )

    def _judge(self, stream: _Stream, client_topic: str | None) -> _Verdict:
        """Check a request as APNs would for an MDM push, answering with APNs' status and reason."""
        names = [name for name, _ in stream.headers]
        if len(names) != len(set(names)):
            return _Verdict(400, "DuplicateHeaders")
        headers = dict(stream.headers)
        if headers.get(":method") != "POST":
            return _Verdict(405, "MethodNotAllowed")
        match = _PATH.fullmatch(headers.get(":path", ""))
        if match is None:
            return _Verdict(404, "BadPath")
        token = match.group(1)
        if not token:
            return _Verdict(400, "MissingDeviceToken")
        if not is_valid_token(token):
            return _Verdict(400, "BadDeviceToken")
        if client_topic is None:
            return _Verdict(403, "BadCertificate", token)
        topic = headers.get("apns-topic")
        if not topic:
            return _Verdict(400, "MissingTopic", token)
        if topic != client_topic:
            return _Verdict(400, "TopicDisallowed", token)
        if headers.get("apns-push-type", "mdm") != "mdm":
            return _Verdict(400, "InvalidPushType", token)
        if headers.get("apns-priority", "10") not in ("1", "5", "10"):
            return _Verdict(400, "BadPriority", token)
        if not headers.get("apns-expiration", "0").isdigit():
            return _Verdict(400, "BadExpirationDate", token)
        if stream.too_large:
            return _Verdict(413, "PayloadTooLarge", token)
        if not stream.body:
            return _Verdict(400, "PayloadEmpty", token)
        try:
            magic = json.loads(stream.body).get("mdm")
        except (ValueError, AttributeError):
            magic = None
        if not isinstance(magic, str) or not magic:
            # Not an Apple reason: APNs forwards any JSON, but an MDM push without PushMagic is a bug.
            return _Verdict(400, "BadPayload", token)
        if token.lower() in {t.lower() for t in set(self.tokens_unregistered)}:
            return _Verdict(410, "Unregistered", token)
        return _Verdict(200, "", token, magic, topic)

    def _record(self, push: Push) -> None:
        with self._cond:
            self._pushes.append(push)
            self._cond.notify_all()
        logger.debug("APNs stand-in: push for %s", token_prefix(push.token_hex))
        if self.on_push is not None:
            try:
                self.on_push(push)
            except Exception:
                logger.exception("APNs stand-in: on_push callback failed")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _client_topic(ssl_object: ssl.SSLObject | None) -> str | None:
    """The topic the client certificate allows (its UID), as APNs derives it; None when absent."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
    if not der:
        return None
    try:
        return topic_of(x509.load_der_x509_certificate(der))
    except (ValueError, PushCertificateError):
        return None


def _quiet_exception_handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """Failed handshakes (a client with the wrong certificate) are expected here, not errors."""
    exc = context.get("exception")
    if isinstance(exc, OSError | EOFError):
        logger.debug("APNs stand-in: %s: %s", context.get("message"), exc)
    else:
        loop.default_exception_handler(context)


# --- command line ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Serve the stand-in in the foreground until interrupted (Ctrl-C or SIGTERM)."""
    parser = argparse.ArgumentParser(prog="python -m mdm.apns.standin", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, type=Path, help="directory written by `mdm setup --dev`")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2197, help="0 picks a free port (default 2197)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    def show(push: Push) -> None:
        sys.stdout.write(f"push topic={push.topic} token={token_prefix(push.token_hex)}\n")
        sys.stdout.flush()

    try:
        standin = ApnsStandIn.from_dev_dir(args.dir, host=args.host, port=args.port, on_push=show)
        standin.start()
    except (PushCertificateError, OSError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    sys.stdout.write(f"{standin.url}\n")
    sys.stdout.flush()
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
