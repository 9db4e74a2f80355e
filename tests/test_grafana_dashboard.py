"""The Grafana dashboard (docker/grafana/fleet-dashboard.json) reads only what this server exports,
and shows every metric it exports: its PromQL is checked against a real ``/metrics`` scrape taken
after agents, live queries, log destinations and Celery have done something, so neither side can
drift without this test failing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from prometheus_client.parser import text_string_to_metric_families

from campaigns import services as campaigns
from fleet.celery import app as celery_app
from hosts import seen
from packs import destinations
from tests.agent import Agent

pytestmark = pytest.mark.django_db

DASHBOARD = Path(__file__).resolve().parent.parent / "docker" / "grafana" / "fleet-dashboard.json"
DATASOURCE = "${DS_PROMETHEUS}"
# What PromQL may name besides metrics: functions, aggregations, keywords.
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "topk", "bottomk", "by", "without", "on", "ignoring",
    "group_left", "group_right", "and", "or", "unless", "bool", "offset", "rate", "irate", "increase",
    "delta", "histogram_quantile", "clamp_min", "clamp_max", "abs", "vector", "scalar", "time",
    "label_values", "avg_over_time", "max_over_time", "sum_over_time", "inf", "nan",
}  # fmt: skip
# Labels Prometheus adds to every series it scrapes, and the process label of multiprocess mode.
TARGET_LABELS = {"job", "instance", "pid"}
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_VARIABLE = re.compile(r"\$\{?\w+\}?")
_IDENTIFIER = re.compile(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*")
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")
_SUFFIX = re.compile(r"_(?:total|bucket|sum|count)$")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict) -> list[dict]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # panels inside a collapsed row
    return [p for p in found if p["type"] != "row"]


def expressions(dashboard: dict) -> list[str]:
    return [target["expr"] for panel in panels(dashboard) for target in panel["targets"]]


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression: what is left once strings, label matchers,
    groupings, ranges, Grafana variables, numbers and PromQL's own words are taken out."""
    text = _VARIABLE.sub(" ", _STRINGS.sub('""', expr))
    text = _RANGE.sub(" ", _GROUPING.sub(" ", _MATCHERS.sub(" ", text)))
    return {word for word in _IDENTIFIER.findall(text) if word not in PROMQL_WORDS}


def grouping_labels(expr: str) -> set[str]:
    return {label.strip() for group in _GROUPING.findall(expr) for label in group.split(",") if label.strip()}


def test_metric_names_are_read_from_promql():
    expr = 'histogram_quantile(0.95, sum by (le) (rate(fleet_x_bucket{job=~"$job", a="b(c)"}[5m])))'
    assert metric_names(expr) == {"fleet_x_bucket"}
    assert metric_names("sum(a_total) / sum(b_total) * 60") == {"a_total", "b_total"}
    assert grouping_labels("sum by (endpoint, status) (x)") == {"endpoint", "status"}


# --- a real scrape ---------------------------------------------------------------------------------------


@celery_app.task(name="tests.dashboard_task")
def dashboard_task() -> int:
    return 1


@pytest.fixture
def exported(client, global_secret, settings, eager_celery) -> dict[str, set[str]]:
    """``{sample name: label names}`` from a scrape after some of everything has happened."""
    settings.EMBEDDED, settings.METRICS_TOKEN, settings.METRICS_STATE_CACHE_SECONDS = True, "", 0
    agent = Agent(client)
    agent.enroll(global_secret)
    agent.authed("distributed/read")
    seen.flush()
    admin = get_user_model().objects.create_superuser("admin", "admin@example.com", "pw")
    campaign = campaigns.create_campaign(admin, "SELECT 1 AS one", {"all": True})
    name = f"fleet_distributed_query_{campaign.id}"
    agent.authed("distributed/write", {"queries": {name: [{"one": "1"}]}, "statuses": {name: 0}})
    line = {"severity": "0", "filename": "f.cpp", "line": "1", "message": "hello"}
    agent.authed("log", {"log_type": "status", "data": [line]})
    settings.OSQUERY_LOGGING = {
        **settings.OSQUERY_LOGGING,
        "STATUS_PLUGINS": ["webhook"],
        "WEBHOOK_STATUS_URL": "http://127.0.0.1:9/logs",  # nothing listens: the lines fail
        "WEBHOOK_TIMEOUT": 0.3,
        "WEBHOOK_RETRY_BUDGET": 0.3,
    }
    destinations.reset()
    try:
        agent.authed("log", {"log_type": "status", "data": [line]})
    finally:
        destinations.reset()
    dashboard_task.delay()

    found: dict[str, set[str]] = {}
    families = text_string_to_metric_families(client.get("/metrics").content.decode())
    for family in families:
        for suffix in {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(
            family.type, ("",)
        ):
            found.setdefault(family.name + suffix, set())  # exported even before a first sample
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


def test_every_expression_reads_only_exported_metrics_and_labels(exported):
    for expr in expressions(load()):
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        unknown = names - exported.keys()
        assert not unknown, f"{expr!r} reads {sorted(unknown)}, which /metrics does not export"
        for name, matchers in _SELECTOR.findall(expr):
            labels = set(_MATCHER_LABEL.findall(matchers)) - TARGET_LABELS
            assert labels <= exported[name], (
                f"{expr!r}: {name} has no label {sorted(labels - exported[name])}"
            )
        known = set().union(*(exported[name] for name in names)) | TARGET_LABELS
        assert grouping_labels(expr) <= known, f"{expr!r} groups by labels its metrics lack"


def test_every_fleet_metric_has_a_panel(exported):
    def families(names: set[str]) -> set[str]:
        return {_SUFFIX.sub("", n) for n in names if n.startswith("fleet_") and not n.endswith("_created")}

    shown = set().union(*(metric_names(expr) for expr in expressions(load())))
    ours = {n for n in families(set(exported)) if not n.startswith("fleet_task_")}  # agents' own metrics
    assert not ours - families(shown), f"metrics without a panel: {sorted(ours - families(shown))}"
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes"} <= shown


# --- the JSON itself -----------------------------------------------------------------------------------


def test_the_dashboard_imports_with_a_prometheus_datasource_input():
    dashboard = load()
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    # Provisioned from a file (no import step), the same name resolves as a datasource variable.
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        assert panel["datasource"]["uid"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


def test_panels_do_not_overlap():
    cells: dict[tuple[int, int], str] = {}
    for panel in load()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_the_required_views_are_there():
    exprs = "\n".join(expressions(load()))
    for quantile in ("0.5", "0.95", "0.99"):
        assert (
            f"histogram_quantile({quantile}, sum by (le) (rate(fleet_checkin_duration_seconds_bucket" in exprs
        )
    assert 'status=~"5.."' in exprs  # the error rate
    assert 'fleet_hosts{job=~"$job", status="online"}' in exprs
    assert 'fleet_hosts{job=~"$job", status="offline"}' in exprs
