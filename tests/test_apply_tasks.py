"""``kind: task`` and ``kind: metric_destination`` in ``manage.py apply`` / ``export`` and
``POST /api/v1/spec/``: created and updated through ``taskserver.services``, unchanged on a second
apply (no revision, no push), secrets never shown or exported, byIds routes by agent names."""

from __future__ import annotations

import io
import re
import textwrap
from pathlib import Path

import pytest
import yaml
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import TestCase

from activities.models import Activity
from hosts.choices import Role
from hosts.models import Label, Team
from packs.spec import SpecError, apply_documents, parse_yaml
from packs.spec.export import export_yaml
from queries.models import Query
from taskserver import events
from taskserver.models import MetricDestination, RouteType, Task
from taskserver.services import agent_settings, open_headers, save_destination, save_task
from tests.factories import api_for, user_with_role
from tests.test_taskserver_support import NS1, make_agent, plugin_standin, record_hooks  # noqa: F401

pytestmark = pytest.mark.django_db

TASK = """
apiVersion: v1
kind: task
spec:
  name: ns1 qps
  team: Alpha
  plugin: ns1
  settings: {zone: example.com, api_key: s3cr3t-ns1-key}
  interval: 60
  route: {type: byTags, config: {tags: [dc1]}}
"""
DESTINATION = """
apiVersion: v1
kind: metric_destination
spec:
  name: prom
  team: Alpha
  kind: prometheus_remote_write
  url: https://prom.example.com/api/v1/write
  headers: {Authorization: Bearer t0ps3cr3t}
"""
SECRETS = ("s3cr3t-ns1-key", "t0ps3cr3t")


@pytest.fixture(autouse=True)
def hooks(monkeypatch):
    """What the connected agents are told (``plan_of`` runs the on-commit callbacks)."""
    calls = record_hooks(monkeypatch)
    monkeypatch.setattr(
        events, "destinations_changed", lambda team_id: calls.append(("destinations", team_id)), raising=False
    )
    return calls


def task_hooks(calls: list[tuple]) -> list[tuple]:
    return [call for call in calls if call[0] != "destinations"]


def plan_of(*texts: str, **kwargs):
    """Apply (or plan) the documents; what would run on commit runs, unless it was rolled back."""
    text = "\n---\n".join(textwrap.dedent(t) for t in texts)
    with TestCase.captureOnCommitCallbacks(execute=True):
        return apply_documents(parse_yaml(text, "tasks.yml"), **kwargs)


def actions(plan) -> list[tuple[str, str, str]]:
    return [(c.kind, c.name, c.action) for c in plan.changes]


def errors_of(*texts: str) -> list[str]:
    with pytest.raises(SpecError) as raised:
        plan_of(*texts)
    return raised.value.errors


def apply_command(tmp_path: Path, text: str, *extra: str) -> str:
    path = tmp_path / "tasks.yml"
    path.write_text(textwrap.dedent(text))
    out = io.StringIO()
    call_command("apply", "-f", str(path), *extra, stdout=out, stderr=io.StringIO())
    return out.getvalue()


# --- create, update, unchanged ---------------------------------------------------------------------


def test_create_then_the_same_file_is_unchanged(alpha, hooks):
    plan = plan_of(TASK, DESTINATION)
    assert actions(plan) == [
        ("metric_destination", "prom (team Alpha)", "create"),
        ("task", "ns1 qps (team Alpha)", "create"),
    ]
    task = Task.objects.get()
    assert (task.team, task.name, task.plugin, task.interval, task.enabled) == (
        alpha,
        "ns1 qps",
        "ns1",
        60,
        True,
    )
    assert (task.route_type, task.route_config, task.revision) == ("byTags", {"tags": ["dc1"]}, 1)
    assert "s3cr3t" not in str(task.settings) and agent_settings(task) == NS1
    destination = MetricDestination.objects.get()
    assert (destination.team, destination.kind, destination.enabled) == (
        alpha,
        "prometheus_remote_write",
        True,
    )
    assert open_headers(destination) == {"Authorization": "Bearer t0ps3cr3t"}
    assert task_hooks(hooks) == [("changed", task.pk, [])]  # the new task reached the agents
    pushed = list(hooks)

    updated_at = task.updated_at
    again = plan_of(TASK, DESTINATION)
    assert {c.action for c in again.changes} == {"unchanged"}
    task.refresh_from_db()
    assert (task.revision, task.updated_at) == (1, updated_at)
    assert hooks == pushed  # nothing pushed the second time


def test_update_shows_the_fields_and_raises_the_revision_once(alpha, hooks):
    plan_of(TASK)
    task = Task.objects.get()
    changed = TASK.replace("interval: 60", "interval: 120").replace("[dc1]", "[dc1, dc2]")
    plan = plan_of(changed + "  enabled: false\n")
    (change,) = plan.changes
    assert change.action == "update"
    assert change.fields == {
        "interval": (60, 120),
        "route": (
            {"type": "byTags", "config": {"tags": ["dc1"]}},
            {"type": "byTags", "config": {"tags": ["dc1", "dc2"]}},
        ),
        "enabled": (True, False),
    }
    rendered = plan.render()
    assert "interval: 60 -> 120" in rendered and "route.config.tags: +'dc2'" in rendered
    task.refresh_from_db()
    assert (task.interval, task.enabled, task.revision) == (120, False, 2)
    assert hooks[-1] == ("changed", task.pk, [])  # no agent had it (none carries dc1)


def test_a_spec_is_the_whole_task(alpha):
    plan_of(
        TASK.replace(
            "settings: {zone: example.com, api_key: s3cr3t-ns1-key}", "settings: {zone: a, api_key: k}"
        )
    )
    plan_of(
        TASK.replace("plugin: ns1", "plugin: ping")
        .replace("settings: {zone: example.com, api_key: s3cr3t-ns1-key}", "settings: {host: example.com}")
        .replace("route: {type: byTags, config: {tags: [dc1]}}", "route: {type: any}")
    )
    task = Task.objects.get()
    assert (task.plugin, task.settings, task.route_type, task.route_config) == (
        "ping",
        {"host": "example.com"},
        "any",
        {},
    )


def test_command_prints_the_plan(tmp_path, alpha):
    out = apply_command(tmp_path, TASK)
    assert 'create    task "ns1 qps (team Alpha)"' in out and "Applied." in out
    out = apply_command(tmp_path, TASK.replace("interval: 60", "interval: 90"))
    assert 'update    task "ns1 qps (team Alpha)"\n            interval: 60 -> 90' in out
    assert "s3cr3t" not in out


def test_dry_run_changes_nothing(tmp_path, alpha, hooks):
    out = apply_command(tmp_path, TASK + "---" + DESTINATION, "--dry-run")
    assert 'create    task "ns1 qps (team Alpha)"' in out and "Dry run: nothing was changed." in out
    assert not Task.objects.exists() and not MetricDestination.objects.exists()
    plan_of(TASK)
    task = Task.objects.get()
    plan = plan_of(TASK.replace("interval: 60", "interval: 90"), dry_run=True)
    assert actions(plan) == [("task", "ns1 qps (team Alpha)", "update")]
    task.refresh_from_db()
    assert (task.interval, task.revision) == (60, 1)
    assert hooks == [("changed", task.pk, [])]  # the create only


# --- secrets ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given",
    [
        "{zone: example.com, api_key: s3cr3t-ns1-key}",  # the same value in clear
        '{zone: example.com, api_key: "<secret>"}',  # the marker export writes
        "{zone: example.com}",  # left out
    ],
)
def test_the_same_secret_is_no_change(alpha, hooks, given):
    plan_of(TASK)
    plan = plan_of(TASK.replace("{zone: example.com, api_key: s3cr3t-ns1-key}", given))
    assert actions(plan) == [("task", "ns1 qps (team Alpha)", "unchanged")]
    task = Task.objects.get()
    assert task.revision == 1 and agent_settings(task) == NS1
    assert len(hooks) == 1


def test_a_new_secret_is_a_change_shown_without_its_value(alpha):
    plan_of(TASK)
    plan = plan_of(TASK.replace("s3cr3t-ns1-key", "n3w-k3y"))
    (change,) = plan.changes
    assert change.action == "update"
    assert change.fields == {
        "settings": (
            {"zone": "example.com", "api_key": "<secret>"},
            {"zone": "example.com", "api_key": "<new secret>"},
        )
    }
    assert "n3w-k3y" not in plan.render() and "n3w-k3y" not in str(plan.as_dict())
    task = Task.objects.get()
    assert task.revision == 2 and agent_settings(task)["api_key"] == "n3w-k3y"
    details = str(list(Activity.objects.values_list("details", flat=True)))
    assert "n3w-k3y" not in details and "s3cr3t" not in details


def test_a_marker_with_nothing_stored_is_refused(alpha):
    errors = errors_of(TASK.replace("api_key: s3cr3t-ns1-key", 'api_key: "<secret>"'))
    assert errors == [
        'tasks.yml, document 1 (task "ns1 qps"): settings.api_key: "<secret>" keeps the stored secret, '
        "but this task has none for this plugin: give the value"
    ]
    errors = errors_of(DESTINATION.replace("Bearer t0ps3cr3t", '"<secret>"'))
    assert "headers: Authorization has no stored value to keep: send the value itself." in errors[0]
    assert not MetricDestination.objects.exists()


def test_export_writes_markers_and_applies_back_unchanged(alpha):
    make_agent("web-1", alpha)
    plan_of(
        TASK,
        DESTINATION,
        TASK.replace("ns1 qps", "pinned")
        .replace("[dc1]", "[dc2]")
        .replace("{type: byTags, config: {tags: [dc2]}}", "{type: byIds, config: {agents: [web-1]}}"),
    )
    text = export_yaml()
    for secret in SECRETS:
        assert secret not in text
    docs = [doc for doc in yaml.safe_load_all(text) if doc["kind"] in ("task", "metric_destination")]
    assert docs == [
        {
            "apiVersion": "v1",
            "kind": "metric_destination",
            "spec": {
                "name": "prom",
                "team": "Alpha",
                "kind": "prometheus_remote_write",
                "url": "https://prom.example.com/api/v1/write",
                "headers": {"Authorization": "<secret>"},
                "enabled": True,
            },
        },
        {
            "apiVersion": "v1",
            "kind": "task",
            "spec": {
                "name": "ns1 qps",
                "team": "Alpha",
                "plugin": "ns1",
                "settings": {"zone": "example.com", "api_key": "<secret>"},
                "interval": 60,
                "route": {"type": "byTags", "config": {"tags": ["dc1"]}},
                "enabled": True,
            },
        },
        {
            "apiVersion": "v1",
            "kind": "task",
            "spec": {
                "name": "pinned",
                "team": "Alpha",
                "plugin": "ns1",
                "settings": {"zone": "example.com", "api_key": "<secret>"},
                "interval": 60,
                "route": {"type": "byIds", "config": {"agents": ["web-1"]}},
                "enabled": True,
            },
        },
    ]
    plan = apply_documents(parse_yaml(text, "export.yml"))
    assert {c.action for c in plan.changes} == {"unchanged"}
    assert {t.revision for t in Task.objects.all()} == {1}
    assert agent_settings(Task.objects.get(name="pinned")) == NS1  # the secret kept, not "<secret>"
    assert open_headers(MetricDestination.objects.get()) == {"Authorization": "Bearer t0ps3cr3t"}


# --- errors: listed with the document, nothing stored -------------------------------------------------

VALID_QUERY = """
apiVersion: v1
kind: query
spec: {name: uptime, query: SELECT * FROM uptime;}
"""


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("plugin: ns1", "plugin: nope", "plugin: Unknown plugin 'nope' (known: ns1, ping)."),
        ("plugin: ns1", "plugin: ''", "plugin is required"),
        ("zone: example.com,", "zone: example.com, zone2: x,", "settings: zone2: unknown setting"),
        ("{zone: example.com, api_key: s3cr3t-ns1-key}", "{api_key: k}", "settings: zone: required"),
        ("{zone: example.com, api_key: s3cr3t-ns1-key}", "[zone]", "settings must be a mapping"),
        ("interval: 60", "interval: 5", "interval: Between 10 and 86400 seconds."),
        ("interval: 60", "interval: 86401", "interval: Between 10 and 86400 seconds."),
        ("interval: 60", "interval: soon", "interval must be a whole number, not 'soon'"),
        ("interval: 60", "", "interval is required"),
        ("route: {type: byTags, config: {tags: [dc1]}}", "", "route is required"),
        ("{type: byTags, config: {tags: [dc1]}}", "{type: sideways}", "route: Unknown route type 'sideways'"),
        ("{tags: [dc1]}", "{tags: []}", "route: config.tags must be a non-empty list."),
        ("{tags: [dc1]}", "{tags: [a b]}", "route: Invalid tag 'a b'"),
        ("{tags: [dc1]}", "{labels: [dc1]}", "route: A byTags route's config takes tags."),
        (
            "{type: byTags, config: {tags: [dc1]}}",
            "{type: byIds, config: {ids: [1]}}",
            "config: {agents: [name",
        ),
        (
            "{type: byTags, config: {tags: [dc1]}}",
            "{type: byIds, config: {agents: [ghost]}}",
            'no agent named "ghost" in team "Alpha"',
        ),
        (
            "{type: byTags, config: {tags: [dc1]}}",
            "{type: byLabels, config: {labels: [Nope]}}",
            "route: no label named Nope",
        ),
        (
            "{type: byTags, config: {tags: [dc1]}}",
            "{type: byLabels, config: {labels: [x], tags: [x]}}",
            "route: A byLabels route's config takes labels.",
        ),
        ("team: Alpha", "team: Gamma", 'team "Gamma" does not exist'),
        ("name: ns1 qps", "name: ''", "name is required"),
    ],
)
def test_bad_task_is_listed_and_nothing_is_applied(alpha, hooks, old, new, message):
    bad = TASK.replace(old, new)
    assert bad != TASK
    errors = errors_of(VALID_QUERY, DESTINATION, bad)
    assert len(errors) == 1 and errors[0].startswith("tasks.yml, document 3 (task"), errors
    assert message in errors[0], errors
    assert not Query.objects.exists() and not MetricDestination.objects.exists() and not Task.objects.exists()
    assert hooks == []


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("kind: prometheus_remote_write", "kind: carrier_pigeon", "kind: Unknown kind 'carrier_pigeon'"),
        (
            "https://prom.example.com",
            "ftp://prom.example.com",
            "url: A prometheus_remote_write URL looks like",
        ),
        ("https://prom.example.com", "https://u:p@prom.example.com", "url: Put credentials in a header"),
        (
            "{Authorization: Bearer t0ps3cr3t}",
            "{'bad header': x}",
            "headers: Invalid header name 'bad header'.",
        ),
        (
            "{Authorization: Bearer t0ps3cr3t}",
            "{Authorization: 5}",
            "headers: The value of Authorization must be",
        ),
    ],
)
def test_bad_destination_is_listed_and_nothing_is_applied(alpha, old, new, message):
    errors = errors_of(VALID_QUERY, TASK, DESTINATION.replace(old, new))
    assert len(errors) == 1 and errors[0].startswith('tasks.yml, document 3 (metric_destination "prom")')
    assert message in errors[0], errors
    assert not Query.objects.exists() and not Task.objects.exists() and not MetricDestination.objects.exists()


def test_every_bad_document_is_listed(alpha):
    errors = errors_of(
        TASK.replace("interval: 60", "interval: 1"), TASK, DESTINATION.replace("https://", "ftp://")
    )
    assert errors[0].startswith('tasks.yml, document 3 (metric_destination "prom"): url:')
    assert errors[1] == 'tasks.yml, document 1 (task "ns1 qps"): interval: Between 10 and 86400 seconds.'
    assert len(errors) == 2  # the second task is fine


def test_the_same_task_twice_is_refused(alpha):
    errors = errors_of(TASK, TASK)
    assert errors == [
        'tasks.yml, document 2 (task "ns1 qps"): task "ns1 qps" is also defined in '
        'tasks.yml, document 1 (task "ns1 qps")'
    ]


# --- routes and teams --------------------------------------------------------------------------------


def test_by_ids_names_agents_of_the_tasks_team(alpha, beta):
    one, two = make_agent("web-1", alpha), make_agent("web-2", alpha)
    make_agent("web-1", beta)
    glob = make_agent("edge", None)
    routed = TASK.replace(
        "{type: byTags, config: {tags: [dc1]}}", "{type: byIds, config: {agents: [web-2, web-1]}}"
    )
    plan_of(routed)
    task = Task.objects.get()
    assert (task.route_type, task.route_config) == ("byIds", {"ids": sorted([one.pk, two.pk])})
    assert actions(plan_of(routed.replace("[web-2, web-1]", "[web-1, web-2]")))[0][2] == "unchanged"

    errors = errors_of(routed.replace("[web-2, web-1]", "[web-1, edge]"))
    assert 'route: no agent named "edge" in team "Alpha"' in errors[0]
    errors = errors_of(routed.replace("team: Alpha", "team: Beta").replace("[web-2, web-1]", "[web-2]"))
    assert 'no agent named "web-2" in team "Beta"' in errors[0]
    errors = errors_of(routed.replace("  team: Alpha\n", "").replace("[web-2, web-1]", "[web-1]"))
    assert 'no agent named "web-1" among the global agents' in errors[0]

    plan_of(routed.replace("  team: Alpha\n", "").replace("[web-2, web-1]", "[edge]"))
    assert Task.objects.get(team=None).route_config == {"ids": [glob.pk]}
    plan = plan_of(routed.replace("[web-2, web-1]", "[web-1]"))
    assert plan.changes[0].fields == {
        "route": (
            {"type": "byIds", "config": {"agents": ["web-1", "web-2"]}},
            {"type": "byIds", "config": {"agents": ["web-1"]}},
        )
    }


def test_a_task_in_a_team_this_apply_creates_routes_by_labels_it_defines(hooks):
    plan = plan_of(
        TASK.replace("team: Alpha", "team: New").replace(
            "{type: byTags, config: {tags: [dc1]}}", "{type: byLabels, config: {labels: [Web]}}"
        ),
        "apiVersion: v1\nkind: label\nspec: {name: Web, query: SELECT 1;}\n",
        "apiVersion: v1\nkind: team\nspec: {team: {name: New}}\n",
    )
    assert actions(plan) == [
        ("team", "New", "create"),
        ("label", "Web", "create"),
        ("task", "ns1 qps (team New)", "create"),
    ]
    task = Task.objects.get()
    assert (task.team.name, task.route_config) == ("New", {"labels": ["Web"]})
    assert Label.objects.filter(name="Web").exists()


def test_names_are_per_team(alpha, beta):
    plan_of(TASK, TASK.replace("team: Alpha", "team: Beta"), TASK.replace("  team: Alpha\n", ""))
    assert sorted((t.team.name if t.team else "", t.name) for t in Task.objects.all()) == [
        ("", "ns1 qps"),
        ("Alpha", "ns1 qps"),
        ("Beta", "ns1 qps"),
    ]
    plan = plan_of(TASK.replace("team: Alpha", "team: Beta").replace("interval: 60", "interval: 300"))
    assert actions(plan) == [("task", "ns1 qps (team Beta)", "update")]
    assert dict(Task.objects.values_list("team__name", "interval")) == {None: 60, "Alpha": 60, "Beta": 300}


def test_an_any_task_is_placed_and_pushed_on_commit(alpha, hooks):
    agent = make_agent("web-1", alpha, online=True)
    plan_of(TASK.replace("{type: byTags, config: {tags: [dc1]}}", "{type: any}"))
    task = Task.objects.get()
    assert task.any_assignment.agent == agent
    plan_of(
        TASK.replace("{type: byTags, config: {tags: [dc1]}}", "{type: any}").replace(
            "interval: 60", "interval: 30"
        )
    )
    assert hooks == [("changed", task.pk, []), ("changed", task.pk, [agent.pk])]


def test_a_task_made_over_rest_is_updated_by_name(alpha):
    task = save_task(
        name="ns1 qps",
        plugin="ns1",
        settings=dict(NS1),
        interval=60,
        route_type=RouteType.BY_TAGS,
        route_config={"tags": ["dc1"]},
        team_id=alpha.pk,
    )
    assert actions(plan_of(TASK))[0][2] == "unchanged"
    plan_of(TASK.replace("interval: 60", "interval: 61"))
    task.refresh_from_db()
    assert (task.interval, task.revision, agent_settings(task)) == (61, 2, NS1)


# --- destinations ---------------------------------------------------------------------------------------


def test_destination_headers_are_kept_changed_or_removed(alpha, hooks):
    plan_of(DESTINATION)
    pushed = list(hooks)
    assert actions(plan_of(DESTINATION))[0][2] == "unchanged"
    assert hooks == pushed  # an unchanged destination is not sent to the agents again
    for same in (
        "{Authorization: Bearer t0ps3cr3t}",
        '{Authorization: "<secret>"}',
        '{authorization: "<secret>"}',
    ):
        plan = plan_of(DESTINATION.replace("{Authorization: Bearer t0ps3cr3t}", same))
        expected = "update" if same.startswith("{authorization") else "unchanged"
        assert plan.changes[0].action == expected, same
        plan_of(DESTINATION)
    assert (
        actions(plan_of(DESTINATION.replace("  headers: {Authorization: Bearer t0ps3cr3t}\n", "")))[0][2]
        == "unchanged"
    )
    plan = plan_of(DESTINATION.replace("t0ps3cr3t", "n3w"))
    assert plan.changes[0].fields == {
        "headers": ({"Authorization": "<secret>"}, {"Authorization": "<new secret>"})
    }
    assert open_headers(MetricDestination.objects.get()) == {"Authorization": "Bearer n3w"}
    plan_of(DESTINATION.replace("{Authorization: Bearer t0ps3cr3t}", "{}"))
    assert MetricDestination.objects.get().headers == {}


def test_server_destination_and_global_scope():
    plan = plan_of("apiVersion: v1\nkind: metric_destination\nspec: {name: here, kind: server}\n")
    assert actions(plan) == [("metric_destination", "here", "create")]
    destination = MetricDestination.objects.get()
    assert (destination.team, destination.url, destination.headers) == (None, "", {})
    plan = plan_of(
        "apiVersion: v1\nkind: metric_destination\nspec: {name: here, kind: server, enabled: false}\n"
    )
    assert plan.changes[0].fields == {"enabled": (True, False)}


# --- who, and the audit trail ---------------------------------------------------------------------------


def test_rest_apply_by_gitops_is_recorded_once_per_kind(alpha):
    gitops = user_with_role("ci", Role.GITOPS)
    body = (textwrap.dedent(TASK) + "---" + textwrap.dedent(DESTINATION)).encode()
    response = api_for(gitops).generic("POST", "/api/v1/spec/", body, content_type="application/yaml")
    assert response.status_code == 200, response.json()
    assert response.json()["summary"]["create"] == 2
    assert Task.objects.get().created_by == gitops
    types = sorted(Activity.objects.values_list("type", flat=True))
    assert types == ["applied_spec_metric_destination", "applied_spec_task"]
    activity = Activity.objects.get(type="applied_spec_task")
    assert activity.surface == "yaml" and activity.actor_id == gitops.pk
    for secret in SECRETS:
        assert secret not in str(list(Activity.objects.values_list("details", flat=True)))
    # The same again: nothing recorded.
    api_for(gitops).generic("POST", "/api/v1/spec/", body, content_type="application/yaml")
    assert Activity.objects.count() == 2


def test_team_users_may_not_apply_specs(alpha):
    maintainer = user_with_role("m", Role.MAINTAINER, alpha)
    body = textwrap.dedent(TASK).encode()
    response = api_for(maintainer).generic("POST", "/api/v1/spec/", body, content_type="application/yaml")
    assert response.status_code == 403
    assert not Task.objects.exists()


def test_a_command_without_plugins_says_so(settings, tmp_path, alpha):
    settings.TASKSERVER_PLUGINS_MODULE = "no_such_module_here"
    with pytest.raises(CommandError, match="No task plugins are installed on this server"):
        apply_command(tmp_path, TASK)


def test_superuser_over_rest_is_the_author(alpha):
    root = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    api_for(root).generic(
        "POST", "/api/v1/spec/", textwrap.dedent(TASK).encode(), content_type="application/yaml"
    )
    assert Task.objects.get().created_by == root


# --- the documented examples, with the agent's real plugins -------------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs"


def yaml_block(page: str, heading: str) -> str:
    """The first ```yaml block after ``heading`` in ``docs/<page>``."""
    text = (DOCS / page).read_text()
    start = text.index(heading)
    return re.search(r"```yaml\n(.*?)```", text[start:], re.S).group(1)


def test_the_documented_examples_apply(settings):
    """A secret kept on the server ("<secret>") and agents by name, as docs/tasks.md and
    docs/config-as-code.md show them."""
    pytest.importorskip("taskagent.plugins")
    settings.TASKSERVER_PLUGINS_MODULE = "taskagent.plugins"
    team = Team.objects.create(name="Engineering")
    for name in ("dns-1", "dns-2", "dns-probe-1", "dns-probe-2"):
        make_agent(name, team)
    save_destination(
        name="prom",
        kind="prometheus_remote_write",
        url="https://prom.example.com/api/v1/write",
        headers={"Authorization": "Bearer from-rest"},
        team_id=team.pk,
    )
    save_task(
        name="ns1 qps",
        plugin="ns1",
        settings={"zone": "example.com", "api_key": "from-rest"},
        interval=60,
        route_type=RouteType.ANY,
        team_id=team.pk,
    )

    plan = plan_of(yaml_block("config-as-code.md", "### Tasks and metric destinations"))
    assert actions(plan) == [
        ("metric_destination", "prom (team Engineering)", "unchanged"),
        ("task", "resolver latency (team Engineering)", "create"),
    ]
    plan = plan_of(yaml_block("tasks.md", "## From YAML"))
    assert actions(plan) == [
        ("metric_destination", "prom (team Engineering)", "unchanged"),
        ("task", "ns1 qps (team Engineering)", "update"),
    ]
    assert set(plan.changes[1].fields) == {"route"}
    task = Task.objects.get(name="ns1 qps")
    assert agent_settings(task)["api_key"] == "from-rest" and task.route_type == "byIds"
