"""Anonymous usage statistics: the payload from real data and nothing identifying in it, the
command, sending to a real HTTP receiver once per frequency, the switches, and endpoints that
refuse or hang without slowing anything else (docs/usage-statistics.md)."""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from activities.choices import ActivityType
from activities.models import Activity
from campaigns.models import Campaign
from hosts.choices import Role
from hosts.models import NEVER, EnrollSecret, FleetSettings, Label, Team
from hostscripts.models import ScriptKind, ScriptRun
from packs.models import Pack
from queries.models import Query
from tests.agent import Agent
from tests.factories import make_host, user_with_role
from usage import sending, statistics, tasks
from usage.models import UsageStatistics

pytestmark = pytest.mark.django_db

SETTINGS_PAGE = "/admin/hosts/fleetsettings/"
PREVIEW = "/admin/hosts/fleetsettings/usage-statistics/"
TIMEOUT = 1.0  # the POST timeout of the tests of endpoints that refuse or hang (production: 10 s)
SHORT = {"TIMEOUT": TIMEOUT, "CONNECT_TIMEOUT": TIMEOUT / 2}


class Receiver:
    """A real HTTP server on 127.0.0.1 that keeps every POST and answers ``status``."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/usage"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def _no_background_sender():
    """The end of every request may start the embedded default's background sender once an hour
    (usage.tasks): here it counts as just started, so a test's console request does not send behind
    its back (that thread's own connection would write past the test's rollback). The test that
    wants it resets the clock."""
    tasks.reset_clock()
    tasks._clock.due("send", 0, time.monotonic())
    yield
    tasks.reset_clock()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


def configure(settings, url: str = "", **overrides) -> None:
    settings.USAGE_STATISTICS = {**settings.USAGE_STATISTICS, "URL": url, **overrides}


@pytest.fixture
def closed_port_url() -> str:
    """A port nothing listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1/usage"


@pytest.fixture
def hanging_url():
    """A port that accepts connections (the kernel's backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1/usage"
    sock.close()


def settings_form(**changes) -> dict:
    """The Fleet settings form as the browser posts it (the checkbox on unless changed)."""
    row = FleetSettings.load()
    form = {
        "org_name": row.org_name,
        "org_logo_url": row.org_logo_url,
        "org_logo_url_light_background": row.org_logo_url_light_background,
        "contact_url": row.contact_url,
        "transparency_url": row.transparency_url,
        "agent_options": json.dumps(row.agent_options),
        "send_usage_statistics": "on",
    }
    form.update(changes)
    return {k: v for k, v in form.items() if v is not None}


@pytest.fixture
def fleet(db):
    """A small fleet with everything the payload counts, and identifying values to look for."""
    now = timezone.now()
    fresh = {"detail_updated_at": now}
    engineering = Team.objects.create(name="Engineering-Team-X")
    sales = Team.objects.create(name="Sales-Team-Y")
    macs = [
        make_host(f"mbp-alice-{i}.corp.example", engineering, timedelta(minutes=1), platform="darwin",
                  os_version="macOS 14.5", osquery_version="5.12.1", orbit_version="1.30.0",
                  desktop_version="1.30.0", hardware_serial=f"C02SERIAL{i:03d}",
                  primary_ip=f"10.20.30.{i}", public_ip=f"203.0.113.{i}", **fresh)
        for i in range(3)
    ]  # fmt: skip
    old_mac = make_host("imac-bob.corp.example", None, timedelta(hours=1), platform="darwin",
                        os_version="macOS 13.6.1", osquery_version="5.11.0", hardware_serial="C02OLDSERIAL",
                        primary_ip="10.20.30.99", **fresh)  # fmt: skip
    ubuntu = [
        make_host(f"web-{i}.prod.example", sales, timedelta(minutes=2), platform="ubuntu",
                  os_version="Ubuntu 22.04.1 LTS", osquery_version="5.12.1", orbit_version="1.29.0",
                  hardware_serial=f"VMSERIAL{i}", **fresh)
        for i in range(2)
    ]  # fmt: skip
    # Checks in but never sends its details: Fleet's "not responding".
    stuck = make_host("win-carol.corp.example", None, timedelta(minutes=3), platform="windows",
                      os_version="Windows 11 Enterprise 21H2 10.0.22000.795", osquery_version="5.12.1",
                      hardware_serial="WINSERIAL7")  # fmt: skip
    assert stuck.detail_updated_at == NEVER
    make_host("new-host-no-details", None)  # enrolled, nothing reported yet, never seen

    admin = user_with_role("admin-dave", Role.ADMIN)
    admin.email, admin.last_login = "dave@secret-company.example", now - timedelta(days=1)
    admin.save()
    observer = user_with_role("observer-erin", Role.OBSERVER, engineering)
    observer.email, observer.last_login = "erin@secret-company.example", now - timedelta(days=30)
    observer.save()
    gone = user_with_role("former-frank", Role.OBSERVER)
    gone.is_active = False
    gone.save()

    Label.objects.create(name="Finance laptops of ACME", query="SELECT 1 FROM system_info")
    query = Query.objects.create(name="Secret-project query", query="SELECT * FROM secret_project_table")
    Query.objects.create(name="Uptime", query="SELECT * FROM uptime")
    pack = Pack.objects.create(name="Incident pack of ACME")
    pack.scheduled.create(query=query, name="secret-sched", interval=3600)

    Campaign.objects.create(sql="SELECT * FROM users WHERE username = 'dave'", created_by=admin)
    old_campaign = Campaign.objects.create(sql="SELECT 2", created_by=admin)
    Campaign.objects.filter(pk=old_campaign.pk).update(created_at=now - timedelta(days=10))
    ScriptRun.objects.create(host=ubuntu[0], contents="echo top-secret-script", timeout=300, exit_code=0)
    ScriptRun.objects.create(host=macs[0], kind=ScriptKind.LOCK, contents="lock", timeout=300)
    ScriptRun.objects.create(host=macs[1], contents="echo old", timeout=300,
                             created_at=now - timedelta(days=8))  # fmt: skip

    settings_row = FleetSettings.load()
    settings_row.org_name = "ACME Secret Corporation"
    settings_row.save()
    return {"hosts": [*macs, old_mac, *ubuntu, stuck], "users": [admin, observer, gone]}


# --- the payload ----------------------------------------------------------------------------------


def test_the_payload_counts_the_fleet(fleet, settings, tmp_path):
    settings.AGENT_UPDATES = {**settings.AGENT_UPDATES, "REPOSITORY_DIR": str(tmp_path), "BASE_URL": ""}
    payload = statistics.build()
    assert uuid.UUID(payload["anonymousIdentifier"]).version == 4
    assert payload["fleetVersion"] == "0.1.0"
    assert payload["numHostsEnrolled"] == 8
    assert payload["hostsEnrolledByOperatingSystem"] == {
        "darwin": [
            {"version": "macOS 14.5", "numEnrolled": 3},
            {"version": "macOS 13.6.1", "numEnrolled": 1},
        ],
        "ubuntu": [{"version": "Ubuntu 22.04.1 LTS", "numEnrolled": 2}],
        "windows": [{"version": "Windows 11 Enterprise 21H2 10.0.22000.795", "numEnrolled": 1}],
    }
    assert payload["hostsEnrolledByOsqueryVersion"] == [
        {"osqueryVersion": "5.12.1", "numHosts": 6},
        {"osqueryVersion": "5.11.0", "numHosts": 1},
    ]
    assert payload["hostsEnrolledByOrbitVersion"] == [
        {"orbitVersion": "1.30.0", "numHosts": 3},
        {"orbitVersion": "1.29.0", "numHosts": 2},
    ]
    assert payload["numHostsNotResponding"] == 1
    assert payload["numHostsFleetDesktopEnabled"] == 3
    assert (payload["numUsers"], payload["numWeeklyActiveUsers"]) == (2, 1)
    assert payload["numTeams"] == 2
    assert payload["numLabels"] == Label.objects.count() and payload["numLabels"] > 1  # built-ins too
    assert (payload["numQueries"], payload["numPacks"]) == (2, 1)
    assert payload["numLiveQueriesRun"] == 1  # within the last 7 days
    assert payload["numScriptsRun"] == 1  # saved or ad hoc scripts in 7 days; not lock/unlock/wipe
    assert (payload["numTaskAgents"], payload["numTasks"]) == (0, 0)
    assert payload["softwareInventoryEnabled"] is True
    assert payload["MDMEnabledAndConfigured"] is False
    assert payload["scriptsDisabled"] is False
    assert payload["resultLogDestinations"] == ["filesystem"]
    assert payload["auditLogEnabled"] is False
    assert payload["agentUpdatesConfigured"] is False


def test_nothing_identifying_is_in_the_payload(fleet):
    text = json.dumps(statistics.build())
    identifying = ["ACME", "secret", "corp.example", "prod.example", "alice", "bob", "carol", "dave",
                   "erin", "frank", "Engineering-Team", "Sales-Team", "uptime", "SELECT", "10.20.30",
                   "203.0.113", "SERIAL", "uuid-", "id-"]  # fmt: skip
    for host in fleet["hosts"]:
        identifying += [host.hostname, host.hardware_serial, host.uuid, host.osquery_host_id]
        identifying += [v for v in (host.primary_ip, host.public_ip) if v]
    for user in fleet["users"]:
        identifying += [user.username, user.email] if user.email else [user.username]
    found = [value for value in identifying if value.lower() in text.lower()]
    assert found == []


def test_the_identifier_is_made_once_and_kept(db):
    first = statistics.build()["anonymousIdentifier"]
    assert statistics.build()["anonymousIdentifier"] == first
    assert str(UsageStatistics.objects.get().anonymous_identifier) == first


def test_breakdowns_are_bounded(db, monkeypatch):
    monkeypatch.setattr(statistics, "MAX_GROUPS", 3)
    for i in range(6):
        make_host(f"h{i}", platform="ubuntu", os_version=f"Ubuntu {i}", osquery_version=f"5.{i}")
    make_host("h-extra", platform="ubuntu", os_version="Ubuntu 0", osquery_version="5.0")
    payload = statistics.build()
    assert sum(len(v) for v in payload["hostsEnrolledByOperatingSystem"].values()) == 3
    assert payload["hostsEnrolledByOperatingSystem"]["ubuntu"][0] == {"version": "Ubuntu 0", "numEnrolled": 2}
    assert len(payload["hostsEnrolledByOsqueryVersion"]) == 3
    assert payload["numHostsEnrolled"] == 7


def test_the_payload_costs_a_fixed_number_of_queries(fleet, django_assert_max_num_queries):
    statistics.build()  # the rows made on first use
    with django_assert_max_num_queries(25):
        statistics.build()
    for i in range(30):
        make_host(f"more-{i}", platform="centos", os_version=f"CentOS {i}", osquery_version="5.12.1")
    with django_assert_max_num_queries(25):
        statistics.build()


# --- the command ----------------------------------------------------------------------------------


def test_print_shows_exactly_the_payload_and_where_it_goes(fleet, settings):
    configure(settings, "https://stats:token@collector.example.net/v1/usage?key=abc")
    out, err = io.StringIO(), io.StringIO()
    call_command("usage_stats", "--print", stdout=out, stderr=err)
    assert json.loads(out.getvalue()) == statistics.build()
    assert out.getvalue().startswith("{\n  ")  # pretty-printed
    assert "on: sent every 24 hours to https://collector.example.net/v1/usage" in err.getvalue()
    assert "token" not in err.getvalue() and "key=abc" not in err.getvalue()


def test_without_an_endpoint_the_command_says_nothing_is_sent(db, settings):
    configure(settings, "")
    out = io.StringIO()
    call_command("usage_stats", stdout=out)
    assert "no endpoint is configured (FLEET_USAGE_STATISTICS_URL): nothing is sent" in out.getvalue()
    assert "Last sent: never" in out.getvalue()
    with pytest.raises(CommandError, match="no endpoint"):
        call_command("usage_stats", "--send")
    assert sending.send().result == "no_url"


def test_send_command_sends_now(fleet, settings, receiver):
    configure(settings, receiver.url)
    assert sending.send().sent
    out = io.StringIO()
    call_command("usage_stats", "--send", stdout=out)  # again at once: the operator asked
    assert len(receiver.requests) == 2 and "Sent to http://127.0.0.1" in out.getvalue()


# --- sending --------------------------------------------------------------------------------------


def test_the_task_posts_exactly_the_payload(fleet, settings, receiver, eager_celery):
    configure(settings, receiver.url)
    tasks.send_statistics.delay()
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request["path"] == "/v1/usage"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["User-Agent"] == "fleet-django/0.1.0"
    assert json.loads(request["body"]) == statistics.build()
    row = UsageStatistics.objects.get()
    assert row.last_sent_at is not None and row.last_error == ""


def test_twice_within_the_frequency_sends_once(db, settings, receiver):
    configure(settings, receiver.url)
    now = timezone.now()
    assert sending.send(now=now).result == "sent"
    assert sending.send(now=now + timedelta(hours=23)).result == "not_due"
    assert len(receiver.requests) == 1
    assert sending.send(now=now + timedelta(hours=24, minutes=1)).result == "sent"
    assert len(receiver.requests) == 2


@pytest.mark.django_db(transaction=True)
def test_many_senders_at_once_send_once(settings, receiver):
    """Several beat runs, workers or processes asking at the same moment: one POST."""
    configure(settings, receiver.url)
    UsageStatistics.load()
    results: list[str] = []
    barrier = threading.Barrier(6)

    def one() -> None:
        from django.db import connection

        barrier.wait()
        try:
            results.append(sending.send().result)
        finally:
            connection.close()

    threads = [threading.Thread(target=one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == ["not_due"] * 5 + ["sent"]
    assert len(receiver.requests) == 1


def test_an_error_status_is_recorded_and_retried_an_hour_later(db, settings, receiver, caplog):
    configure(settings, receiver.url)
    receiver.status = 503
    now = timezone.now()
    with caplog.at_level(logging.WARNING, logger="usage"):
        outcome = sending.send(now=now)
    assert (outcome.result, outcome.error) == ("failed", "HTTP 503")
    assert [r.getMessage() for r in caplog.records] == [
        f"usage statistics: not sent to {receiver.url}: HTTP 503"
    ]
    row = UsageStatistics.objects.get()
    assert (row.last_error, row.last_sent_at) == ("HTTP 503", None)
    assert sending.send(now=now + timedelta(minutes=10)).result == "not_due"
    receiver.status = 200
    assert sending.send(now=now + timedelta(hours=1)).result == "sent"
    row.refresh_from_db()
    assert row.last_error == "" and row.last_sent_at is not None


# --- the switches -----------------------------------------------------------------------------------


def test_off_in_the_environment_sends_nothing(db, settings, receiver, eager_celery):
    configure(settings, receiver.url, ENABLED=False)
    assert tasks.send_statistics.delay().get() == {"result": "disabled", "error": ""}
    assert sending.send(force=True).result == "disabled"
    with pytest.raises(CommandError, match="FLEET_USAGE_STATISTICS_ENABLED=false"):
        call_command("usage_stats", "--send")
    assert tasks.send_in_background_if_due() is None
    assert receiver.requests == []


def test_off_in_the_console_sends_nothing_and_is_audited(admin_client, settings, receiver):
    configure(settings, receiver.url)
    page = admin_client.get(f"{SETTINGS_PAGE}{FleetSettings.load().pk}/change/").content.decode()
    assert "Send anonymous usage statistics" in page and 'name="send_usage_statistics"' in page
    assert "on: sent every 24 hours to http://127.0.0.1" in page
    response = admin_client.post(
        f"{SETTINGS_PAGE}{FleetSettings.load().pk}/change/", settings_form(send_usage_statistics=None)
    )
    assert response.status_code == 302
    assert UsageStatistics.objects.get().enabled is False
    assert sending.send().result == "disabled"
    assert receiver.requests == []
    activity = Activity.objects.get(type=ActivityType.EDITED_AGENT_OPTIONS)
    assert activity.details["changes"] == {"enable_analytics": {"before": True, "after": False}}
    assert activity.actor_name == "admin"
    page = admin_client.get(f"{SETTINGS_PAGE}{FleetSettings.load().pk}/change/").content.decode()
    assert "off: turned off in the console" in page
    admin_client.post(f"{SETTINGS_PAGE}{FleetSettings.load().pk}/change/", settings_form())
    assert UsageStatistics.objects.get().enabled is True
    assert sending.send().sent


def test_the_environment_wins_over_the_console(admin_client, settings, receiver):
    configure(settings, receiver.url, ENABLED=False)
    url = f"{SETTINGS_PAGE}{FleetSettings.load().pk}/change/"
    page = admin_client.get(url).content.decode()
    assert "FLEET_USAGE_STATISTICS_ENABLED=false is set" in page
    assert "off: FLEET_USAGE_STATISTICS_ENABLED=false" in page
    admin_client.post(url, settings_form(send_usage_statistics=None))  # a disabled checkbox: ignored
    assert UsageStatistics.objects.get().enabled is True
    assert sending.send().result == "disabled" and receiver.requests == []


# --- endpoints that refuse or hang ----------------------------------------------------------------


def test_an_unreachable_endpoint_fails_fast_and_is_recorded(
    fleet, settings, closed_port_url, caplog, eager_celery
):
    configure(settings, closed_port_url, **SHORT)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="usage"):
        result = tasks.send_statistics.delay().get()
    assert time.monotonic() - started < TIMEOUT + 3  # refused at once; slack for a loaded machine
    assert result["result"] == "failed" and "ConnectError" in result["error"]
    assert len([r for r in caplog.records if r.name.startswith("usage")]) == 1
    row = UsageStatistics.objects.get()
    assert "ConnectError" in row.last_error and row.last_error_at is not None and row.last_sent_at is None


def test_a_hanging_endpoint_costs_at_most_the_timeout(fleet, settings, hanging_url, eager_celery):
    configure(settings, hanging_url, **SHORT)
    started = time.monotonic()
    result = tasks.send_statistics.delay().get()
    elapsed = time.monotonic() - started
    assert TIMEOUT * 0.9 <= elapsed < TIMEOUT + 3  # slack for a loaded machine
    assert result["result"] == "failed"
    assert result["error"].startswith(("ReadTimeout", "no answer within")), result["error"]
    assert UsageStatistics.objects.get().last_error == result["error"]


@pytest.mark.django_db(transaction=True)
def test_check_ins_are_unaffected_while_the_endpoint_hangs(client, settings, hanging_url, eager_celery):
    """The embedded default sends from a daemon thread a request's end starts; agents' check-ins
    meanwhile answer as fast as ever."""
    EnrollSecret.objects.create(secret="usage-secret-1")
    agent = Agent(client)
    tasks.reset_clock()
    assert "node_key" in agent.enroll("usage-secret-1")  # no endpoint yet: no sender started
    assert not [t for t in threading.enumerate() if t.name == "usage-statistics"]
    configure(settings, hanging_url, TIMEOUT=4.0, CONNECT_TIMEOUT=1.0)

    first = agent.authed("distributed/read")  # its end starts the sender
    assert first.status_code == 200
    senders = [t for t in threading.enumerate() if t.name == "usage-statistics"]
    assert len(senders) == 1
    for _ in range(5):
        started = time.monotonic()
        response = agent.authed("distributed/read")
        assert response.status_code == 200 and "queries" in response.json()
        assert time.monotonic() - started < 1.0
    assert senders[0].is_alive()  # still waiting for the endpoint: no check-in waited for it
    assert [t for t in threading.enumerate() if t.name == "usage-statistics"] == senders  # once an hour

    senders[0].join(10)
    assert not senders[0].is_alive()
    row = UsageStatistics.objects.get()
    assert row.last_error and row.last_sent_at is None


def test_the_background_sender_is_for_the_embedded_default_only(db, settings, receiver):
    from fleet.celery import app

    configure(settings, receiver.url)
    saved = app.conf.task_always_eager
    app.conf.task_always_eager = False
    try:
        assert tasks.send_in_background_if_due() is None  # beat sends
    finally:
        app.conf.task_always_eager = saved


# --- the console ----------------------------------------------------------------------------------


def test_the_console_shows_the_state_and_exactly_what_is_sent(admin_client, fleet, settings, receiver):
    configure(settings, receiver.url)
    receiver.status = 500
    sending.send()
    page = admin_client.get(f"{SETTINGS_PAGE}{FleetSettings.load().pk}/change/").content.decode()
    assert "Last error:</strong> HTTP 500" in page and "Last sent:</strong> never" in page
    assert PREVIEW in page
    preview = admin_client.get(PREVIEW)
    assert preview.status_code == 200
    shown = json.loads(preview.context["payload"])
    assert shown == statistics.build()
    text = preview.content.decode()
    assert "numHostsEnrolled" in text and "HTTP 500" in text
    assert "mbp-alice" not in text and "C02SERIAL" not in text


def test_only_global_admins_see_the_payload(client, fleet, team):
    for name, role, on_team in [
        ("maint", Role.MAINTAINER, None),
        ("obs", Role.OBSERVER, None),
        ("team-admin", Role.ADMIN, team),
    ]:
        user = user_with_role(name, role, on_team)
        client.force_login(user)
        assert client.get(PREVIEW).status_code == 403, name
    client.logout()
    assert client.get(PREVIEW).status_code == 302  # to the login page
