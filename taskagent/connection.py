"""The agent's WebSocket to the server (aiohttp): connect, stay connected, come back.

Fixes to the original client (task-server.md §3, §6), each deliberate:

* Reconnects back off exponentially with jitter, 1 s → 60 s, reset once a session got its
  ``welcome``; the original retried every second and gave up (exited) if the first connect failed.
  Here the first connect is retried like any other: tasks already held keep running meanwhile.
* Heartbeats go both ways: the agent sends one every ``heartbeat_interval`` (from ``welcome``;
  ``DEFAULT_HEARTBEAT`` before it), and a connection on which no frame arrived for three intervals
  is taken as dead and replaced. The original had no read deadline, so a half-open socket
  looked alive forever.
* Every frame goes through ``protocol.parse``; a malformed frame, a binary one or an unknown type
  is logged and ignored (counted in ``connection.malformed``/``connection.unknown``). The original
  died on one.
* Messages are handled one at a time, in order, by a synchronous ``on_message``; the original ran
  each handler in its own goroutine, so a ``task_remove`` could overtake its ``task_add``.

The agent key travels in the ``Authorization`` header only (never in the URL, which proxies log).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from taskagent import protocol
from taskagent.backoff import Backoff
from taskagent.stats import Stats

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT = 15.0
DEAD_AFTER = 3  # heartbeat intervals without any frame


class NotConnected(ConnectionError):
    pass


def agent_url(server: str) -> str:
    """``<server>/ws/agent/`` as a ws:// or wss:// URL (http(s):// accepted for the server)."""
    parts = urlsplit(server if "://" in server else f"https://{server}")
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.hostname:
        raise ValueError(f"server URL {server!r} must be http(s):// or ws(s):// with a host")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws/agent/", "", ""))


class Connection:
    def __init__(
        self, server: str, key: str, name: str, *, tags: list[str] | None = None, version: str = "",
        on_message: Callable[[protocol.Message], None] | None = None,
        on_connect: Callable[[], None] | None = None,
        ssl: Any = True, stats: Stats | None = None, backoff: Backoff | None = None,
        default_heartbeat: float = DEFAULT_HEARTBEAT, host_uuid: str = "",
    ) -> None:
        self.url = agent_url(server)
        self.headers = {
            "Authorization": f"Bearer {key}",
            "X-Fleet-Agent-Name": name,
            "X-Fleet-Agent-Tags": ",".join(tags or []),
            "X-Fleet-Agent-Version": version,
        }
        if host_uuid:  # ties the agent to the enrolled host with this hardware UUID (byLabels routes)
            self.headers["X-Fleet-Host-UUID"] = host_uuid
        self.on_message = on_message or (lambda message: None)
        self.on_connect = on_connect or (lambda: None)
        self.ssl = ssl
        self.stats = stats or Stats()
        self.backoff = backoff or Backoff(1.0, 60.0)
        self.heartbeat_interval = default_heartbeat
        self._default_heartbeat = default_heartbeat
        self.welcome: dict[str, Any] | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._stopping = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    async def send_text(self, text: str) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            raise NotConnected("not connected to the server")
        try:
            await ws.send_str(text)
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            raise NotConnected(str(exc)) from exc

    async def send_metrics(self, metrics: list[dict[str, Any]]) -> None:
        await self.send_text(protocol.metrics_message(metrics))

    async def stop(self) -> None:
        self._stopping.set()
        ws = self._ws
        if ws is not None and not ws.closed:
            await ws.close()

    async def run(self) -> None:
        """Connect and reconnect until ``stop``."""
        async with aiohttp.ClientSession() as session:
            while not self._stopping.is_set():
                try:
                    await self._session(session)
                except asyncio.CancelledError:
                    raise
                except aiohttp.WSServerHandshakeError as exc:
                    self.stats.inc("connection.failures")
                    if exc.status in (401, 403):
                        log.error("the server refused this agent (HTTP %s): check the agent key", exc.status)
                    else:
                        log.warning("WebSocket handshake with %s failed: HTTP %s", self.url, exc.status)
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    self.stats.inc("connection.failures")
                    log.warning("connection to %s failed: %s", self.url, exc or type(exc).__name__)
                finally:
                    self._ws = None
                if self._stopping.is_set():
                    break
                delay = self.backoff.next()
                log.info("reconnecting in %.1f s", delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)

    async def _session(self, session: aiohttp.ClientSession) -> None:
        self.heartbeat_interval = self._default_heartbeat
        ws = await session.ws_connect(
            self.url, headers=self.headers, ssl=self.ssl, autoping=True, heartbeat=None,
            max_msg_size=4 * protocol.MAX_FRAME_BYTES, timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
        )
        self._ws = ws
        self.stats.inc("connection.connects")
        log.info("connected to %s", self.url)
        beats = asyncio.get_running_loop().create_task(self._heartbeats(ws), name="heartbeats")
        try:
            self.on_connect()
            await self._receive(ws)
        finally:
            beats.cancel()
            await asyncio.gather(beats, return_exceptions=True)
            if not ws.closed:
                await ws.close()
            log.info("disconnected from %s", self.url)

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            try:
                frame = await ws.receive(timeout=DEAD_AFTER * self.heartbeat_interval)
            except TimeoutError:
                log.warning("no frame from the server for %.1f s: reconnecting",
                            DEAD_AFTER * self.heartbeat_interval)
                return
            if frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                return
            if frame.type == aiohttp.WSMsgType.ERROR:
                log.warning("WebSocket error: %s", ws.exception())
                return
            if frame.type != aiohttp.WSMsgType.TEXT:
                self.stats.inc("connection.malformed")
                log.warning("ignoring a %s frame: protocol v1 uses text frames", frame.type.name)
                continue
            self._dispatch(frame.data)

    def _dispatch(self, text: str) -> None:
        try:
            message = protocol.parse(text)
        except protocol.UnknownTypeError as exc:
            self.stats.inc("connection.unknown")
            log.info("ignoring a message: %s", exc)
            return
        except protocol.ProtocolError as exc:
            self.stats.inc("connection.malformed")
            log.warning("ignoring a malformed message: %s", exc)
            return
        if message.type == protocol.WELCOME:
            self.welcome = message.data
            self.heartbeat_interval = float(message.data["heartbeat_interval"])
            self.backoff.reset()
            log.info("welcome: agent %s, session %s, heartbeat every %ss", message.data["agent_id"],
                     message.data["session_id"], self.heartbeat_interval)
        try:
            self.on_message(message)
        except Exception:  # a handler bug must not take the connection down
            log.exception("handling a %s message failed", message.type)

    async def _heartbeats(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while not ws.closed:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await ws.send_str(protocol.heartbeat(time.time()))
            except (ConnectionError, RuntimeError, aiohttp.ClientError):
                return
