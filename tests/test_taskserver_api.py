"""REST API of tasks, agents, agent keys and metric destinations: CRUD, validation with real
HTTP statuses, write-only secrets, and roles (observer reads, maintainer writes its team,
another team's objects are 404)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from activities.models import Activity
from hosts.choices import Role
from taskagent.cli import build_parser
from taskserver import services
from taskserver.models import AgentKey, MetricDestination, Task, TaskAgent, key_digest
from taskserver.services import authenticate_key
from tests.factories import api_for, user_with_role
from tests.test_taskserver_support import NS1, make_agent, plugin_standin, task_body  # noqa: F401

pytestmark = pytest.mark.django_db
TASKS = "/api/v1/tasks/"


@pytest.fixture
def admin():
    return get_user_model().objects.create_superuser("root", "root@example.com", "pw")


@pytest.fixture
def api(admin):
    return api_for(admin)


# --- tasks: CRUD and validation --------------------------------------------------------------------


def test_create_list_retrieve_update_delete(api, alpha):
    agent = make_agent("a1", alpha, tags=["dc1"])
    response = api.post(TASKS, task_body(team_id=alpha.pk), format="json")
    assert response.status_code == 201, response.json()
    task = response.json()
    assert task["settings"] == {"zone": "example.com", "api_key": "<secret>"}
    assert task["route"] == {"type": "byTags", "config": {"tags": ["dc1"]}}
    assert task["team_id"] == alpha.pk and task["revision"] == 1 and task["enabled"] is True

    listing = api.get(TASKS, {"team_id": alpha.pk, "plugin": "ns1"}).json()
    assert listing["count"] == 1 and listing["count_is_exact"] is True
    assert listing["results"][0]["id"] == task["id"]
    assert api.get(TASKS, {"name": "nothing"}).json()["count"] == 0

    url = f"{TASKS}{task['id']}/"
    response = api.patch(url, {"interval": 120, "route": {"type": "any"}}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["interval"] == 120 and body["revision"] == 2
    assert body["assigned_agent_id"] == agent.pk
    assert api.delete(url).status_code == 204
    assert api.get(url).status_code == 404
    types = list(Activity.objects.order_by("id").values_list("type", flat=True))
    assert types[-3:] == ["created_task", "edited_task", "deleted_task"]
    assert "s3cr3t" not in str(list(Activity.objects.values_list("details", flat=True)))


def test_secrets_are_never_returned_and_kept_when_omitted(api):
    created = api.post(TASKS, task_body(), format="json").json()
    url = f"{TASKS}{created['id']}/"
    assert "s3cr3t" not in api.get(url).content.decode()
    assert "s3cr3t" not in api.get(TASKS).content.decode()
    stored = Task.objects.get(pk=created["id"]).settings
    assert "s3cr3t" not in str(stored) and stored["api_key"]["sealed"].startswith("v1:")

    from taskserver.services import agent_settings

    # Left out, or sent back as the marker: the stored secret stays.
    api.patch(url, {"settings": {"zone": "other.com"}}, format="json")
    assert agent_settings(Task.objects.get(pk=created["id"])) == {**NS1, "zone": "other.com"}
    api.patch(url, {"settings": {"zone": "x.com", "api_key": "<secret>"}}, format="json")
    assert agent_settings(Task.objects.get(pk=created["id"]))["api_key"] == NS1["api_key"]
    api.patch(url, {"settings": {"zone": "x.com", "api_key": "new-key"}}, format="json")
    assert agent_settings(Task.objects.get(pk=created["id"]))["api_key"] == "new-key"


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"plugin": "nope"}, "plugin", "Unknown plugin 'nope'"),
        ({"settings": {"zone": "x"}}, "settings", "api_key: required"),
        ({"settings": {"zone": 5, "api_key": "k"}}, "settings", "zone: must be a string"),
        ({"settings": {"zone": "x", "api_key": "<secret>"}}, "settings", "api_key: required"),
        ({"interval": 5}, "interval", "Between 10 and 86400"),
        ({"interval": 86401}, "interval", "Between 10 and 86400"),
        ({"route": {"type": "byTags", "config": {}}}, "route", "takes tags"),
        ({"route": {"type": "byTags", "config": {"tags": []}}}, "route", "non-empty list"),
        ({"route": {"type": "byTags", "config": {"tags": ["a b"]}}}, "route", "Invalid tag"),
        ({"route": {"type": "any", "config": {"tags": ["a"]}}}, "route", "takes no keys"),
        ({"route": {"type": "byIds", "config": {"ids": ["1"]}}}, "route", "agent ids"),
        ({"route": {"type": "byIds", "config": {"ids": [999]}}}, "route", "No agent with id 999"),
        ({"route": {"type": "byLabels", "config": {"labels": ["Nope"]}}}, "route", "No label named"),
        ({"route": {"type": "sideways", "config": {}}}, "route", "not a valid choice"),
        ({"name": " "}, "name", "blank"),
    ],
)
def test_bad_input_is_400_with_the_field(api, change, field, message):
    response = api.post(TASKS, task_body(**change), format="json")
    assert response.status_code == 400, response.json()
    errors = response.json()["errors"]
    assert message in str(errors[field]), errors
    assert not Task.objects.exists()


def test_by_ids_to_another_teams_agent_is_400(api, alpha, beta):
    theirs = make_agent("b1", beta)
    body = task_body(team_id=alpha.pk, route={"type": "byIds", "config": {"ids": [theirs.pk]}})
    response = api.post(TASKS, body, format="json")
    assert response.status_code == 400
    assert f"No agent with id {theirs.pk} in this team" in str(response.json()["errors"]["route"])


def test_names_are_unique_per_team(api, alpha):
    assert api.post(TASKS, task_body(), format="json").status_code == 201
    response = api.post(TASKS, task_body(), format="json")
    assert response.status_code == 409 and "already exists globally" in response.json()["message"]
    assert api.post(TASKS, task_body(team_id=alpha.pk), format="json").status_code == 201


def test_team_cannot_change(api, alpha):
    task = api.post(TASKS, task_body(), format="json").json()
    response = api.patch(f"{TASKS}{task['id']}/", {"team_id": alpha.pk}, format="json")
    assert response.status_code == 400 and "team" in str(response.json()["errors"])


# --- roles -------------------------------------------------------------------------------------------


def test_observer_reads_only(alpha):
    api_for(get_user_model().objects.create_superuser("r", "r@x.com", "pw")).post(
        TASKS, task_body(team_id=alpha.pk), format="json"
    )
    observer = api_for(user_with_role("obs", Role.OBSERVER, alpha))
    listing = observer.get(TASKS).json()
    assert listing["count"] == 1 and listing["results"][0]["settings"]["api_key"] == "<secret>"
    assert observer.post(TASKS, task_body(name="x", team_id=alpha.pk), format="json").status_code == 403
    task_id = listing["results"][0]["id"]
    assert observer.patch(f"{TASKS}{task_id}/", {"interval": 99}, format="json").status_code == 403
    assert observer.delete(f"{TASKS}{task_id}/").status_code == 403


def test_maintainer_writes_its_team_only(alpha, beta):
    theirs = Task.objects.create(name="theirs", plugin="ping", interval=60, team=beta)
    global_task = Task.objects.create(name="global", plugin="ping", interval=60)
    maintainer = api_for(user_with_role("m", Role.MAINTAINER, alpha))
    assert maintainer.post(TASKS, task_body(team_id=alpha.pk), format="json").status_code == 201
    assert maintainer.post(TASKS, task_body(name="g"), format="json").status_code == 403
    response = maintainer.post(TASKS, task_body(name="b", team_id=beta.pk), format="json")
    assert response.status_code == 400 and "No team" in str(response.json())
    for other in (theirs, global_task):
        assert maintainer.get(f"{TASKS}{other.pk}/").status_code == 404
        assert maintainer.patch(f"{TASKS}{other.pk}/", {"interval": 99}, format="json").status_code == 404
        assert maintainer.delete(f"{TASKS}{other.pk}/").status_code == 404
    assert [t["name"] for t in maintainer.get(TASKS).json()["results"]] == ["ns1 qps"]


def test_agents_of_another_team_are_not_found(alpha, beta):
    mine, theirs = make_agent("mine", alpha), make_agent("theirs", beta)
    maintainer = api_for(user_with_role("m", Role.MAINTAINER, alpha))
    assert [a["name"] for a in maintainer.get("/api/v1/task-agents/").json()["results"]] == ["mine"]
    assert maintainer.get(f"/api/v1/task-agents/{theirs.pk}/").status_code == 404
    assert maintainer.delete(f"/api/v1/task-agents/{theirs.pk}/").status_code == 404
    response = maintainer.patch(f"/api/v1/task-agents/{mine.pk}/", {"tags": ["b", "a", "b"]}, format="json")
    assert response.status_code == 200 and response.json()["tags"] == ["b", "a"]
    gitops = api_for(user_with_role("g", Role.GITOPS))
    assert gitops.get("/api/v1/task-agents/").status_code == 403
    assert gitops.post(TASKS, task_body(), format="json").status_code == 201


# --- agents ------------------------------------------------------------------------------------------


def test_agent_list_filters_and_update(api, alpha):
    make_agent("a1", alpha, tags=["dc1"], online=True)
    a2 = make_agent("a2", alpha, tags=["dc2"], online=False)
    make_agent("g1", None, tags=["dc1"])
    url = "/api/v1/task-agents/"
    assert [a["name"] for a in api.get(url, {"tag": "dc1"}).json()["results"]] == ["a1", "g1"]
    assert [a["name"] for a in api.get(url, {"online": "false"}).json()["results"]] == ["a2"]
    body = api.get(url, {"team_id": alpha.pk, "limit": 1}).json()
    assert body["count"] == 2 and len(body["results"]) == 1 and body["next"]
    response = api.patch(f"{url}{a2.pk}/", {"tags": ["bad tag"]}, format="json")
    assert response.status_code == 400 and "tags" in response.json()["errors"]
    response = api.patch(f"{url}{a2.pk}/", {"enabled": False}, format="json")
    assert response.status_code == 200 and response.json()["enabled"] is False
    assert api.post(url, {"name": "x"}, format="json").status_code == 405
    assert api.delete(f"{url}{a2.pk}/").status_code == 204
    assert not TaskAgent.objects.filter(pk=a2.pk).exists()


# --- agent keys --------------------------------------------------------------------------------------


def test_agent_key_is_shown_once(api, alpha):
    response = api.post("/api/v1/agent-keys/", {"name": "dc1", "team_id": alpha.pk}, format="json")
    assert response.status_code == 201, response.json()
    raw = response.json()["key"]
    key = AgentKey.objects.get()
    assert key.key_digest == key_digest(raw) and raw not in str(AgentKey.objects.values())
    listing = api.get("/api/v1/agent-keys/").json()
    assert listing["count"] == 1 and "key" not in listing["results"][0]
    assert "key" not in api.get(f"/api/v1/agent-keys/{key.pk}/").json()
    assert authenticate_key(raw) == key and authenticate_key(raw + "x") is None
    assert AgentKey.objects.get().last_used_at is not None
    again = api.post("/api/v1/agent-keys/", {"name": "dc1", "team_id": alpha.pk}, format="json")
    assert again.status_code == 409
    assert api.delete(f"/api/v1/agent-keys/{key.pk}/").status_code == 204
    assert authenticate_key(raw) is None


def test_agent_keys_never_start_with_a_dash(api, monkeypatch):
    """One token_urlsafe in 64 starts with "-"; given as ``--key``, the agent's parser took it for
    an option and refused to start. A key that would is drawn again."""
    drawn = iter(["-looks-like-an-option", "usable-key-text"])
    monkeypatch.setattr(services.secrets, "token_urlsafe", lambda _n: next(drawn))
    response = api.post("/api/v1/agent-keys/", {"name": "dc2"}, format="json")
    assert response.status_code == 201, response.json()
    raw = response.json()["key"]
    assert raw == "usable-key-text" and authenticate_key(raw) == AgentKey.objects.get()
    assert build_parser().parse_args(["--server", "https://fleet.example.com", "--key", raw]).key == raw


def test_agent_keys_need_admin_to_write(alpha):
    maintainer = api_for(user_with_role("m", Role.MAINTAINER, alpha))
    assert maintainer.get("/api/v1/agent-keys/").status_code == 200
    response = maintainer.post("/api/v1/agent-keys/", {"name": "k", "team_id": alpha.pk}, format="json")
    assert response.status_code == 403
    observer = api_for(user_with_role("o", Role.OBSERVER, alpha))
    assert observer.get("/api/v1/agent-keys/").status_code == 403
    team_admin = api_for(user_with_role("ta", Role.ADMIN, alpha))
    assert (
        team_admin.post("/api/v1/agent-keys/", {"name": "k", "team_id": alpha.pk}, format="json").status_code
        == 201
    )
    assert team_admin.post("/api/v1/agent-keys/", {"name": "g"}, format="json").status_code == 403


# --- metric destinations -----------------------------------------------------------------------------


def test_destination_headers_are_write_only(api):
    url = "/api/v1/metric-destinations/"
    body = {
        "name": "prom",
        "kind": "prometheus_remote_write",
        "url": "https://prom.example.com/api/v1/write",
        "headers": {"Authorization": "Bearer very-secret"},
    }
    response = api.post(url, body, format="json")
    assert response.status_code == 201, response.json()
    created = response.json()
    assert created["headers"] == {"Authorization": "<secret>"}
    assert "very-secret" not in api.get(url).content.decode()
    destination = MetricDestination.objects.get()
    assert "very-secret" not in str(destination.headers)

    from taskserver.services import open_headers

    response = api.patch(
        f"{url}{created['id']}/", {"headers": {"Authorization": "<secret>", "X-Org": "1"}}, format="json"
    )
    assert response.status_code == 200, response.json()
    destination.refresh_from_db()
    assert open_headers(destination) == {"Authorization": "Bearer very-secret", "X-Org": "1"}
    api.patch(f"{url}{created['id']}/", {"enabled": False}, format="json")
    destination.refresh_from_db()
    assert not destination.enabled and open_headers(destination)["X-Org"] == "1"
    assert api.delete(f"{url}{created['id']}/").status_code == 204


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "graphite", "url": "graphite:2003"}, "url"),
        ({"kind": "graphite", "url": "tcp://graphite"}, "url"),
        ({"kind": "prometheus_remote_write", "url": "ftp://x"}, "url"),
        ({"kind": "prometheus_remote_write", "url": "https://u:p@x/"}, "url"),
        ({"kind": "server", "url": "https://x/"}, "url"),
        ({"kind": "carrier-pigeon"}, "kind"),
        ({"kind": "server", "headers": {"bad name": "x"}}, "headers"),
        # Found by the YAML work: a space in the host, and the marker with nothing stored to keep.
        ({"kind": "prometheus_remote_write", "url": "https://x y.com/api/v1/write"}, "url"),
        ({"kind": "prometheus_remote_write", "url": "https://x.com/a\tb"}, "url"),
        ({"kind": "server", "headers": {"Authorization": "<secret>"}}, "headers"),
    ],
)
def test_bad_destinations_are_400(api, body, field):
    response = api.post("/api/v1/metric-destinations/", {"name": "d", **body}, format="json")
    assert response.status_code == 400 and field in response.json()["errors"], response.json()


def test_graphite_and_server_destinations(api):
    url = "/api/v1/metric-destinations/"
    assert (
        api.post(
            url, {"name": "g", "kind": "graphite", "url": "tcp://graphite:2003"}, format="json"
        ).status_code
        == 201
    )
    assert api.post(url, {"name": "s", "kind": "server"}, format="json").status_code == 201
    assert api.get(url, {"kind": "server"}).json()["count"] == 1
