"""Changes that no channel-layer message carries still reach task agents: on the embedded default a
change made by another process (the change stamp file), a change of the agent's host's labels
(``byLabels``), and a team's destinations being changed. Also the agent's host: tied by the
``X-Fleet-Host-UUID`` header on connect or by an admin over REST."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings

from fleet.asgi import application
from fleet.change_stamp import ChangeStamp, stamp_at
from hosts.choices import Role
from hosts.models import Host, Label, LabelMembership, Team
from taskserver import live, services
from taskserver.models import Task, TaskAgent
from tests.factories import token_for, user_with_role
from tests.live_processes import server_env
from tests.test_taskserver_ws import _receive

pytestmark = pytest.mark.django_db(transaction=True)

HTTP = {"url": "https://example.com/health"}
ROOT = Path(__file__).resolve().parent.parent


def _connect(key: str, name: str, host_uuid: str = "") -> WebsocketCommunicator:
    headers = [(b"authorization", f"Bearer {key}".encode()), (b"x-fleet-agent-name", name.encode())]
    if host_uuid:
        headers.append((b"x-fleet-host-uuid", host_uuid.encode()))
    return WebsocketCommunicator(application, "/ws/agent/", headers=headers)


async def _open(key: str, name: str, host_uuid: str = "") -> tuple[WebsocketCommunicator, list[str]]:
    communicator = _connect(key, name, host_uuid)
    connected, _ = await communicator.connect()
    assert connected
    assert (await _receive(communicator))["type"] == "welcome"
    assert (await _receive(communicator))["type"] == "destinations"
    listing = await _receive(communicator)
    assert listing["type"] == "task_list"
    return communicator, sorted(t["name"] for t in listing["data"]["tasks"])


def _save(name: str, route_type: str, config: dict, team_id: int | None = None) -> Task:
    return services.save_task(
        name=name, plugin="http", settings=HTTP, interval=60,
        route_type=route_type, route_config=config, team_id=team_id,
    )  # fmt: skip


# --- the change stamp itself -----------------------------------------------------------------------


def test_a_bump_by_another_process_is_foreign_and_ones_own_are_not(tmp_path):
    path = tmp_path / "stamp"
    mine = ChangeStamp(path)
    assert mine.read() == 0
    first = mine.bump()
    assert first == 1 and not mine.foreign(0, mine.read())
    script = (
        f"from fleet.change_stamp import ChangeStamp\nfor _ in range(50): ChangeStamp({str(path)!r}).bump()"
    )
    workers = [subprocess.Popen([sys.executable, "-c", script], cwd=ROOT) for _ in range(2)]
    for _ in range(50):
        mine.bump()
    assert all(w.wait(timeout=60) == 0 for w in workers)
    # 151 bumps from three processes, each got its own number: none lost, none repeated.
    assert mine.read() == 151
    assert mine.foreign(1, 151)
    assert not mine.foreign(151, 151)


def test_a_counter_that_went_back_means_catch_up(tmp_path):
    stamp = ChangeStamp(tmp_path / "stamp")
    stamp.bump()
    stamp.bump()
    (tmp_path / "stamp").unlink()
    assert stamp.read() == 0 and stamp.foreign(2, 0)


# --- sessions catch up ------------------------------------------------------------------------------


@pytest.fixture
def fast_checks(settings):
    settings.TASKSERVER = {**settings.TASKSERVER, "CHANGE_POLL_INTERVAL": 0.1, "LABEL_RECHECK_INTERVAL": 0.3}


async def test_a_change_another_process_made_reaches_the_agent_through_the_stamp(fast_checks):
    if not live.in_process_layer():
        pytest.skip("with channels-redis every process's changes travel through the layer itself")
    key = await sync_to_async(lambda: services.create_agent_key(name="k", team_id=None)[1])()
    agent, names = await _open(key, "a1")
    assert names == []
    # What another process does: the row is written, its own in-process layer reaches nobody
    # here, and it bumps the stamp (its own ChangeStamp instance, not this process's).
    await sync_to_async(
        lambda: Task.objects.create(
            name="from a shell", plugin="http", settings=HTTP, interval=60,
            route_type="byTags", route_config={"tags": []}, scope=0,
        )
    )()  # fmt: skip
    await sync_to_async(lambda: _save("from apply", "any", {}))()
    assert (await _receive(agent))["type"] == "task_add"  # this process's own change: pushed at once
    ChangeStamp(django_settings.TASKSERVER["CHANGE_STAMP_FILE"]).bump()
    destinations = await _receive(agent, timeout=2)
    listing = await _receive(agent, timeout=2)
    assert destinations["type"] == "destinations" and listing["type"] == "task_list"
    assert [t["name"] for t in listing["data"]["tasks"]] == ["from apply"]
    await agent.disconnect()


async def test_this_process_own_changes_cause_no_extra_task_list(fast_checks):
    key = await sync_to_async(lambda: services.create_agent_key(name="k", team_id=None)[1])()
    agent, _ = await _open(key, "a1")
    await sync_to_async(lambda: _save("one", "any", {}))()
    assert (await _receive(agent))["type"] == "task_add"
    if live.in_process_layer():
        assert stamp_at(django_settings.TASKSERVER["CHANGE_STAMP_FILE"]).read() >= 1
    assert await agent.receive_nothing(timeout=0.5)
    await agent.disconnect()


async def test_an_agent_deleted_by_another_process_is_closed(fast_checks):
    if not live.in_process_layer():
        pytest.skip("with channels-redis the deletion closes the session through the layer")
    key = await sync_to_async(lambda: services.create_agent_key(name="k", team_id=None)[1])()
    agent, _ = await _open(key, "a1")
    await sync_to_async(lambda: TaskAgent.objects.filter(name="a1").delete())()
    ChangeStamp(django_settings.TASKSERVER["CHANGE_STAMP_FILE"]).bump()
    closed = await agent.receive_output(timeout=2)
    assert closed == {"type": "websocket.close", "code": 4004}


def test_a_real_second_process_change_reaches_a_session_of_this_process(tmp_path, settings):
    """``manage.py shell`` in a child process saves a task; the session here hears of it."""
    from django.db import connection

    if connection.vendor == "sqlite" and connection.settings_dict["NAME"].startswith("file:"):
        pytest.skip("in-memory SQLite is not shared with another process")

    async def scenario() -> list[str]:
        key = await sync_to_async(lambda: services.create_agent_key(name="k", team_id=None)[1])()
        agent, _ = await _open(key, "a1")
        env = server_env(
            tmp_path / "child-var",
            TASKSERVER_CHANGE_STAMP_FILE=django_settings.TASKSERVER["CHANGE_STAMP_FILE"],
        )
        code = textwrap.dedent(
            """
            from taskserver import services
            services.save_task(name="from the shell", plugin="http", settings={"url": "https://e.com/"},
                               interval=60, route_type="any", route_config={}, team_id=None)
            """
        )
        await sync_to_async(
            lambda: subprocess.run(
                [sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=env, check=True, timeout=120
            )
        )()
        received = []
        while "from the shell" not in received:
            message = await _receive(agent, timeout=5)
            if message["type"] == "task_list":
                received = [t["name"] for t in message["data"]["tasks"]]
            elif message["type"] in ("task_add", "task_update"):
                received = [message["data"]["task"]["name"]]
        await agent.disconnect()
        return received

    settings.TASKSERVER = {**settings.TASKSERVER, "CHANGE_POLL_INTERVAL": 0.2}
    from asgiref.sync import async_to_sync

    assert async_to_sync(scenario)() == ["from the shell"]


# --- the agent's host and its labels ----------------------------------------------------------------


def _host_with_label(uuid: str, label: str, team: Team | None = None) -> tuple[Host, Label]:
    host = Host.objects.create(hostname=f"h-{uuid[:8]}", uuid=uuid, osquery_host_id=uuid, team=team)
    found, _ = Label.objects.get_or_create(
        name=label, defaults={"query": "SELECT 1", "label_type": "regular"}
    )
    LabelMembership.objects.create(host=host, label=found)
    return host, found


async def test_the_host_header_ties_the_agent_and_label_changes_reach_it(fast_checks):
    uuid = "6B29FC40-CA47-1067-B31D-00DD010662DA"
    host, label = await sync_to_async(lambda: _host_with_label(uuid, "Ubuntu"))()
    key = await sync_to_async(lambda: services.create_agent_key(name="k", team_id=None)[1])()
    await sync_to_async(lambda: _save("on ubuntu", "byLabels", {"labels": ["Ubuntu"]}))()
    agent, names = await _open(key, "a1", host_uuid=uuid.lower())
    assert names == ["on ubuntu"]
    assert await sync_to_async(lambda: TaskAgent.objects.get(name="a1").host_id)() == host.pk
    # osquery's label queries drop the host from the label: no API call tells the task server.
    await sync_to_async(lambda: LabelMembership.objects.filter(host=host).delete())()
    listing = None
    while listing is None or listing["type"] != "task_list":
        listing = await _receive(agent, timeout=2)
    assert listing["data"]["tasks"] == []
    await agent.disconnect()


async def test_a_host_of_another_team_is_not_tied():
    other = await sync_to_async(lambda: Team.objects.create(name="Other"))()
    uuid = "11111111-2222-3333-4444-555555555555"
    await sync_to_async(lambda: _host_with_label(uuid, "Ubuntu", team=other))()
    team = await sync_to_async(lambda: Team.objects.create(name="Mine"))()
    key = await sync_to_async(lambda: services.create_agent_key(name="k", team_id=team.pk)[1])()
    agent, _ = await _open(key, "a1", host_uuid=uuid)
    assert await sync_to_async(lambda: TaskAgent.objects.get(name="a1").host_id)() is None
    await agent.disconnect()


def test_an_admin_ties_and_unties_the_host_over_rest(client):
    team = Team.objects.create(name="Mine")
    other = Team.objects.create(name="Other")
    mine, _ = _host_with_label("aaaaaaaa-0000-0000-0000-000000000001", "Ubuntu", team=team)
    theirs, _ = _host_with_label("aaaaaaaa-0000-0000-0000-000000000002", "Ubuntu", team=other)
    key, _ = services.create_agent_key(name="k", team_id=team.pk)
    agent = services.register_agent(key, "a1")
    _save("on ubuntu", "byLabels", {"labels": ["Ubuntu"]}, team_id=team.pk)
    headers = {"HTTP_AUTHORIZATION": f"Token {token_for(user_with_role('admin', Role.ADMIN))}"}
    url = f"/api/v1/task-agents/{agent.pk}/"

    answer = client.patch(url, {"host_id": theirs.pk}, content_type="application/json", **headers)
    assert answer.status_code == 400 and "host_id" in answer.json()["errors"]
    answer = client.patch(url, {"host_id": mine.pk}, content_type="application/json", **headers)
    assert answer.status_code == 200 and answer.json()["host_id"] == mine.pk
    assert answer.json()["task_count"] == 1
    answer = client.patch(url, {"host_id": None}, content_type="application/json", **headers)
    assert answer.status_code == 200 and answer.json()["host_id"] is None
    assert answer.json()["task_count"] == 0
    assert client.patch(url, {"host_id": "x"}, content_type="application/json", **headers).status_code == 400


# --- destinations -----------------------------------------------------------------------------------


async def test_a_destination_change_reaches_the_team_agents_at_once():
    team = await sync_to_async(lambda: Team.objects.create(name="Mine"))()
    key = await sync_to_async(lambda: services.create_agent_key(name="k", team_id=team.pk)[1])()
    global_key = await sync_to_async(lambda: services.create_agent_key(name="g", team_id=None)[1])()
    agent, _ = await _open(key, "a1")
    outsider, _ = await _open(global_key, "g1")
    destination = await sync_to_async(
        lambda: services.save_destination(
            name="graphite", kind="graphite", url="tcp://127.0.0.1:2003",
            headers={"X-Token": "s3cret"}, team_id=team.pk,
        )
    )()  # fmt: skip
    message = await _receive(agent)
    assert message["type"] == "destinations"
    (sent,) = message["data"]["destinations"]
    assert sent["url"] == "tcp://127.0.0.1:2003" and sent["headers"] == {"X-Token": "s3cret"}
    await sync_to_async(lambda: services.delete_destination(destination))()
    assert (await _receive(agent))["data"]["destinations"] == []
    assert await outsider.receive_nothing(timeout=0.3)
    await agent.disconnect()
    await outsider.disconnect()
