"""``fleet-task-agent`` (taskagent/cli.py) and the agent's destination handling."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import pytest
from aiohttp import web

from taskagent import cli
from taskagent.agent import Agent
from taskagent.metrics import Metric
from taskagent.protocol import Destination


def test_a_key_is_required(monkeypatch, capsys):
    monkeypatch.delenv("FLEET_AGENT_KEY", raising=False)
    with pytest.raises(SystemExit) as info:
        cli.main(["--server", "https://fleet.example.com"])
    assert info.value.code == 2
    assert "FLEET_AGENT_KEY" in capsys.readouterr().err


def test_tls_options():
    parser = cli.build_parser()
    assert cli.ssl_option(parser.parse_args(["--server", "s"])) is True
    assert cli.ssl_option(parser.parse_args(["--server", "s", "--insecure"])) is False
    with pytest.raises(SystemExit):
        parser.parse_args(["--server", "s", "--insecure", "--ca-file", "x.pem"])


async def test_the_command_connects_with_the_env_key_and_stops_on_sigterm(tmp_path):
    seen = []

    async def ws_handler(request):
        seen.append(dict(request.headers))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"v": 1, "type": "welcome", "data": {
            "agent_id": 1, "name": "cli-agent", "session_id": "s", "heartbeat_interval": 5}}))
        async for _frame in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/ws/agent/", ws_handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    env = {**os.environ, "FLEET_AGENT_KEY": "from-env"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "taskagent.cli", "--server", f"http://127.0.0.1:{port}", "--name", "cli-agent",
        "--tags", "a, b", "--state-dir", str(tmp_path / "state"), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(10):
            while not seen:
                await asyncio.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            out, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await runner.cleanup()
    assert process.returncode == 0, out.decode()
    assert seen[0]["Authorization"] == "Bearer from-env"
    assert seen[0]["X-Fleet-Agent-Tags"] == "a,b"
    assert b"stopping" in out
    assert b"from-env" not in out  # the key is never logged


async def test_destinations_are_added_changed_and_removed(tmp_path):
    agent = Agent("http://127.0.0.1:9", "k", "a1", tmp_path)
    # Before any destination is known, metrics have nowhere to go: counted, not silently lost.
    agent.publish([Metric("x", 1.0)])
    assert agent.stats.get("publish.dropped") == 1

    graphite = Destination(1, "graphite", "tcp://127.0.0.1:9", {})
    agent.set_destinations([graphite, Destination("srv", "server", "", {})])
    assert set(agent.pipelines) == {1, "srv"}
    first = agent.pipelines[1][1]
    agent.publish([Metric("y", 2.0)])
    first.flush()
    assert len(first.buffer) == 1

    # Same id, new URL: a new sender, the same buffer (nothing lost); "srv", left out, is removed
    # with the one metric it held.
    agent.set_destinations([Destination(1, "graphite", "tcp://127.0.0.1:10", {})])
    second = agent.pipelines[1][1]
    assert second is not first and len(second.buffer) == 1
    assert (tmp_path / "buffers" / "srv").exists() is False

    # Removed: its buffer is deleted and what it held is counted as dropped.
    agent.set_destinations([])
    assert agent.pipelines == {}
    assert not (tmp_path / "buffers" / "1").exists()
    assert agent.stats.get("publish.dropped") == 3
    await asyncio.sleep(0)
    await agent.shutdown([])
