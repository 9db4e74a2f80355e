"""Task agents over ``/ws/agent/`` (Channels' communicator, the real ASGI application): the key and
name on connect, the first messages, changes pushed at once, ``any`` tasks moving when their agent
leaves, malformed frames ignored, and a newer session replacing an older one."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from fleet.asgi import application
from taskserver import routing, services, sessions
from taskserver.models import AnyAssignment, TaskAgent

pytestmark = pytest.mark.django_db(transaction=True)

HTTP = {"url": "https://example.com/health"}



def _connect(key: str, name: str, tags: str = "") -> WebsocketCommunicator:
    headers = [(b"authorization", f"Bearer {key}".encode()), (b"x-fleet-agent-name", name.encode())]
    if tags:
        headers.append((b"x-fleet-agent-tags", tags.encode()))
    return WebsocketCommunicator(application, "/ws/agent/", headers=headers)


async def _receive(communicator: WebsocketCommunicator, timeout: float = 3) -> dict:
    """The next message that is not a heartbeat."""
    while True:
        message = json.loads(await communicator.receive_from(timeout=timeout))
        if message["type"] != "heartbeat":
            return message


async def _open(key: str, name: str, tags: str = "") -> tuple[WebsocketCommunicator, dict, list]:
    communicator = _connect(key, name, tags)
    connected, _ = await communicator.connect()
    assert connected
    welcome = await _receive(communicator)
    assert welcome["v"] == 1 and welcome["type"] == "welcome" and welcome["data"]["name"] == name
    assert (await _receive(communicator))["type"] == "destinations"
    listing = await _receive(communicator)
    assert listing["type"] == "task_list"
    return communicator, welcome, listing["data"]["tasks"]


@sync_to_async
def _key() -> str:
    return services.create_agent_key(name="k", team_id=None)[1]


@sync_to_async
def _task(name: str, route_type: str = "byTags", config: dict | None = None, **kw) -> int:
    task = services.save_task(
        name=name,
        plugin="http",
        settings=HTTP,
        interval=60,
        route_type=route_type,
        route_config=config if config is not None else {"tags": ["web"]},
        enabled=kw.get("enabled", True),
        team_id=None,
    )
    return task.pk


async def test_unknown_key_is_refused_before_the_handshake():
    communicator = _connect("not-a-key", "a1")
    connected, code = await communicator.connect()
    assert not connected


async def test_a_new_agent_registers_and_gets_its_tasks_then_every_change_at_once():
    key = await _key()
    await _task("routed", config={"tags": ["web"]})
    await _task("elsewhere", config={"tags": ["db"]})
    agent, welcome, tasks = await _open(key, "a1", "web,edge")
    assert [t["name"] for t in tasks] == ["routed"]
    assert tasks[0]["settings"]["url"] == HTTP["url"] and tasks[0]["interval"] == 60
    assert await sync_to_async(lambda: TaskAgent.objects.get(name="a1").tags)() == ["web", "edge"]

    started = asyncio.get_running_loop().time()
    new_id = await _task("added later")
    added = await _receive(agent)
    assert added["type"] == "task_add" and added["data"]["task"]["id"] == new_id
    assert asyncio.get_running_loop().time() - started < 1.0

    await sync_to_async(lambda: services.save_task(task=_get(new_id), enabled=False))()
    assert (await _receive(agent)) == {"v": 1, "type": "task_remove", "data": {"id": new_id}}

    await sync_to_async(lambda: services.save_task(task=_get(new_id), enabled=True, interval=120))()
    readded = await _receive(agent)
    assert readded["type"] == "task_add" and readded["data"]["task"]["interval"] == 120

    await sync_to_async(lambda: services.save_task(task=_get(new_id), interval=300))()
    updated = await _receive(agent)
    assert updated["type"] == "task_update" and updated["data"]["task"]["interval"] == 300

    await sync_to_async(lambda: services.delete_task(_get(new_id)))()
    assert (await _receive(agent))["type"] == "task_remove"
    await agent.disconnect()


def _get(task_id: int):
    from taskserver.models import Task

    return Task.objects.get(pk=task_id)


async def test_malformed_frames_are_ignored_and_the_session_lives_on():
    key = await _key()
    agent, _, _ = await _open(key, "a1", "web")
    for frame in ("not json", "[1,2]", json.dumps({"v": 9, "type": "heartbeat"}), json.dumps({"v": 1})):
        await agent.send_to(text_data=frame)
    await agent.send_to(bytes_data=b"\xff\xfe")
    await agent.send_to(text_data=json.dumps({"v": 1, "type": "heartbeat", "data": {"time": 1}}))
    new_id = await _task("still listening")
    assert (await _receive(agent))["data"]["task"]["id"] == new_id
    await agent.disconnect()


async def test_any_tasks_spread_evenly_and_move_when_their_agent_leaves():
    key = await _key()
    one, _, _ = await _open(key, "one")
    two, _, _ = await _open(key, "two")
    ids = [await _task(f"any-{i}", route_type="any", config={}) for i in range(4)]
    for _ in ids:  # each task lands on one agent, announced to it
        pass
    holders = await sync_to_async(
        lambda: dict(AnyAssignment.objects.filter(task_id__in=ids).values_list("task_id", "agent__name"))
    )()
    assert sorted(holders.values()) == ["one", "one", "two", "two"]  # spread evenly, not at random
    # drain what each received
    received = {"one": set(), "two": set()}
    for name, communicator in (("one", one), ("two", two)):
        for _ in range(2):
            message = await _receive(communicator)
            assert message["type"] == "task_add"
            received[name].add(message["data"]["task"]["id"])
    assert received["one"] | received["two"] == set(ids)

    await one.disconnect()
    moved = set()
    for _ in range(2):
        message = await _receive(two)
        assert message["type"] == "task_add"
        moved.add(message["data"]["task"]["id"])
    assert moved == received["one"]
    assert await sync_to_async(lambda: TaskAgent.objects.get(name="one").online)() is False
    await two.disconnect()


async def test_any_tasks_wait_for_an_agent_and_start_when_one_connects():
    key = await _key()
    task_id = await _task("lonely", route_type="any", config={})
    assert await sync_to_async(lambda: AnyAssignment.objects.filter(task_id=task_id).exists())() is False
    agent, _, tasks = await _open(key, "late")
    names = {t["name"] for t in tasks}
    if "lonely" not in names:  # placed right after the first list
        message = await _receive(agent)
        assert message["type"] == "task_add" and message["data"]["task"]["id"] == task_id
    await agent.disconnect()


async def test_a_newer_session_replaces_the_older_one():
    key = await _key()
    first, _, _ = await _open(key, "dup")
    second, _, _ = await _open(key, "dup")
    output = await first.receive_output(timeout=3)
    while output["type"] == "websocket.send":
        output = await first.receive_output(timeout=3)
    assert output["type"] == "websocket.close"
    await first.disconnect()
    # the old session closing does not mark the agent offline: the new one is current
    assert await sync_to_async(lambda: TaskAgent.objects.get(name="dup").online)() is True
    await second.disconnect()
    assert await sync_to_async(lambda: TaskAgent.objects.get(name="dup").online)() is False


def test_the_sweep_marks_agents_of_a_dead_process_offline_and_moves_their_tasks(db):
    from datetime import timedelta

    from django.utils import timezone

    key = services.create_agent_key(name="k", team_id=None)[0]
    dead = services.register_agent(key, "dead")
    alive = services.register_agent(key, "alive")
    TaskAgent.objects.filter(pk__in=[dead.pk, alive.pk]).update(online=True, last_seen_at=timezone.now())
    task = services.save_task(
        name="t", plugin="http", settings=HTTP, interval=60, route_type="any", route_config={}, team_id=None
    )
    holder = AnyAssignment.objects.get(task=task).agent_id
    TaskAgent.objects.filter(pk=holder).update(last_seen_at=timezone.now() - timedelta(minutes=5))
    assert sessions.sweep() == [holder]
    assert AnyAssignment.objects.get(task=task).agent_id != holder
    assert routing.agents_for(task) == [AnyAssignment.objects.get(task=task).agent_id]


def test_heartbeats_are_written_in_one_batch_and_never_revive_an_offline_agent(
    db, django_assert_num_queries
):
    """Found by make bench-tasks: every heartbeat wrote its agent's row (2 ms of server CPU a beat,
    all of a core at 10,000 agents). Now they are noted in memory and written together."""
    from datetime import timedelta

    from django.utils import timezone

    key = services.create_agent_key(name="k", team_id=None)[0]
    agents = [services.register_agent(key, f"a{i}") for i in range(1500)]
    long_ago = timezone.now() - timedelta(minutes=10)
    TaskAgent.objects.update(online=True, last_seen_at=long_ago)
    TaskAgent.objects.filter(pk=agents[0].pk).update(online=False)  # its session just closed
    with django_assert_num_queries(0):
        for agent in agents:
            sessions.seen(agent.pk)
    with django_assert_num_queries(2):  # 1,500 agents: two UPDATEs of at most 1,000 ids
        assert sessions.seen_buffer.flush() == 1500
    assert TaskAgent.objects.filter(last_seen_at__gt=long_ago).count() == 1499
    assert not TaskAgent.objects.get(pk=agents[0].pk).online
    assert sessions.seen_buffer.flush() == 0  # nothing noted since


async def test_a_change_is_one_layer_message_per_process_whatever_the_number_of_agents():
    """Found by make bench-tasks: a message per agent took seconds to reach 1,000 agents and a
    burst of changes overflowed the layer. Now each process's hub gets one and fans it out."""
    from channels.layers import get_channel_layer

    from taskserver import hub, live

    class FakeSession:
        def __init__(self) -> None:
            self.frames: list[str] = []

        async def send(self, text_data: str | None = None) -> None:
            self.frames.append(text_data)

    layer = get_channel_layer()
    local = hub.local_hub(layer)
    sessions_by_agent = {agent_id: FakeSession() for agent_id in range(1, 1001)}
    for agent_id, session in sessions_by_agent.items():
        local.add(agent_id, session)
    calls = []
    original = layer.group_send

    async def counting_group_send(group_name, message):
        calls.append(group_name)
        await original(group_name, message)

    layer.group_send = counting_group_send
    try:
        await asyncio.sleep(0.05)  # the hub joins its group
        content = live.message("task_remove", {"id": 7})
        await sync_to_async(live.send)(range(1, 1001), content)
        for _ in range(100):
            if all(s.frames for s in sessions_by_agent.values()):
                break
            await asyncio.sleep(0.02)
    finally:
        layer.group_send = original
        for task in local._tasks:
            task.cancel()
    assert calls == [live.HUB_GROUP]
    assert all(json.loads(s.frames[0]) == content for s in sessions_by_agent.values())
    assert all(len(s.frames) == 1 for s in sessions_by_agent.values())
