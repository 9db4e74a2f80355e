"""Query reports: the latest snapshot per (query, host), the cap, what is skipped, and the report in
REST (``GET /api/v1/queries/<id>/report/``) and in the console (fleet-reference §4.4)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import OperationalError, connection
from django.urls import reverse
from django.utils import timezone

from hosts.choices import Role
from hosts.models import Host, Team
from queries import reports
from queries.models import LoggingMode, Query, QueryReport
from tests.agent import Agent
from tests.factories import api_for, make_host, user_with_role
from tests.test_logs import T0, event, post, read_lines, snapshot

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_totals():
    reports.forget_totals()
    yield
    reports.forget_totals()


@pytest.fixture
def uptime() -> Query:
    return Query.objects.create(name="uptime", query="SELECT 1", interval=60, automations_enabled=True)


def enrolled(client, secret: str, identifier: str) -> Agent:
    agent = Agent(client, identifier, hostname=f"{identifier}.local", serial=identifier)
    assert "node_key" in agent.enroll(secret)
    return agent


def report_of(query: Query, agent: Agent) -> QueryReport:
    return QueryReport.objects.get(query=query, host__uuid=agent.identifier)


def rows_of(n: int, prefix: str = "r") -> list[dict]:
    return [{"id": f"{prefix}{i}"} for i in range(n)]


# --- storing -------------------------------------------------------------------------------------


def test_each_snapshot_overwrites_the_hosts_report(agent, uptime):
    post(agent, [snapshot("pack/Global/uptime", rows_of(3, "a"))])
    post(agent, [snapshot("pack/Global/uptime", rows_of(2, "b"), unix_time=T0 + 60)])
    report = report_of(uptime, agent)
    assert report.rows == rows_of(2, "b") and report.row_count == report.kept_rows == 2
    assert report.last_fetched == datetime.fromtimestamp(T0 + 60, UTC)
    post(agent, [snapshot("pack/Global/uptime", [], unix_time=T0 + 120)])  # the query now returns nothing
    assert report_of(uptime, agent).rows == [] and QueryReport.objects.count() == 1


def test_an_older_run_resent_late_does_not_overwrite_a_newer_one(agent, uptime):
    post(agent, [snapshot("pack/Global/uptime", rows_of(1, "new"), unix_time=T0 + 60)])
    post(agent, [snapshot("pack/Global/uptime", rows_of(1, "old"), unix_time=T0)])
    assert report_of(uptime, agent).rows == rows_of(1, "new")


def test_the_same_batch_twice_changes_nothing(agent, uptime):
    """osquery re-sends a batch when a destination failed: storing must be idempotent."""
    lines = [snapshot("pack/Global/uptime", rows_of(4))]
    post(agent, lines)
    first = report_of(uptime, agent)
    post(agent, lines)
    again = report_of(uptime, agent)
    assert (again.rows, again.row_count) == (first.rows, first.row_count)
    assert again.last_fetched == first.last_fetched


def test_a_row_by_row_run_split_over_two_requests_is_merged(agent, uptime):
    lines = [event("pack/Global/uptime", "snapshot", row) for row in rows_of(6)]
    post(agent, lines[:4])
    post(agent, lines[2:])  # the rest, plus two rows re-sent
    assert report_of(uptime, agent).rows == rows_of(6)


def test_differential_results_are_not_reported(agent):
    """Decided: diffs are not idempotent under osquery's re-sends, so reports keep snapshots only."""
    query = Query.objects.create(
        name="procs", query="SELECT 1", interval=60, logging=LoggingMode.DIFFERENTIAL
    )
    post(agent, [event("pack/Global/procs", "added", {"pid": "1"})])
    assert not QueryReport.objects.filter(query=query).exists()


def test_discard_data_keeps_no_report(agent, settings):
    query = Query.objects.create(name="noisy", query="SELECT 1", interval=60, discard_data=True)
    post(agent, [snapshot("pack/Global/noisy", rows_of(2))])
    assert not QueryReport.objects.filter(query=query).exists()


def test_reports_can_be_turned_off(agent, uptime, settings):
    settings.OSQUERY_LOGGING = {**settings.OSQUERY_LOGGING, "QUERY_REPORTS_DISABLED": True}
    line = snapshot("pack/Global/uptime", rows_of(2))
    post(agent, [line])
    assert not QueryReport.objects.exists()


@pytest.mark.django_db(transaction=True)  # autocommit, as in production: a failed write poisons nothing
def test_a_failing_report_write_does_not_hold_back_the_logs(agent, uptime, settings):
    """Reports are best effort (as in Fleet): the lines still reach the destinations."""

    def refuse_reports(execute, sql, params, many, context):
        if "queryreport" in sql.lower() and sql.lstrip().upper().startswith("INSERT"):
            raise OperationalError("disk full")
        return execute(sql, params, many, context)

    line = snapshot("pack/Global/uptime", rows_of(2))
    with connection.execute_wrapper(refuse_reports):
        post(agent, [line])
    assert not QueryReport.objects.exists()
    assert read_lines(settings.OSQUERY["RESULT_LOG_FILE"]) == [line]


def test_cap_is_shared_by_hosts_and_clips_with_a_flag(client, global_secret, uptime, settings):
    settings.OSQUERY_LOGGING = {**settings.OSQUERY_LOGGING, "QUERY_REPORT_CAP": 5}
    a, b, c = (enrolled(client, global_secret, f"uuid-{x}") for x in "abc")
    post(a, [snapshot("pack/Global/uptime", rows_of(3, "a"))])
    post(b, [snapshot("pack/Global/uptime", rows_of(4, "b"))])
    report_b = report_of(uptime, b)
    assert report_b.rows == rows_of(2, "b") and report_b.row_count == 4 and report_b.kept_rows == 2
    post(c, [snapshot("pack/Global/uptime", rows_of(1, "c"))])
    assert report_of(uptime, c).rows == [] and report_of(uptime, c).row_count == 1

    # A full report still follows its hosts: a keeps updating within what the others leave free.
    post(a, [snapshot("pack/Global/uptime", rows_of(3, "a2"), unix_time=T0 + 60)])
    assert report_of(uptime, a).rows == rows_of(3, "a2")
    assert sum(r.kept_rows for r in QueryReport.objects.filter(query=uptime)) == 5
    assert reports.report_clipped(uptime.pk)

    settings.OSQUERY_LOGGING = {**settings.OSQUERY_LOGGING, "QUERY_REPORT_CAP": 100}  # raised: room again
    post(b, [snapshot("pack/Global/uptime", rows_of(4, "b2"), unix_time=T0 + 60)])
    post(c, [snapshot("pack/Global/uptime", rows_of(1, "c2"), unix_time=T0 + 60)])
    assert not reports.report_clipped(uptime.pk)


def test_cap_above_a_thousand_rows(agent, uptime, settings):
    """No fixed 1,000-row limit: the cap is a setting."""
    settings.OSQUERY_LOGGING = {**settings.OSQUERY_LOGGING, "QUERY_REPORT_CAP": 2500}
    post(agent, [snapshot("pack/Global/uptime", rows_of(2400))])
    assert report_of(uptime, agent).kept_rows == 2400


# --- REST ----------------------------------------------------------------------------------------


@pytest.fixture
def fleet(team):
    """Two teams' hosts and an unassigned one, with reports of a global and a team query."""
    other = Team.objects.create(name="Other")
    hosts = {
        "mine-1": make_host("mine-1", team),
        "mine-2": make_host("mine-2", team),
        "theirs": make_host("theirs", other),
        "nobody": make_host("nobody"),
    }
    global_q = Query.objects.create(name="os", query="SELECT * FROM os_version", interval=60)
    team_q = Query.objects.create(name="team-only", team=team, query="SELECT 1", interval=60)
    other_q = Query.objects.create(name="other-only", team=other, query="SELECT 1", interval=60)
    now = timezone.now()
    for i, host in enumerate(hosts.values()):
        rows = [{"host": host.hostname, "n": str(n)} for n in range(i + 1)]  # 1, 2, 3, 4 rows
        QueryReport.objects.create(
            query=global_q, host=host, rows=rows, row_count=len(rows), kept_rows=len(rows), last_fetched=now
        )
    QueryReport.objects.create(
        query=team_q, host=hosts["mine-1"], rows=[{"x": "1"}], row_count=3, kept_rows=1, last_fetched=now
    )
    return {"hosts": hosts, "global": global_q, "team": team_q, "other": other_q, "other_team": other}


def url(query: Query) -> str:
    return f"/api/v1/queries/{query.pk}/report/"


def test_admin_reads_the_whole_report_flattened(fleet):
    api = api_for(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    body = api.get(url(fleet["global"])).json()
    assert body["query_id"] == fleet["global"].pk and body["count"] == 10 and body["host_count"] == 4
    assert body["report_clipped"] is False and body["next"] is None
    first = body["results"][0]
    assert set(first) == {"host_id", "hostname", "last_fetched", "columns"}
    assert first["host_id"] == fleet["hosts"]["mine-1"].pk and first["hostname"] == "mine-1"
    assert first["columns"] == {"host": "mine-1", "n": "0"}
    assert [r["columns"]["host"] for r in body["results"]] == ["mine-1"] + ["mine-2"] * 2 + ["theirs"] * 3 + [
        "nobody"
    ] * 4


def test_pages_cut_across_hosts(fleet):
    api = api_for(user_with_role("obs", Role.OBSERVER))
    seen = []
    link = url(fleet["global"]) + "?limit=3"
    pages = 0
    while link:
        body = api.get(link).json()
        assert len(body["results"]) <= 3 and body["count"] == 10
        seen += [(r["hostname"], r["columns"]["n"]) for r in body["results"]]
        link, pages = body["next"], pages + 1
    assert pages == 4 and len(seen) == 10 and len(set(seen)) == 10
    body = api.get(url(fleet["global"]) + "?limit=2&offset=4").json()
    assert [(r["hostname"], r["columns"]["n"]) for r in body["results"]] == [("theirs", "1"), ("theirs", "2")]
    assert body["previous"] and body["next"]
    assert api.get(url(fleet["global"]) + "?offset=50").json()["results"] == []


def test_host_filter_and_bad_parameters(fleet):
    api = api_for(user_with_role("admin", Role.ADMIN))
    host = fleet["hosts"]["theirs"]
    body = api.get(url(fleet["global"]) + f"?host_id={host.pk}").json()
    assert body["count"] == 3 and {r["host_id"] for r in body["results"]} == {host.pk}
    response = api.get(url(fleet["global"]) + "?host_id=abc")
    assert response.status_code == 400 and "host_id" in response.json()["errors"]
    assert api.get("/api/v1/queries/999999/report/").status_code == 404


def test_team_observer_sees_only_their_hosts_rows(fleet, team):
    api = api_for(user_with_role("t-obs", Role.OBSERVER, team))
    body = api.get(url(fleet["global"])).json()
    assert {r["hostname"] for r in body["results"]} == {"mine-1", "mine-2"} and body["count"] == 3
    team_body = api.get(url(fleet["team"])).json()
    assert team_body["count"] == 1 and team_body["report_clipped"] is True  # 3 reported, 1 kept
    assert api.get(url(fleet["other"])).status_code == 404  # another team's query


def test_roles_without_host_data_are_refused(fleet, team):
    assert api_for(user_with_role("gitops", Role.GITOPS)).get(url(fleet["global"])).status_code == 403
    assert api_for(user_with_role("nobody")).get(url(fleet["global"])).status_code == 403
    from rest_framework.test import APIClient

    assert APIClient().get(url(fleet["global"])).status_code in (401, 403)
    api = api_for(user_with_role("maint", Role.MAINTAINER, fleet["other_team"]))
    assert api.get(url(fleet["team"])).status_code == 404
    assert {r["hostname"] for r in api.get(url(fleet["global"])).json()["results"]} == {"theirs"}


def test_report_endpoint_is_in_the_schema():
    api = api_for(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    schema = api.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    operation = schema["paths"]["/api/v1/queries/{id}/report/"]["get"]
    assert {"limit", "offset", "host_id"} <= {p["name"] for p in operation["parameters"]}


def test_report_written_by_agents_reads_back_through_rest(client, global_secret, uptime):
    agent = enrolled(client, global_secret, "uuid-rest")
    post(agent, [snapshot("pack/Global/uptime", [{"days": 2, "hours": 5}], numerics=True)])
    api = api_for(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    body = api.get(url(uptime)).json()
    host = Host.objects.get(uuid="uuid-rest")
    assert body["results"] == [
        {
            "host_id": host.pk,
            "hostname": "uuid-rest.local",
            "last_fetched": datetime.fromtimestamp(T0, UTC).isoformat().replace("+00:00", "Z"),
            "columns": {"days": "2", "hours": "5"},
        }
    ]


# --- console -------------------------------------------------------------------------------------


def test_console_report_page_shows_rows_and_paginates(fleet, client, monkeypatch):
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    page = client.get(reverse("admin:queries_queryreport_query", args=[fleet["global"].pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "mine-1" in html and "nobody" in html and "10 rows from 4 hosts" in html
    assert [cells for _row, cells in page.context["table"]][0] == ["mine-1", "0"]
    monkeypatch.setattr("queries.report_admin.ROWS_PER_PAGE", 4)
    second = client.get(reverse("admin:queries_queryreport_query", args=[fleet["global"].pk]) + "?page=2")
    assert [row.hostname for row, _ in second.context["table"]] == ["theirs"] * 2 + ["nobody"] * 2
    clipped = client.get(reverse("admin:queries_queryreport_query", args=[fleet["team"].pk]))
    assert "Clipped: 1 host" in clipped.content.decode()
    listing = client.get(reverse("admin:queries_queryreport_changelist"))
    assert listing.status_code == 200 and "team-only" in listing.content.decode()


def test_console_report_follows_roles(fleet, client, team):
    user = user_with_role("t-obs", Role.OBSERVER, team)
    user.is_staff = True
    user.save()
    user.user_permissions.add(Permission.objects.get(codename="view_queryreport"))
    client.force_login(user)
    page = client.get(reverse("admin:queries_queryreport_query", args=[fleet["global"].pk]))
    assert {row.hostname for row, _ in page.context["table"]} == {"mine-1", "mine-2"}
    assert client.get(reverse("admin:queries_queryreport_query", args=[fleet["other"].pk])).status_code == 404


def test_changing_the_sql_or_discarding_data_deletes_the_report(db):
    from django.utils import timezone

    from hosts.models import Host
    from queries.models import Query, QueryReport
    from queries.services import save_query

    host = Host.objects.create(osquery_host_id="h-report", hostname="h")
    query = Query.objects.create(name="uptime-report", query="SELECT * FROM uptime", interval=60)
    QueryReport.objects.create(
        query=query, host=host, rows=[{"a": "1"}], row_count=1, last_fetched=timezone.now()
    )
    query.description = "same SQL"
    save_query(query)
    assert QueryReport.objects.count() == 1
    query.query = "SELECT total_seconds FROM uptime"
    save_query(query)
    assert QueryReport.objects.count() == 0
    QueryReport.objects.create(query=query, host=host, rows=[], row_count=0, last_fetched=timezone.now())
    query.discard_data = True
    save_query(query)
    assert QueryReport.objects.count() == 0
