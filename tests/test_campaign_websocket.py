"""Watching a campaign over ``/ws/campaigns/<id>/``: auth, snapshot for late joiners, live results."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client

from campaigns import services
from fleet.asgi import application
from hosts.models import EnrollSecret
from tests.agent import Agent
from tests.factories import token_for, user_with_role

pytestmark = pytest.mark.django_db(transaction=True)


def _setup(n_hosts: int = 3):
    """Admin with a token, enrolled online hosts (agents), and a campaign over all of them."""
    EnrollSecret.objects.create(secret="s3cret")
    admin = get_user_model().objects.create_superuser("admin", "a@example.com", "pw")
    token = token_for(admin)
    client = Client()
    agents = []
    for i in range(n_hosts):
        agent = Agent(client, identifier=f"uuid-{i}", hostname=f"host-{i}")
        agent.enroll("s3cret")
        agent.authed("distributed/read")
        agents.append(agent)
    campaign = services.create_campaign(admin, "SELECT * FROM os_version", {"all": True})
    return admin, token, agents, campaign


def answer(agent: Agent, campaign_id: int, rows: list[dict]) -> None:
    name = f"fleet_distributed_query_{campaign_id}"
    assert agent.authed("distributed/write", {"queries": {name: rows}, "statuses": {name: 0}}).json() == {}


async def receive_until(communicator: WebsocketCommunicator, kind: str, timeout: float = 3) -> list[dict]:
    """Every message up to and including the first of ``kind``."""
    messages = []
    while True:
        message = await communicator.receive_json_from(timeout=timeout)
        messages.append(message)
        if message["type"] == kind:
            return messages


def connect(campaign_id: int, headers: list | None = None) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, f"/ws/campaigns/{campaign_id}/", headers=headers or [])


async def test_token_header_watcher_gets_totals_then_live_results_and_status():
    admin, token, agents, campaign = await sync_to_async(_setup)()
    ws = connect(campaign.id, [(b"authorization", f"Token {token}".encode())])
    assert (await ws.connect())[0]
    first = await receive_until(ws, "status")
    assert first[0] == {
        "type": "totals",
        "data": {"targeted": 3, "online": 3, "offline": 0, "missing": 0, "count": 3, "missing_in_action": 0},
    }
    assert first[-1]["data"]["expected_results"] == 3 and first[-1]["data"]["actual_results"] == 0

    await sync_to_async(answer)(agents[0], campaign.id, [{"name": "Ubuntu"}])
    result, status = await ws.receive_json_from(timeout=3), await ws.receive_json_from(timeout=3)
    assert result["type"] == "result"
    assert result["data"]["hostname"] == "host-0" and result["data"]["rows"] == [{"name": "Ubuntu"}]
    assert status["data"]["actual_results"] == 1 and status["data"]["rows"] == 1
    assert status["data"]["pending"] == 2 and status["data"]["status"] == "pending"

    await sync_to_async(answer)(agents[1], campaign.id, [])
    await sync_to_async(answer)(agents[2], campaign.id, [{"name": "macOS"}])
    messages = await receive_until(ws, "status")
    messages += await receive_until(ws, "status")
    statuses = [m["data"] for m in messages if m["type"] == "status"]
    assert statuses[-1]["actual_results"] == 3 and statuses[-1]["no_rows"] == 1
    assert statuses[-1]["status"] == "finished"
    await ws.disconnect()


async def test_late_joiner_gets_what_arrived_then_the_stream_without_doubles():
    admin, token, agents, campaign = await sync_to_async(_setup)()
    await sync_to_async(answer)(agents[0], campaign.id, [{"name": "a"}])
    await sync_to_async(answer)(agents[1], campaign.id, [{"name": "b"}])
    ws = connect(campaign.id)
    assert (await ws.connect())[0]
    await ws.send_json_to({"type": "auth", "data": {"token": token}})
    messages = await receive_until(ws, "status")
    results = [m["data"]["hostname"] for m in messages if m["type"] == "result"]
    assert results == ["host-0", "host-1"]
    assert messages[-1]["data"]["actual_results"] == 2

    await sync_to_async(answer)(agents[2], campaign.id, [{"name": "c"}])
    messages = await receive_until(ws, "status")
    assert [m["data"]["hostname"] for m in messages if m["type"] == "result"] == ["host-2"]
    assert messages[-1]["data"]["actual_results"] == 3
    ended = await ws.receive_json_from(timeout=3)  # every host answered: the campaign finished
    assert ended["type"] == "status" and ended["data"]["campaign_status"] == "finished"
    assert await ws.receive_nothing(timeout=0.3)
    await ws.disconnect()


async def test_session_cookie_from_our_origin_only():
    admin, token, agents, campaign = await sync_to_async(_setup)(1)
    client = Client()
    await sync_to_async(client.force_login)(admin)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()

    ws = connect(
        campaign.id, [(b"cookie", cookie), (b"origin", b"http://fleet.test"), (b"host", b"fleet.test")]
    )
    assert (await ws.connect())[0]
    assert (await ws.receive_json_from())["type"] == "totals"
    await ws.disconnect()

    foreign = connect(
        campaign.id, [(b"cookie", cookie), (b"origin", b"https://evil.example"), (b"host", b"fleet.test")]
    )
    assert (await foreign.connect())[0]
    await foreign.send_json_to({"type": "hello"})
    assert (await foreign.receive_json_from())["type"] == "error"
    await foreign.send_json_to({"type": "auth", "data": {"token": "wrong"}})
    assert await foreign.receive_json_from() == {"type": "error", "data": "invalid token"}
    assert (await foreign.receive_output())["type"] == "websocket.close"


async def test_only_the_creator_and_admins_may_watch():
    admin, token, agents, campaign = await sync_to_async(_setup)(1)
    other = await sync_to_async(user_with_role)("maint", "maintainer")
    other_token = await sync_to_async(token_for)(other)
    ws = connect(campaign.id, [(b"authorization", f"Token {other_token}".encode())])
    assert (await ws.connect())[0]
    message = await ws.receive_json_from()
    assert message["type"] == "error" and "forbidden" in message["data"]
    closed = await ws.receive_output()
    assert closed == {"type": "websocket.close", "code": 4003}

    global_admin = await sync_to_async(user_with_role)("ga", "admin")
    admin_token = await sync_to_async(token_for)(global_admin)
    ws = connect(campaign.id, [(b"authorization", f"Token {admin_token}".encode())])
    assert (await ws.connect())[0]
    assert (await ws.receive_json_from())["type"] == "totals"
    await ws.disconnect()


async def test_unknown_campaign_and_bad_token_header():
    admin, token, agents, campaign = await sync_to_async(_setup)(1)
    ws = connect(campaign.id + 100, [(b"authorization", f"Token {token}".encode())])
    assert (await ws.connect())[0]
    assert await ws.receive_json_from() == {
        "type": "error",
        "data": f"cannot find campaign for ID {campaign.id + 100}",
    }
    await ws.disconnect()

    ws = connect(campaign.id, [(b"authorization", b"Token nope")])
    assert (await ws.connect())[0]
    await ws.send_json_to({"type": "auth", "data": {"token": 42}})
    assert await ws.receive_json_from() == {"type": "error", "data": "invalid token"}
    # Left connected on purpose: on MariaDB+Redis its channels-redis receive task could absorb the
    # event loop's one cancellation at shutdown and hang the suite; conftest's settle stops it.


async def test_stopping_sends_a_finished_status():
    admin, token, agents, campaign = await sync_to_async(_setup)(2)
    ws = connect(campaign.id, [(b"authorization", f"Token {token}".encode())])
    assert (await ws.connect())[0]
    await receive_until(ws, "status")
    await sync_to_async(services.stop_campaign)(campaign)
    status = await ws.receive_json_from(timeout=3)
    assert status["data"]["campaign_status"] == "stopped" and status["data"]["status"] == "finished"
    await ws.disconnect()


async def test_a_batch_of_results_reaches_the_watcher_as_results_then_one_status(monkeypatch):
    """Production publishes answers in batches (``campaign.results``, campaigns.stream): the
    watcher sends each as its own ``result``, one ``status`` after them, and nothing for a repeat."""
    from channels.layers import get_channel_layer

    from campaigns import stream

    admin, token, agents, campaign = await sync_to_async(_setup)()
    ws = connect(campaign.id, [(b"authorization", f"Token {token}".encode())])
    assert (await ws.connect())[0]
    await receive_until(ws, "status")
    held: list[tuple[int, dict]] = []
    monkeypatch.setattr(stream, "publish", lambda campaign_id, event: held.append((campaign_id, event)))
    await sync_to_async(answer)(agents[0], campaign.id, [{"name": "a"}])
    await sync_to_async(answer)(agents[1], campaign.id, [])
    (batch,) = stream.messages(held)
    assert batch[0] == campaign.id and batch[1]["type"] == "campaign.results"

    await get_channel_layer().group_send(stream.group_name(campaign.id), batch[1])
    messages = await receive_until(ws, "status")
    assert [m["type"] for m in messages] == ["result", "result", "status"]
    assert [m["data"]["hostname"] for m in messages[:2]] == ["host-0", "host-1"]
    assert messages[-1]["data"]["actual_results"] == 2 and messages[-1]["data"]["no_rows"] == 1
    await get_channel_layer().group_send(stream.group_name(campaign.id), batch[1])  # a repeat
    assert await ws.receive_nothing(timeout=0.3)
    await ws.disconnect()
