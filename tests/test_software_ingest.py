"""Software inventory, agent side: the detail queries sent, ingesting answers incrementally and
cheaply, bounds on hostile answers, the background recount and the simulator's lists."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agentapi.simulator.detail import answer
from agentapi.simulator.identity import make_identity, parse_templates
from agentapi.simulator.tables import HostTables
from hosts.models import Host, Team
from software import counts, ingest, tasks
from software.models import (
    HostSoftware,
    HostSoftwareState,
    SoftwareTitle,
    SoftwareTitleCount,
    SoftwareVersion,
    SoftwareVersionCount,
)
from software.queries import SOFTWARE_QUERIES
from tests.agent import Agent

pytestmark = pytest.mark.django_db

MACOS_QUERY = "fleet_detail_query_software_macos"


def item(name: str, version: str = "1.0", source: str = "apps", **extra: str) -> dict[str, str]:
    """One row of a software detail answer, as osquery sends it (all strings)."""
    row = {
        "name": name,
        "version": version,
        "source": source,
        "bundle_identifier": f"com.example.{name.lower().replace(' ', '')}" if source == "apps" else "",
        "extension_id": "",
        "extension_for": "",
        "installed_path": f"/Applications/{name}.app" if source == "apps" else "",
        "last_opened_at": "",
    }
    row.update(extra)
    return row


BASE = [
    item("Safari", "18.1"),
    item("Google Chrome", "131.0.6778.86", last_opened_at="1764000000.25"),
    item("Slack", "4.41.105"),
    item("uBlock Origin", "1.61.2", "chrome_extensions", extension_id="cjpalhdl", extension_for="chrome"),
    item("requests", "2.32.3", "python_packages", installed_path="/usr/lib/python3/dist-packages"),
]


def write(agent: Agent, rows: list, name: str = MACOS_QUERY, status: int = 0):
    return agent.authed("distributed/write", {"queries": {name: rows}, "statuses": {name: status}})


def host_id(agent: Agent) -> int:
    return Host.objects.get(osquery_host_id=agent.identifier).pk


def stored(host: int) -> set[tuple[str, str, str]]:
    return set(
        HostSoftware.objects.filter(host_id=host).values_list(
            "version__title__name", "version__version", "version__title__source"
        )
    )


def software_queries(captured: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in captured.captured_queries if "software_" in q["sql"]]


# --- the detail queries ---------------------------------------------------------------------------


def test_software_query_is_sent_with_details_for_the_hosts_platform(agent):
    body = agent.authed("distributed/read").json()
    assert MACOS_QUERY in body["queries"] and body["discovery"][MACOS_QUERY] == "SELECT 1"
    assert "FROM apps" in body["queries"][MACOS_QUERY]
    assert not {"fleet_detail_query_software_windows", "fleet_detail_query_software_linux"} & set(
        body["queries"]
    )


def test_software_query_follows_the_detail_interval(agent):
    queries = agent.authed("distributed/read").json()["queries"]
    rows = {name: [] for name in queries}
    rows[MACOS_QUERY] = BASE
    agent.authed("distributed/write", {"queries": rows, "statuses": {n: 0 for n in rows}})
    assert agent.authed("distributed/read").json()["queries"] == {}
    Host.objects.update(detail_updated_at=timezone.now() - timedelta(hours=1, minutes=7))
    cache.clear()
    assert MACOS_QUERY in agent.authed("distributed/read").json()["queries"]


@pytest.mark.parametrize("query", SOFTWARE_QUERIES, ids=lambda q: q.name)
def test_queries_run_on_sqlite_with_osquerys_columns(query):
    """Each query's SQL runs on SQLite (osquery's engine) over tables with osquery's columns."""
    db = sqlite3.connect(":memory:")
    tables = {
        "users": "uid",
        "apps": "name, display_name, bundle_name, bundle_executable, bundle_short_version, bundle_version, "
        "bundle_identifier, last_opened_time, path",
        "safari_extensions": "uid, name, version, path",
        "chrome_extensions": "uid, name, version, identifier, browser_type, path",
        "firefox_addons": "uid, name, version, identifier, path",
        "python_packages": "name, version, path",
        "npm_packages": "name, version, path",
        "programs": "name, version, install_location, publisher",
        "chocolatey_packages": "name, version, path",
        "ie_extensions": "name, version, registry_path, path",
        "deb_packages": "name, version, status",
        "rpm_packages": "name, version, release",
    }
    for table, columns in tables.items():
        db.execute(f"CREATE TABLE {table} ({columns})")
    db.execute("INSERT INTO users VALUES (501)")
    db.execute(
        "INSERT INTO apps VALUES ('Zoom.app', '', '', '', '', '6.3', 'us.zoom', -1, '/Applications/Zoom.app')"
    )
    db.execute("INSERT INTO chrome_extensions VALUES (501, 'uBlock', '1.61', 'cjpa', 'edge', '/x')")
    db.execute("INSERT INTO deb_packages VALUES ('curl', '7.81', 'install ok installed')")
    db.execute("INSERT INTO deb_packages VALUES ('gone', '1.0', 'deinstall ok config-files')")
    db.execute("INSERT INTO rpm_packages VALUES ('openssl', '1.0.2k', '25.el7_9')")
    db.execute("INSERT INTO rpm_packages VALUES ('gpg-pubkey', 'fd431d51', '4ae0493b')")
    cursor = db.execute(query.sql)
    columns = [d[0] for d in cursor.description]
    assert columns == [
        "name", "version", "source", "bundle_identifier", "extension_id", "extension_for",
        "installed_path", "last_opened_at",
    ]  # fmt: skip
    rows = {(r[0], r[1], r[2]) for r in cursor.fetchall()}
    expected = {
        "software_macos": {("Zoom", "6.3", "apps"), ("uBlock", "1.61", "chrome_extensions")},
        "software_windows": {("uBlock", "1.61", "chrome_extensions")},
        "software_linux": {
            ("curl", "7.81", "deb_packages"),
            ("openssl", "1.0.2k-25.el7_9", "rpm_packages"),
            ("uBlock", "1.61", "chrome_extensions"),
        },
        "software_chrome": {("uBlock", "1.61", "chrome_extensions")},
    }
    assert rows == expected[query.name]


# --- ingest ---------------------------------------------------------------------------------------


def test_answer_creates_titles_versions_and_links(agent):
    response = write(agent, BASE)
    assert response.status_code == 200 and response.json() == {}
    host = host_id(agent)
    assert stored(host) == {(r["name"], r["version"], r["source"]) for r in BASE}
    chrome = HostSoftware.objects.get(host_id=host, version__title__name="Google Chrome")
    assert chrome.installed_path == "/Applications/Google Chrome.app"
    assert chrome.last_opened_at.timestamp() == 1764000000
    ublock = SoftwareTitle.objects.get(name="uBlock Origin")
    assert (ublock.bundle_identifier, ublock.extension_for) == ("cjpalhdl", "chrome")
    state = HostSoftwareState.objects.get(host_id=host)
    assert state.item_count == len(BASE) and not state.truncated
    assert Host.objects.get(pk=host).detail_updated_at > timezone.now() - timedelta(minutes=1)


def test_unchanged_answer_costs_one_query_and_writes_nothing(agent):
    write(agent, BASE)
    with CaptureQueriesContext(connection) as captured:
        assert write(agent, list(reversed(BASE))).status_code == 200  # order does not matter
    assert len(software_queries(captured)) == 1, software_queries(captured)
    assert software_queries(captured)[0].lstrip().upper().startswith("SELECT")


def test_unchanged_ingest_is_a_single_select(agent, django_assert_max_num_queries):
    write(agent, BASE)
    host = host_id(agent)
    with django_assert_max_num_queries(1):
        result = ingest.ingest_rows(host, BASE)
    assert not result.changed


def test_changed_answer_writes_only_the_difference(agent):
    write(agent, BASE)
    host = host_id(agent)
    kept = {
        r["name"]: pk
        for r in BASE
        for pk in [HostSoftware.objects.get(host_id=host, version__title__name=r["name"]).pk]
    }
    changed = [
        *[r for r in BASE if r["name"] not in ("Slack", "requests")],  # two removed
        item("Slack", "4.42.0"),  # upgraded: a new version
        item("Zoom", "6.3.0"),  # added
    ]
    with CaptureQueriesContext(connection) as captured:
        result = ingest.ingest_rows(host, changed)
    assert (result.added, result.removed, result.updated) == (2, 2, 0)
    assert stored(host) == {(r["name"], r["version"], r["source"]) for r in changed}
    # Links of unchanged items are the same rows, untouched.
    for name in ("Safari", "Google Chrome", "uBlock Origin"):
        assert HostSoftware.objects.get(host_id=host, version__title__name=name).pk == kept[name]
    writes = [
        q
        for q in software_queries(captured)
        if not q.lstrip().upper().startswith(("SELECT", "SAVEPOINT", "RELEASE"))
    ]
    assert len(writes) <= 6, writes  # titles, versions, links insert; links delete; state update
    assert SoftwareTitle.objects.filter(name="Slack").count() == 1
    assert set(SoftwareVersion.objects.filter(title__name="Slack").values_list("version", flat=True)) == {
        "4.41.105",
        "4.42.0",
    }


def test_last_opened_changes_within_the_hour_are_not_rewritten(agent):
    write(agent, BASE)
    host = host_id(agent)
    later = [dict(r, last_opened_at="1764001000") if r["name"] == "Google Chrome" else r for r in BASE]
    result = ingest.ingest_rows(host, later)  # the same hour bucket: same digest
    assert not result.changed
    much_later = [dict(r, last_opened_at="1764090000") if r["name"] == "Google Chrome" else r for r in BASE]
    result = ingest.ingest_rows(host, much_later)
    assert (result.added, result.removed, result.updated) == (0, 0, 1)
    chrome = HostSoftware.objects.get(host_id=host, version__title__name="Google Chrome")
    assert chrome.last_opened_at.timestamp() == 1764090000


def test_empty_answer_clears_the_list_and_failed_answer_keeps_it(agent):
    write(agent, BASE)
    host = host_id(agent)
    assert write(agent, BASE[:1], status=1).status_code == 200  # a failed query is skipped
    assert len(stored(host)) == len(BASE)
    write(agent, [])
    assert stored(host) == set() and HostSoftwareState.objects.get(host_id=host).item_count == 0


def test_duplicates_are_one_item_with_first_path_and_latest_opened(agent):
    rows = [
        item("pip", "24.3", "python_packages", installed_path="/a"),
        item("pip", "24.3", "python_packages", installed_path="/b"),
        item("Safari", "18.1", last_opened_at="100000"),
        item("Safari", "18.1", last_opened_at="200000"),
    ]
    write(agent, rows)
    links = HostSoftware.objects.filter(host_id=host_id(agent)).select_related("version__title")
    assert {(x.version.title.name, x.installed_path) for x in links} == {
        ("pip", "/a"),
        ("Safari", "/Applications/Safari.app"),
    }
    assert links.get(version__title__name="Safari").last_opened_at.timestamp() == 200000


def test_hosts_share_titles_and_versions(client, global_secret):
    agents = [Agent(client, f"uuid-{i}", hostname=f"mac-{i}.local", serial=f"S{i}") for i in range(3)]
    for a in agents:
        a.enroll(global_secret)
        write(a, BASE)
    assert SoftwareTitle.objects.count() == len(BASE) and SoftwareVersion.objects.count() == len(BASE)
    assert HostSoftware.objects.count() == 3 * len(BASE)


# --- hostile answers ------------------------------------------------------------------------------


def test_hundred_thousand_rows_are_bounded(agent):
    rows = [{"name": f"p{i}", "source": "apps"} for i in range(100_000)]  # 3.6 MB: under the size limit
    response = write(agent, rows)
    assert response.status_code == 200 and response.json() == {}
    state = HostSoftwareState.objects.get(host_id=host_id(agent))
    assert state.item_count == ingest.MAX_ITEMS and state.truncated
    assert HostSoftware.objects.count() == ingest.MAX_ITEMS


def test_huge_strings_nuls_and_odd_cells_are_cleaned(agent):
    rows = [
        item("N" * 100_000, "9" * 100_000, installed_path="/" + "p" * 100_000),
        item("Sa\x00fa\x00ri", "1\x002", last_opened_at="1e400"),
        {"name": 5, "version": None, "source": "apps"},  # numbers become their text, null empty
        {"name": {"nested": [1, {"a": 2}]}, "version": [1, 2], "source": "apps"},
        {"name": "x", "source": "not-a-source"},  # unknown source: dropped
        {"name": "", "source": "apps"},  # nameless: dropped
        {"name": "   ", "source": "apps"},
        "not a row",
        ["nor", "this"],
        {"name": "Future", "source": "apps", "last_opened_at": "99999999999"},
        {"name": "Negative", "source": "apps", "last_opened_at": "-1"},
        {"name": "NaN", "source": "apps", "last_opened_at": "nan"},
    ]
    response = write(agent, rows)
    assert response.status_code == 200 and response.json() == {}
    titles = dict(SoftwareTitle.objects.values_list("name", "source"))
    assert "N" * 255 in titles and "Safari" in titles and "5" in titles
    assert '{"nested":[1,{"a":2}]}' in titles
    assert not {"x", "", "   "} & set(titles)
    assert SoftwareVersion.objects.get(title__name="Safari").version == "12"
    assert SoftwareVersion.objects.get(title__name="N" * 255).version == "9" * 255
    link = HostSoftware.objects.get(version__title__name="N" * 255)
    assert len(link.installed_path) == 1024
    opened = dict(HostSoftware.objects.values_list("version__title__name", "last_opened_at"))
    assert opened["Safari"] is None and opened["Future"] is None and opened["Negative"] is None
    assert opened["NaN"] is None


def test_rows_that_are_not_a_list_are_no_software(agent):
    for rows in ("", None, {"name": "x"}, 7):
        response = agent.authed(
            "distributed/write", {"queries": {MACOS_QUERY: rows}, "statuses": {MACOS_QUERY: 0}}
        )
        assert response.status_code == 200
    assert HostSoftware.objects.count() == 0


def test_ingest_never_raises_on_odd_rows(agent):
    host = host_id(agent)
    for rows in (None, "x", 5, [None, 1, "s", [], {}], [{"name": "a", "source": "apps", "version": 3}]):
        ingest.ingest_rows(host, rows)  # direct callers may pass anything
    assert stored(host) == {("a", "", "apps")}


@pytest.mark.django_db(transaction=True)  # SQLite checks foreign keys at commit
def test_a_deleted_host_stores_nothing_and_does_not_fail():
    result = ingest.ingest_rows(999_999, BASE)
    assert not result.changed and HostSoftware.objects.count() == 0


# --- counts ---------------------------------------------------------------------------------------


def _host(name: str, team: Team | None, platform: str) -> Host:
    return Host.objects.create(osquery_host_id=name, hostname=name, team=team, platform=platform)


def test_recount_keeps_counts_per_team_and_platform(team):
    other = Team.objects.create(name="Sales")
    a, b, c = _host("a", team, "darwin"), _host("b", other, "darwin"), _host("c", None, "ubuntu")
    ingest.ingest_rows(a.pk, BASE)
    ingest.ingest_rows(b.pk, BASE[:2])
    ingest.ingest_rows(c.pk, [item("Google Chrome", "130.0"), item("Google Chrome", "131.0.6778.86")])
    counts.recount()
    chrome = SoftwareTitle.objects.get(name="Google Chrome")
    assert chrome.host_count == 3  # c has two versions: one host
    per_group = {
        (r.team_id, r.platform): r.host_count for r in SoftwareTitleCount.objects.filter(title=chrome)
    }
    assert per_group == {(team.pk, "darwin"): 1, (other.pk, "darwin"): 1, (None, "ubuntu"): 1}
    latest = SoftwareVersion.objects.get(title=chrome, version="131.0.6778.86")
    assert latest.host_count == 3
    assert SoftwareVersion.objects.get(title=chrome, version="130.0").host_count == 1

    b.delete()
    Host.objects.filter(pk=c.pk).update(team=team)
    result = counts.recount()
    chrome.refresh_from_db()
    assert chrome.host_count == 2 and result.groups_deleted >= 1
    per_group = {
        (r.team_id, r.platform): r.host_count for r in SoftwareTitleCount.objects.filter(title=chrome)
    }
    assert per_group == {(team.pk, "darwin"): 1, (team.pk, "ubuntu"): 1}
    assert SoftwareVersionCount.objects.filter(version=latest).count() == 2


def test_a_second_recount_writes_nothing(team):
    host = _host("a", team, "darwin")
    ingest.ingest_rows(host.pk, BASE)
    counts.recount()
    second = counts.recount()
    assert (second.groups_written, second.groups_deleted, second.totals_changed) == (0, 0, 0)


def test_orphans_are_cleaned_up_after_a_day(team):
    host = _host("a", team, "darwin")
    ingest.ingest_rows(host.pk, BASE)
    ingest.ingest_rows(host.pk, BASE[1:])  # Safari 18.1 is no longer on any host
    counts.recount()
    assert SoftwareVersion.objects.filter(title__name="Safari").exists()  # too recent to remove
    day_ago = timezone.now() - timedelta(days=2)
    SoftwareVersion.objects.update(created_at=day_ago)
    SoftwareTitle.objects.update(created_at=day_ago)
    result = counts.recount()
    assert (result.versions_deleted, result.titles_deleted) == (1, 1)
    assert not SoftwareTitle.objects.filter(name="Safari").exists()
    assert SoftwareTitle.objects.count() == len(BASE) - 1


def test_a_pass_is_due_after_a_change_or_when_old_and_never_too_often():
    cache.clear()
    assert counts.is_due(3600)
    started, seconds = time.time(), 0.5
    counts.recount()
    assert not counts.is_due(3600)
    host = _host("a", None, "darwin")
    ingest.ingest_rows(host.pk, BASE)
    assert counts.is_due(3600)
    cache.set(counts.COUNTED_KEY, (started, 60.0), None)  # a pass of a minute, just now
    assert not counts.is_due(3600)  # at most a tenth of the time counting
    assert counts.is_due(3600, now=started + 601)
    cache.set(counts.COUNTED_KEY, (started, seconds), None)
    cache.delete(counts.CHANGED_KEY)
    assert not counts.is_due(3600, now=started + 3599) and counts.is_due(3600, now=started + 3600)


def test_the_task_skips_when_nothing_is_due_and_holds_a_lock(team):
    host = _host("a", team, "darwin")
    ingest.ingest_rows(host.pk, BASE)
    assert tasks.recount_host_counts()["groups_written"] > 0
    assert tasks.recount_host_counts() == {}  # nothing changed since
    assert tasks.recount_host_counts(force=True)["groups_written"] == 0
    cache.add(tasks.LOCK_KEY, "another worker", 60)
    assert tasks.recount_host_counts(force=True) == {}


def test_the_recount_is_scheduled_with_the_other_beat_jobs(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["software-recount-host-counts"]
    assert entry["task"] == tasks.TASK_NAME and entry["schedule"] == settings.SOFTWARE_COUNTS_INTERVAL


# --- the simulator --------------------------------------------------------------------------------


@pytest.mark.parametrize("template", ["macos", "windows", "ubuntu", "centos"])
def test_simulated_hosts_answer_stable_realistic_lists(client, global_secret, template):
    identity = make_identity(7, 0, parse_templates(template))
    tables = HostTables(identity)
    family = {"macos": "macos", "windows": "windows"}.get(template, "linux")
    query = next(q for q in SOFTWARE_QUERIES if q.name == f"software_{family}")
    name = f"fleet_detail_query_{query.name}"
    first = answer(name, query.sql, tables)
    assert first.ok and 100 <= len(first.rows) <= 400
    assert answer(name, query.sql, HostTables(identity)).rows == first.rows  # stable
    other = answer(name, query.sql, HostTables(make_identity(7, 4, parse_templates(template)))).rows
    assert other != first.rows  # hosts differ a little
    platform = {"macos": "darwin", "windows": "windows"}.get(template, template)
    agent = Agent(client, identity.uuid, platform=platform)
    agent.enroll(global_secret)
    assert write(agent, json.loads(json.dumps(first.rows)), name).status_code == 200
    result = ingest.ingest_rows(host_id(agent), first.rows)
    assert not result.changed and result.items == len(stored(host_id(agent)))
