"""``/metrics``: what agents, live queries, log destinations and Celery tasks do is counted, the
state gauges read the database right, a scrape costs the same few queries whatever the fleet's
size, and with ``PROMETHEUS_MULTIPROC_DIR`` the counts of several processes add up
(docs/metrics.md). Every check goes through a real scrape, parsed as Prometheus parses it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from campaigns import services as campaigns
from fleet import gunicorn_conf
from fleet.celery import app as celery_app
from fleet.metrics import serve_worker_metrics
from fleet.prometheus_collectors import platform_label
from fleet.request_metrics import endpoint_label
from hosts import seen
from hosts.choices import HostStatus
from hosts.models import Host
from hosts.status import filter_by_status
from hostscripts.models import ScriptRun
from packs import destinations
from taskserver.models import TaskAgent
from tests.agent import Agent
from tests.factories import make_host

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _open_metrics(settings):
    """The embedded default's open endpoint, and state gauges read afresh on every scrape."""
    settings.EMBEDDED, settings.METRICS_TOKEN = True, ""
    settings.METRICS_STATE_CACHE_SECONDS = 0


def scrape(client) -> list:
    response = client.get("/metrics")
    assert response.status_code == 200, response.content
    text = response.content.decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def value(samples: list, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def by_label(samples: list, name: str, label: str, **labels: str) -> dict[str, float]:
    """``{label value: sample value}`` for the non-zero samples of ``name`` matching ``labels``."""
    found: dict[str, float] = {}
    for s in samples:
        if s.name == name and s.value and all(s.labels.get(k) == v for k, v in labels.items()):
            found[s.labels[label]] = found.get(s.labels[label], 0) + s.value
    return found


class Delta:
    """Counters are process-wide: a test compares a scrape after with one before."""

    def __init__(self, client) -> None:
        self.client, self.before = client, scrape(client)

    def __call__(self, name: str, **labels: str) -> float:
        return value(self.after, name, **labels) - value(self.before, name, **labels)

    def rescrape(self) -> Delta:
        self.after = scrape(self.client)
        return self


@pytest.fixture
def admin(db):
    return get_user_model().objects.create_superuser("admin", "admin@example.com", "pw")


# --- agent requests, check-ins, enrolments ----------------------------------------------------------


def test_agent_requests_checkins_and_enrolments_are_counted(client, global_secret):
    delta = Delta(client)
    agent = Agent(client)
    agent.enroll(global_secret)
    for _ in range(3):
        assert agent.authed("distributed/read").status_code == 200
    alias = Agent(client, identifier=agent.identifier, prefix="/api/v1/osquery")
    alias.node_key = agent.node_key
    assert alias.authed("distributed/read").status_code == 200  # Fleet's alias: the same endpoint
    stranger = Agent(client, identifier="uuid-9999")
    stranger.node_key = "not-a-key"
    assert stranger.authed("distributed/read").status_code == 401
    assert agent.post("no-such-endpoint", {}).status_code == 404
    agent.enroll(global_secret)  # again: the same host
    client.get("/healthz")
    client.get("/api/v1/hosts/")  # REST, not an agent path

    delta.rescrape()
    requests = "fleet_agent_requests_total"
    assert delta(requests, endpoint="osquery-enroll", status="200") == 2
    assert delta(requests, endpoint="osquery-distributed-read", status="200") == 4
    assert delta(requests, endpoint="osquery-distributed-read", status="401") == 1
    assert delta(requests, endpoint="unmatched", status="404") == 1
    assert delta(requests) == 8  # nothing else was counted
    assert delta("fleet_checkin_duration_seconds_count") == 5
    assert delta("fleet_checkin_duration_seconds_bucket", le="+Inf") == 5
    assert 0 < delta("fleet_checkin_duration_seconds_sum") < 5
    assert delta("fleet_enrollments_total", agent="osquery", host="new") == 1
    assert delta("fleet_enrollments_total", agent="osquery", host="existing") == 1
    endpoints = {s.labels["endpoint"] for s in delta.after if s.name == requests}
    assert not any("/" in e for e in endpoints)  # route names, never paths


def test_orbit_and_device_requests_are_counted_under_their_route(client, global_secret):
    delta = Delta(client)
    body = {"enroll_secret": global_secret, "hardware_uuid": "HW-1", "hardware_serial": "S1",
            "hostname": "orbit.local", "platform": "darwin", "osquery_identifier": "",
            "computer_name": "orbit", "hardware_model": "Mac14,2"}  # fmt: skip
    response = client.post("/api/fleet/orbit/enroll", json.dumps(body), content_type="application/json")
    assert response.status_code == 200
    client.get("/api/fleet/orbit/ping")
    client.get("/api/latest/fleet/device/no-such-token/desktop")
    client.get("/api/v1/fleet/device/another-bad-token/desktop")
    delta.rescrape()
    assert delta("fleet_enrollments_total", agent="orbit", host="new") == 1
    assert delta("fleet_agent_requests_total", endpoint="orbit-enroll", status="200") == 1
    assert delta("fleet_agent_requests_total", endpoint="orbit-ping", status="200") == 1
    desktop = by_label(delta.after, "fleet_agent_requests_total", "endpoint")
    assert "device-desktop" in desktop  # the latest/v1 prefixes folded, the token nowhere
    # The tokens sent are nowhere (route names such as orbit-device-token, counted by earlier tests
    # in this process, are fine).
    assert not any("no-such-token" in name or "another-bad-token" in name for name in desktop)


@pytest.mark.parametrize(
    ("view_name", "label"),
    [
        ("osquery-config", "osquery-config"),
        ("osquery-v1-distributed-write", "osquery-distributed-write"),
        ("devices:device-ping-2022-04", "device-ping"),
        ("devices:device-host-latest", "device-host"),
        ("devices:orbit-device-token", "orbit-device-token"),
        ("mdm:channel", "mdm-channel"),
        ("tuf-file", "tuf-file"),
        (None, "unmatched"),
    ],
)
def test_endpoint_labels_are_route_names_with_aliases_folded(view_name, label):
    assert endpoint_label(view_name) == label


# --- live queries, log lines, Celery ----------------------------------------------------------------


def test_live_query_answers_and_active_campaigns(client, global_secret, admin):
    agents = []
    for i in range(2):
        agent = Agent(client, identifier=f"uuid-lq-{i}", hostname=f"lq-{i}")
        agent.enroll(global_secret)
        agent.authed("distributed/read")
        agents.append(agent)
    seen.flush()
    delta = Delta(client)
    campaign = campaigns.create_campaign(admin, "SELECT 1 AS one", {"all": True})
    assert value(scrape(client), "fleet_live_query_campaigns_active", status="waiting") == 1
    name = f"fleet_distributed_query_{campaign.id}"
    agents[0].authed("distributed/write", {"queries": {name: [{"one": "1"}]}, "statuses": {name: 0}})
    assert value(scrape(client), "fleet_live_query_campaigns_active", status="running") == 1
    agents[1].authed(
        "distributed/write", {"queries": {name: ""}, "statuses": {name: 1}, "messages": {name: "x"}}
    )
    agents[1].authed("distributed/write", {"queries": {name: ""}, "statuses": {name: 1}})  # late: ignored
    delta.rescrape()
    assert delta("fleet_live_query_answers_total", state="rows") == 1
    assert delta("fleet_live_query_answers_total", state="failed") == 1
    assert delta("fleet_live_query_answers_total") == 2
    assert value(delta.after, "fleet_live_query_campaigns_active") == 0  # every host answered


@pytest.fixture
def fresh_destinations(settings):
    settings.OSQUERY_LOGGING = {
        **settings.OSQUERY_LOGGING,
        "WEBHOOK_TIMEOUT": 0.3,
        "WEBHOOK_RETRY_BUDGET": 0.3,
        "CIRCUIT_OPEN_SECONDS": 0.1,
    }
    destinations.reset()
    yield settings
    destinations.reset()


def test_log_lines_forwarded_and_failed_per_destination(client, agent, fresh_destinations):
    lines = [{"severity": "0", "filename": "f.cpp", "line": "1", "message": f"m{i}"} for i in range(5)]
    delta = Delta(client)
    assert agent.authed("log", {"log_type": "status", "data": lines}).status_code == 200
    fresh_destinations.OSQUERY_LOGGING = {
        **fresh_destinations.OSQUERY_LOGGING,
        "STATUS_PLUGINS": ["filesystem", "webhook"],
        "WEBHOOK_STATUS_URL": "http://127.0.0.1:9/logs",  # nothing listens: refused at once
    }
    assert agent.authed("log", {"log_type": "status", "data": lines[:3]}).status_code == 413
    delta.rescrape()
    forwarded, failed = "fleet_log_lines_forwarded_total", "fleet_log_lines_failed_total"
    assert delta(forwarded, log_type="status", destination="filesystem") == 8
    assert delta(failed, log_type="status", destination="webhook") == 3
    assert delta(failed, log_type="status", destination="filesystem") == 0
    labels = {s.labels["destination"] for s in delta.after if s.name in (forwarded, failed)}
    assert not any(":" in d for d in labels)  # plugin names, never the URL or path


@celery_app.task(name="tests.metrics_failing_task")
def failing_task() -> None:
    raise ValueError("this task always fails")


@celery_app.task(bind=True, name="tests.metrics_retried_task", max_retries=1, default_retry_delay=0)
def retried_task(self) -> str:
    if self.request.retries == 0:
        raise self.retry()
    return "done"


def test_celery_task_outcomes_by_task(client, eager_celery):
    delta = Delta(client)
    celery_app.tasks["campaigns.expire_and_sweep"].delay()
    with pytest.raises(ValueError):  # the embedded default: the error reaches the caller
        failing_task.delay()
    celery_app.conf.task_eager_propagates = False  # as a worker runs them: recorded, not raised
    failing_task.delay()
    retried_task.delay()
    delta.rescrape()
    tasks = "fleet_celery_tasks_total"
    assert delta(tasks, task="campaigns.expire_and_sweep", outcome="success") == 1
    assert delta(tasks, task="tests.metrics_failing_task", outcome="failure") == 2
    assert delta(tasks, task="tests.metrics_retried_task", outcome="retry") == 1
    assert delta(tasks, task="tests.metrics_retried_task", outcome="success") == 1


def test_celery_outcomes_of_unregistered_names_share_one_label(client):
    from fleet.celery import _count

    _count(SimpleNamespace(name="made.up"), "success")
    names = {s.labels["task"] for s in scrape(client) if s.name == "fleet_celery_tasks_total"}
    assert "made.up" not in names and "other" in names


# --- state gauges ------------------------------------------------------------------------------------


def test_host_gauges_follow_the_status_rules_by_platform(client, global_secret):
    agent = Agent(client)  # a Mac that enrolls and checks in for real
    agent.enroll(global_secret)
    agent.authed("distributed/read")
    seen.flush()
    make_host("deb-on", platform="debian", seen_ago=timedelta(seconds=5))
    make_host("fresh-mac", platform="darwin", seen_ago=timedelta(seconds=1), created_ago=timedelta(hours=1))
    make_host("win-off", platform="windows", seen_ago=timedelta(minutes=10))
    make_host("win-gone", platform="windows", seen_ago=timedelta(days=40))
    make_host("never-seen", platform="ubuntu")
    make_host("mint", platform="linuxmint", platform_like="ubuntu debian", seen_ago=timedelta(seconds=5))
    make_host("odd", platform="evil-os-$(reboot)")
    make_host("blank", platform="")

    samples = scrape(client)
    assert by_label(samples, "fleet_hosts", "platform", status="online") == {"darwin": 2, "linux": 2}
    assert by_label(samples, "fleet_hosts", "platform", status="offline") == {
        "windows": 2, "linux": 1, "other": 1, "unknown": 1
    }  # fmt: skip
    assert by_label(samples, "fleet_hosts_missing", "platform") == {"windows": 1}
    assert by_label(samples, "fleet_hosts_new", "platform") == {"darwin": 2}
    for status in (HostStatus.ONLINE, HostStatus.OFFLINE):  # the project's own rules agree
        assert value(samples, "fleet_hosts", status=status) == filter_by_status(Host.objects, status).count()
    assert value(samples, "fleet_hosts_missing") == filter_by_status(Host.objects, "missing").count()
    assert value(samples, "fleet_hosts_new") == filter_by_status(Host.objects, "new").count()


def test_platform_labels_are_bounded():
    assert platform_label("ubuntu", "") == "linux"
    assert platform_label("darwin", "darwin") == "darwin"
    assert platform_label("ipados", "") == "ipados"
    assert platform_label("x" * 200, "") == "other"
    assert platform_label("", "") == "unknown"


def test_script_runs_and_device_actions_by_state(client):
    host = make_host("scripted", platform="ubuntu")

    def run(kind: str = "script", **fields) -> None:
        ScriptRun.objects.create(host=host, kind=kind, contents="echo", timeout=60, **fields)

    run()
    run(sent_at=timezone.now())  # the host holds it: still pending
    run(exit_code=0)
    run(exit_code=1)
    run(exit_code=-1)  # timed out: an error
    run(cancelled=True)
    run("lock", exit_code=0)
    run("unlock")
    run("wipe", cancelled=True)

    samples = scrape(client)
    assert by_label(samples, "fleet_script_runs", "state") == {
        "pending": 2,
        "ran": 1,
        "error": 2,
        "cancelled": 1,
    }
    actions = {(s.labels["action"], s.labels["state"]): s.value for s in samples
               if s.name == "fleet_device_actions" and s.value}  # fmt: skip
    assert actions == {("lock", "ran"): 1, ("unlock", "pending"): 1, ("wipe", "cancelled"): 1}
    assert value(samples, "fleet_device_actions", state="pending") == 1  # every series is present


def test_task_agent_sessions_by_team(client, alpha):
    now = timezone.now()
    for name in ("a1", "a2"):
        TaskAgent.objects.create(name=name, team=alpha, online=True, last_seen_at=now)
    TaskAgent.objects.create(name="g1", online=True, last_seen_at=now)
    TaskAgent.objects.create(name="gone", team=alpha, online=False, last_seen_at=now)
    TaskAgent.objects.create(name="stale", online=True, last_seen_at=now - timedelta(minutes=10))
    samples = scrape(client)
    assert value(samples, "fleet_taskserver_sessions", team="Alpha") == 2
    assert value(samples, "fleet_taskserver_sessions", team="") == 1


def test_a_failing_query_costs_only_its_own_metrics(client, monkeypatch):
    make_host("h", platform="darwin", seen_ago=timedelta(seconds=1))

    def broken(*args, **kwargs):
        raise RuntimeError("database down")

    monkeypatch.setattr(ScriptRun.objects, "order_by", broken)
    samples = scrape(client)
    assert value(samples, "fleet_hosts", status="online", platform="darwin") == 1
    assert not any(s.name == "fleet_script_runs" for s in samples)


# --- cost -----------------------------------------------------------------------------------------------


def _scrape_queries(client) -> int:
    with CaptureQueriesContext(connection) as queries:
        scrape(client)
    return len(queries)


def test_a_scrape_costs_a_few_queries_whatever_the_fleet_size(client, django_assert_max_num_queries):
    make_host("first", platform="darwin", seen_ago=timedelta(seconds=1))
    scrape(client)  # collectors registered, caches warm
    few = _scrape_queries(client)
    Host.objects.bulk_create(
        [
            Host(osquery_host_id=f"bulk-{i}", platform=("darwin", "windows", "ubuntu")[i % 3])
            for i in range(600)
        ]
    )
    for i, host in enumerate(Host.objects.filter(osquery_host_id__startswith="bulk-")[:50]):
        ScriptRun.objects.create(host=host, contents="echo", timeout=60, exit_code=i % 2 or None)
    # hosts, campaigns, script runs, task-agent sessions, and the task agents' own metric series
    with django_assert_max_num_queries(5):
        samples = scrape(client)
    assert value(samples, "fleet_hosts") == 601
    assert _scrape_queries(client) == few


def test_costly_gauges_are_shared_through_the_cache(client, settings):
    settings.METRICS_STATE_CACHE_SECONDS = 30
    make_host("cached", platform="darwin", seen_ago=timedelta(seconds=1))
    first = _scrape_queries(client)
    make_host("later", platform="darwin", seen_ago=timedelta(seconds=1))
    with CaptureQueriesContext(connection) as queries:
        samples = scrape(client)
    assert len(queries) == first - 2  # hosts and script runs came from the cache
    assert value(samples, "fleet_hosts", status="online") == 1  # as computed at most 30 s ago


# --- several processes -----------------------------------------------------------------------------------

CHILD = """
import sys
import django

django.setup()
from django.test.utils import setup_test_environment

setup_test_environment()  # the test client's host name is allowed
from django.test import Client

from fleet.metrics import count_enrollment

client = Client()
for _ in range(int(sys.argv[1])):
    client.post("/api/osquery/distributed/read", "not json", content_type="application/json")
    client.get("/api/fleet/orbit/ping")
count_enrollment("osquery", True)
print("counted", flush=True)
sys.stdin.readline()  # stay alive until the test has scraped
"""


def test_counts_of_several_processes_add_up_in_multiprocess_mode(client, tmp_path, monkeypatch):
    directory = tmp_path / "prometheus"
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "DJANGO_SETTINGS_MODULE": "fleet.settings",
        "FLEET_VAR_DIR": str(tmp_path / "var"),
        "PYTHONPATH": str(ROOT),
    }
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(n)],
            cwd=ROOT,
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )  # fmt: skip
        for n in (3, 4)
    ]
    try:
        for child in children:
            assert child.stdout.readline().strip() == "counted"
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
        samples = scrape(client)
        pids = {s.labels.get("pid") for s in samples if s.name == "process_resident_memory_bytes"}
    finally:
        for child in children:
            child.communicate("\n", timeout=30)
    # 3 + 4 of each, counted in two processes, summed by one scrape
    assert (
        value(samples, "fleet_agent_requests_total", endpoint="osquery-distributed-read", status="400") == 7
    )
    assert value(samples, "fleet_agent_requests_total", endpoint="orbit-ping", status="200") == 7
    assert value(samples, "fleet_checkin_duration_seconds_count") == 7
    assert value(samples, "fleet_enrollments_total", agent="osquery", host="new") == 2
    assert pids == {str(child.pid) for child in children}  # each live process's CPU and memory
    assert any(s.name == "fleet_hosts" or s.name == "fleet_script_runs" for s in samples)  # state too
    assert value(scrape(client), "process_resident_memory_bytes") == 0  # both have exited


def test_a_worker_serves_its_counts_behind_the_token(tmp_path, monkeypatch, settings):
    directory = tmp_path / "prometheus"
    directory.mkdir()
    settings.EMBEDDED, settings.METRICS_TOKEN = False, "a-long-random-metrics-token-0123456789"
    code = (
        "from fleet.metrics import CELERY_TASKS; "
        "CELERY_TASKS.labels('campaigns.expire_and_sweep', 'success').inc(2)"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory), "PYTHONPATH": str(ROOT),
           "DJANGO_SETTINGS_MODULE": "fleet.settings", "FLEET_VAR_DIR": str(tmp_path / "var")}  # fmt: skip
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=60)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    server = serve_worker_metrics(0, "127.0.0.1")
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=5)
        assert refused.value.code == 401
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {settings.METRICS_TOKEN}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    assert (
        value(samples, "fleet_celery_tasks_total", task="campaigns.expire_and_sweep", outcome="success") == 2
    )
    assert not any(s.name.startswith("fleet_hosts") for s in samples)  # no database gauges there


def test_a_worker_without_the_directory_serves_nothing(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert serve_worker_metrics(0, "127.0.0.1") is None


def test_gunicorn_hooks_empty_the_directory_and_forget_exited_workers(tmp_path, monkeypatch):
    directory = tmp_path / "prometheus"
    directory.mkdir()
    (directory / "counter_111.db").write_bytes(b"left from a previous run")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    gunicorn_conf.on_starting(None)
    assert list(directory.iterdir()) == []
    (directory / "gauge_livesum_222.db").write_bytes(b"")
    (directory / "counter_222.db").write_bytes(b"")
    gunicorn_conf.child_exit(None, SimpleNamespace(pid=222))
    assert [p.name for p in directory.iterdir()] == ["counter_222.db"]  # its counts stay summed in


def test_a_celery_worker_empties_its_metrics_directory_when_it_starts(tmp_path, monkeypatch):
    """A restarted worker container keeps its directory: the last run's counts must not be summed in."""
    from fleet.celery import _fresh_metrics_dir  # connected to celery.signals.worker_init

    directory = tmp_path / "prometheus"
    directory.mkdir()
    (directory / "counter_333.db").write_bytes(b"left from a previous run")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    _fresh_metrics_dir()
    assert list(directory.iterdir()) == []


# --- documentation ---------------------------------------------------------------------------------------


def test_every_metric_this_server_defines_is_documented(client, agent):
    agent.authed("distributed/read")
    families = text_string_to_metric_families(client.get("/metrics").content.decode())
    ours = {
        f.name
        for f in families
        if f.name.startswith("fleet_")
        and not f.name.startswith("fleet_task_")
        and not f.name.endswith("_created")
    }
    documented = set(re.findall(r"`(fleet_[a-z_]+?)(?:_total)?`", (ROOT / "docs" / "metrics.md").read_text()))
    assert len(ours) >= 14
    assert not ours - documented, f"add these to docs/metrics.md: {sorted(ours - documented)}"
