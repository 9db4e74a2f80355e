"""Routing: which agents run which task, ``any`` placement and rebalancing, and the hooks the
WebSocket part hears (on commit, with the agents that ran a task before, read first)."""

from __future__ import annotations

import pytest

from hosts.models import Label, LabelMembership, Team
from taskserver import routing, services
from taskserver.models import AnyAssignment, Task
from tests.factories import make_host
from tests.test_taskserver_support import NS1, make_agent, plugin_standin, record_hooks  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


def new_task(name: str, route_type: str, config: dict | None = None, team: Team | None = None, **kw) -> Task:
    return services.save_task(
        name=name,
        plugin="ping",
        settings={"host": "example.com"},
        interval=60,
        route_type=route_type,
        route_config=config or {},
        team_id=team.pk if team else None,
        **kw,
    )


@pytest.fixture
def heard(monkeypatch) -> list[tuple]:
    return record_hooks(monkeypatch)


@pytest.fixture
def teams():
    return Team.objects.create(name="Alpha"), Team.objects.create(name="Beta")


def test_by_tags_stays_in_the_task_scope(teams):
    alpha, beta = teams
    a1 = make_agent("a1", alpha, tags=["dc1"])
    a2 = make_agent("a2", alpha, tags=["dc2", "edge"])
    make_agent("a3", alpha, tags=["dc1"], enabled=False)
    make_agent("b1", beta, tags=["dc1"])
    g1 = make_agent("g1", None, tags=["dc1"])
    task = new_task("t", "byTags", {"tags": ["dc1", "edge"]}, alpha)
    assert routing.agents_for(task) == [a1.pk, a2.pk]
    global_task = new_task("g", "byTags", {"tags": ["dc1"]})
    assert routing.agents_for(global_task) == [g1.pk]
    assert [t.pk for t in routing.tasks_for(a2)] == [task.pk]
    assert routing.tasks_for(g1) == [global_task]


def test_by_ids_and_disabled_tasks(teams):
    alpha, _ = teams
    a1, a2 = make_agent("a1", alpha), make_agent("a2", alpha)
    task = new_task("t", "byIds", {"ids": [a2.pk]}, alpha)
    assert routing.agents_for(task) == [a2.pk]
    assert routing.tasks_for(a1) == [] and routing.tasks_for(a2) == [task]
    task = services.save_task(task=task, enabled=False)
    assert routing.agents_for(task) == [] and routing.tasks_for(a2) == []


def test_by_ids_refuses_agents_of_another_team(teams):
    alpha, beta = teams
    b1 = make_agent("b1", beta)
    with pytest.raises(services.ValidationError, match=f"No agent with id {b1.pk} in this team"):
        new_task("t", "byIds", {"ids": [b1.pk]}, alpha)


def test_by_labels_uses_the_agents_host(teams):
    alpha, _ = teams
    label = Label.objects.create(name="Ubuntu", query="SELECT 1")
    host = make_host("web-1", team=alpha)
    LabelMembership.objects.create(label=label, host=host)
    on_host = make_agent("a1", alpha, host=host)
    make_agent("a2", alpha, host=make_host("web-2", team=alpha))
    task = new_task("t", "byLabels", {"labels": ["Ubuntu"]}, alpha)
    assert routing.agents_for(task) == [on_host.pk]
    assert routing.tasks_for(on_host) == [task]
    with pytest.raises(services.ValidationError, match="No label named 'Nope'"):
        new_task("u", "byLabels", {"labels": ["Nope"]}, alpha)


def test_any_spreads_evenly_and_deterministically(teams):
    alpha, beta = teams
    agents = [make_agent(f"a{i}", alpha) for i in range(3)]
    make_agent("offline", alpha, online=False)
    make_agent("other team", beta)
    tasks = [new_task(f"t{i}", "any", team=alpha) for i in range(7)]
    placed = [routing.agents_for(t) for t in tasks]
    expected = [[agents[i % 3].pk] for i in range(7)]
    assert placed == expected
    loads = sorted(AnyAssignment.objects.filter(agent=a).count() for a in agents)
    assert loads == [2, 2, 3]


def test_any_waits_for_an_agent_and_assign_pending_places_it(teams, heard):
    alpha, _ = teams
    task = new_task("t", "any", team=alpha)
    assert routing.agents_for(task) == []
    agent = make_agent("late", alpha)
    heard.clear()
    assert routing.assign_pending(alpha.pk) == [task.pk]
    assert routing.agents_for(task) == [agent.pk]
    assert heard == [("changed", task.pk, [])]


def test_rebalance_moves_tasks_to_the_least_loaded(teams, heard):
    alpha, _ = teams
    a1, a2, a3 = (make_agent(f"a{i}", alpha) for i in range(1, 4))
    tasks = [new_task(f"t{i}", "any", team=alpha) for i in range(6)]  # two each
    on_a1 = sorted(t.pk for t in tasks if routing.agents_for(t) == [a1.pk])
    heard.clear()
    a1.online = False
    a1.save()
    moved = routing.rebalance_agent(a1.pk)
    assert sorted(moved) == on_a1 and len(moved) == 2
    assert sorted(AnyAssignment.objects.filter(agent=a).count() for a in (a2, a3)) == [3, 3]
    assert all(old == [a1.pk] for _, _, old in heard) and len(heard) == 2


def test_rebalance_with_nobody_online_leaves_tasks_waiting(teams):
    alpha, _ = teams
    only = make_agent("only", alpha)
    task = new_task("t", "any", team=alpha)
    routing.rebalance_agent(only.pk)
    assert routing.agents_for(task) == []  # not pinned to the dead agent (task-server.md §6)
    assert not AnyAssignment.objects.filter(task=task).exists()


def test_deleting_an_agent_moves_its_tasks_and_forgets_it(teams, heard):
    alpha, _ = teams
    a1, a2 = make_agent("a1", alpha), make_agent("a2", alpha)
    any_task = new_task("any", "any", team=alpha)
    assert routing.agents_for(any_task) == [a1.pk]
    by_ids = new_task("ids", "byIds", {"ids": [a1.pk, a2.pk]}, alpha)
    heard.clear()
    a1_id = a1.pk
    services.delete_agent(a1)
    assert routing.agents_for(any_task) == [a2.pk]
    by_ids.refresh_from_db()
    assert by_ids.route_config == {"ids": [a2.pk]} and by_ids.revision == 2
    assert ("changed", any_task.pk, [a1_id]) in heard
    assert ("changed", by_ids.pk, [a1_id, a2.pk]) in heard
    assert heard[-1] == ("agent_removed", a1_id)


def test_deleting_a_task_tells_its_agents(teams, heard):
    alpha, _ = teams
    agent = make_agent("a1", alpha)
    task = new_task("t", "any", team=alpha)
    heard.clear()
    task_id = task.pk
    services.delete_task(task)
    assert heard == [("removed", task_id, [agent.pk])]  # read before the rows went (§6)


def test_hooks_wait_for_the_commit(teams, heard):
    from django.db import transaction

    alpha, _ = teams
    with pytest.raises(RuntimeError), transaction.atomic():
        new_task("t", "any", team=alpha)
        raise RuntimeError
    assert heard == [] and not Task.objects.exists()


def test_changing_a_route_reports_the_old_agents(teams, heard):
    alpha, _ = teams
    a1, a2 = make_agent("a1", alpha, tags=["x"]), make_agent("a2", alpha, tags=["y"])
    task = new_task("t", "byTags", {"tags": ["x"]}, alpha)
    heard.clear()
    task = services.save_task(task=task, route_type="byTags", route_config={"tags": ["y"]})
    assert heard == [("changed", task.pk, [a1.pk])]
    assert routing.agents_for(task) == [a2.pk] and task.revision == 2


def test_agent_tag_changes_and_switching_off(teams, heard):
    alpha, _ = teams
    a1, a2 = make_agent("a1", alpha), make_agent("a2", alpha)
    tagged = new_task("tagged", "byTags", {"tags": ["gpu"]}, alpha)
    any_task = new_task("any", "any", team=alpha)
    heard.clear()
    services.update_agent(a1, tags=["gpu"])
    assert heard == [("changed", tagged.pk, [])]
    heard.clear()
    services.update_agent(a1, enabled=False)
    assert routing.agents_for(any_task) == [a2.pk]
    assert ("changed", any_task.pk, [a1.pk]) in heard and ("changed", tagged.pk, [a1.pk]) in heard


def test_secret_settings_are_sealed_at_rest_and_open_for_agents():
    task = services.save_task(
        name="n", plugin="ns1", settings=dict(NS1), interval=60, route_type="any", route_config={}
    )
    stored = Task.objects.get(pk=task.pk).settings
    assert stored["zone"] == "example.com"
    assert "s3cr3t" not in str(stored) and set(stored["api_key"]) == {"sealed"}
    assert services.agent_settings(task) == NS1
