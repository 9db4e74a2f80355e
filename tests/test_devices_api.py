"""Fleet Desktop's device API, ``/api/latest/fleet/device/{token}/...``, through the real HTTP client.

Shapes as Fleet's server returns them (server/service/devices.go, server/fleet/device.go),
401s, refetch, transparency, the capabilities ping, and a fixed number of queries per request.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from devices import tokens
from devices.models import DeviceToken
from hosts import nodekeys
from hosts.models import FleetSettings, Host, Label, LabelMembership
from hostscripts.models import ScriptKind, ScriptRun
from software.models import HostSoftware, SoftwareTitle, SoftwareVersion, title_key, version_key
from tests.factories import make_host

pytestmark = pytest.mark.django_db

HOST_FIELDS = {
    "id",
    "hostname",
    "display_name",
    "display_text",
    "computer_name",
    "uuid",
    "platform",
    "os_version",
    "osquery_version",
    "orbit_version",
    "fleet_desktop_version",
    "hardware_vendor",
    "hardware_model",
    "hardware_serial",
    "memory",
    "cpu_brand",
    "cpu_physical_cores",
    "cpu_logical_cores",
    "primary_ip",
    "primary_mac",
    "public_ip",
    "uptime",
    "status",
    "seen_time",
    "team_id",
    "team_name",
    "labels",
    "mdm",
    "policies",
    "issues",
    "refetch_requested",
}


def host_with_token(name: str = "alice-mbp", **fields) -> tuple[Host, str]:
    host = make_host(name, seen_ago=timedelta(seconds=5), **fields)
    token = str(uuid.uuid4())
    tokens.set_token(host.id, token)
    return host, token


def add_software(host: Host, name: str, version: str, path: str = "") -> None:
    key = title_key(name, "apps", "", "")
    title = SoftwareTitle.objects.get_or_create(key=key, defaults={"name": name, "source": "apps"})[0]
    release = SoftwareVersion.objects.get_or_create(
        key=version_key(key, version), defaults={"title": title, "version": version}
    )[0]
    HostSoftware.objects.create(host=host, version=release, installed_path=path)


def url(token: str, route: str = "", version: str = "latest") -> str:
    return f"/api/{version}/fleet/device/{token}{route}"


@pytest.fixture
def device(db) -> tuple[Host, str]:
    return host_with_token(
        "alice-mbp",
        computer_name="Alice's MacBook",
        platform="darwin",
        os_version="macOS 14.5",
        osquery_version="5.12.1",
        orbit_version="1.30.0",
        desktop_version="1.30.0",
        hardware_vendor="Apple Inc.",
        hardware_model="Mac14,2",
        hardware_serial="C02ALICE01",
        memory=16 * 2**30,
        cpu_brand="Apple M2",
        cpu_physical_cores=8,
        cpu_logical_cores=8,
        primary_ip="10.0.0.7",
        primary_mac="aa:bb:cc:dd:ee:ff",
        uptime=3600,
    )


def test_get_host_has_fleets_shape(client, device):
    host, token = device
    label = Label.objects.create(name="Engineering laptops", query="SELECT 1 FROM hosts WHERE x='bob'")
    LabelMembership.objects.create(label=label, host=host)

    response = client.get(url(token))

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "host",
        "self_service",
        "org_logo_url",
        "org_logo_url_light_background",
        "org_contact_url",
        "license",
        "global_config",
    }
    assert body["self_service"] is False
    assert body["license"]["tier"] == "free"
    assert body["global_config"] == {
        "mdm": {"enabled_and_configured": False},
        "features": {"enable_software_inventory": True},
    }
    assert body["org_contact_url"] == FleetSettings.load().contact_url
    detail = body["host"]
    assert set(detail) >= HOST_FIELDS
    assert detail["id"] == host.id
    assert detail["display_name"] == "Alice's MacBook"
    assert (detail["hostname"], detail["hardware_serial"]) == ("alice-mbp", "C02ALICE01")
    assert (detail["orbit_version"], detail["fleet_desktop_version"]) == ("1.30.0", "1.30.0")
    assert detail["uptime"] == 3600 * 10**9  # nanoseconds, a Go time.Duration
    assert detail["status"] == "online"
    assert detail["seen_time"].endswith("Z")
    assert detail["team_id"] is None and detail["team_name"] is None
    assert detail["mdm"]["device_status"] == "unlocked"
    assert detail["mdm"]["pending_action"] == ""
    assert detail["policies"] == [] and detail["software"] == []
    names = [lab["name"] for lab in detail["labels"]]
    assert "Engineering laptops" in names
    assert all("query" not in lab for lab in detail["labels"])  # an admin's SQL is not for the end user
    assert "bob" not in response.content.decode()


def test_get_host_reports_device_status_and_team(client, team):
    host, token = host_with_token("locked-one", team=team)
    now = timezone.now()
    ScriptRun.objects.create(
        host=host, kind=ScriptKind.LOCK, contents="", timeout=300, exit_code=0, finished_at=now
    )
    ScriptRun.objects.create(host=host, kind=ScriptKind.UNLOCK, contents="", timeout=300)

    detail = client.get(url(token)).json()["host"]

    assert detail["mdm"]["device_status"] == "locked"
    assert detail["mdm"]["pending_action"] == "unlock"
    assert (detail["team_id"], detail["team_name"]) == (team.id, "Engineering")


def test_get_host_lists_software_unless_excluded(client, device):
    host, token = device
    add_software(host, "Firefox.app", "128.0", "/Applications/Firefox.app")

    software = client.get(url(token)).json()["host"]["software"]
    assert software[0]["name"] == "Firefox.app"
    assert software[0]["version"] == "128.0"
    assert software[0]["source"] == "apps"
    assert software[0]["installed_paths"] == ["/Applications/Firefox.app"]

    for value in ("true", "1", "True"):
        assert "software" not in client.get(url(token), {"exclude_software": value}).json()["host"]
    assert "software" in client.get(url(token), {"exclude_software": "false"}).json()["host"]


def test_a_bad_exclude_software_value_is_a_json_400(client, device):
    _, token = device
    response = client.get(url(token), {"exclude_software": "maybe"})

    assert response.status_code == 400
    assert "exclude_software" in response.json()["message"]


def test_desktop_summary_has_fleets_shape(client, device):
    _, token = device
    fleet_settings = FleetSettings.load()
    fleet_settings.org_name = "Acme"
    fleet_settings.org_logo_url = "https://acme.example/logo.png"
    fleet_settings.contact_url = "https://acme.example/help"
    fleet_settings.save()

    response = client.get(url(token, "/desktop"))

    assert response.status_code == 200
    assert response.json() == {
        "failing_policies_count": 0,
        "self_service": False,
        "notifications": {"needs_mdm_migration": False, "renew_enrollment_profile": False},
        "config": {
            "org_info": {
                "org_name": "Acme",
                "org_logo_url": "https://acme.example/logo.png",
                "org_logo_url_light_background": "",
                "contact_url": "https://acme.example/help",
            },
            "mdm": {"macos_migration": {"mode": ""}},
        },
        "alternative_browser_host": "",
    }


def test_authenticated_ping_answers_200_with_fleets_capabilities(client, device):
    _, token = device
    response = client.head(url(token, "/ping"))

    assert response.status_code == 200
    # Fleet's device capabilities are empty (debug error reporting off), and then it sends no header.
    assert "X-Fleet-Capabilities" not in response


def test_authenticated_ping_with_a_bad_token_is_401(client, db):
    assert client.head(url(str(uuid.uuid4()), "/ping")).status_code == 401


def test_unauthenticated_ping(client, db):
    response = client.head("/api/fleet/device/ping")

    assert response.status_code == 200
    assert "X-Fleet-Capabilities" not in response
    assert client.get("/api/fleet/device/ping").status_code == 405


def test_refetch_sets_the_flag_and_drops_the_cached_node_key_state(client, device):
    host, token = device
    Host.objects.filter(pk=host.pk).update(node_key_hash=nodekeys.hash_node_key("osquery-key"))
    nodekeys.lookup("osquery-key")  # cached, with refetch_requested False
    assert nodekeys.lookup("osquery-key").refetch_requested is False

    response = client.post(url(token, "/refetch"))

    assert response.status_code == 200
    assert response.json() == {}
    assert Host.objects.get(pk=host.pk).refetch_requested is True
    assert nodekeys.lookup("osquery-key").refetch_requested is True  # the agent sees it at once


def test_refetch_is_recorded_as_the_end_users_request(client, device):
    from activities.models import Activity

    _, token = device
    client.post(url(token, "/refetch"), REMOTE_ADDR="192.0.2.10")

    activity = Activity.objects.get(type="refetched_hosts")
    assert activity.actor is None
    assert activity.actor_name == "End user (My device)"
    assert activity.client_address == "192.0.2.10"


def test_refetch_only_accepts_post(client, device):
    _, token = device
    response = client.get(url(token, "/refetch"))

    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert "message" in response.json()


def test_transparency_redirects_to_the_default(client, device):
    _, token = device
    response = client.get(url(token, "/transparency"))

    assert response.status_code == 307
    assert response["Location"] == "https://fleetdm.com/transparency"


def test_transparency_redirects_to_the_configured_url(client, device):
    _, token = device
    FleetSettings.objects.update_or_create(pk=1, defaults={"transparency_url": "https://it.acme.example/"})

    response = client.get(url(token, "/transparency"))

    assert response.status_code == 307
    assert response["Location"] == "https://it.acme.example/"


@pytest.mark.parametrize("version", ["latest", "v1", "2022-04"])
def test_every_version_prefix_answers(client, device, version):
    _, token = device
    assert client.get(url(token, "/desktop", version)).status_code == 200
    assert client.get(url(token, "", version)).status_code == 200


@pytest.mark.parametrize(
    "token", ["00000000-0000-0000-0000-000000000000", "not a token", "x" * 300, "%00", "..", "é"]
)
@pytest.mark.parametrize("route", ["", "/desktop", "/refetch", "/transparency"])
def test_unknown_tokens_get_a_json_401(client, device, token, route):
    response = client.post(url(token, route)) if route == "/refetch" else client.get(url(token, route))

    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["message"] == "authentication error: invalid device authentication token"
    assert body["errors"] == [{"name": "base", "reason": body["message"]}]


def test_a_token_of_a_deleted_host_is_401(client, device):
    host, token = device
    Host.objects.filter(pk=host.pk).delete()
    assert client.get(url(token, "/desktop")).status_code == 401


def test_answers_are_private(client, device):
    _, token = device
    for response in (client.get(url(token)), client.get(url(str(uuid.uuid4())))):
        assert "no-store" in response["Cache-Control"]
        assert response["Referrer-Policy"] == "no-referrer"


def test_the_token_never_reaches_the_logs(client, device, caplog):
    from devices.logfilter import RedactDeviceTokens

    _, token = device
    bad = str(uuid.uuid4())
    with caplog.at_level(logging.INFO):
        client.get(url(bad, "/desktop"))
        client.get(url(token, "/desktop"))
    redactor = RedactDeviceTokens()
    for record in caplog.records:
        redactor.filter(record)
        assert bad not in record.getMessage() and token not in record.getMessage()
    assert any("/device/[token]" in r.getMessage() for r in caplog.records)  # Django's 401 line


def test_the_log_handler_redacts_tokens_from_every_logger():
    from devices.logfilter import RedactDeviceTokens

    handlers = [
        h for h in logging.getLogger().handlers if any(isinstance(f, RedactDeviceTokens) for f in h.filters)
    ]
    assert handlers, "the console handler must carry the device-token filter"
    record = logging.LogRecord(
        "django.security.csrf", logging.WARNING, "", 0, "Forbidden: %s", ("/device/abc",), None
    )
    handlers[0].filter(record)
    assert record.getMessage() == "Forbidden: /device/[token]"


def test_the_lookup_is_one_indexed_query_by_digest(device):
    host, token = device
    with CaptureQueriesContext(connection) as queries:
        found = tokens.find(token)
    assert found.host.id == host.id
    assert len(queries) == 1
    sql = queries[0]["sql"]
    assert tokens.token_digest(token) in sql and token not in sql
    with CaptureQueriesContext(connection) as queries:
        assert tokens.find("not/a token") is None
    assert len(queries) == 0


def _queries(client, path: str, method: str = "get") -> int:
    with CaptureQueriesContext(connection) as queries:
        response = getattr(client, method)(path)
    assert response.status_code < 400, response.content
    return len(queries)


def test_each_endpoint_costs_a_fixed_number_of_queries(client, device, django_assert_max_num_queries):
    host, token = device
    FleetSettings.load()
    small = {route: _queries(client, url(token, route)) for route in ("", "/desktop", "/transparency")}

    # Much more to show: labels, software, runs, and other hosts in the fleet.
    for i in range(30):
        label = Label.objects.create(name=f"label {i}")
        LabelMembership.objects.create(label=label, host=host)
        add_software(host, f"app {i}", "1.0")
        ScriptRun.objects.create(host=host, kind=ScriptKind.SCRIPT, contents="", timeout=300)
        host_with_token(f"other-{i}")
    large = {route: _queries(client, url(token, route)) for route in small}

    assert large == small
    assert small["/desktop"] <= 2  # the token (with its host) and the settings
    # token, labels, the Mac's MDM enrollment, two for device status, software, settings
    with django_assert_max_num_queries(7):
        client.get(url(token))
    with django_assert_max_num_queries(1):
        client.head(url(token, "/ping"))


def test_the_previous_tokens_row_serves_after_rotation(client, device):
    host, old = device
    new = str(uuid.uuid4())
    tokens.set_token(host.id, new)

    assert client.get(url(old)).json()["host"]["id"] == host.id
    assert client.get(url(new)).json()["host"]["id"] == host.id
    assert DeviceToken.objects.count() == 1
