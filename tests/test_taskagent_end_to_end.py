"""The real task agent (``taskagent``, its own program) against the real server (daphne, the ASGI
application, /ws/agent/): it registers, receives its tasks, and a change made through the
server's services reaches it within a second; when it stops, its ``any`` task waits for an agent."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.parse
import urllib.request

import pytest

from hosts.choices import Role
from taskagent.agent import Agent
from taskserver import services
from taskserver.models import AnyAssignment, TaskAgent
from tests.factories import token_for, user_with_role
from tests.live_processes import server_env, start_daphne, stop, wait_for, wait_healthy

HTTP = {"url": "http://127.0.0.1:9/"}


class _AgentThread:
    """One agent on its own event loop in a thread, stopped by its stop event."""

    def __init__(self, server: str, key: str, name: str, state_dir: str, tags: list[str]) -> None:
        self.agent: Agent | None = None
        self._args = (server, key, name, state_dir, tags)
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        server, key, name, state_dir, tags = self._args
        self.agent = Agent(server, key, name, state_dir, tags=tags, status_interval=1.0)
        self._stop = asyncio.Event()
        self._loop.run_until_complete(self.agent.run(self._stop))

    def start(self) -> _AgentThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=20)

    def task_names(self) -> set[str]:
        if self.agent is None:
            return set()
        return {task.name for task in list(self.agent.runner.tasks.values())}


def _wait(predicate, timeout: float = 10.0) -> float:
    return wait_for(predicate, timeout)


@pytest.fixture
def daphne_server(transactional_db, tmp_path):
    """A real daphne process serving this test's database (committed data: transactional_db)."""
    server, url = start_daphne(server_env(tmp_path / "var"), tmp_path / "daphne.log")
    try:
        wait_healthy(server, url)
        yield url
    finally:
        stop(server)


@pytest.mark.slow
def test_the_agent_gets_its_tasks_and_changes_within_a_second(daphne_server, tmp_path) -> None:
    _, key = services.create_agent_key(name="e2e", team_id=None)
    token = token_for(user_with_role("admin", Role.ADMIN))
    services.save_task(
        name="web check", plugin="http", settings=HTTP, interval=60,
        route_type="byTags", route_config={"tags": ["web"]}, team_id=None,
    )  # fmt: skip
    agent = _AgentThread(daphne_server, key, "edge-1", str(tmp_path / "state"), ["web"]).start()
    try:
        _wait(lambda: agent.task_names() == {"web check"})
        assert TaskAgent.objects.get(name="edge-1").online
        # Through the server's REST API: the change is made in the server's process, whose channel
        # layer holds the agent's session (the embedded default's layer is in-process).
        body = {
            "name": "any check", "plugin": "tcp", "settings": {"host": "127.0.0.1", "port": 9},
            "interval": 30, "route": {"type": "any", "config": {}}, "enabled": True,
        }  # fmt: skip
        request = urllib.request.Request(
            f"{daphne_server}/api/v1/tasks/",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
            method="POST",
        )
        started = time.monotonic()
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 201
        _wait(lambda: "any check" in agent.task_names())
        took = time.monotonic() - started
        assert took < 1.0, f"the change took {took:.2f} s to reach the agent"
    finally:
        agent.stop()
    _wait(lambda: not TaskAgent.objects.get(name="edge-1").online)
    assert not AnyAssignment.objects.exists()  # nobody online: the any task waits
