"""A process's copies of cache entries (``fleet.near_cache``), against a real Redis: a change
announced by one process drops the copies of every other, a listener that lost its connection
neither serves nor keeps copies, and a read that raced a change is not kept. Last, two real server
processes: a refetch asked through one reaches a host checking in through the other at once,
though that process held a copy of the host's state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import aiohttp
import pytest
import redis
from django.contrib.auth import get_user_model

from fleet import near_cache
from fleet.near_cache import NearCache, channel_for
from hosts.models import EnrollSecret
from tests.agent import host_details
from tests.factories import token_for
from tests.test_campaign_multiprocess import SECRET, Daphne, _post, _server_env, redis_url  # noqa: F401


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def pair(redis_url) -> Iterator[tuple[NearCache, NearCache]]:  # noqa: F811
    """Two copies on one channel, as two processes would hold them, both listening."""
    a = NearCache(redis_url, "test", max_entries=100, max_age=60)
    b = NearCache(redis_url, "test", max_entries=100, max_age=60)
    try:
        for near in (a, b):
            near.get("warm-up")  # starts the listener
            wait_until(lambda near=near: near._connected)
        yield a, b
    finally:
        for near in (a, b):
            near.stop()
            near_cache._instances.remove(near)


def kept(near: NearCache, key: str, value: object) -> None:
    near.put(key, value, near.epoch())
    assert near.get(key) == value


def test_the_channel_names_the_redis_database():
    assert channel_for("redis://127.0.0.1:6379/15", "nodekeys") == "fleet:near:15:nodekeys"
    assert channel_for("redis://127.0.0.1:6379", "nodekeys") == "fleet:near:0:nodekeys"


def test_a_change_announced_by_one_process_drops_the_others_copy(pair):
    a, b = pair
    kept(a, "k1", "old")
    kept(a, "k2", "other")
    kept(b, "k1", "old")
    b.changed(["k1"])
    assert b.get("k1") is None  # the announcer's own copy goes at once
    wait_until(lambda: a.get("k1") is None)
    assert a.get("k2") == "other"  # only what was named


def test_emptying_the_cache_drops_every_copy_everywhere(pair):
    a, b = pair
    kept(a, "k1", 1)
    kept(a, "k2", 2)
    b.clear_everywhere()
    wait_until(lambda: a.get("k1") is None and a.get("k2") is None)


def test_a_read_that_raced_a_change_is_not_kept(pair):
    a, b = pair
    epoch = a.epoch()  # a reads the entry...
    b.changed(["k1"])  # ...b changes it meanwhile...
    wait_until(lambda: a.epoch() != epoch)
    a.put("k1", "what a read before the change", epoch)  # ...and a's read comes back
    assert a.get("k1") is None


def test_copies_expire_and_are_bounded(redis_url):  # noqa: F811
    near = NearCache(redis_url, "test-bounds", max_entries=2, max_age=0.2)
    try:
        near.get("warm-up")
        wait_until(lambda: near._connected)
        kept(near, "k1", 1)
        time.sleep(0.3)
        assert near.get("k1") is None
        kept(near, "k1", 1)
        kept(near, "k2", 2)
        near.put("k3", 3, near.epoch())  # full: starts over rather than grow
        assert (near.get("k1"), near.get("k3")) == (None, 3)
    finally:
        near.stop()
        near_cache._instances.remove(near)


def test_a_lost_connection_drops_the_copies_and_nothing_is_used_until_it_is_back(pair, redis_url):  # noqa: F811
    a, _b = pair
    kept(a, "k1", "before")
    killer = redis.Redis.from_url(redis_url)
    assert killer.client_kill_filter(_type="pubsub") >= 2  # both listeners lose their connection
    wait_until(lambda: a.get("k1") is None)  # messages sent meanwhile are lost: nothing kept
    a.put("k1", "while away", a.epoch())
    wait_until(lambda: a._connected)  # the listener reconnects on its own
    assert a.get("k1") is None  # what was put while away was not kept
    kept(a, "k1", "after")


def test_nothing_is_served_or_kept_before_the_listener_is_connected(redis_url):  # noqa: F811
    near = NearCache("redis://127.0.0.1:1/0", "nowhere", max_entries=10, max_age=60)  # nothing listens
    try:
        assert near.get("k1") is None
        near.put("k1", "value", near.epoch())
        assert near.get("k1") is None
        near.changed(["k1"])  # announcing fails quietly: the write it follows is already done
    finally:
        near.stop()
        near_cache._instances.remove(near)


# --- two server processes -----------------------------------------------------------------------


async def _refetch_reaches_the_other_process(a: Daphne, b: Daphne, token: str) -> dict:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        details = host_details("near-uuid", hostname="near-host.local")
        enrolled = await _post(
            http,
            f"{a.url}/api/osquery/enroll",
            {"enroll_secret": SECRET, "host_identifier": "near-uuid", "host_details": details},
        )
        key = {"node_key": enrolled["node_key"]}
        first = await _post(http, f"{a.url}/api/osquery/distributed/read", key)  # detail queries due
        statuses = {name: 0 for name in first["queries"]}
        rows = {name: [] for name in first["queries"]}
        written = await _post(
            http, f"{a.url}/api/osquery/distributed/write", {**key, "queries": rows, "statuses": statuses}
        )
        assert written == {}
        quiet = []
        for _ in range(3):  # the first starts A's listener; the later ones are served from A's copy
            quiet.append(await _post(http, f"{a.url}/api/osquery/distributed/read", key))
            await asyncio.sleep(0.5)
        auth = {"Authorization": f"Token {token}"}  # the servers' database may be a copy of ours
        async with http.get(f"{b.url}/api/v1/hosts/", headers=auth) as response:
            listed = await response.json()
        (host_id,) = [host["id"] for host in listed["results"] if host["hostname"] == "near-host.local"]
        async with http.post(f"{b.url}/api/v1/hosts/{host_id}/refetch/", headers=auth) as response:
            assert response.status == 200, await response.text()
        after = await _post(http, f"{a.url}/api/osquery/distributed/read", key)
        return {"first": first, "quiet": quiet, "after": after}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_refetch_asked_of_one_process_reaches_a_host_checking_in_through_another(tmp_path, redis_url):  # noqa: F811
    EnrollSecret.objects.create(secret=SECRET)
    token = token_for(get_user_model().objects.create_superuser("near-admin", "near@example.com", "pw"))
    env = _server_env(tmp_path, redis_url)
    a, b = Daphne("a", env, tmp_path), Daphne("b", env, tmp_path)
    try:
        a.start()
        b.start()
        seen = asyncio.run(_refetch_reaches_the_other_process(a, b, token))
    finally:
        a.stop()
        b.stop()
    assert seen["first"]["queries"]
    assert all(not reply["queries"] for reply in seen["quiet"])  # steady state: A serves from its copy
    assert any(name.startswith("fleet_detail_query_") for name in seen["after"]["queries"]), seen["after"]
