"""Django's WSGI handler behind an ASGI server, at most one thread hop per request (embedded default).

Why: Django's own ASGI handler costs several times more CPU per request than its WSGI handler
(every sync middleware hops between the event loop and a thread, and request bodies are spooled
through extra threads; measured here: 3.0 ms per check-in under daphne, 0.8 ms under gunicorn).
``make run`` still needs WebSockets (live queries, task agents) and one process that holds the
in-process channel layer, cache and live-query store, so it serves everything from one ASGI
server (uvicorn: C parser, uvloop) and hands each HTTP request, whole, to the WSGI handler in a
worker thread: one hop, and the request runs the same code as in production (``fleet.wsgi``).

osquery's requests (every host, every few seconds) skip the hop: with an ``inline`` rule that
matches them, they run on the event loop's own thread. A process has one core's worth of Python,
and handing each request to a thread and back cost more in GIL handoffs than the request itself
(``make bench-embedded`` at 5,000 hosts: p99 1.5 s and 0.76 ms of server CPU per request with
agent threads, p99 50 ms and 0.53 ms inline). The loop waits meanwhile, so only requests that never wait on
the network may be inline (:func:`fleet.embedded_asgi.inline_rule`); a streamed answer is joined
there too.

Other agent requests run on a few threads of their own: more threads only stretch every request
and starve the event loop. When the fleet asks for more than that core gives, an agent request
that has already waited ``shed_after`` seconds for an agent thread is answered 503 without
running Django: its agent has given up or soon will (osquery waits 16 s) and retries on its own
schedule, and work spent on it would only make the next request wait longer. The console and the
REST API keep their own pool, so an administrator is not queued behind the fleet.

The threads come from ``sync_to_async(thread_sensitive=False)``, so code in a view that publishes
to the channel layer (:func:`fleet.inline_loop.call_async`: ``async_to_sync`` from a thread, a
task when inline) runs it on the server's own event loop, where the WebSocket consumers' queues
live. Bodies are read whole, up to ``MAX_BODY`` (larger: 413 before
Django runs); responses are sent whole, or chunk by chunk when Django streams them.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import sync_to_async

from fleet.agent_admission import BUSY_BODY, RETRY_AFTER_SECONDS
from fleet.inline_loop import running_inline

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

MAX_BODY = 64 * 1024 * 1024  # above every limit the views apply themselves (they answer 413 too)
STREAM_CHUNKS_PER_HOP = 16  # a streamed response's chunks fetched per thread hop


def environ_for(scope: Scope, body: bytes) -> dict[str, Any]:
    """The WSGI environ (PEP 3333) of an ASGI HTTP request."""
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client") or ("", 0)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope.get("root_path", "").encode("utf-8").decode("latin-1"),
        "PATH_INFO": scope["path"].encode("utf-8").decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1] or 80),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "REMOTE_ADDR": str(client[0]),
        "REMOTE_PORT": str(client[1]),
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        if name == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
            continue
        if name == "CONTENT_LENGTH":
            continue  # the body read is what counts
        key = f"HTTP_{name}"
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


class _Response:
    """What the WSGI application answered: status, headers, and the body (whole or streamed)."""

    def __init__(self) -> None:
        self.status = 500
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.chunks: Iterator[bytes] | None = None
        self.closer: Callable[[], None] | None = None

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
        self.status = int(status.split(" ", 1)[0])
        self.headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        return lambda data: None  # the legacy write() callable; Django never uses it


JSON_HEADERS = [(b"content-type", b"application/json")]


class WSGIBridge:
    """An ASGI application (HTTP only) serving a WSGI application: requests that ``inline`` accepts
    on the event loop's thread, those under ``agent_prefixes`` on the agent pool (shed when they
    waited ``shed_after`` seconds), the rest on the main pool."""

    def __init__(
        self,
        application: Callable[..., Iterable[bytes]],
        threads: int = 16,
        *,
        agent_threads: int = 4,
        agent_prefixes: tuple[str, ...] = (),
        inline: Callable[[str], bool] | None = None,
        shed_after: float = 8.0,
        on_shed: Callable[[str], None] | None = None,
    ) -> None:
        self.application = application
        self.agent_prefixes = agent_prefixes
        self.shed_after = shed_after
        self.on_shed = on_shed
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="wsgi")
        self._call = sync_to_async(self._call_application, thread_sensitive=False, executor=self.executor)
        self.inline = inline
        agents = ThreadPoolExecutor(max_workers=agent_threads, thread_name_prefix="wsgi-agent")
        self._call_agent = sync_to_async(
            self._call_agent_application, thread_sensitive=False, executor=agents
        )
        self._next = sync_to_async(self._next_chunks, thread_sensitive=False, executor=self.executor)
        self._close = sync_to_async(self._close_response, thread_sensitive=False, executor=self.executor)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"WSGIBridge serves HTTP only, not {scope['type']}")
        arrived = time.monotonic()
        body = await self._read_body(receive)
        if body is None:
            await self._send_whole(send, 413, JSON_HEADERS, b'{"message": "request body too large"}')
            return
        path = scope["path"]
        if self.inline is not None and self.inline(path):
            response = self._call_inline(environ_for(scope, body))
        elif self.agent_prefixes and path.startswith(self.agent_prefixes):
            response = await self._call_agent(environ_for(scope, body), arrived)
        else:
            response = await self._call(environ_for(scope, body))
        if response.chunks is None:
            await self._send_whole(send, response.status, response.headers, response.body)
            return
        closed = False
        try:
            await send(
                {"type": "http.response.start", "status": response.status, "headers": response.headers}
            )
            while True:
                chunks = await self._next(response)
                for chunk in chunks:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if len(chunks) < STREAM_CHUNKS_PER_HOP:
                    break
            # Closed (Django's request ends) before the client is told the response is complete.
            await self._close(response)
            closed = True
            await send({"type": "http.response.body", "body": b""})
        finally:
            if not closed:
                await self._close(response)

    @staticmethod
    async def _read_body(receive: Receive) -> bytes | None:
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"".join(parts)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                return None
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)

    @staticmethod
    async def _send_whole(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _call_inline(self, environ: dict[str, Any]) -> _Response:
        """On the event loop's own thread: the whole request, a streamed body joined here too (a
        request's database connection belongs to the thread that ran it)."""
        with running_inline():
            response = self._call_application(environ)
            if response.chunks is not None:
                try:
                    response.body = b"".join(bytes(chunk) for chunk in response.chunks)
                finally:
                    response.chunks = None
                    self._close_response(response)
        return response

    def _call_agent_application(self, environ: dict[str, Any], arrived: float) -> _Response:
        """In an agent thread: 503 if the request waited too long for it, else run it."""
        if time.monotonic() - arrived > self.shed_after:
            if self.on_shed is not None:
                self.on_shed(environ["PATH_INFO"])
            response = _Response()
            response.status = 503
            response.headers = [*JSON_HEADERS, (b"retry-after", str(RETRY_AFTER_SECONDS).encode())]
            response.body = BUSY_BODY
            return response
        return self._call_application(environ)

    def _call_application(self, environ: dict[str, Any]) -> _Response:
        """In a worker thread: run the request; an ordinary response is joined and closed here
        (closing it is what ends Django's request: signals, database connections)."""
        response = _Response()
        result = self.application(environ, response.start_response)
        if getattr(result, "streaming", False) or not hasattr(result, "content"):
            response.chunks = iter(result)
            response.closer = getattr(result, "close", None)
            return response
        try:
            response.body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return response

    @staticmethod
    def _next_chunks(response: _Response) -> list[bytes]:
        assert response.chunks is not None
        chunks = []
        for chunk in response.chunks:
            if chunk:
                chunks.append(bytes(chunk))
            if len(chunks) >= STREAM_CHUNKS_PER_HOP:
                break
        return chunks

    @staticmethod
    def _close_response(response: _Response) -> None:
        if response.closer is not None:
            response.closer()
