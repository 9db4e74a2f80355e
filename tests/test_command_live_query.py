"""``manage.py live_query``: bad input starts nothing; answers stream out while the command waits.

The command polls the database while agents answer, so the streaming tests run a real server
(``live_server``) and play the agents from another thread over HTTP, as in production.
"""

from __future__ import annotations

import csv
import io
import json
import time
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from campaigns.models import Campaign
from hosts.models import EnrollSecret
from tests.agent import Agent
from tests.factories import user_with_role
from tests.test_rest_campaigns import (
    AgentPlayer,
    Answer,
    OneDatabaseUserAtATime,
    enroll_over_http,
    enrolled,
    make_offline,
)


class TimedOutput(io.StringIO):
    """stdout that remembers when each piece was written, to prove rows stream as they arrive."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[float, str]] = []

    def write(self, text: str) -> int:
        self.writes.append((time.monotonic(), text))
        return super().write(text)


def live_query(*args: str, **options: Any) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("live_query", *args, stdout=options.pop("stdout", out), stderr=err, **options)
    except CommandError as error:
        error.stderr = err.getvalue()  # type: ignore[attr-defined]
        raise
    return out.getvalue(), err.getvalue()


@pytest.fixture
def one_db_user_at_a_time(monkeypatch: pytest.MonkeyPatch) -> OneDatabaseUserAtATime:
    return OneDatabaseUserAtATime(monkeypatch)


@pytest.fixture
def admin(db):
    return get_user_model().objects.create_superuser("admin", "admin@example.com", "pw")


# --- bad input ------------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "options", "message"),
    [
        (["SELEC 1"], {"all": True}, "syntax error"),
        ([""], {"all": True}, "SQL is empty"),
        (["SELECT 1"], {}, "no targets"),
        (["SELECT 1"], {"hosts": ["alpha,ghost"]}, "unknown host(s): ghost"),
        (["SELECT 1"], {"teams": ["Nope"]}, "unknown team(s): Nope"),
        (["SELECT 1"], {"labels": ["No Such Label"]}, "unknown label"),
        (["SELECT 1"], {"all": True, "user": "nobody"}, "no active user named 'nobody'"),
        (["SELECT 1"], {"all": True, "timeout": -1}, "--timeout"),
    ],
)
def test_bad_input_is_an_error_and_starts_nothing(client, global_secret, admin, args, options, message):
    enrolled(client, global_secret, ["alpha"])
    with pytest.raises(CommandError) as error:
        live_query(*args, **options)
    assert message in str(error.value)
    assert not Campaign.objects.exists()


@pytest.mark.django_db
def test_needs_a_superuser_or_a_user_who_may_run_queries(client, global_secret):
    enrolled(client, global_secret, ["alpha"])
    with pytest.raises(CommandError, match="no superuser"):
        live_query("SELECT 1", all=True)
    user_with_role("watcher", "observer")
    with pytest.raises(CommandError, match="may not run live queries"):
        live_query("SELECT 1", all=True, user="watcher")
    assert not Campaign.objects.exists()


@pytest.mark.django_db
def test_team_maintainer_runs_within_their_team(client, team, team_secret, global_secret):
    enrolled(client, team_secret, ["team-host"])
    enrolled(client, global_secret, ["global-host"])
    user_with_role("tm", "maintainer", team)
    with pytest.raises(CommandError, match="unknown host"):
        live_query("SELECT 1", hosts=["global-host"], user="tm", timeout=0)
    live_query("SELECT 1", all=True, user="tm", timeout=0)
    campaign = Campaign.objects.get()
    assert campaign.created_by.username == "tm" and campaign.targeted_count == 1


# --- waiting ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_timeout_leaves_the_campaign_running_and_says_so(client, global_secret, admin):
    enrolled(client, global_secret, ["silent", "other"])
    began = time.monotonic()
    out, err = live_query("SELECT 1", "--hosts", "silent", "other", timeout=0.5)
    assert 0.5 <= time.monotonic() - began < 3
    campaign = Campaign.objects.get()
    assert out == "" and campaign.is_active and campaign.targeted_count == 2
    assert f"campaign {campaign.id}: 2 host(s) targeted, 2 online, 0 offline" in err
    assert "answered 0/expected 2" in err
    assert f"timed out after 0.5 s with 0/2 answered; campaign {campaign.id} keeps running" in err


@pytest.mark.django_db
def test_only_offline_targets_finish_at_once(client, global_secret, admin):
    (away,) = enrolled(client, global_secret, ["away"])
    make_offline(away)
    began = time.monotonic()
    _, err = live_query("SELECT 1", all=True, timeout=10)
    assert time.monotonic() - began < 2
    assert "answered 0/expected 0" in err and "1 offline" in err and "timed out" not in err


def _setup_live(live_server, names: list[str]) -> list[Agent]:
    EnrollSecret.objects.create(secret="live-secret")
    get_user_model().objects.create_superuser("admin", "admin@example.com", "pw")
    return enroll_over_http(live_server.url, "live-secret", names)


def _run_with_player(
    db: OneDatabaseUserAtATime, agents: list[Agent], answer: Any, *args: str, **options: Any
) -> tuple[str, str, AgentPlayer]:
    player = AgentPlayer(agents, answer)
    player.start()
    try:
        with db.hold():
            out, err = live_query(*args, **options)
    finally:
        player.stop()
    return out, err, player


@pytest.mark.django_db(transaction=True)
def test_rows_stream_as_they_arrive_in_a_table(live_server, one_db_user_at_a_time):
    agents = _setup_live(live_server, ["alpha", "bravo"])
    answered_at: dict[str, float] = {}

    def answer(agent: Agent, sql: str) -> Answer:
        name = agent.details["system_info"]["hostname"]
        time.sleep(0.1 if name == "alpha" else 1.5)  # bravo answers well after alpha's rows are out
        answered_at[name] = time.monotonic()
        return [{"name": "macOS", "version": "14.5"}], 0, ""

    stdout = TimedOutput()
    _, err, _ = _run_with_player(
        one_db_user_at_a_time, agents, answer, "SELECT name, version FROM os_version", all=True, stdout=stdout
    )
    lines = stdout.getvalue().splitlines()
    assert lines[0].split() == ["HOST", "NAME", "VERSION"] and set(lines[1]) == {"-", " "}
    assert sorted(line.split() for line in lines[2:]) == [
        ["alpha", "macOS", "14.5"],
        ["bravo", "macOS", "14.5"],
    ]
    alpha_written = next(t for t, text in stdout.writes if text.startswith("alpha"))
    assert alpha_written < answered_at["bravo"]
    assert "answered 1/expected 2" in err and "answered 2/expected 2" in err
    assert "2 with rows, 0 without, 0 failed, 0 pending, 0 offline" in err and "timed out" not in err
    assert Campaign.objects.get().status == "finished"


@pytest.mark.django_db(transaction=True)
def test_json_lines_and_a_failed_host_make_the_exit_status_non_zero(live_server, one_db_user_at_a_time):
    agents = _setup_live(live_server, ["alpha", "bravo", "charlie"])

    def answer(agent: Agent, sql: str) -> Answer:
        name = agent.details["system_info"]["hostname"]
        if name == "charlie":
            return "", 1, "no such table: os_versio"
        if name == "bravo":
            return [], 0, ""
        return [{"name": "macOS", "hostname": "alpha.local"}, {"name": "macOS", "hostname": "x"}], 0, ""

    out = io.StringIO()
    player = AgentPlayer(agents, answer)
    player.start()
    try:
        with one_db_user_at_a_time.hold(), pytest.raises(CommandError, match=r"1 host\(s\) failed") as error:
            live_query("SELECT * FROM os_versio", all=True, format="json", stdout=out)
    finally:
        player.stop()
    assert error.value.returncode == 1
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    host_ids = {line["hostname"]: line["host_id"] for line in lines}
    assert sorted(lines, key=lambda line: json.dumps(line)) == sorted(
        [
            {
                "host_id": host_ids["alpha"],
                "hostname": "alpha",
                "row": {"name": "macOS", "hostname": "alpha.local"},
            },
            {"host_id": host_ids["alpha"], "hostname": "alpha", "row": {"name": "macOS", "hostname": "x"}},
            {"host_id": host_ids["charlie"], "hostname": "charlie", "error": "no such table: os_versio"},
        ],
        key=lambda line: json.dumps(line),
    )
    stderr = error.value.stderr  # type: ignore[attr-defined]
    assert "charlie failed: no such table: os_versio" in stderr
    assert "1 with rows, 1 without, 1 failed, 0 pending, 0 offline" in stderr


@pytest.mark.django_db(transaction=True)
def test_csv_writes_the_header_once(live_server, one_db_user_at_a_time):
    agents = _setup_live(live_server, ["alpha", "bravo", "charlie"])

    def answer(agent: Agent, sql: str) -> Answer:
        name = agent.details["system_info"]["hostname"]
        time.sleep({"alpha": 0.0, "bravo": 0.5, "charlie": 1.0}[name])
        row = {"name": "macOS", "version": name}
        if name == "charlie":
            row["extra"] = "dropped"
        return [row], 0, ""

    out, err, _ = _run_with_player(
        one_db_user_at_a_time, agents, answer, "SELECT * FROM os_version", all=True, format="csv", timeout=20
    )
    lines = list(csv.reader(io.StringIO(out)))
    assert lines[0] == ["host_id", "hostname", "name", "version"]
    assert sorted(line[1:] for line in lines[1:]) == [
        ["alpha", "macOS", "alpha"],
        ["bravo", "macOS", "bravo"],
        ["charlie", "macOS", "charlie"],
    ]
    assert "column(s) extra from charlie are not in the CSV header" in err


# --- another process ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_servers_in_memory_store_follows_campaigns_another_process_starts_and_stops(
    client, global_secret, admin, settings
):
    """On the embedded default each process has its own store: the command's campaign must still
    reach the agents served by ``make run``'s process, and stopping it elsewhere must too."""
    from campaigns import services
    from campaigns.store import MemoryStore
    from tests.test_rest_campaigns import host_id

    settings.LIVE_QUERY = {**settings.LIVE_QUERY, "ACTIVE_CACHE_SECONDS": 0.0}
    (agent,) = enrolled(client, global_secret, ["alpha"])
    server = MemoryStore()  # the server process's store; get_store() plays the command's process
    assert server.queries_for_host(host_id(agent)) == {}
    campaign = services.create_campaign(admin, "SELECT 1", {"all": True})
    assert server.queries_for_host(host_id(agent)) == {campaign.id: "SELECT 1"}
    assert server.complete_host(campaign.id, host_id(agent)) is not None
    assert server.queries_for_host(host_id(agent)) == {}

    other = services.create_campaign(admin, "SELECT 2", {"all": True})
    assert other.id in server.queries_for_host(host_id(agent))
    services.stop_campaign(other)
    assert server.queries_for_host(host_id(agent)) == {}
