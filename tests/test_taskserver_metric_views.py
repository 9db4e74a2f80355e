"""Where the metrics agents send to the server are read: REST (``tasks/{id}/metrics/``,
``task-agents/{id}/metrics/``) with the task's and agent's own permission rules, the console's
Metrics section (an inline SVG chart per series, an empty state) and ``/metrics`` for Prometheus."""

from __future__ import annotations

import re
import time

import prometheus_client
import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from hosts.choices import Role
from taskserver import charts, metric_store
from taskserver.models import MetricSeries
from tests.factories import api_for, user_with_role
from tests.test_taskserver_metric_store import batch, make_task, metric
from tests.test_taskserver_support import make_agent

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin():
    return get_user_model().objects.create_superuser("root", "root@example.com", "pw")


@pytest.fixture
def measured(alpha):
    """Two agents of Alpha running ``web``: latency every minute for ten minutes, and the agents'
    own counters."""
    task = make_task("web", alpha)
    agents = [make_agent("edge-1", alpha), make_agent("edge-2", alpha)]
    for n, agent in enumerate(agents):
        points = [
            metric("http.latency_ms", 10.0 * (n + 1) + i, ago=600 - 60 * i, task=task) for i in range(10)
        ]
        metric_store.ingest(agent.pk, batch(*points, metric("taskagent.runs.succeeded", 7, ago=5)))
    return task, agents


# --- REST --------------------------------------------------------------------------------------------


def test_a_tasks_metrics_over_rest(admin, measured):
    task, (one, two) = measured
    answer = api_for(admin).get(f"/api/v1/tasks/{task.pk}/metrics/")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["count"] == 2 and body["retention"] == 6 * 3600
    by_agent = {s["agent"]: s for s in body["series"]}
    assert set(by_agent) == {"edge-1", "edge-2"}
    first = by_agent["edge-1"]
    assert first["name"] == "http.latency_ms" and first["unit"] == "ms" and first["type"] == "gauge"
    assert first["task_id"] == task.pk and first["task"] == "web" and first["agent_id"] == one.pk
    assert first["tags"] == {"plugin": "http"}
    assert first["last_value"] == 19.0
    assert [value for _, value in first["points"]] == [10.0 + i for i in range(10)]
    assert all(a[0] < b[0] for a, b in zip(first["points"], first["points"][1:], strict=False))

    # since: unix seconds or ISO 8601; only the points after it
    since = time.time() - 150
    recent = api_for(admin).get(f"/api/v1/tasks/{task.pk}/metrics/", {"since": since}).json()
    assert [len(s["points"]) for s in recent["series"]] == [2, 2]
    iso = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(since))
    by_iso = api_for(admin).get(f"/api/v1/tasks/{task.pk}/metrics/", {"since": iso}).json()
    assert by_iso["series"] == recent["series"]
    limited = api_for(admin).get(f"/api/v1/tasks/{task.pk}/metrics/", {"limit": 1}).json()
    assert limited["count"] == 2 and len(limited["series"]) == 1


def test_an_agents_metrics_over_rest_include_its_own(admin, measured):
    _, (one, _) = measured
    body = api_for(admin).get(f"/api/v1/task-agents/{one.pk}/metrics/").json()
    assert sorted((s["name"], s["task"]) for s in body["series"]) == [
        ("http.latency_ms", "web"),
        ("taskagent.runs.succeeded", None),
    ]
    named = api_for(admin).get(f"/api/v1/task-agents/{one.pk}/metrics/", {"name": "taskagent.runs.succeeded"})
    assert [s["last_value"] for s in named.json()["series"]] == [7.0]


@pytest.mark.parametrize("query", [{"since": "yesterday"}, {"limit": 0}, {"limit": 501}, {"since": "nan"}])
def test_bad_metrics_queries_are_400(admin, measured, query):
    task, _ = measured
    answer = api_for(admin).get(f"/api/v1/tasks/{task.pk}/metrics/", query)
    assert answer.status_code == 400 and set(answer.json()["errors"]) <= {"since", "limit"}


def test_metrics_follow_the_task_and_agent_permissions(measured, alpha, beta):
    task, (one, _) = measured
    observer = api_for(user_with_role("obs", Role.OBSERVER, alpha))
    assert observer.get(f"/api/v1/tasks/{task.pk}/metrics/").json()["count"] == 2
    assert observer.get(f"/api/v1/task-agents/{one.pk}/metrics/").status_code == 200
    outsider = api_for(user_with_role("other", Role.ADMIN, beta))
    assert outsider.get(f"/api/v1/tasks/{task.pk}/metrics/").status_code == 404
    assert outsider.get(f"/api/v1/task-agents/{one.pk}/metrics/").status_code == 404
    # gitops reads tasks, not agents (docs/tasks.md, "Who may do what")
    gitops = api_for(user_with_role("ops", Role.GITOPS, alpha))
    assert gitops.get(f"/api/v1/tasks/{task.pk}/metrics/").status_code == 200
    assert gitops.get(f"/api/v1/task-agents/{one.pk}/metrics/").status_code == 403
    assert Client().get(f"/api/v1/tasks/{task.pk}/metrics/").status_code in (401, 403)


def test_the_metrics_endpoints_are_in_the_openapi_schema(admin):
    schema = api_for(admin).get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    for path in ("/api/v1/tasks/{id}/metrics/", "/api/v1/task-agents/{id}/metrics/"):
        operation = schema["paths"][path]["get"]
        assert {p["name"] for p in operation["parameters"]} >= {"id", "since", "name", "limit"}


# --- the console ---------------------------------------------------------------------------------


def _login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _section(page: str) -> str:
    match = re.search(r'<section class="module" id="metrics".*?</section>', page, re.S)
    assert match, "no Metrics section"
    return match.group(0)


def test_the_task_page_charts_each_series(admin, measured):
    task, _ = measured
    response = _login(admin).get(f"/admin/taskserver/task/{task.pk}/change/")
    assert response.status_code == 200
    section = _section(response.content.decode())
    assert "<script" not in section and "style=" not in section  # nothing the CSP would have to allow
    assert "http.latency_ms" in section and "edge-1" in section and "edge-2" in section
    assert "19 ms" in section and "29 ms" in section  # latest values with their unit
    charts_drawn = re.findall(r'<svg class="metric-chart".*?data-points="(\d+)".*?</svg>', section, re.S)
    assert charts_drawn == ["10", "10"]
    path = re.search(r'<path d="([^"]+)"', section).group(1)
    assert path.startswith("M") and path.count(",") == 10  # one line through the ten points
    assert "min 10 · max 19" in section


def test_the_agent_page_groups_by_task_with_its_own_metrics(admin, measured):
    task, (one, _) = measured
    page = _login(admin).get(f"/admin/taskserver/taskagent/{one.pk}/change/").content.decode()
    section = _section(page)
    assert f'href="/admin/taskserver/task/{task.pk}/change/"' in section and "Task web" in section
    assert "The agent&#x27;s own metrics" in section and "taskagent.runs.succeeded" in section
    assert section.count('<svg class="metric-chart"') == 2


def test_a_page_without_metrics_says_how_to_get_them(admin, alpha):
    task = make_task("quiet", alpha)
    section = _section(_login(admin).get(f"/admin/taskserver/task/{task.pk}/change/").content.decode())
    assert "No metrics yet" in section and "<code>server</code>" in section
    assert "<svg" not in section


def test_the_console_shows_metrics_only_to_those_who_see_the_object(measured, alpha, beta):
    task, (one, _) = measured
    observer = _login(user_with_role("obs", Role.OBSERVER, alpha))
    section = _section(observer.get(f"/admin/taskserver/task/{task.pk}/change/").content.decode())
    assert section.count('<svg class="metric-chart"') == 2  # read-only page, same charts
    outsider = _login(user_with_role("other", Role.ADMIN, beta))
    for url in (f"/admin/taskserver/task/{task.pk}/change/", f"/admin/taskserver/taskagent/{one.pk}/change/"):
        response = outsider.get(url)
        assert response.status_code == 302  # "doesn't exist", as for any other team's object
        assert b"metric-chart" not in outsider.get(url, follow=True).content


def test_the_section_is_bounded(admin, alpha, monkeypatch):
    monkeypatch.setattr(charts, "MAX_SERIES_SHOWN", 3)
    agent = make_agent("busy", alpha)
    metric_store.ingest(agent.pk, batch(*(metric(f"m.{i}", i, ago=100 - i) for i in range(5))))
    section = _section(_login(admin).get(f"/admin/taskserver/taskagent/{agent.pk}/change/").content.decode())
    assert section.count('<svg class="metric-chart"') == 3 and "Showing 3 of 5 series" in section
    assert section.index("m.4") < section.index("m.3") < section.index("m.2")  # most recent first
    assert "m.1" not in section


def test_the_chart_breaks_at_gaps_and_thins_long_series():
    start, end = 0.0, 3600.0
    steady = [(t, 1.0) for t in range(0, 600, 60)] + [(t, 2.0) for t in range(1800, 2400, 60)]
    assert str(charts.line_chart(steady, start, end)).count("M") == 2  # two segments: a gap between
    dense = [(float(t), float(t % 7)) for t in range(3600)]
    svg = str(charts.line_chart(dense, start, end))
    drawn = int(re.search(r'data-points="(\d+)"', svg).group(1))
    assert drawn <= 2 * charts.WIDTH and 'd="M' in svg
    assert 'data-points="0"' in str(charts.line_chart([], start, end, "empty"))
    assert "&lt;b&gt;" in str(charts.line_chart([(1.0, 1.0)], start, end, "<b>"))  # labels are escaped


# --- Prometheus --------------------------------------------------------------------------------------


def _families(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {family.name: family for family in text_string_to_metric_families(response.content.decode())}


def test_metrics_export_the_latest_value_of_each_series(client, settings, measured, alpha):
    settings.EMBEDDED, settings.METRICS_TOKEN = True, ""
    task, (one, two) = measured
    global_agent = make_agent("global-1")
    metric_store.ingest(
        global_agent.pk,
        batch(
            metric(
                "ns1.qps", 3.5, ago=5, zone="example.com", team="spoofed", **{"__name__": "x", "9th": "y"}
            ),
        ),
    )
    families = _families(client)
    latency = families["fleet_task_http_latency_ms"]
    assert latency.type == "gauge" and "(ms)" in latency.documentation
    samples = {s.labels["agent"]: s for s in latency.samples}
    assert samples["edge-1"].value == 19.0 and samples["edge-2"].value == 29.0
    assert samples["edge-1"].labels == {
        "task": "web",
        "task_id": str(task.pk),
        "agent": "edge-1",
        "plugin": "http",
        "team": "Alpha",
    }
    (qps,) = families["fleet_task_ns1_qps"].samples
    # a tag named like a base label is prefixed, reserved names dropped, names sanitised
    assert qps.labels == {
        "task": "",
        "task_id": "",
        "agent": "global-1",
        "plugin": "ns1",
        "team": "",
        "_9th": "y",
        "tag_team": "spoofed",
        "zone": "example.com",
    }
    own = families["fleet_task_taskagent_runs_succeeded"].samples
    assert sorted(s.labels["agent"] for s in own) == ["edge-1", "edge-2"]


def test_metrics_export_only_series_within_the_retention(client, settings, alpha):
    settings.EMBEDDED, settings.METRICS_TOKEN = True, ""
    agent = make_agent("a1", alpha)
    metric_store.ingest(agent.pk, batch(metric("fresh", 1, ago=5), metric("stale", 1, ago=3000)))
    settings.TASKSERVER_METRICS_RETENTION = 600  # "stale" is now older than the retention
    names = _families(client)
    assert "fleet_task_fresh" in names and "fleet_task_stale" not in names


def test_the_collector_is_registered_once_and_a_database_error_costs_only_its_metrics(
    client, settings, measured, monkeypatch
):
    settings.EMBEDDED, settings.METRICS_TOKEN = True, ""
    registered = [
        c
        for c in prometheus_client.REGISTRY._collector_to_names
        if isinstance(c, metric_store.SeriesCollector)
    ]
    assert len(registered) == 1
    metric_store.register_collector()  # a second call changes nothing
    assert metric_store._collector is registered[0]

    def broken(*args, **kwargs):
        raise RuntimeError("database down")

    monkeypatch.setattr(MetricSeries.objects, "filter", broken)
    names = _families(client)
    assert any(name.startswith("django_http_requests") for name in names)
    assert not any(name.startswith("fleet_task_") for name in names)


def test_the_export_reads_once_and_is_bounded(measured, monkeypatch, django_assert_num_queries):
    monkeypatch.setattr(metric_store, "EXPORT_LIMIT", 3)
    with django_assert_num_queries(1):
        families = list(metric_store.SeriesCollector().collect())
    assert sum(len(f.samples) for f in families) == 3


def test_the_chart_window_follows_the_data_so_a_new_task_fills_its_chart(alpha):
    """Found by running make run: over the whole 6-hour retention, a minute of a new task's points
    was a dot at the right edge. The window starts at the oldest point, at least 10 minutes back."""
    task = make_task("new", alpha)
    agent = make_agent("edge-1", alpha)
    metric_store.ingest(agent.pk, batch(*(metric(value=i, ago=60 - 10 * i, task=task) for i in range(6))))
    section = charts.section(task_id=task.pk)
    assert section["window"] == "10 minutes" and section["retention"] == "6 hours"
    xs = [float(x) for x in re.findall(r"(-?[\d.]+),[\d.]+", section["groups"][0]["rows"][0]["chart"])]
    assert xs and min(xs) > charts.WIDTH * 0.85  # the last minute of ten: the right tenth

    metric_store.ingest(agent.pk, batch(metric(value=1, ago=3 * 3600, task=task)))
    section = charts.section(task_id=task.pk)
    assert section["window"] == "3 hours"
    xs = [float(x) for x in re.findall(r"(-?[\d.]+),[\d.]+", section["groups"][0]["rows"][0]["chart"])]
    assert min(xs) < charts.WIDTH * 0.05  # the oldest point now starts the chart
