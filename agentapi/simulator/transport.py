"""HTTP(S) for the agents: one shared aiohttp session, JSON POSTs with osquery's headers.

Why shared: thousands of agents in one process cannot each hold a connection pool; a single
connector with a bounded number of keep-alive connections gives the server a realistic stream
of requests without exhausting file descriptors. The ``Transport`` protocol lets tests swap in
a fake server without sockets.
"""

from __future__ import annotations

import gzip
import json
import ssl
from typing import Any, Protocol

import aiohttp

from agentapi.simulator.protocol import REQUEST_TIMEOUT


class TransportError(Exception):
    """The request did not get a response (refused, reset, timed out, TLS failure)."""


class Transport(Protocol):
    async def post(
        self, path: str, body: dict[str, Any], headers: dict[str, str], compress: bool = False
    ) -> tuple[int, bytes]:
        """POST ``body`` as JSON to ``path``; return (status, raw body) or raise TransportError."""
        ...


def ssl_context(insecure: bool = False, ca_file: str | None = None) -> ssl.SSLContext | bool | None:
    """aiohttp's ``ssl`` argument: verify with ``ca_file``, skip checks, or use system defaults."""
    if insecure:
        return False
    if ca_file:
        context = ssl.create_default_context(cafile=ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2  # what osquery accepts
        return context
    return None


def encode(body: dict[str, Any], compress: bool = False) -> bytes:
    data = json.dumps(body, separators=(",", ":")).encode()
    return gzip.compress(data, compresslevel=9) if compress else data


def open_session(ssl_context: ssl.SSLContext | None, connections: int) -> aiohttp.ClientSession:
    """The simulator's HTTP session: ``connections`` kept-alive connections, its own User-Agent
    per request, the request timeout every simulated agent uses."""
    verify = ssl_context if ssl_context is not None else True
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, ssl=verify, keepalive_timeout=30),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
        skip_auto_headers=("User-Agent",),
    )


class HttpTransport:
    """Sends requests to ``base_url`` through one aiohttp session (create it inside a running loop)."""

    def __init__(
        self, base_url: str, *, connections: int = 100, insecure: bool = False, ca_file: str | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._ssl = ssl_context(insecure, ca_file)
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HttpTransport:
        self._session = open_session(self._ssl, self._connections)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(
        self, path: str, body: dict[str, Any], headers: dict[str, str], compress: bool = False
    ) -> tuple[int, bytes]:
        if self._session is None:
            raise RuntimeError("HttpTransport used outside 'async with'")
        all_headers = {"Content-Type": "application/json", "Accept": "application/json", **headers}
        if compress:
            all_headers["Content-Encoding"] = "gzip"
        try:
            async with self._session.post(
                self.base_url + path, data=encode(body, compress), headers=all_headers
            ) as response:
                return response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError, OSError) as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
