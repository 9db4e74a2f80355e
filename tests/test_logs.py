"""Result and status logs through ``/api/osquery/log``: every shape osquery sends, the mapping of a
line's name to its query and pack, what is forwarded, and constant database work per request
(osquery-protocol.md §7, fleet-reference §4.3-4.4 and §6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from hosts.models import FleetSettings, Host, Team
from hosts.services import transfer_hosts
from packs.logs import as_strings, parse_result
from packs.models import Pack, ScheduledQuery
from queries import reports
from queries.models import LoggingMode, Query, QueryReport
from tests.agent import Agent

pytestmark = pytest.mark.django_db

T0 = 1_793_598_087  # Sun Nov  2 05:41:27 2026 UTC


def result_line(name: str, unix_time: int = T0, counter: int = 0, **shape) -> dict:
    """A result line with the fields query.cpp always writes, plus one of the three shapes."""
    return {
        "name": name,
        "hostIdentifier": "uuid-0001",
        "calendarTime": "Sun Nov  2 05:41:27 2026 UTC",
        "unixTime": unix_time,
        "epoch": 0,
        "counter": counter,
        "numerics": False,
        **shape,
    }


def snapshot(name: str, rows: list[dict], unix_time: int = T0, **extra) -> dict:
    return result_line(name, unix_time, snapshot=rows, action="snapshot", **extra)


def event(name: str, action: str, columns: dict, unix_time: int = T0, counter: int = 0, **extra) -> dict:
    return result_line(name, unix_time, counter, columns=columns, action=action, **extra)


def read_lines(path: str) -> list[dict]:
    file = Path(path)
    return [json.loads(line) for line in file.read_text().splitlines()] if file.exists() else []


def post(agent: Agent, lines: list[dict], log_type: str = "result"):
    response = agent.authed("log", {"log_type": log_type, "data": lines})
    assert response.status_code == 200 and response.json() == {}, response.content
    return response


@pytest.fixture
def uptime() -> Query:
    return Query.objects.create(
        name="uptime", query="SELECT * FROM uptime", interval=60, automations_enabled=True
    )


def report_rows(query: Query, host_id: int | None = None) -> list[dict]:
    reports = QueryReport.objects.filter(query=query)
    if host_id is not None:
        reports = reports.filter(host_id=host_id)
    return [row for report in reports for row in report.rows]


def host_id(agent: Agent) -> int:
    return Host.objects.get(uuid=agent.identifier).pk


# --- shapes ------------------------------------------------------------------------------------


def test_parse_every_shape():
    snap = parse_result(snapshot("pack/Global/q", [{"a": "1"}, {"a": "2"}]))
    assert snap.is_snapshot and snap.snapshot == [{"a": "1"}, {"a": "2"}] and snap.unix_time == T0

    row = parse_result(event("pack/Global/q", "snapshot", {"a": "1"}))
    assert row.is_snapshot and row.snapshot_row == {"a": "1"} and row.snapshot is None

    added = parse_result(event("pack/Global/q", "added", {"a": "1"}, counter=3))
    assert added.is_differential and added.added == [{"a": "1"}] and added.counter == 3
    removed = parse_result(event("pack/Global/q", "removed", {"a": "0"}))
    assert removed.removed == [{"a": "0"}] and removed.added == []

    batch = parse_result(
        result_line("pack/Global/q", diffResults={"removed": [{"a": "0"}], "added": [{"a": "1"}, {"a": "2"}]})
    )
    assert batch.is_differential and batch.added == [{"a": "1"}, {"a": "2"}] and batch.removed == [{"a": "0"}]

    # First run of a batch-format query with no rows: an empty diffResults with counter 0.
    empty = parse_result(result_line("pack/Global/q", diffResults={"removed": [], "added": []}))
    assert empty.is_differential and empty.added == empty.removed == [] and empty.counter == 0

    decorated = parse_result(snapshot("q", [], decorations={"host_uuid": "u-1", "hostname": "h"}))
    assert decorated.decorations == {"host_uuid": "u-1", "hostname": "h"}
    assert parse_result({"name": "", "snapshot": []}) is None and parse_result({"columns": {}}) is None
    # Strings where numbers are expected, junk where rows are expected: tolerated, never raised.
    odd = parse_result({"name": "q", "unixTime": "17", "counter": True, "snapshot": [1, {"a": "1"}, "x"]})
    assert odd.unix_time == 17 and odd.counter is None and odd.snapshot == [{"a": "1"}]


def test_numeric_values_become_osquerys_strings():
    row = {"pid": 42, "load": 0.5, "size": 1024.0, "name": "launchd", "missing": None, "flag": True}
    assert as_strings(row) == {
        "pid": "42", "load": "0.5", "size": "1024", "name": "launchd", "missing": "", "flag": "1",
    }  # fmt: skip


def test_snapshot_line_becomes_the_report_and_is_forwarded(agent, uptime, settings):
    line = snapshot("pack/Global/uptime", [{"days": "1", "total_seconds": "90000"}])
    post(agent, [line])
    assert report_rows(uptime) == [{"days": "1", "total_seconds": "90000"}]
    assert read_lines(settings.OSQUERY["RESULT_LOG_FILE"]) == [line]  # forwarded exactly as received


def test_numerics_true_and_false_give_the_same_report(client, global_secret, uptime):
    strings, numbers = Agent(client, "uuid-s"), Agent(client, "uuid-n")
    strings.enroll(global_secret)
    numbers.enroll(global_secret)
    post(strings, [snapshot("pack/Global/uptime", [{"days": "3", "load": "0.25"}])])
    post(numbers, [snapshot("pack/Global/uptime", [{"days": 3, "load": 0.25}], numerics=True)])
    assert report_rows(uptime, host_id(strings)) == report_rows(uptime, host_id(numbers))


def test_event_format_snapshot_rows_are_regrouped(agent, uptime):
    """``logger_snapshot_event_type``: one line per row of the run, all with action snapshot."""
    lines = [event("pack/Global/uptime", "snapshot", {"n": str(i)}) for i in range(5)]
    post(agent, lines)
    assert report_rows(uptime) == [{"n": str(i)} for i in range(5)]


def test_decorations_are_forwarded_but_not_report_columns(agent, uptime, settings):
    nested = snapshot("pack/Global/uptime", [{"days": "1"}], decorations={"host_uuid": "u-1"})
    top_level = {**snapshot("pack/Global/uptime", [{"days": "2"}], unix_time=T0 + 60), "host_uuid": "u-1"}
    post(agent, [nested, top_level])  # --decorations_top_level puts them beside the other fields
    assert report_rows(uptime) == [{"days": "2"}]
    assert read_lines(settings.OSQUERY["RESULT_LOG_FILE"]) == [nested, top_level]


def test_differential_lines_are_forwarded_not_reported(agent, settings):
    query = Query.objects.create(
        name="procs", query="SELECT pid FROM processes", interval=60, automations_enabled=True,
        logging=LoggingMode.DIFFERENTIAL,
    )  # fmt: skip
    lines = [
        event("pack/Global/procs", "removed", {"pid": "1"}, counter=4),
        event("pack/Global/procs", "added", {"pid": "2"}, counter=4),
        result_line("pack/Global/procs", counter=5, diffResults={"removed": [], "added": [{"pid": "3"}]}),
    ]
    post(agent, lines)
    assert read_lines(settings.OSQUERY["RESULT_LOG_FILE"]) == lines
    assert not QueryReport.objects.filter(query=query).exists()


def test_mixed_shapes_in_one_request(agent, uptime, settings):
    diff = Query.objects.create(name="users", query="SELECT 1", interval=60, automations_enabled=True)
    lines = [
        event("pack/Global/users", "added", {"uid": "501"}),
        snapshot("pack/Global/uptime", [{"days": "4"}]),
        result_line("pack/Global/users", counter=1, diffResults={"removed": [{"uid": "501"}], "added": []}),
        event("pack/Global/uptime", "snapshot", {"days": "9"}, unix_time=T0 - 60),  # an older run
    ]
    post(agent, lines)
    assert read_lines(settings.OSQUERY["RESULT_LOG_FILE"]) == lines
    assert report_rows(uptime) == [{"days": "4"}]  # the batch's latest run wins
    assert not QueryReport.objects.filter(query=diff).exists()


def test_gzip_batch_of_many_lines(agent, uptime, settings):
    lines = [snapshot("pack/Global/uptime", [{"i": str(i)}], unix_time=T0 + i) for i in range(300)]
    response = agent.authed("log", {"log_type": "result", "data": lines}, gzip_body=True)
    assert response.json() == {}
    assert len(read_lines(settings.OSQUERY["RESULT_LOG_FILE"])) == 300
    assert report_rows(uptime) == [{"i": "299"}]


# --- names -> queries and packs ----------------------------------------------------------------


def test_global_team_and_pack_names_map_to_their_queries(client, team, team_secret, settings):
    agent = Agent(client, "uuid-team")
    agent.enroll(team_secret)
    global_q = Query.objects.create(name="os", query="SELECT * FROM os_version", interval=60)
    team_q = Query.objects.create(name="os", team=team, query="SELECT name FROM os_version", interval=60)
    packed = Query.objects.create(name="disk", query="SELECT * FROM disk_encryption")
    pack = Pack.objects.create(name="Security baseline")
    ScheduledQuery.objects.create(pack=pack, query=packed, name="disk encryption", interval=30, snapshot=True)

    post(agent, [
        snapshot("pack/Global/os", [{"name": "global"}]),
        snapshot(f"pack/team-{team.pk}/os", [{"name": "team"}]),
        snapshot("pack/Security baseline/disk encryption", [{"encrypted": "1"}]),
    ])  # fmt: skip
    assert report_rows(global_q) == [{"name": "global"}]
    assert report_rows(team_q) == [{"name": "team"}]
    assert report_rows(packed) == [{"encrypted": "1"}]  # packs are first-class here (Fleet drops these)


def test_a_custom_pack_delimiter_from_agent_options(agent, uptime):
    fleet = FleetSettings.load()
    fleet.agent_options["config"]["options"]["pack_delimiter"] = "::"
    fleet.save()
    post(agent, [snapshot("pack::Global::uptime", [{"days": "5"}])])
    assert report_rows(uptime) == [{"days": "5"}]


def test_renamed_query_is_found_under_its_new_name(agent, uptime):
    post(agent, [snapshot("pack/Global/uptime", [{"days": "1"}])])
    uptime.name = "uptime-v2"
    uptime.save()
    post(agent, [snapshot("pack/Global/uptime-v2", [{"days": "2"}], unix_time=T0 + 60)])
    assert report_rows(uptime) == [{"days": "2"}]


def test_unknown_names_are_forwarded_not_dropped(agent, settings):
    lines = [
        snapshot("pack/Global/deleted-query", [{"a": "1"}]),
        snapshot("pack/team-999/x", [{"a": "2"}]),
        snapshot("my_own_schedule_entry", [{"a": "3"}]),
        {"name": 5, "snapshot": []},
        {"no": "name"},
    ]
    post(agent, lines)
    assert read_lines(settings.OSQUERY["RESULT_LOG_FILE"]) == lines
    assert not QueryReport.objects.exists()


def test_queries_without_automations_are_reported_not_forwarded(agent, settings):
    """Fleet forwards a saved query's results only with automations on; packs always forward."""
    quiet = Query.objects.create(name="quiet", query="SELECT 1", interval=60, automations_enabled=False)
    pack = Pack.objects.create(name="p")
    ScheduledQuery.objects.create(pack=pack, query=quiet, name="quiet", interval=60, snapshot=True)
    from_global = snapshot("pack/Global/quiet", [{"1": "1"}])
    from_pack = snapshot("pack/p/quiet", [{"1": "1"}], unix_time=T0 + 1)
    post(agent, [from_global, from_pack])
    assert read_lines(settings.OSQUERY["RESULT_LOG_FILE"]) == [from_pack]
    assert report_rows(quiet) == [{"1": "1"}]


def test_team_query_result_from_a_host_that_left_the_team_is_not_reported(client, team, team_secret):
    agent = Agent(client, "uuid-mover")
    agent.enroll(team_secret)
    query = Query.objects.create(name="t", team=team, query="SELECT 1", interval=60, automations_enabled=True)
    other = Team.objects.create(name="Other")
    transfer_hosts([host_id(agent)], other)
    post(agent, [snapshot(f"pack/team-{team.pk}/t", [{"1": "1"}])])
    assert not QueryReport.objects.filter(query=query).exists()


# --- status logs ---------------------------------------------------------------------------------


def test_status_logs_go_to_the_status_destination_only(agent, settings):
    status = {
        "hostIdentifier": "uuid-0001", "calendarTime": "Sun Nov  2 05:41:27 2026 UTC", "unixTime": T0,
        "severity": 2, "filename": "scheduler.cpp", "line": 128,
        "message": "Error executing scheduled query pack/Global/x: no such table: nope", "version": "5.12.1",
        "decorations": {"host_uuid": "uuid-0001"},
    }  # fmt: skip
    post(agent, [status], log_type="status")
    assert read_lines(settings.OSQUERY["STATUS_LOG_FILE"]) == [status]
    assert read_lines(settings.OSQUERY["RESULT_LOG_FILE"]) == []
    assert not QueryReport.objects.exists()


# --- cost ----------------------------------------------------------------------------------------


def test_database_work_per_request_does_not_grow_with_lines(agent, settings):
    """Constant queries per request: names come from an in-process map, reports in bulk."""
    queries = [
        Query.objects.create(name=f"q{i}", query="SELECT 1", interval=60, automations_enabled=True)
        for i in range(5)
    ]
    post(agent, [snapshot("pack/Global/q0", [{"warm": "up"}])])  # the name map is built once

    captured_sql = []

    def count(lines: list[dict]) -> int:
        reports.forget_totals()  # totals are cached for a second; count the uncached case
        with CaptureQueriesContext(connection) as captured:
            post(agent, lines)
        captured_sql[:] = captured.captured_queries
        return len(captured)

    one = count([snapshot("pack/Global/q1", [{"a": "1"}], unix_time=T0 + 10)])
    many = count(
        [
            snapshot(f"pack/Global/{q.name}", [{"a": str(i)}] * 20, unix_time=T0 + 20 + i)
            for i, q in enumerate(queries)
            for _ in range(40)
        ]
        + [event("pack/Global/q2", "added", {"a": str(i)}) for i in range(300)]
        + [snapshot("pack/Global/unknown", [{"a": "1"}])] * 50
    )
    # Read the host's reports, total the queries' rows, upsert: 3, whether 1 line or 1,650.
    assert many == one == 3, (one, many, [q["sql"][:90] for q in captured_sql])
    differential_only = count([event("pack/Global/q3", "added", {"a": str(i)}) for i in range(100)])
    assert differential_only == 0  # nothing to store: no database work at all (node key cached)
