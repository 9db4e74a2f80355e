"""Shared fixtures: every test runs on the embedded default unless DATABASE_URL/REDIS_URL are set."""

from __future__ import annotations

import asyncio
import inspect
import sys

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from django.core.cache import cache

from campaigns.handout import get_pacer
from campaigns.store import get_store
from hosts import seen
from hosts.models import EnrollSecret, Team
from tests.agent import Agent


@pytest.fixture(autouse=True)
def _clean_process_state(settings, tmp_path):
    """Each test starts with an empty cache and seen buffer, and logs into its own directory."""
    cache.clear()
    seen.flush_discard()
    # A new channel layer per test: pytest-asyncio gives each test its own event loop, and
    # channels-redis binds locks and connections to the loop that first used them, so a layer
    # carried over from another test's loop can hang a WebSocket test.
    channel_layers.backends.clear()
    get_store.cache_clear()
    get_store().forget_local_state()
    get_pacer.cache_clear()  # a full bucket of live-query hand-outs for every test
    settings.PASSWORD_HASHERS = ["tests.hashers.OneRoundPBKDF2PasswordHasher"]  # 0.4 s a hash otherwise
    settings.OSQUERY = {
        **settings.OSQUERY,
        "RESULT_LOG_FILE": str(tmp_path / "osquery_result.log"),
        "STATUS_LOG_FILE": str(tmp_path / "osquery_status.log"),
        "SEEN_FLUSH_INTERVAL": 3600.0,
        "NODE_KEY_CHANGE_STAMP_FILE": str(tmp_path / "nodekeys.stamp"),
    }
    # Apple MDM: no CA unless a test sets one up, and never the developer's own var/mdm.
    settings.MDM = {**settings.MDM, "DIR": str(tmp_path / "mdm")}
    # Task server: the embedded default's cross-process change stamp is the test's own.
    settings.TASKSERVER = {**settings.TASKSERVER, "CHANGE_STAMP_FILE": str(tmp_path / "taskserver.stamp")}
    yield
    seen.flush_discard()
    # A test that simulated a Redis failure leaves the circuit breaker open for its retry period
    # (fleet/cache.py): close it, or the next tests would silently run without the cache.
    circuit = getattr(cache, "circuit", None)
    if circuit is not None:
        circuit.succeeded()
    cache.clear()


SETTLE_SECONDS = 30


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every async test settles the thread its sync calls ran in before its event loop closes."""
    for item in items:
        function = getattr(item, "function", None)
        if function is not None and inspect.iscoroutinefunction(function):
            item.fixturenames.append("_settle_sync_thread")


@pytest.fixture
async def _settle_sync_thread():
    """Before the test's event loop closes, with it still running: stop what the test left
    running, then wait until the one thread that runs thread-sensitive sync code
    (``sync_to_async``, ``database_sync_to_async``) is idle.

    pytest-asyncio's own shutdown cancels leftover tasks once and waits for them without a limit.
    A WebSocket consumer that a test left connected has a channels-redis ``receive`` task, and that
    task can absorb one cancellation and go back to waiting for the next message: the MariaDB+Redis
    run then hung in that shutdown, forever (reproduced: a test that leaves a consumer connected,
    repeated, hung within three runs; every second or third needed a second cancellation). Here
    each leftover task is cancelled again until it ends, within ``SETTLE_SECONDS``, or the test
    fails with their stacks.

    Then the sync thread: a consumer's sync work can outlive its test, and if it hops back to the
    loop (``async_to_sync`` from an on-commit hook) after the loop stopped but before it closed,
    the hop never runs, the thread waits forever and every later test's first sync call queues
    behind it. Queueing a no-op behind that work lets it finish while the loop still serves it."""
    yield
    deadline = asyncio.get_running_loop().time() + SETTLE_SECONDS
    current = asyncio.current_task()
    while True:
        leftovers = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if not leftovers:
            break
        if asyncio.get_running_loop().time() > deadline:
            for task in leftovers:
                task.print_stack(file=sys.stderr)
            pytest.fail(f"{len(leftovers)} task(s) left by this test would not stop when cancelled")
        for task in leftovers:
            task.cancel()
        await asyncio.wait(leftovers, timeout=0.5)
    try:
        await asyncio.wait_for(sync_to_async(lambda: None)(), SETTLE_SECONDS)
    except TimeoutError:
        pytest.fail(f"sync work left by this test was still running after {SETTLE_SECONDS} s")


@pytest.fixture
def team(db) -> Team:
    return Team.objects.create(name="Engineering")


@pytest.fixture
def alpha(db) -> Team:
    return Team.objects.create(name="Alpha")


@pytest.fixture
def beta(db) -> Team:
    return Team.objects.create(name="Beta")


@pytest.fixture
def global_secret(db) -> str:
    return EnrollSecret.objects.create(secret="global-secret-123").secret


@pytest.fixture
def team_secret(team) -> str:
    return EnrollSecret.objects.create(secret="team-secret-456", team=team).secret


@pytest.fixture
def agent(client, global_secret) -> Agent:
    """An osquery agent already enrolled with the global secret."""
    a = Agent(client)
    a.enroll(global_secret)
    return a


@pytest.fixture
def eager_celery():
    """Celery runs tasks in-process, as on the embedded default (CI's MariaDB+Redis run has a
    broker and no worker, so a test of what a task does must ask for this)."""
    from fleet.celery import app

    saved = app.conf.task_always_eager, app.conf.task_eager_propagates
    app.conf.task_always_eager = app.conf.task_eager_propagates = True
    yield
    app.conf.task_always_eager, app.conf.task_eager_propagates = saved
