"""MDM commands and devices through REST and the console, with a simulated Mac answering: who may
send what (named and raw commands, PIN reveals), what each role sees, and that no secret leaks."""

from __future__ import annotations

import plistlib

import pytest
from django.test import Client
from django.urls import reverse

from activities.models import Activity
from agentapi.simulator.apple import MacInfo, SimulatedMac
from hosts.choices import Role
from hosts.models import EnrollSecret, Team
from mdm import services
from mdm.models import Command, Enrollment
from tests.factories import api_for, make_host, user_with_role
from tests.test_mdm_device import SERVER, client_send

pytestmark = pytest.mark.django_db


@pytest.fixture
def mdm(settings, tmp_path):
    settings.MDM = {**settings.MDM, "DIR": str(tmp_path / "mdm"), "SERVER_URL": SERVER, "PUSH_DISABLED": True}
    services.setup(dev=True)


@pytest.fixture
def team_mac(client, mdm, team) -> SimulatedMac:
    """A Mac enrolled in the Engineering team, its first DeviceInformation answered."""
    secret = EnrollSecret.objects.create(secret="eng-secret-1", team=team).secret
    mac = SimulatedMac(MacInfo.example(), client_send(client), base_url=SERVER, enroll_secret=secret)
    mac.enroll()
    mac.poll()
    return mac


def host_id(mac: SimulatedMac) -> int:
    return Enrollment.objects.get(udid=mac.udid).host_id


def test_a_maintainer_sends_a_named_command_and_reads_the_answer(team_mac, team):
    api = api_for(user_with_role("maint", Role.MAINTAINER, team))
    sent = api.post(
        "/api/v1/mdm/commands/",
        {"host_ids": [host_id(team_mac)], "request_type": "ProfileList"},
        format="json",
    )
    assert sent.status_code == 202, sent.content
    uuid = sent.json()["commands"][0]["command_uuid"]
    assert api.get(f"/api/v1/mdm/commands/{uuid}/").json()["state"] == "pending"
    assert team_mac.poll() == 1
    detail = api.get(f"/api/v1/mdm/commands/{uuid}/").json()
    assert detail["state"] == "acknowledged" and detail["status"] == "Acknowledged"
    assert detail["result"]["CommandUUID"] == uuid and "ProfileList" in detail["result"]
    listed = api.get("/api/v1/mdm/commands/", {"host_id": host_id(team_mac), "state": "acknowledged"}).json()
    assert {c["request_type"] for c in listed["results"]} == {"DeviceInformation", "ProfileList"}
    assert Activity.objects.filter(type="ran_mdm_command", details__request_type="ProfileList").exists()


def test_command_refusals(team_mac, team):
    maintainer = api_for(user_with_role("maint", Role.MAINTAINER, team))
    hid = host_id(team_mac)
    raw = plistlib.dumps({"Command": {"RequestType": "DeviceInformation", "Queries": ["OSVersion"]}}).decode()
    assert (
        maintainer.post("/api/v1/mdm/commands/", {"host_ids": [hid], "raw": raw}, format="json").status_code
        == 403
    )
    for body in (
        {"host_ids": [hid], "request_type": "DeviceLock"},  # the lock action, not a command
        {"host_ids": [hid], "request_type": "InstallProfile"},  # the reconciler's
        {"host_ids": [hid], "request_type": "Bogus"},
        {"host_ids": [hid]},
        {"host_ids": []},
        {"host_ids": ["x"], "request_type": "RestartDevice"},
    ):
        assert maintainer.post("/api/v1/mdm/commands/", body, format="json").status_code == 400, body
    other = make_host("linux-1", team=team, platform="ubuntu")
    skipped = maintainer.post(
        "/api/v1/mdm/commands/", {"host_ids": [other.pk], "request_type": "RestartDevice"}, format="json"
    )
    assert skipped.status_code == 202 and skipped.json()["skipped"] == {str(other.pk): "not enrolled in MDM"}
    observer = api_for(user_with_role("obs", Role.OBSERVER, team))
    assert (
        observer.post(
            "/api/v1/mdm/commands/", {"host_ids": [hid], "request_type": "RestartDevice"}, format="json"
        ).status_code
        == 403
    )
    stranger = api_for(user_with_role("else", Role.ADMIN, Team.objects.create(name="Elsewhere")))
    assert (
        stranger.post(
            "/api/v1/mdm/commands/", {"host_ids": [hid], "request_type": "RestartDevice"}, format="json"
        ).status_code
        == 404
    )
    uuid = Command.objects.filter(request_type="DeviceInformation").get().uuid
    assert stranger.get(f"/api/v1/mdm/commands/{uuid}/").status_code == 404
    assert stranger.get("/api/v1/mdm/devices/").json()["count"] == 0


def test_a_team_admin_sends_a_raw_command_and_reveals_a_pin(team_mac, team):
    admin = api_for(user_with_role("teamadmin", Role.ADMIN, team))
    hid = host_id(team_mac)
    raw = plistlib.dumps(
        {"CommandUUID": "RAW-1", "Command": {"RequestType": "DeviceInformation", "Queries": ["OSVersion"]}}
    ).decode()
    sent = admin.post("/api/v1/mdm/commands/", {"host_ids": [hid], "raw": raw}, format="json")
    assert sent.status_code == 202 and sent.json()["commands"][0]["command_uuid"] == "RAW-1"
    again = admin.post("/api/v1/mdm/commands/", {"host_ids": [hid], "raw": raw}, format="json")
    assert again.status_code == 409  # CommandUUIDs are unique
    assert (
        admin.post("/api/v1/mdm/commands/", {"host_ids": [hid], "raw": "<plist"}, format="json").status_code
        == 400
    )
    team_mac.poll()
    assert Command.objects.get(uuid="RAW-1").status == "Acknowledged"

    lock = admin.post(f"/api/v1/hosts/{hid}/lock/")
    assert lock.status_code == 202 and "unlock_pin" not in lock.json()
    uuid = lock.json()["command_uuid"]
    listed = admin.get(f"/api/v1/mdm/commands/{uuid}/").json()
    assert listed["has_pin"] is True and "PIN" not in str(listed)
    pin = admin.get(f"/api/v1/mdm/commands/{uuid}/pin/").json()["pin"]
    assert len(pin) == 6 and pin.isdigit()
    assert Activity.objects.filter(type="revealed_lock_pin").count() == 1
    maintainer = api_for(user_with_role("maint", Role.MAINTAINER, team))
    assert maintainer.get(f"/api/v1/mdm/commands/{uuid}/pin/").status_code == 403
    no_pin = Command.objects.get(uuid="RAW-1").uuid
    assert admin.get(f"/api/v1/mdm/commands/{no_pin}/pin/").status_code == 404


def test_devices_list_shows_push_state_without_secrets(team_mac, team):
    Enrollment.objects.update(push_failures=3, last_push_error="0 connection failed: refused")
    api = api_for(user_with_role("obs", Role.OBSERVER, team))
    devices = api.get("/api/v1/mdm/devices/", {"push_failing": "1"}).json()
    assert devices["count"] == 1
    row = devices["results"][0]
    assert row["udid"] == team_mac.udid and row["push_failures"] == 3 and row["enrolled"] is True
    assert "push_magic" not in row and "push_token" not in row and team_mac.push_magic not in str(devices)
    state = api.get("/api/v1/mdm/apple/").json()
    assert state["devices_with_push_failures"] == 1 and state["enrolled_devices"] == 1


def test_console_host_block_sends_commands_and_the_command_page_reveals_pins(team_mac, team):
    hid = host_id(team_mac)
    admin = Client()
    admin.force_login(user_with_role("admin", Role.ADMIN))
    page = admin.get(f"/admin/hosts/host/{hid}/change/").content.decode()
    assert 'id="host-mdm"' in page and "Enrolled" in page and 'id="mdm-raw"' in page
    sent = admin.post(f"/admin/mdm/command/host/{hid}/send/", {"request_type": "InstalledApplicationList"})
    assert sent.status_code == 302
    assert Command.objects.filter(request_type="InstalledApplicationList").exists()
    team_mac.poll()
    command = Command.objects.get(request_type="InstalledApplicationList")
    detail = admin.get(f"/admin/mdm/command/{command.pk}/change/").content.decode()
    assert "acknowledged" in detail and "InstalledApplicationList" in detail

    response = admin.post(reverse("admin:hostscripts_scriptrun_host_action", args=[hid, "lock"]))
    assert response.status_code == 302
    lock_command = Command.objects.get(request_type="DeviceLock")
    detail = admin.get(f"/admin/mdm/command/{lock_command.pk}/change/").content.decode()
    assert 'id="reveal-pin"' in detail and "******" in detail  # the sent plist hides the PIN
    revealed = admin.post(f"/admin/mdm/command/{lock_command.pk}/pin/", follow=True).content.decode()
    assert "The PIN of DeviceLock" in revealed

    maintainer = Client()
    maintainer.force_login(user_with_role("maint", Role.MAINTAINER, team))
    page = maintainer.get(f"/admin/hosts/host/{hid}/change/").content.decode()
    assert 'id="mdm-send-form"' in page and 'id="mdm-raw"' not in page
    assert maintainer.post(f"/admin/mdm/command/host/{hid}/send/", {"raw": "<plist/>"}).status_code == 403
    detail = maintainer.get(f"/admin/mdm/command/{lock_command.pk}/change/").content.decode()
    assert 'id="reveal-pin"' not in detail
    assert maintainer.post(f"/admin/mdm/command/{lock_command.pk}/pin/").status_code == 403


def test_an_unenrolled_mac_s_host_page_offers_the_team_s_profile(mdm, team):
    mac = make_host("mac-1", team=team, platform="darwin")
    admin = Client()
    admin.force_login(user_with_role("admin", Role.ADMIN))
    page = admin.get(f"/admin/hosts/host/{mac.pk}/change/").content.decode()
    assert "Not enrolled in MDM" in page and f"team_id={team.pk}" in page
    linux = make_host("linux-1", platform="ubuntu")
    assert 'id="host-mdm"' not in admin.get(f"/admin/hosts/host/{linux.pk}/change/").content.decode()
