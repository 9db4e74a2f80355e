"""The runner (taskagent/runner.py): aligned schedule, no overlap, timeouts, failures, reconcile."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from taskagent.metrics import PluginError
from taskagent.plugins import Plugin
from taskagent.protocol import Task
from taskagent.runner import Runner, next_fire

SCHEMA = {"properties": {"mode": {"type": "string", "default": "ok"}}}


def make_task(task_id=1, plugin="fake", interval=10, created_at=1_000_003, updated_at=1_000_003, **settings):
    return Task(task_id, f"task {task_id}", plugin, settings, interval, True, created_at, updated_at)


class Fake:
    """A plugin whose behaviour the test sets through the task's ``mode`` setting."""

    def __init__(self):
        self.calls = []
        self.release = asyncio.Event()

    async def run(self, settings, context):
        self.calls.append(context)
        mode = settings["mode"]
        if mode == "block":
            await self.release.wait()
        elif mode == "hang":
            await asyncio.sleep(3600)
        elif mode == "fail":
            raise PluginError("refused", "nope")
        elif mode == "crash":
            raise RuntimeError("bug")
        return [context.metric("value", 42.0, "ms", extra="x")]


@pytest.fixture
def fake():
    return Fake()


def make_runner(fake, published, **kwargs):
    plugin = Plugin("fake", SCHEMA, fake.run)
    return Runner("agent-1", published.extend, plugins={"fake": plugin}.get, **kwargs)


def test_next_fire_is_aligned_on_created_at():
    # created_at % 10 == 3: slots at ...3, ...13, ...23
    assert next_fire(2000.0, 10, 1_000_003) == 2003
    assert next_fire(2003.0, 10, 1_000_003) == 2013  # strictly after now
    assert next_fire(2003.5, 10, 1_000_003) == 2013
    assert next_fire(2012.9, 10, 1_000_003) == 2013
    assert next_fire(86_400 * 5 + 1, 3600, 7200 + 1800) == 86_400 * 5 + 1800
    for now in (0.0, 17.25, 1e9 + 0.5):
        slot = next_fire(now, 60, 1_700_000_042)
        assert slot % 60 == 1_700_000_042 % 60 and now < slot <= now + 60


async def test_the_loop_fires_on_the_aligned_slots(fake):
    clock = {"now": 2000.2}

    async def fake_sleep(delay):
        clock["now"] += delay
        await asyncio.sleep(0)

    published = []
    runner = make_runner(fake, published, clock=lambda: clock["now"], sleep=fake_sleep)
    runner.upsert(make_task())
    async with asyncio.timeout(5):
        while len(fake.calls) < 3:
            await asyncio.sleep(0.001)
    await runner.close()
    assert [c.timestamp for c in fake.calls[:3]] == [2003, 2013, 2023]
    assert all(m.timestamp in (2003, 2013, 2023) for m in published[:6])


async def test_a_run_still_going_makes_the_next_slot_skip(fake):
    published = []
    runner = make_runner(fake, published)
    runner.upsert(make_task(mode="block"))
    first = runner.fire(1, 100.0)
    await asyncio.sleep(0.01)
    assert runner.fire(1, 110.0) is None
    assert runner.fire(1, 120.0) is None
    assert runner.stats.get("runs.skipped") == 2
    assert len(fake.calls) == 1
    fake.release.set()
    await first
    assert runner.stats.get("runs.succeeded") == 1
    assert runner.fire(1, 130.0) is not None
    await runner.close()


async def test_success_metrics_carry_task_agent_and_plugin_tags(fake):
    published = []
    runner = make_runner(fake, published)
    runner.upsert(make_task(task_id=9))
    await runner.fire(9, 500.0)
    by_name = {m.name: m for m in published}
    assert by_name["fake.success"].value == 1.0
    assert by_name["fake.value"].value == 42.0
    for metric in published:
        assert (metric.tags["task"], metric.tags["agent"], metric.tags["plugin"]) == ("9", "agent-1", "fake")
        assert metric.timestamp == 500.0
    assert by_name["fake.value"].tags["extra"] == "x"
    await runner.close()


async def test_a_run_is_cut_at_its_timeout_and_reported_as_a_failure(fake):
    published = []
    runner = make_runner(fake, published, max_timeout=0.2)
    runner.upsert(make_task(mode="hang"))
    assert runner.timeout_for(runner.tasks[1]) == 0.2
    async with asyncio.timeout(3):
        await runner.fire(1, 100.0)
    assert [(m.name, m.value, m.tags.get("error")) for m in published] == [("fake.success", 0.0, "timeout")]
    assert runner.stats.get("runs.failed") == 1
    await runner.close()


def test_timeout_is_the_interval_when_shorter_than_a_minute(fake):
    runner = make_runner(fake, [])
    assert runner.timeout_for(make_task(interval=10)) == 10
    assert runner.timeout_for(make_task(interval=300)) == 60


@pytest.mark.parametrize("mode,kind", [("fail", "refused"), ("crash", "exception")])
async def test_failures_publish_a_failure_metric_and_no_data(fake, mode, kind):
    published = []
    runner = make_runner(fake, published)
    runner.upsert(make_task(mode=mode))
    await runner.fire(1, 100.0)
    assert len(published) == 1
    assert published[0].name == "fake.success" and published[0].value == 0.0
    assert published[0].tags["error"] == kind
    assert runner.stats.get("runs.failed") == 1
    await runner.close()


async def test_invalid_tasks_still_run_as_visible_failures(fake):
    published = []
    runner = make_runner(fake, published)
    runner.upsert(make_task(1, plugin="nosuch"))
    runner.upsert(make_task(2, mode=5))  # mode must be a string
    await runner.fire(1, 100.0)
    await runner.fire(2, 100.0)
    assert {(m.name, m.tags["error"]) for m in published} == {
        ("nosuch.success", "unknown_plugin"), ("fake.success", "invalid_settings")}
    assert runner.stats.get("tasks.invalid") == 2
    assert fake.calls == []
    await runner.close()


async def test_reconcile_adds_updates_and_removes(fake):
    runner = make_runner(fake, [])
    one, two = make_task(1), make_task(2)
    runner.reconcile([one, two])
    assert runner.running_ids() == [1, 2]
    assert runner.stats.get("tasks.added") == 2 and runner.stats.get("tasks.running") == 2

    newer = replace(one, interval=30, updated_at=one.updated_at + 5)
    three = make_task(3)
    runner.reconcile([newer, three])
    assert runner.tasks == {1: newer, 3: three}
    assert runner.stats.get("tasks.removed") == 1 and runner.stats.get("tasks.updated") == 1

    # The same copy again changes nothing; an older copy is ignored.
    assert not runner.upsert(newer)
    assert not runner.upsert(replace(one, updated_at=one.updated_at - 1, interval=60))
    assert runner.tasks[1] == newer
    # Settings changed without a newer updated_at: still replaced.
    changed = replace(newer, settings={"mode": "fail"})
    assert runner.upsert(changed)
    assert runner.tasks[1].settings == {"mode": "fail"}

    # A disabled task is held, but not scheduled.
    runner.upsert(replace(three, enabled=False, updated_at=three.updated_at + 1))
    assert runner.running_ids() == [1]
    assert runner.stats.get("tasks.running") == 1
    await runner.close()


async def test_update_does_not_allow_an_overlapping_run(fake):
    runner = make_runner(fake, [])
    task = make_task(mode="block")
    runner.upsert(task)
    first = runner.fire(1, 100.0)
    await asyncio.sleep(0)
    runner.upsert(replace(task, updated_at=task.updated_at + 1, interval=20))
    assert runner.fire(1, 110.0) is None  # the old run still counts
    fake.release.set()
    await first
    await runner.close()


async def test_remove_cancels_a_run_in_progress(fake):
    published = []
    runner = make_runner(fake, published)
    runner.upsert(make_task(mode="hang"))
    run = runner.fire(1, 100.0)
    await asyncio.sleep(0.01)
    assert runner.remove(1)
    with pytest.raises(asyncio.CancelledError):
        await run
    assert published == [] and runner.tasks == {}
    assert not runner.remove(1)
    await runner.close()
