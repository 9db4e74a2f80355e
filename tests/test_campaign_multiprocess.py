"""Across processes: an answer written to one server process reaches a watcher on another.

Two daphne processes (A and B) share the test database and a Redis database of their own (the
live-query store and the channels-redis layer). A watcher holds ``/ws/campaigns/<id>/`` on A; an
agent enrolls, checks in and answers through B; the watcher on A must receive the result.

The database: on MariaDB the servers use pytest-django's test database (``transaction=True``, so
everything is committed); on SQLite, whose test database lives in this process's memory, the
migrated test database is copied to a file (SQLite's backup API) that both servers open.
Redis: the test claims one of a few spare database indexes with a lock key (never the index
``REDIS_URL`` names, which the rest of the suite flushes), so parallel runs cannot collide.

The Redis store is also tested here as several processes see it: two ``RedisStore`` objects on
the same database stand for two web processes, each with its in-process copy of the campaigns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from campaigns import store as store_module
from campaigns.store import RedisStore
from hosts.models import EnrollSecret
from tests.agent import host_details
from tests.factories import token_for

ROOT = Path(__file__).resolve().parent.parent
SPARE_REDIS_DBS = (14, 13, 12, 11, 10)
LOCK_KEY = "fleet-test:multiprocess:lock"
SECRET = "mp-enroll-secret"
SQL = "SELECT name, version FROM os_version"
CREATE_CAMPAIGN = f"""
import django
django.setup()
from django.contrib.auth import get_user_model
from campaigns import services
admin = get_user_model().objects.get(username="mp-admin")
print(services.create_campaign(admin, {SQL!r}, {{"all": True}}).id)
"""


def _redis_base() -> str:
    """scheme://host:port of the suite's Redis (REDIS_URL when set), without a database index."""
    parts = urlsplit(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379")
    return f"{parts.scheme}://{parts.netloc}"


def _suite_redis_db() -> int | None:
    path = urlsplit(os.environ.get("REDIS_URL", "")).path.strip("/")
    return int(path) if path.isdigit() else None


@pytest.fixture
def redis_url():
    """A Redis database index of this test's own, locked for its duration and emptied of our keys."""
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(_redis_base(), socket_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {_redis_base()}: {exc}")
    token = uuid.uuid4().hex
    for db in SPARE_REDIS_DBS:
        if db == _suite_redis_db():
            continue
        client = redis.Redis.from_url(f"{_redis_base()}/{db}", socket_timeout=5)
        if client.set(LOCK_KEY, token, nx=True, ex=300):
            break
    else:
        pytest.fail(f"every spare Redis database {SPARE_REDIS_DBS} is locked by another run")

    def clean() -> None:  # the store, the channel layer and the cache all use "fleet:" keys
        for key in client.scan_iter(match="fleet:*", count=1000):
            client.delete(key)

    clean()
    try:
        yield f"{_redis_base()}/{db}"
    finally:
        clean()
        if client.get(LOCK_KEY) == token.encode():
            client.delete(LOCK_KEY)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daphne:
    """A daphne process on 127.0.0.1, stopped by its pid."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name, self.env, self.log = name, env, log_dir / f"daphne-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> None:
        for _attempt in range(3):  # a free port can be taken between the probe and the bind
            self.port = _free_port()
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "daphne", "-v", "1", "-b", "127.0.0.1", "-p", str(self.port),
                     "fleet.asgi:application"],
                    cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                )  # fmt: skip
            if self._wait_healthy():
                return
            self.stop()
        raise AssertionError(f"daphne {self.name} did not start:\n{self.tail()}")

    def _wait_healthy(self, timeout: float = 60) -> bool:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as r:
                if r.status == 200:
                    return True
            time.sleep(0.2)
        return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
        return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


def _shared_database(tmp_path: Path) -> dict[str, str]:
    """Environment that points a server process at this test's database."""
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        path = tmp_path / "shared.sqlite3"
        connection.ensure_connection()
        target = sqlite3.connect(path)
        try:
            connection.connection.backup(target)  # schema and everything committed so far
        finally:
            target.close()
        return {"SQLITE_PATH": str(path)}
    if connection.vendor == "mysql":
        url = urlsplit(os.environ["DATABASE_URL"])
        return {"DATABASE_URL": url._replace(path=f"/{settings['NAME']}").geturl()}
    pytest.skip(f"no shared database for {connection.vendor} in this test")


def _server_env(tmp_path: Path, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SQLITE_PATH", "REDIS_URL")}
    env.update(
        _shared_database(tmp_path),
        REDIS_URL=redis_url,
        DJANGO_SETTINGS_MODULE="fleet.settings",
        DJANGO_SECRET_KEY="multiprocess-test-" + "k" * 40,
        FLEET_VAR_DIR=str(tmp_path / "var"),
        STATIC_ROOT=str(tmp_path / "static"),
        DJANGO_SECURE_SSL_REDIRECT="false",  # plain HTTP on loopback (production redirects)
        DATABASE_CONN_MAX_AGE="0",  # ASGI processes must not keep connections (they leak)
        OSQUERY_SEEN_FLUSH_INTERVAL="0",  # a check-in marks the host online at once
        LOG_LEVEL="WARNING",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


async def _post(session: aiohttp.ClientSession, url: str, body: dict) -> dict:
    async with session.post(url, json=body) as response:
        assert response.status == 200, f"{url}: {response.status} {await response.text()}"
        return await response.json(content_type=None)


async def _receive(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float) -> list[dict]:
    """Messages up to and including the first of ``kind``."""
    messages = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {kind!r} message within {timeout} s; got {messages}")
        message = await ws.receive(timeout=remaining)
        assert message.type == aiohttp.WSMsgType.TEXT, f"websocket closed or failed: {message}"
        messages.append(json.loads(message.data))
        if messages[-1]["type"] == kind:
            return messages


async def _scenario(a: Daphne, b: Daphne, env: dict[str, str], token: str) -> dict:
    agent_api = f"{b.url}/api/osquery"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        # The host enrolls and checks in through B.
        details = host_details("mp-uuid-1", hostname="mp-host-1.local")
        enrolled = await _post(
            http,
            f"{agent_api}/enroll",
            {"enroll_secret": SECRET, "host_identifier": "mp-uuid-1", "host_details": details},
        )
        node_key = enrolled["node_key"]
        await _post(http, f"{agent_api}/distributed/read", {"node_key": node_key})

        # A third process starts the campaign (as REST or manage.py would, in a process of its own).
        created = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CREATE_CAMPAIGN, cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(created.communicate(), timeout=60)
        assert created.returncode == 0, err.decode(errors="replace")
        campaign_id = int(out.decode().strip().splitlines()[-1])
        name = f"fleet_distributed_query_{campaign_id}"

        # The watcher holds the WebSocket on A.
        headers = {"Authorization": f"Token {token}"}
        async with http.ws_connect(
            f"{a.url.replace('http', 'ws')}/ws/campaigns/{campaign_id}/", headers=headers
        ) as ws:
            opening = await _receive(ws, "status", timeout=15)
            assert opening[0]["type"] == "totals" and opening[0]["data"]["targeted"] == 1
            assert opening[-1]["data"]["status"] == "pending"

            # B learns of the campaign from Redis (its list of active campaigns is cached ~1 s).
            deadline = time.monotonic() + 15
            while True:
                read = await _post(http, f"{agent_api}/distributed/read", {"node_key": node_key})
                if name in read["queries"]:
                    break
                assert time.monotonic() < deadline, f"B never sent the campaign's query: {read}"
                await asyncio.sleep(0.2)
            assert read["queries"][name] == SQL and read["discovery"][name] == "SELECT 1"

            rows = [{"name": "macOS", "version": "14.5"}]
            written = await _post(
                http,
                f"{agent_api}/distributed/write",
                {"node_key": node_key, "queries": {name: rows}, "statuses": {name: 0}},
            )
            assert written == {}

            live = await _receive(ws, "result", timeout=15)
            result = live[-1]["data"]
            assert (result["hostname"], result["rows"], result["state"]) == ("mp-host-1.local", rows, "rows")
            assert result["id"]  # B stored it before publishing
            # The campaign finished (its only host answered): the watcher on A hears that too.
            final = await _receive(ws, "status", timeout=15)
            deadline = time.monotonic() + 15
            while final[-1]["data"].get("campaign_status") != "finished":
                final = await _receive(ws, "status", timeout=max(0.1, deadline - time.monotonic()))
            status = final[-1]["data"]
            assert (status["actual_results"], status["rows"], status["status"]) == (1, 1, "finished")
        return {"campaign_id": campaign_id, "result": result}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_result_written_to_one_process_reaches_a_watcher_on_another(tmp_path, redis_url):
    admin = get_user_model().objects.create_superuser("mp-admin", "mp@example.com", "pw")
    token = token_for(admin)
    EnrollSecret.objects.create(secret=SECRET)

    env = _server_env(tmp_path, redis_url)  # after the seed: SQLite copies the database here
    a, b = Daphne("A", env, tmp_path), Daphne("B", env, tmp_path)
    try:
        a.start()
        b.start()
        outcome = asyncio.run(asyncio.wait_for(_scenario(a, b, env, token), timeout=120))
    except BaseException:
        print(f"--- daphne A log ---\n{a.tail()}\n--- daphne B log ---\n{b.tail()}")
        raise
    finally:
        a.stop()
        b.stop()

    # The answer B stored, and the campaign's end, are in the shared database.
    campaign_id = outcome["campaign_id"]
    if connection.vendor == "sqlite":
        with contextlib.closing(sqlite3.connect(env["SQLITE_PATH"])) as db:
            stored = db.execute(
                "SELECT COUNT(*) FROM campaigns_campaignresult WHERE campaign_id = ?", [campaign_id]
            ).fetchone()[0]
            status = db.execute(
                "SELECT status FROM campaigns_campaign WHERE id = ?", [campaign_id]
            ).fetchone()[0]
    else:
        from campaigns.models import Campaign, CampaignResult

        stored = CampaignResult.objects.filter(campaign_id=campaign_id).count()
        status = Campaign.objects.get(pk=campaign_id).status
    assert (stored, status) == (1, "finished")


# --- the Redis store, as two processes see it -------------------------------------------------------
def _keys(url: str) -> set[str]:
    import redis

    return {k.decode() for k in redis.Redis.from_url(url).scan_iter(match="fleet:lq:*")}


def test_each_process_tests_bits_in_its_own_copy_and_clears_its_own_at_once(redis_url):
    one, other = RedisStore(redis_url, 60, 60.0), RedisStore(redis_url, 60, 0.0)  # other: no cache
    one.start(7, "SELECT 1", [3, 10])
    assert one.queries_for_host(3) == {7: "SELECT 1"} == other.queries_for_host(10)
    assert one.queries_for_host(4) == {} and one.queries_for_host(10_000) == {}

    class NoRedis:  # a warm copy answers check-ins without a Redis round trip
        def __getattr__(self, name):
            raise AssertionError(f"check-in called Redis: {name}")

    real, one._redis = one._redis, NoRedis()
    assert one.queries_for_host(10) == {7: "SELECT 1"}
    one._redis = real

    assert other.complete_host(7, 3) == store_module.Completion(answered=1, remaining=1)
    assert other.queries_for_host(3) == {}  # the process that recorded the answer: at once
    assert one.queries_for_host(3) == {7: "SELECT 1"}  # another: when its copy expires (1 s)
    one.forget_local_state()
    assert one.queries_for_host(3) == {}
    assert one.complete_host(7, 3) is None  # a repeated answer is not counted


def test_pending_is_asked_of_redis_itself_not_of_the_process_copy(redis_url):
    """An answer is checked with ``claim``: a campaign another process started a moment ago is
    not in this process's copy yet, and its answers must not be taken for late ones."""
    one, other = RedisStore(redis_url, 60, 60.0), RedisStore(redis_url, 60, 60.0)
    assert one.queries_for_host(3) == {}  # one's copy: no campaign, kept for a minute
    other.start(7, "SELECT 1", [3, 10])
    assert one.queries_for_host(3) == {}  # the copy does not know the campaign yet
    assert one.claim(7, 3, 0, 100) == 0 and one.claim(7, 10, 0, 100) == 0
    assert one.claim(7, 4, 0, 100) is None and one.claim(7, 10_000, 0, 100) is None
    assert one.claim(8, 3, 0, 100) is None
    assert one.complete_host(7, 3) == store_module.Completion(answered=1, remaining=1)
    assert other.claim(7, 3, 0, 100) is None
    other.stop(7)
    assert one.claim(7, 10, 0, 100) is None
    assert not [k for k in _keys(redis_url) if "{7}" in k or "{8}" in k]  # GETBIT creates no key


@pytest.mark.django_db
def test_an_answer_to_a_campaign_just_started_by_another_process_is_kept(redis_url, settings, monkeypatch):
    """The earlier store-first attempt asked this process's copy and dropped such answers."""
    from campaigns import services
    from campaigns.models import CampaignResult, CampaignStatus
    from campaigns.store import get_store
    from tests.factories import make_host

    settings.REDIS_URL = redis_url
    settings.LIVE_QUERY = {**settings.LIVE_QUERY, "ACTIVE_CACHE_SECONDS": 60.0}
    get_store.cache_clear()
    published: list[dict] = []
    monkeypatch.setattr(services.stream, "publish", lambda campaign_id, event: published.append(event))
    try:
        admin = get_user_model().objects.create_superuser("xp-admin", "xp@example.com", "pw")
        hosts = [make_host(f"xp-{i}", seen_ago=timedelta(seconds=5)) for i in range(2)]
        here = get_store()
        assert here.queries_for_host(hosts[0].id) == {}  # this process's copy, warm and empty
        with monkeypatch.context() as elsewhere:
            elsewhere.setattr(services, "get_store", lambda: RedisStore(redis_url, 60, 60.0))
            campaign = services.create_campaign(admin, "SELECT 1", {"hosts": [h.id for h in hosts]})
        assert here.queries_for_host(hosts[0].id) == {}  # still the copy from before the start

        assert services.record_answer(campaign.id, hosts[0].id, "xp-0", [{"1": "1"}], 0, "") is not None
        assert services.record_answer(campaign.id, hosts[0].id, "xp-0", [{"1": "1"}], 0, "") is None
        assert services.record_answer(campaign.id, hosts[1].id, "xp-1", [], 0, "") is not None

        campaign.refresh_from_db()
        assert campaign.status == CampaignStatus.FINISHED
        assert sorted(CampaignResult.objects.filter(campaign=campaign).values_list("hostname", "state")) == [
            ("xp-0", "rows"), ("xp-1", "no_rows"),
        ]  # fmt: skip
        assert [e["type"] for e in published] == ["campaign.result", "campaign.result", "campaign.ended"]
        assert here.claim(campaign.id, hosts[0].id, 0, 100) is None
    finally:
        get_store.cache_clear()


@pytest.mark.parametrize("kind", ["redis", "memory"])
def test_claim_grants_rows_under_the_cap_only_to_pending_hosts(kind, redis_url, db, settings):
    """``claim`` is the pending check and the row reservation in one call: a host that is not
    pending gets ``None`` and takes none of the campaign's rows."""
    settings.LIVE_QUERY = {**settings.LIVE_QUERY, "ACTIVE_CACHE_SECONDS": 60.0}  # no re-read meanwhile
    s = RedisStore(redis_url, 60, 60.0) if kind == "redis" else store_module.MemoryStore()
    s.start(12, "SELECT 1", [1, 2, 3, 4])
    assert s.claim(12, 1, 3, 5) == 3
    assert s.claim(12, 9, 3, 5) is None  # not targeted: nothing reserved
    assert s.claim(12, 2, 3, 5) == 2  # the cap's remainder
    assert s.claim(12, 3, 3, 5) == 0  # pending, but the cap is spent
    assert s.complete_host(12, 4) is not None
    assert s.claim(12, 4, 1, 5) is None  # answered already
    s.stop(12)
    assert s.claim(12, 1, 1, 5) is None


async def test_published_events_reach_the_group_in_batches_in_order(redis_url, settings, monkeypatch):
    """Through a real Redis channel layer: an answer after a quiet spell leaves at once; those
    published within the next ``FLUSH_SECONDS`` arrive as one ``campaign.results`` message, the
    end after them; what is held at exit is sent by ``drain``."""
    from channels_redis.core import RedisChannelLayer

    from campaigns import stream

    settings.REDIS_URL = redis_url
    layer = RedisChannelLayer(hosts=[redis_url])
    monkeypatch.setattr(stream, "get_channel_layer", lambda: layer)
    monkeypatch.setattr(stream, "FLUSH_SECONDS", 1.0)
    monkeypatch.setattr(stream._batcher, "_next_flush", 0.0)  # quiet until now
    channel = await layer.new_channel()
    await layer.group_add(stream.group_name(5), channel)
    try:
        started = time.monotonic()
        stream.publish(5, {"type": "campaign.result", "result": {"host_id": 1}})
        alone = await asyncio.wait_for(layer.receive(channel), 5)
        assert [r["host_id"] for r in alone["results"]] == [1]
        assert time.monotonic() - started < 0.5  # not held for the period

        for host_id in (2, 3):
            stream.publish(5, {"type": "campaign.result", "result": {"host_id": host_id}})
        stream.publish(5, {"type": "campaign.ended", "status": "finished"})
        batch = await asyncio.wait_for(layer.receive(channel), 5)
        assert batch["type"] == "campaign.results"
        assert [r["host_id"] for r in batch["results"]] == [2, 3]
        assert (await asyncio.wait_for(layer.receive(channel), 5))["type"] == "campaign.ended"

        monkeypatch.setattr(stream, "FLUSH_SECONDS", 60.0)
        stream._batcher._next_flush = time.monotonic() + 60.0  # only drain() can send this one now
        stream.publish(5, {"type": "campaign.result", "result": {"host_id": 4}})
        await asyncio.to_thread(stream._batcher.drain)
        last = await asyncio.wait_for(layer.receive(channel), 5)
        assert [r["host_id"] for r in last["results"]] == [4]
    finally:
        await layer.group_discard(stream.group_name(5), channel)
        stream._batcher._take()  # nothing left for a later test's flush


def test_big_bitmaps_are_asked_of_redis_per_check_in(redis_url, monkeypatch):
    monkeypatch.setattr(store_module, "LOCAL_BITMAP_MAX_BYTES", 4)
    s = RedisStore(redis_url, 60, 60.0)
    s.start(8, "SELECT 2", [5, 100])  # 13 bytes: not copied
    s.start(9, "SELECT 3", [5])  # 1 byte: copied
    assert s.queries_for_host(100) == {8: "SELECT 2"}
    assert s.queries_for_host(5) == {8: "SELECT 2", 9: "SELECT 3"}
    assert s.complete_host(8, 100) == store_module.Completion(answered=1, remaining=1)
    assert s.queries_for_host(100) == {}  # GETBIT sees the answer at once
    assert s.queries_for_host(6) == {}


def test_a_late_answer_to_a_stopped_campaign_leaves_no_key_behind(redis_url):
    s = RedisStore(redis_url, 60, 1.0)
    s.start(11, "SELECT 1", [5, 6])
    assert s.complete_host(11, 5) is not None
    s.stop(11)
    assert s.complete_host(11, 6) is None
    assert s.claim(11, 6, 10, 100) is None
    assert not [k for k in _keys(redis_url) if "{11}" in k]  # SETBIT would have made one, with no TTL


def test_checkins_keep_working_when_redis_is_down(db):
    """The Redis store answers "no live queries" while Redis is unreachable, never an error."""
    from campaigns.store import RedisStore

    store = RedisStore("redis://127.0.0.1:1/0", ttl=60, active_cache_seconds=0.5)
    assert store.queries_for_host(1) == {}
    assert store.queries_for_host(1) == {}  # served from the empty copy, no new attempt yet


def test_a_live_answer_while_the_store_is_down_loses_nothing_else(agent, settings):
    """The write still succeeds (and its detail results are kept); the answer is asked for again."""
    from campaigns.store import get_store
    from hosts.models import Host

    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    get_store.cache_clear()
    try:
        body = {
            "queries": {
                "fleet_distributed_query_1": [{"a": "b"}],
                "fleet_detail_query_uptime": [{"total_seconds": "4242"}],
            },
            "statuses": {"fleet_distributed_query_1": 0, "fleet_detail_query_uptime": 0},
        }
        response = agent.authed("distributed/write", body)
        assert response.status_code == 200 and response.json() == {}
        assert Host.objects.get(osquery_host_id=agent.identifier).uptime == 4242
    finally:
        get_store.cache_clear()
