"""Two daphne processes and task agents as real programs: a change made through either process
reaches agents held by the other, an ``any`` task whose agent is killed moves to the other agent,
and a server process that dies loses its sessions cleanly (agents behind the load balancer
reconnect to the other process; an agent that died with it is swept offline and its task moves).

Runs on the embedded default (SQLite; changes cross processes through the change stamp file) and
on MariaDB and Redis (through channels-redis), with heartbeats shortened so it takes seconds.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request

import pytest

from hosts.choices import Role
from taskserver import live, services
from taskserver.models import AnyAssignment, Task, TaskAgent
from tests.factories import token_for, user_with_role
from tests.live_processes import (
    AgentProcess,
    FailoverProxy,
    server_env,
    start_daphne,
    stop,
    wait_for,
    wait_healthy,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

HTTP = {"url": "http://127.0.0.1:9/"}  # refused at once: the runs fail fast, which is fine here


@pytest.fixture
def two_servers(tmp_path, settings):
    """Two daphne processes on this test's database; heartbeats every second, agents unheard of
    for 4 s are swept; on the embedded default, one change stamp file for both (and this test)."""
    stamp = str(tmp_path / "taskserver.stamp")
    settings.TASKSERVER = {**settings.TASKSERVER, "CHANGE_STAMP_FILE": stamp}
    extra = {
        "TASKSERVER_HEARTBEAT": "1", "TASKSERVER_STALE_AFTER": "4", "TASKSERVER_SWEEP_INTERVAL": "1",
        "TASKSERVER_CHANGE_POLL_INTERVAL": "0.3", "TASKSERVER_CHANGE_STAMP_FILE": stamp,
        "DATABASE_CONN_MAX_AGE": "0",
    }  # fmt: skip
    servers = [
        start_daphne(server_env(tmp_path / f"var{i}", **extra), tmp_path / f"daphne{i}.log") for i in (1, 2)
    ]
    try:
        for process, url in servers:
            wait_healthy(process, url)
        yield servers
    finally:
        for process, _ in servers:
            stop(process)


def _rest(url: str, token: str, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{url}/api/v1/{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"{}")


def _task(name: str, route_type: str, config: dict) -> Task:
    return services.save_task(
        name=name, plugin="http", settings=HTTP, interval=60, route_type=route_type, route_config=config,
        team_id=None,
    )  # fmt: skip


def _holder() -> str | None:
    assignment = AnyAssignment.objects.select_related("agent").first()
    return assignment.agent.name if assignment and assignment.agent_id else None


def _online(name: str) -> bool:
    return TaskAgent.objects.filter(name=name, online=True).exists()


def _cross_process_limit() -> float:
    """How soon a change must reach a session of the other process: channels-redis carries it at
    once; the embedded default's sessions read the change stamp every 0.3 s."""
    return 1.0 if not live.in_process_layer() else 1.5


def test_changes_cross_processes_and_a_killed_agents_any_task_moves(two_servers, tmp_path):
    (_, url1), (_, url2) = two_servers
    _, key = services.create_agent_key(name="k", team_id=None)
    token = token_for(user_with_role("admin", Role.ADMIN))
    a = AgentProcess(url1, key, "agent-a", "x", tmp_path)
    b = AgentProcess(url2, key, "agent-b", "y", tmp_path)
    agents = {"agent-a": a, "agent-b": b}
    try:
        wait_for(lambda: _online("agent-a") and _online("agent-b"), 30, "both agents online")
        any_task = _task("any", "any", {})
        _task("on x", "byTags", {"tags": ["x"]})
        by_ids = _task("b only", "byIds", {"ids": [TaskAgent.objects.get(name="agent-b").pk]})
        wait_for(lambda: {"on x"} <= a.task_names() and {"b only"} <= b.task_names(), 10, "routed tasks")
        holder = _holder()
        assert holder in agents and "any" in agents[holder].task_names()
        other = "agent-b" if holder == "agent-a" else "agent-a"
        assert "any" not in agents[other].task_names()
        assert "b only" not in a.task_names() and "on x" not in b.task_names()

        # Through process 1's REST API, a task whose only agent is held by process 2, and back.
        for url, task_name, agent in ((url1, "b only", b), (url2, "on x", a)):
            task = Task.objects.get(name=task_name)
            started = time.monotonic()
            _rest(url, token, "PATCH", f"tasks/{task.pk}/", {"name": f"{task_name} (renamed)"})
            wait_for(lambda a=agent, n=task_name: f"{n} (renamed)" in a.task_names(), 10, "the rename")
            took = time.monotonic() - started
            print(f"change through the other process reached {agent.name} in {took:.3f} s")
            assert took < _cross_process_limit(), f"{task_name}: {took:.2f} s to the other process"

        # The agent running the `any` task is killed (kill -9): its task moves to the other one.
        started = time.monotonic()
        agents[holder].kill()
        wait_for(lambda: "any" in agents[other].task_names(), 15, "the any task to move")
        took = time.monotonic() - started
        print(f"the any task moved {took:.3f} s after its agent was killed")
        assert took < 10, f"the any task took {took:.1f} s to move"
        assert _holder() == other and not _online(holder)
        assert any_task.pk and by_ids.pk
    finally:
        a.stop()
        b.stop()


def test_a_dead_server_process_loses_its_sessions_cleanly(two_servers, tmp_path):
    (process1, url1), (_, url2) = two_servers
    _, key = services.create_agent_key(name="k", team_id=None)
    with FailoverProxy([url1, url2]) as balancer:
        c = AgentProcess(url1, key, "agent-c", "z", tmp_path)  # held by process 1, dies with it
        agents = [c]
        try:
            wait_for(lambda: _online("agent-c"), 30, "agent-c online")
            _task("any", "any", {})
            wait_for(lambda: "any" in c.task_names(), 10, "agent-c to run the any task")
            a = AgentProcess(balancer.url, key, "agent-a", "x", tmp_path)  # through the balancer: process 1
            b = AgentProcess(url2, key, "agent-b", "y", tmp_path)
            agents += [a, b]
            _task("on x", "byTags", {"tags": ["x"]})
            wait_for(
                lambda: _online("agent-a") and _online("agent-b") and "on x" in a.task_names(), 30, "a and b"
            )
            assert _holder() == "agent-c" and a.connections() == 1

            process1.send_signal(signal.SIGKILL)  # the process dies: nothing is closed cleanly
            c.kill()  # and so does the agent it held, which will never come back
            started = time.monotonic()
            # agent-a reconnects through the balancer, now to process 2, and keeps its task.
            wait_for(lambda: a.connections() == 2, 20, "agent-a to reconnect")
            reconnected = time.monotonic() - started
            assert "on x" in a.task_names() and _online("agent-a")
            # agent-c is swept offline by process 2 (4 s unheard of) and its `any` task moves.
            wait_for(lambda: _holder() in ("agent-a", "agent-b"), 20, "the any task to move")
            moved = time.monotonic() - started
            new_holder = a if _holder() == "agent-a" else b
            wait_for(lambda: "any" in new_holder.task_names(), 5, "the new holder to run it")
            assert not _online("agent-c")
            print(f"reconnected after {reconnected:.2f} s; any task moved after {moved:.2f} s")
            assert reconnected < 10 and moved < 12, (reconnected, moved)
        finally:
            for agent in agents:
                agent.stop()
