"""Tasks in the console (secrets never rendered back, scoping by team, a key shown once) and
``manage.py agent_key``."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

from hosts.choices import Role
from hosts.models import Team
from taskserver import services
from taskserver.models import AgentKey, Task, key_digest
from tests.factories import user_with_role
from tests.test_taskserver_support import NS1, make_agent, plugin_standin  # noqa: F401

pytestmark = pytest.mark.django_db


@pytest.fixture
def console():
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    return client


def _task_form(**overrides):
    data = {
        "name": "ns1",
        "team": "",
        "plugin": "ns1",
        "settings_json": json.dumps(NS1),
        "interval": "60",
        "route_type": "any",
        "route_config_json": "{}",
        "enabled": "on",
    }
    data.update(overrides)
    return data


def test_task_form_seals_and_never_renders_secrets(console):
    response = console.post("/admin/taskserver/task/add/", _task_form())
    assert response.status_code == 302, response.content.decode()[:3000]
    task = Task.objects.get()
    assert "s3cr3t" not in json.dumps(task.settings)
    page = console.get(f"/admin/taskserver/task/{task.pk}/change/").content.decode()
    assert "s3cr3t" not in page and "&lt;secret&gt;" in page
    # Sent back with the marker: the secret is kept.
    form = _task_form(settings_json=json.dumps({"zone": "b.com", "api_key": "<secret>"}), interval="90")
    assert console.post(f"/admin/taskserver/task/{task.pk}/change/", form).status_code == 302
    task.refresh_from_db()
    assert task.interval == 90 and services.agent_settings(task) == {**NS1, "zone": "b.com"}
    assert task.revision == 2


def test_task_form_shows_errors_on_fields(console):
    response = console.post(
        "/admin/taskserver/task/add/", _task_form(interval="5", route_type="byTags", route_config_json="{}")
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "Between 10 and 86400" in page and "takes tags" in page
    assert not Task.objects.exists()


def test_agent_key_is_shown_once_in_the_console(console):
    response = console.post("/admin/taskserver/agentkey/add/", {"name": "dc1", "team": ""}, follow=True)
    assert response.status_code == 200
    text = [str(m) for m in response.context["messages"]][0]
    raw = text.split(" is: ")[1].split(" ")[0]
    assert AgentKey.objects.get().key_digest == key_digest(raw)
    assert raw not in console.get("/admin/taskserver/agentkey/").content.decode()


def test_agent_list_and_team_scope(console):
    alpha, beta = Team.objects.create(name="Alpha"), Team.objects.create(name="Beta")
    make_agent("alpha-agent", alpha, tags=["dc1"])
    theirs = make_agent("beta-agent", beta)
    page = console.get("/admin/taskserver/taskagent/").content.decode()
    assert "alpha-agent" in page and "beta-agent" in page and "dc1" in page
    client = Client()
    client.force_login(user_with_role("m", Role.MAINTAINER, alpha))
    page = client.get("/admin/taskserver/taskagent/").content.decode()
    assert "alpha-agent" in page and "beta-agent" not in page
    assert client.get(f"/admin/taskserver/taskagent/{theirs.pk}/change/").status_code == 302  # "gone"
    assert client.get("/admin/taskserver/agentkey/add/").status_code == 403
    observer = Client()
    observer.force_login(user_with_role("o", Role.OBSERVER, alpha))
    assert observer.get("/admin/taskserver/task/").status_code == 200
    assert observer.get("/admin/taskserver/task/add/").status_code == 403


def test_destination_form_keeps_headers(console):
    data = {
        "name": "prom",
        "team": "",
        "kind": "prometheus_remote_write",
        "url": "https://prom/api/v1/write",
        "headers_json": json.dumps({"Authorization": "Bearer hush"}),
        "enabled": "on",
    }
    assert console.post("/admin/taskserver/metricdestination/add/", data).status_code == 302
    from taskserver.models import MetricDestination

    destination = MetricDestination.objects.get()
    page = console.get(f"/admin/taskserver/metricdestination/{destination.pk}/change/").content.decode()
    assert "hush" not in page
    data["headers_json"] = json.dumps({"Authorization": "<secret>"})
    assert (
        console.post(f"/admin/taskserver/metricdestination/{destination.pk}/change/", data).status_code == 302
    )
    destination.refresh_from_db()
    assert services.open_headers(destination) == {"Authorization": "Bearer hush"}


def test_agent_key_command():
    Team.objects.create(name="Servers")
    out, err = StringIO(), StringIO()
    call_command("agent_key", "add", "dc1", "--team", "Servers", stdout=out, stderr=err)
    raw = out.getvalue().strip()
    assert "shown this once" in err.getvalue()
    key = AgentKey.objects.get()
    assert key.team.name == "Servers" and key.key_digest == key_digest(raw)
    call_command("agent_key", "add", stdout=StringIO(), stderr=StringIO())  # a generated name, global
    listing = StringIO()
    call_command("agent_key", "list", stdout=listing)
    assert "dc1\tServers" in listing.getvalue() and raw not in listing.getvalue()
    with pytest.raises(CommandError, match="already exists"):
        call_command("agent_key", "add", "dc1", "--team", "Servers", stdout=StringIO(), stderr=StringIO())
    with pytest.raises(CommandError, match="No agent key named"):
        call_command("agent_key", "remove", "dc1", stdout=StringIO())  # it is the team's, not global
    call_command("agent_key", "remove", "dc1", "--team", "Servers", stdout=StringIO())
    assert AgentKey.objects.count() == 1
    with pytest.raises(CommandError, match="No team named"):
        call_command("agent_key", "list", "--team", "Nope", stdout=StringIO())


def test_duplicate_names_are_form_errors(console):
    assert console.post("/admin/taskserver/task/add/", _task_form()).status_code == 302
    response = console.post("/admin/taskserver/task/add/", _task_form())
    assert response.status_code == 200 and "already used" in response.content.decode()
    assert console.post("/admin/taskserver/agentkey/add/", {"name": "k", "team": ""}).status_code == 302
    response = console.post("/admin/taskserver/agentkey/add/", {"name": "k", "team": ""})
    assert response.status_code == 200 and "already used" in response.content.decode()


def test_an_agents_host_is_set_in_the_console_within_its_team(console):
    from hosts.models import Host

    alpha, beta = Team.objects.create(name="Alpha"), Team.objects.create(name="Beta")
    agent = make_agent("alpha-agent", alpha, tags=["dc1"])
    mine = Host.objects.create(hostname="mine", osquery_host_id="mine", team=alpha)
    theirs = Host.objects.create(hostname="theirs", osquery_host_id="theirs", team=beta)
    url = f"/admin/taskserver/taskagent/{agent.pk}/change/"
    form = {"tags_text": "dc1", "enabled": "on"}

    page = console.post(url, {**form, "host": str(theirs.pk)})
    assert page.status_code == 200 and page.context["adminform"].form.errors["host"]
    agent.refresh_from_db()
    assert agent.host_id is None
    assert console.post(url, {**form, "host": str(mine.pk)}).status_code == 302
    agent.refresh_from_db()
    assert agent.host_id == mine.pk
    assert console.post(url, form).status_code == 302  # left empty: untied
    agent.refresh_from_db()
    assert agent.host_id is None
    observer = Client()
    observer.force_login(user_with_role("o", Role.OBSERVER, alpha))
    page = observer.get(url).content.decode()
    assert 'name="host"' not in page  # read-only for observers
