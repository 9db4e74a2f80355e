"""The WebSocket client and the agent (taskagent/connection.py, agent.py) against a test server."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from aiohttp import WSMsgType, web

from taskagent import __version__, protocol
from taskagent.agent import Agent
from taskagent.backoff import Backoff
from taskagent.connection import Connection, agent_url
from taskagent.metrics import Metric

TASK_A = {"id": 1, "name": "a", "plugin": "tcp", "settings": {"host": "127.0.0.1", "port": 9},
          "interval": 60, "enabled": True, "created_at": 100, "updated_at": 100}
TASK_B = {**TASK_A, "id": 2, "name": "b"}


def msg(type_, **data):
    return json.dumps({"v": 1, "type": type_, "data": data})


class FakeServer:
    """``/ws/agent/``: each connection runs the next script; frames from the agent are recorded."""

    def __init__(self, *scripts, beat: float | None = 0.05):
        self.scripts = list(scripts)
        self.beat = beat  # seconds between the server's heartbeats; None: a silent server
        self.connections = 0
        self.headers = []
        self.received: list[dict] = []
        self.url = ""

    async def handler(self, request):
        self.headers.append(dict(request.headers))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        script = self.scripts[min(self.connections, len(self.scripts) - 1)]
        self.connections += 1
        helpers = [asyncio.get_running_loop().create_task(self._read(ws))]
        if self.beat:
            helpers.append(asyncio.get_running_loop().create_task(self._heartbeats(ws)))
        try:
            await script(ws, self)
        finally:
            for helper in helpers:
                helper.cancel()
            await ws.close()
        return ws

    async def _heartbeats(self, ws):
        while not ws.closed:
            await ws.send_str(msg("heartbeat", time=1.0))
            await asyncio.sleep(self.beat)

    async def _read(self, ws):
        async for frame in ws:
            if frame.type == WSMsgType.TEXT:
                self.received.append(json.loads(frame.data))

    def of_type(self, type_):
        return [m for m in self.received if m["type"] == type_]

    @contextlib.asynccontextmanager
    async def running(self):
        app = web.Application()
        app.router.add_get("/ws/agent/", self.handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        try:
            yield self
        finally:
            await runner.cleanup()


async def until(condition, timeout=5.0):
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def welcome(interval=5):
    return msg("welcome", agent_id=4, name="agent-1", session_id="s-1", heartbeat_interval=interval)


def test_agent_url():
    assert agent_url("https://fleet.example.com") == "wss://fleet.example.com/ws/agent/"
    assert agent_url("http://127.0.0.1:8000/") == "ws://127.0.0.1:8000/ws/agent/"
    assert agent_url("https://x/prefix") == "wss://x/prefix/ws/agent/"
    assert agent_url("fleet.example.com") == "wss://fleet.example.com/ws/agent/"
    with pytest.raises(ValueError):
        agent_url("ftp://x")


async def test_tasks_flow_malformed_frames_are_ignored_and_the_agent_reconnects(tmp_path):
    async def first(ws, server):
        await ws.send_str(welcome(interval=0.1))
        await ws.send_str(msg("destinations", destinations=[{"id": "srv", "kind": "server", "url": ""}]))
        await ws.send_str(msg("task_list", tasks=[TASK_A]))
        await ws.send_str("this is not json")
        await ws.send_bytes(b"\x00\x05hello")
        await ws.send_str(msg("reboot", now=True))
        await ws.send_str(json.dumps({"v": 2, "type": "task_remove", "data": {"id": 1}}))
        await ws.send_str(msg("task_add", task=TASK_B))
        await ws.send_str(msg("task_remove", id=1))
        await until(lambda: server.of_type("heartbeat") and server.of_type("status"))
        await asyncio.sleep(0.05)
        # the server drops the connection

    async def second(ws, server):
        await ws.send_str(welcome(interval=0.1))
        await ws.send_str(msg("task_list", tasks=[TASK_B, {**TASK_A, "id": 3}]))
        while not ws.closed:  # hold the connection until the agent goes
            await asyncio.sleep(0.05)

    server = FakeServer(first, second)
    async with server.running():
        agent = Agent(
            server.url, "secret-key", "agent-1", tmp_path, tags=["dc1", "linux"],
            pipeline_options={"flush_interval": 0.05, "backoff": Backoff(0.02, 0.1)},
            connection_options={"backoff": Backoff(0.05, 0.2)}, status_interval=3600, stats_interval=3600,
        )
        stop = asyncio.Event()
        running = asyncio.get_running_loop().create_task(agent.run(stop))
        try:
            await until(lambda: server.connections >= 1 and set(agent.runner.tasks) == {2})
            assert agent.stats.get("connection.malformed") == 3  # not JSON, binary, wrong version
            assert agent.stats.get("connection.unknown") == 1
            await until(lambda: server.connections == 2 and set(agent.runner.tasks) == {2, 3})
            assert agent.connection.welcome["session_id"] == "s-1"

            # Metrics reach the server destination over the socket.
            agent.publish([Metric("tcp.connect_ms", 1.25, "ms", "gauge", {"task": "2"}, 1000.0)])
            await until(lambda: server.of_type("metrics"))
            (sent,) = server.of_type("metrics")[0]["data"]["metrics"]
            assert sent["name"] == "tcp.connect_ms" and sent["value"] == 1.25
            assert protocol.parse(json.dumps(server.of_type("metrics")[0])).type == "metrics"
        finally:
            stop.set()
            await asyncio.wait_for(running, 10)

    headers = server.headers[0]
    assert headers["Authorization"] == "Bearer secret-key"
    assert headers["X-Fleet-Agent-Name"] == "agent-1"
    assert headers["X-Fleet-Agent-Tags"] == "dc1,linux"
    assert headers["X-Fleet-Agent-Version"] == __version__
    status = server.of_type("status")[0]["data"]
    assert status["running"] and set(status["running"]) <= {1, 2}
    assert "tasks.added" in status["counters"]
    for message in server.received:  # everything the agent sent is valid v1
        protocol.parse(json.dumps(message))


async def test_a_silent_connection_is_taken_as_dead():
    async def silent(ws, server):
        await ws.send_str(welcome(interval=0.1))
        while not ws.closed:  # nothing more: the agent must give up after 3 intervals
            await asyncio.sleep(0.05)

    server = FakeServer(silent, beat=None)
    async with server.running():
        connection = Connection(server.url, "k", "agent-1", backoff=Backoff(0.05, 0.1))
        running = asyncio.get_running_loop().create_task(connection.run())
        try:
            await until(lambda: server.connections >= 2, timeout=4)
        finally:
            await connection.stop()
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running


async def test_a_refused_key_is_retried_with_backoff():
    attempts = []

    async def refuse(request):
        attempts.append(asyncio.get_running_loop().time())
        return web.Response(status=401)

    app = web.Application()
    app.router.add_get("/ws/agent/", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    connection = Connection(url, "bad", "agent-1", backoff=Backoff(0.05, 0.4))
    running = asyncio.get_running_loop().create_task(connection.run())
    try:
        await until(lambda: len(attempts) >= 4)
    finally:
        await connection.stop()
        await asyncio.wait_for(running, 2)
        await runner.cleanup()
    gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
    assert gaps[-1] > gaps[0]  # backing off, not hammering
    assert connection.stats.get("connection.failures") >= 4


def test_backoff_grows_with_jitter_up_to_the_cap():
    import random

    backoff = Backoff(1.0, 60.0, rng=random.Random(1))
    delays = [backoff.next() for _ in range(12)]
    assert 0.5 <= delays[0] <= 1.0
    assert all(30.0 <= d <= 60.0 for d in delays[7:])
    backoff.reset()
    assert backoff.next() <= 1.0
