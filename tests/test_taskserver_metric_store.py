"""Metrics task agents send to the server (``taskserver.metric_store``): what a batch stores, every
bound an untrusted agent meets, team isolation of the ``task`` tag, a query count that does not
grow with the batch, idempotent redelivery, retention, and a ``metrics`` frame through the real
WebSocket consumer ending up stored."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.test.utils import CaptureQueriesContext

from fleet.asgi import application
from fleet.due import DueClock
from hosts.models import Team
from taskserver import metric_store, services
from taskserver.models import MetricPoint, MetricSeries, Task, TaskAgent
from tests.test_taskserver_support import make_agent

pytestmark = pytest.mark.django_db


def make_task(name: str, team: Team | None = None, plugin: str = "http") -> Task:
    return Task.objects.create(
        name=name, team=team, plugin=plugin, settings={"url": "https://example.com/"}, interval=60
    )


def metric(name: str = "http.latency_ms", value: float = 1.0, ago: float = 0.0, task=None, **tags) -> dict:
    """One metric as the agent sends it, ``ago`` seconds before now."""
    all_tags = {"agent": "whatever-it-says", "plugin": name.split(".")[0], **tags}
    if task is not None:
        all_tags["task"] = str(task.pk if isinstance(task, Task) else task)
    return {
        "name": name,
        "value": value,
        "unit": "ms",
        "type": "gauge",
        "tags": all_tags,
        "timestamp": time.time() - ago,
    }


def batch(*metrics: dict) -> dict:
    return {"metrics": list(metrics)}


# --- what a batch stores -----------------------------------------------------------------------------


def test_a_batch_becomes_series_with_their_latest_value_and_points(alpha):
    agent = make_agent("a1", alpha)
    task = make_task("web", alpha)
    stored = metric_store.ingest(
        agent.pk,
        batch(
            metric(value=30.0, ago=120, task=task),
            metric(value=10.0, ago=60, task=task),
            metric(value=20.0, ago=90, task=task),  # out of order within the batch
            metric("http.status_code", 200, ago=60, task=task),
            metric("http.latency_ms", 99.0, ago=60, task=task, zone="eu"),  # another tag: another series
            metric("taskagent.runs.succeeded", 5, ago=10),  # the agent's own counter: no task
        ),
    )
    assert stored == 6
    by_tags = {
        json.dumps(s.tags, sort_keys=True): s for s in MetricSeries.objects.filter(name="http.latency_ms")
    }
    latency = by_tags['{"plugin": "http"}']
    assert latency.agent_id == agent.pk and latency.task_id == task.pk
    assert latency.unit == "ms" and latency.type == "gauge"
    assert latency.last_value == 10.0  # the newest point, not the last one sent
    assert list(latency.points.order_by("at").values_list("value", flat=True)) == [30.0, 20.0, 10.0]
    assert abs(latency.last_at.timestamp() - (time.time() - 60)) < 5
    # task and agent are the foreign keys, never labels (the agent's own "agent" tag is ignored)
    assert by_tags['{"plugin": "http", "zone": "eu"}'].last_value == 99.0
    own = MetricSeries.objects.get(name="taskagent.runs.succeeded")
    assert own.task_id is None and own.agent_id == agent.pk and own.last_value == 5
    assert MetricSeries.objects.count() == 4 and MetricPoint.objects.count() == 6


def test_redelivery_is_stored_once_and_late_batches_keep_the_latest_value(alpha):
    agent = make_agent("a1", alpha)
    task = make_task("web", alpha)
    newer = batch(metric(value=2.0, ago=30, task=task))
    older = batch(metric(value=1.0, ago=90, task=task))
    metric_store.ingest(agent.pk, newer)
    metric_store.ingest(agent.pk, older)  # held in the agent's buffer, delivered after
    metric_store.ingest(agent.pk, newer)  # at-least-once: the same batch again
    series = MetricSeries.objects.get()
    assert series.last_value == 2.0
    assert sorted(series.points.values_list("value", flat=True)) == [1.0, 2.0]


def test_an_agent_is_the_authenticated_one_whatever_its_tags_say(alpha):
    one, two = make_agent("one", alpha), make_agent("two", alpha)
    task = make_task("web", alpha)
    metric_store.ingest(one.pk, batch(metric(task=task, agent="two")))
    metric_store.ingest(two.pk, batch(metric(task=task, agent="one")))
    assert sorted(MetricSeries.objects.values_list("agent__name", flat=True)) == ["one", "two"]


# --- bounds ----------------------------------------------------------------------------------------


BAD = [
    ({"name": "", "value": 1}, "bad name"),
    ({"name": "x" * (metric_store.MAX_NAME + 1)}, "bad name"),
    ({"name": "a\nb"}, "bad name"),
    ({"name": 7}, "bad name"),
    ({"value": float("nan")}, "bad value"),
    ({"value": float("inf")}, "bad value"),
    ({"value": True}, "bad value"),
    ({"value": "1"}, "bad value"),
    ({"value": 10**400}, "bad value"),
    ({"unit": "u" * (metric_store.MAX_UNIT + 1)}, "bad unit"),
    ({"type": "histogram"}, "bad type"),
    ({"timestamp": time.time() + 3600}, "bad timestamp"),
    ({"timestamp": "now"}, "bad timestamp"),
    ({"timestamp": time.time() - 7 * 3600}, "older than the retention"),
    ({"tags": ["plugin", "http"]}, "bad tags"),
    ({"tags": {"plugin": 1}}, "bad tags"),
    ({"tags": {"k" * (metric_store.MAX_TAG_KEY + 1): "v"}}, "bad tags"),
    ({"tags": {"zone": "v" * (metric_store.MAX_TAG_VALUE + 1)}}, "bad tags"),
    ({"tags": {"zone": "a\x00b"}}, "bad tags"),
    ({"tags": {f"t{i}": "v" for i in range(metric_store.MAX_TAGS + 1)}}, "too many tags"),
    ({"tags": {"task": "12abc"}}, "unknown task"),
    ({"tags": {"task": ""}}, "unknown task"),
]


@pytest.mark.parametrize(
    ("change", "reason"), BAD, ids=[f"{i}-{reason}" for i, (_, reason) in enumerate(BAD)]
)
def test_a_metric_out_of_bounds_is_dropped_for_its_reason(alpha, change, reason):
    agent = make_agent("a1", alpha)
    good = metric("http.latency_ms", 5.0, ago=1)
    bad = {**metric("http.other", 1.0, ago=1), **change}
    outcome = metric_store.store(agent.pk, batch(good, bad))
    assert outcome.dropped == {reason: 1}
    assert outcome.accepted == 1
    assert list(MetricSeries.objects.values_list("name", flat=True)) == ["http.latency_ms"]


@pytest.mark.parametrize("data", [None, [], "metrics", {"metrics": {}}, {"metrics": "x"}, {}])
def test_a_malformed_batch_stores_nothing(alpha, data):
    agent = make_agent("a1", alpha)
    assert metric_store.ingest(agent.pk, data) == 0
    assert metric_store.store(agent.pk, data).dropped == {"malformed batch": 1}
    assert not MetricSeries.objects.exists()


def test_a_batch_is_cut_at_its_maximum(alpha, monkeypatch):
    monkeypatch.setattr(metric_store, "MAX_BATCH", 10)
    agent = make_agent("a1", alpha)
    outcome = metric_store.store(agent.pk, batch(*(metric(f"m.{i}", i, ago=1) for i in range(15))))
    assert outcome.accepted == 10 and outcome.dropped == {"batch too large": 5}
    assert MetricSeries.objects.count() == 10


def test_an_agent_has_at_most_so_many_series(alpha, monkeypatch, caplog):
    monkeypatch.setattr(metric_store, "MAX_SERIES_PER_AGENT", 3)
    greedy, other = make_agent("greedy", alpha), make_agent("other", alpha)
    outcome = metric_store.store(greedy.pk, batch(*(metric(f"m.{i}", i, ago=5) for i in range(5))))
    assert outcome.new_series == 3 and outcome.dropped == {"too many series": 2}
    assert sorted(MetricSeries.objects.values_list("name", flat=True)) == ["m.0", "m.1", "m.2"]
    # known series still take points; a new one is still refused, and counted in the log
    with caplog.at_level("INFO", logger="taskserver.metric_store"):
        assert metric_store.ingest(greedy.pk, batch(metric("m.0", 10, ago=1), metric("m.9", 1, ago=1))) == 1
    assert "1 too many series" in caplog.text
    assert MetricSeries.objects.get(name="m.0").last_value == 10
    # the bound is per agent
    assert metric_store.store(other.pk, batch(metric("m.9", 1, ago=1))).new_series == 1


def test_a_deleted_agent_stores_nothing(alpha):
    agent = make_agent("a1", alpha)
    agent_id = agent.pk
    agent.delete()
    assert metric_store.store(agent_id, batch(metric(ago=1))).dropped == {"unknown agent": 1}
    assert not MetricSeries.objects.exists()


# --- team isolation --------------------------------------------------------------------------------


def test_the_task_tag_must_name_a_task_of_the_agents_own_scope(alpha, beta):
    ours, theirs, shared = make_task("ours", alpha), make_task("theirs", beta), make_task("global")
    team_agent, global_agent = make_agent("team-agent", alpha), make_agent("global-agent")
    outcome = metric_store.store(
        team_agent.pk,
        batch(metric(task=ours), metric(task=theirs), metric(task=shared), metric(task=999_999)),
    )
    assert outcome.accepted == 1 and outcome.dropped == {"unknown task": 3}
    outcome = metric_store.store(global_agent.pk, batch(metric(task=shared), metric(task=ours)))
    assert outcome.accepted == 1 and outcome.dropped == {"unknown task": 1}
    assert sorted(MetricSeries.objects.values_list("agent__name", "task__name")) == [
        ("global-agent", "global"),
        ("team-agent", "ours"),
    ]
    assert not beta.tasks.get().metric_series.exists()


def test_deleting_a_task_or_an_agent_deletes_its_metrics(alpha):
    agent, other = make_agent("a1", alpha), make_agent("a2", alpha)
    task = make_task("web", alpha)
    metric_store.ingest(agent.pk, batch(metric(task=task, ago=5), metric("taskagent.x", 1, ago=5)))
    metric_store.ingest(other.pk, batch(metric(task=task, ago=5)))
    services.delete_task(task)
    assert list(MetricSeries.objects.values_list("name", flat=True)) == ["taskagent.x"]
    TaskAgent.objects.filter(pk=agent.pk).delete()
    assert not MetricSeries.objects.exists() and not MetricPoint.objects.exists()


# --- queries ---------------------------------------------------------------------------------------


def _queries(agent_id: int, data: dict) -> int:
    with CaptureQueriesContext(connection) as queries:
        metric_store.store(agent_id, data)
    return len(queries)


def test_a_batch_costs_the_same_queries_whatever_its_size(alpha):
    agent = make_agent("a1", alpha)
    tasks = [make_task(f"t{i}", alpha) for i in range(30)]
    small = batch(*(metric(f"s.{i}", i, ago=60 + i, task=tasks[0]) for i in range(3)))
    # ten times the series, a hundred times the metrics, thirty tasks to check (under SQLite's 999
    # parameters a statement, so no statement is split either)
    large = batch(*(metric(f"m.{i % 30}", i, ago=i, task=tasks[i % 30]) for i in range(300)))
    first_small, first_large = _queries(agent.pk, small), _queries(agent.pk, large)
    assert first_small == first_large <= 10
    # series known: no insert of series, no read-back
    again_small = _queries(agent.pk, batch(*(metric(f"s.{i}", i, ago=30, task=tasks[0]) for i in range(3))))
    again_large = _queries(agent.pk, batch(*(metric(f"m.{i}", i, ago=1, task=tasks[i]) for i in range(30))))
    assert again_small == again_large < first_small
    assert MetricSeries.objects.count() == 33 and MetricPoint.objects.count() == 3 + 300 + 3 + 30


def test_the_largest_batch_stays_within_a_few_statements(alpha):
    agent = make_agent("a1", alpha)
    task = make_task("web", alpha)
    data = batch(*(metric(f"m.{i % 500}", i, ago=i, task=task) for i in range(metric_store.MAX_BATCH)))
    # 500 new series and 2,000 points: SQLite splits the inserts at 999 parameters (6 statements of
    # series, 7 of points), MariaDB does not (one each)
    assert _queries(agent.pk, data) <= 22
    assert MetricPoint.objects.count() == metric_store.MAX_BATCH


# --- retention ---------------------------------------------------------------------------------------


def test_prune_deletes_points_and_series_older_than_the_retention(alpha, settings):
    settings.TASKSERVER_METRICS_RETENTION = 600
    agent = make_agent("a1", alpha)
    task = make_task("web", alpha)
    now = time.time()
    metric_store.store(agent.pk, batch(metric("old", 1, ago=500), metric("both", 1, ago=500)), now=now)
    metric_store.store(agent.pk, batch(metric("both", 2, ago=100, task=task)), now=now)
    metric_store.store(agent.pk, batch(metric("both", 3, ago=10)), now=now)
    assert metric_store.prune(now) == (0, 0)
    # 200 s later, what was measured 500 s before the first time is 700 s old
    assert metric_store.prune(now + 200) == (2, 1)
    assert sorted(MetricSeries.objects.values_list("name", "last_value")) == [("both", 2.0), ("both", 3.0)]
    assert MetricPoint.objects.count() == 2
    # readers ignore what is older than the retention even before a prune
    assert [s.name for s in metric_store.series_of(agent_id=agent.pk)[0]] == ["both", "both"]


def test_ingest_prunes_at_most_once_a_minute(alpha, monkeypatch):
    monkeypatch.setattr(metric_store, "_clock", DueClock())
    calls = []
    monkeypatch.setattr(metric_store, "prune", lambda now=None: calls.append(now) or (0, 0))
    agent = make_agent("a1", alpha)
    for _ in range(3):
        metric_store.ingest(agent.pk, batch(metric(ago=1)))
    assert len(calls) == 1


def test_a_failed_prune_does_not_fail_the_batch(alpha, monkeypatch):
    monkeypatch.setattr(metric_store, "_clock", DueClock())

    def broken(now=None):
        raise RuntimeError("database gone")

    monkeypatch.setattr(metric_store, "prune", broken)
    agent = make_agent("a1", alpha)
    assert metric_store.ingest(agent.pk, batch(metric(ago=1))) == 1


# --- through the WebSocket ------------------------------------------------------------------------


async def _receive(communicator: WebsocketCommunicator) -> dict:
    while True:
        message = json.loads(await communicator.receive_from(timeout=3))
        if message["type"] != "heartbeat":
            return message


@pytest.mark.django_db(transaction=True)
async def test_a_metrics_frame_from_a_connected_agent_is_stored():
    @sync_to_async
    def setup() -> tuple[str, int, int]:
        team = Team.objects.create(name="Alpha")
        other = make_task("theirs", Team.objects.create(name="Beta"))
        key = services.create_agent_key(name="k", team_id=team.pk)[1]
        return key, make_task("web", team).pk, other.pk

    key, task_id, other_task_id = await setup()
    headers = [(b"authorization", f"Bearer {key}".encode()), (b"x-fleet-agent-name", b"edge-1")]
    communicator = WebsocketCommunicator(application, "/ws/agent/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    assert [(await _receive(communicator))["type"] for _ in range(3)] == [
        "welcome",
        "destinations",
        "task_list",
    ]
    frame = {
        "v": 1,
        "type": "metrics",
        "data": {
            "metrics": [
                metric("http.latency_ms", 42.5, ago=2, task=task_id),
                metric("http.latency_ms", 1.0, ago=2, task=other_task_id),  # another team's task
                {"name": "broken"},
            ]
        },
    }
    await communicator.send_to(text_data=json.dumps(frame))

    @sync_to_async
    def stored() -> list[tuple]:
        return list(MetricSeries.objects.values_list("agent__name", "task_id", "name", "last_value"))

    deadline = asyncio.get_running_loop().time() + 3
    while not (rows := await stored()) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    assert rows == [("edge-1", task_id, "http.latency_ms", 42.5)]
    # the session lives on after a batch with bad metrics in it
    await communicator.send_to(text_data=json.dumps({"v": 1, "type": "metrics", "data": {"metrics": "no"}}))
    await communicator.send_to(text_data=json.dumps({"v": 1, "type": "heartbeat", "data": {"time": 1}}))
    assert await sync_to_async(lambda: TaskAgent.objects.get(name="edge-1").online)()
    await communicator.disconnect()
