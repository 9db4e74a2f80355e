"""Agents keep being served while Redis is down or hung, and nothing waits past its timeout.

Outages are real: a TCP proxy (tests/faultproxy.py) sits between the server and Redis or
MariaDB and resets or silences the connections, so the drivers meet what they would in
production. The Redis tests run in-process (the cache is switched to the proxy); the database
hang runs the web server (``fleet.web_server``) in a child process against MariaDB (skipped on
SQLite, which has no server to lose).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.agent import Agent
from tests.faultproxy import FaultProxy

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.django_db


def _listening(port: int, host: str = "127.0.0.1") -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture
def redis_proxy(settings):
    """The cache behind a fault proxy to the local Redis (database index 14)."""
    if not _listening(6379):
        pytest.skip("no Redis on 127.0.0.1:6379 (.ci/run starts one)")
    original = django_settings.CACHES
    proxy = FaultProxy("127.0.0.1", 6379)
    settings.CACHES = {
        "default": {
            "BACKEND": "fleet.cache.ResilientRedisCache",
            "LOCATION": f"redis://127.0.0.1:{proxy.port}/14",
            "KEY_PREFIX": "outage-test",
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 1.0, "RETRY_SECONDS": 1.0},
        }
    }
    from django.core.cache import cache

    cache.clear()
    yield proxy
    proxy.up()
    cache.clear()
    settings.CACHES = original
    proxy.close()


def checkin_ok(agent: Agent) -> None:
    response = agent.authed("distributed/read")
    assert response.status_code == 200, response.content
    assert "error" not in response.json()


def log_ok(agent: Agent) -> None:
    response = agent.authed("log", {"log_type": "status", "data": [{"severity": "0", "message": "m"}]})
    assert response.status_code == 200, response.content
    assert response.json() == {}


def test_with_redis_down_agents_check_in_log_and_enroll_from_the_database(client, global_secret, redis_proxy):
    agent = Agent(client, identifier="before-outage")
    agent.enroll(global_secret)
    checkin_ok(agent)
    with CaptureQueriesContext(connection) as warm:
        checkin_ok(agent)
    assert len(warm) == 0  # served from Redis while it is up

    redis_proxy.down()
    started = time.monotonic()
    for _ in range(20):
        checkin_ok(agent)
        log_ok(agent)
    newcomer = Agent(client, identifier="during-outage")
    newcomer.enroll(global_secret)
    checkin_ok(newcomer)
    assert time.monotonic() - started < 10  # a refused connection fails fast; no request waits
    with CaptureQueriesContext(connection) as cold:
        checkin_ok(agent)
    assert 1 <= len(cold) <= 3  # the node key is looked up in the database instead

    redis_proxy.up()
    time.sleep(1.2)  # the circuit's retry period
    checkin_ok(agent)
    with CaptureQueriesContext(connection) as again:
        checkin_ok(agent)
    assert len(again) == 0  # back on the cache


def test_with_redis_hung_a_check_in_waits_one_timeout_then_none(client, global_secret, redis_proxy):
    agent = Agent(client)
    agent.enroll(global_secret)
    checkin_ok(agent)
    redis_proxy.hang()
    timings = []
    for _ in range(5):
        started = time.monotonic()
        checkin_ok(agent)
        timings.append(time.monotonic() - started)
    assert timings[0] < 3.5  # one socket timeout (1 s) per cache call reached before the circuit opens
    assert max(timings[1:]) < 0.5, timings  # then the circuit answers at once


def test_readyz_answers_within_two_seconds_when_redis_hangs(client, settings, redis_proxy):
    settings.REDIS_URL = f"redis://127.0.0.1:{redis_proxy.port}/14"
    redis_proxy.hang()
    started = time.monotonic()
    response = client.get("/readyz")
    assert time.monotonic() - started < 2.0
    assert response.status_code == 503
    assert response.json()["checks"]["redis"].startswith("error:")


def test_healthz_touches_no_dependency_while_redis_hangs(client, redis_proxy):
    redis_proxy.hang()
    started = time.monotonic()
    assert client.get("/healthz").status_code == 200
    assert time.monotonic() - started < 0.5


# --- a hung database, in the production shape -------------------------------------------------


def _request(url: str, body: dict | None = None, timeout: float = 30) -> tuple[int, dict, float]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    return status, json.loads(raw or b"null"), time.monotonic() - started


def _wait_until_up(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("the web server did not start: " + log.read_text()[-3000:])


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_hung_database_fails_check_ins_within_osquerys_limit(global_secret, tmp_path):
    if connection.vendor != "mysql":
        pytest.skip("needs MariaDB (the MariaDB+Redis run): SQLite has no server that can hang")
    db = connection.settings_dict
    with FaultProxy(db.get("HOST") or "127.0.0.1", int(db.get("PORT") or 3306)) as proxy:
        if not _listening(int(db.get("PORT") or 3306), db.get("HOST") or "127.0.0.1"):
            pytest.skip("MariaDB does not listen on TCP")
        port = _free_port()
        env = {
            **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL",)},
            "DATABASE_URL": f"mysql://{db['USER']}:{db['PASSWORD']}@127.0.0.1:{proxy.port}/{db['NAME']}",
            "DJANGO_SECRET_KEY": "outage-test-secret-key-0123456789-0123456789-0123456789",
            "DJANGO_SECURE_SSL_REDIRECT": "false",
            "FLEET_VAR_DIR": str(tmp_path),
        }
        log = tmp_path / "web.log"
        with log.open("w") as out:
            server = subprocess.Popen(
                [sys.executable, "-m", "fleet.web_server", "--host", "127.0.0.1", "--port", str(port),
                 "--workers", "1", "--threads", "4"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_until_up(f"{base}/healthz", server, log)
            status, body, _ = _request(
                f"{base}/api/osquery/enroll",
                {"enroll_secret": global_secret, "host_identifier": "hung-db-host", "host_details": {}},
            )
            assert status == 200, body
            checkin = {"node_key": body["node_key"]}
            assert _request(f"{base}/api/osquery/config", checkin)[0] == 200

            proxy.hang()
            # Detail answers must be written to the database, which now never answers.
            status, body, took = _request(f"{base}/api/osquery/distributed/write", {**checkin, **_DETAILS})
            assert took < 16, f"took {took:.1f} s"
            assert status == 503 and body["error"] and "node_invalid" not in body
            started = time.monotonic()
            assert _request(f"{base}/healthz", timeout=5)[0] == 200
            assert time.monotonic() - started < 1
            status, body, took = _request(f"{base}/readyz", timeout=5)
            assert status == 503 and took < 2, (status, took)

            proxy.up()
            deadline = time.monotonic() + 20
            while _request(f"{base}/api/osquery/distributed/write", {**checkin, **_DETAILS})[0] != 200:
                assert time.monotonic() < deadline, "no recovery after the database came back"
                time.sleep(0.5)
        finally:
            server.terminate()
            server.wait(timeout=20)


_DETAILS = {
    "queries": {"fleet_detail_query_uptime": [{"total_seconds": "42"}]},
    "statuses": {"fleet_detail_query_uptime": 0},
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_hung_live_query_store_costs_one_timeout_per_retry_period(settings):
    """The store is read on every check-in: while Redis hangs it must not block each one."""
    if not _listening(6379):
        pytest.skip("no Redis on 127.0.0.1:6379 (.ci/run starts one)")
    from redis import RedisError

    from campaigns.store import RedisStore

    settings.REDIS_SOCKET_TIMEOUT = 0.5
    settings.REDIS_RETRY_SECONDS = 2.0
    with FaultProxy("127.0.0.1", 6379) as proxy:
        store = RedisStore(f"redis://127.0.0.1:{proxy.port}/14", ttl=60, active_cache_seconds=0.0)
        assert store.queries_for_host(1) == {}
        proxy.hang()
        started = time.monotonic()
        assert store.queries_for_host(1) == {}  # waits one socket timeout
        first = time.monotonic() - started
        started = time.monotonic()
        for host_id in range(200):
            assert store.queries_for_host(host_id) == {}
        with pytest.raises(RedisError):
            store.complete_host(1, 1)  # a write fails at once too: the answer is asked again later
        rest = time.monotonic() - started
        assert first < 1.5 and rest < 0.2, (first, rest)
        proxy.up()
        time.sleep(2.1)
        assert store.queries_for_host(1) == {}  # back after the retry period
        assert store.circuit.allows()


def test_the_cache_and_the_store_share_one_circuit_per_redis_server(redis_proxy, settings):
    """One hung server costs one timeout per retry period, not one per client."""
    from django.core.cache import cache

    from campaigns.store import RedisStore

    url = settings.CACHES["default"]["LOCATION"]
    store = RedisStore(url, ttl=60, active_cache_seconds=0.0)
    assert store.circuit is cache.circuit
    redis_proxy.hang()
    started = time.monotonic()
    cache.get("anything")  # waits one timeout, opens the circuit
    assert store.queries_for_host(1) == {}  # answered at once: the circuit is already open
    assert time.monotonic() - started < 1.8


def test_every_cache_object_of_a_process_shares_one_redis_client(settings):
    """Found by make bench-tasks: Django makes a cache object per async context, and each built a
    Redis connection pool of its own, so 3,000 WebSocket sessions held 3,000 Redis connections."""
    if not settings.REDIS_URL:
        pytest.skip("the embedded default has no Redis cache")
    from django.core.cache import caches

    first, second = caches.create_connection("default"), caches.create_connection("default")
    assert first is not second and first._cache is second._cache
    first.set("shared-client", 1)
    assert second.get("shared-client") == 1
