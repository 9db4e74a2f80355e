"""Apple MDM end to end through a simulated Mac (``agentapi.simulator.apple``): real HTTP through
Django's test client, real SCEP and CMS, every check-in and report a signed XML plist.

Covers enrollment (and matching the osquery host either way round), the command channel's rules
(Idle, Acknowledged, Error, NotNow, priority), lock/unlock/wipe through REST, the signature and
size checks on hostile requests, raw commands, ``manage.py mdm`` and a push through the APNs
stand-in.
"""

from __future__ import annotations

import base64
import plistlib
from io import StringIO
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from django.core.management import call_command
from django.core.management.base import CommandError

from agentapi.simulator.apple import (
    CHECKIN_CONTENT_TYPE,
    DeviceError,
    MacInfo,
    SimulatedMac,
    parse_enrollment_profile,
)
from agentapi.simulator.identity import make_identity, parse_templates
from hosts.choices import Role
from hosts.models import EnrollSecret, Host
from hostscripts.device_status import device_status
from mdm import commands, conf, services
from mdm import queue as mdm_queue
from mdm.models import Command, CommandStatus, DeviceIdentity, Enrollment
from mdm.pki import cms, scep_client
from mdm.pki.ca import create_ca, new_rsa_key
from tests.agent import Agent
from tests.factories import api_for, user_with_role

SERVER = "https://testserver"
CHANNEL = "/mdm/apple/mdm"


def client_send(client, log: list | None = None):
    """The Mac's ``send`` over Django's test client (``log`` collects every request)."""

    def send(method: str, url: str, body: bytes, headers: dict[str, str]):
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        content_type = headers.get("Content-Type", "application/octet-stream")
        extra = {k: v for k, v in headers.items() if k != "Content-Type"}
        if log is not None:
            log.append((method, path, body, headers))
        response = client.generic(
            method, path, body, content_type=content_type, secure=parts.scheme == "https", headers=extra
        )
        return response.status_code, dict(response.headers), response.content

    return send


@pytest.fixture
def mdm(db, settings, tmp_path):
    settings.MDM = {**settings.MDM, "DIR": str(tmp_path / "mdm"), "SERVER_URL": SERVER, "PUSH_DISABLED": True}
    services.setup(dev=True)
    return settings.MDM


@pytest.fixture
def new_mac(client, mdm, global_secret):
    def make(secret: str | None = None, info: MacInfo | None = None, **options) -> SimulatedMac:
        return SimulatedMac(
            info or MacInfo.example(),
            client_send(client, options.pop("log", None)),
            base_url=SERVER,
            enroll_secret=secret or global_secret,
            **options,
        )

    return make


@pytest.fixture
def mac(new_mac) -> SimulatedMac:
    """An enrolled Mac that already answered the DeviceInformation queued at enrollment."""
    device = new_mac().enroll()
    assert device.poll() == 1
    return device


def enrollment_of(device: SimulatedMac) -> Enrollment:
    return Enrollment.objects.get(udid=device.udid)


def enqueue(device: SimulatedMac, request_type: str, fields: dict | None = None, **options) -> Command:
    return mdm_queue.enqueue(enrollment_of(device), request_type, fields, push=False, **options)


def state(command: Command) -> Command:
    command.refresh_from_db()
    return command


def put(client, body: bytes, signature: str | None, content_type: str = CHECKIN_CONTENT_TYPE):
    headers = {} if signature is None else {"Mdm-Signature": signature}
    return client.generic("PUT", CHANNEL, body, content_type=content_type, secure=True, headers=headers)


def mobileconfig(identifier: str = "com.example.wifi", name: str = "Office Wi-Fi", **overrides) -> bytes:
    profile = {
        "PayloadType": "Configuration",
        "PayloadIdentifier": identifier,
        "PayloadUUID": "5A1C3E2B-1111-4C2B-9B1A-000000000001",
        "PayloadVersion": 1,
        "PayloadDisplayName": name,
        "PayloadOrganization": "Example",
        "PayloadContent": [
            {
                "PayloadType": "com.apple.wifi.managed",
                "PayloadIdentifier": f"{identifier}.payload",
                "PayloadUUID": "5A1C3E2B-1111-4C2B-9B1A-000000000002",
                "PayloadVersion": 1,
                "SSID_STR": "Office",
            }
        ],
        **overrides,
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML)


# --- enrollment ---------------------------------------------------------------------------------------


def test_team_enrollment_lands_on_the_host_osquery_enrolled(client, new_mac, team, team_secret):
    identity = make_identity(5, 0, parse_templates("macos"))
    agent = Agent(client, identifier=identity.uuid, serial=identity.serial)
    assert agent.enroll(team_secret)["node_key"]
    host = Host.objects.get()
    device = new_mac(team_secret, MacInfo.from_identity(identity)).enroll()

    enrollment = enrollment_of(device)
    assert Host.objects.count() == 1 and enrollment.host_id == host.pk and enrollment.enrolled
    assert Host.objects.get().team == team and enrollment.identity.team == team
    assert (enrollment.serial_number, enrollment.model, enrollment.topic) == (
        identity.serial,
        identity.hardware.model,
        device.topic,
    )
    assert enrollment.push_token == device.push_token.hex() and enrollment.push_magic == device.push_magic
    # The profile was signed by our CA, and the identity the Mac got through SCEP is the CA's.
    assert device.profile.signer == device.ca_cert == conf.ca().certificate
    assert conf.ca().issued_by_us(device.identity_cert)
    assert device.profile.checkin_url == f"{SERVER}/mdm/apple/mdm" and device.profile.topic.startswith(
        "com.apple.mgmt.External."
    )


@pytest.mark.parametrize(
    "osquery_identifier", ["uuid", "instance-7f3a"], ids=["same_id_case", "other_id_case"]
)
def test_mdm_first_then_osquery_takes_over_the_same_host(client, new_mac, global_secret, osquery_identifier):
    device = new_mac().enroll()
    host = enrollment_of(device).host
    assert host.platform == "darwin" and host.uuid == device.udid and not host.node_key_hash

    agent = Agent(client, identifier=device.udid if osquery_identifier == "uuid" else osquery_identifier)
    agent.details["system_info"]["uuid"] = device.udid
    assert agent.enroll(global_secret)["node_key"]
    host.refresh_from_db()
    assert Host.objects.count() == 1 and host.node_key_hash
    assert enrollment_of(device).host_id == host.pk
    assert host.osquery_host_id == agent.identifier


def test_enrollment_needs_a_valid_secret_and_a_signed_profile(new_mac, mac):
    with pytest.raises(DeviceError) as refused:
        new_mac("not-a-secret").enroll()
    assert refused.value.status == 401
    signed = cms.sign_attached(mac.profile.content, mac.identity_cert, mac.identity_key)
    assert parse_enrollment_profile(signed).topic == mac.topic  # an unknown signer: still readable
    tampered = bytearray(signed)
    tampered[tampered.index(b"SignMessage")] ^= 0x20
    with pytest.raises(DeviceError, match="signature"):
        parse_enrollment_profile(bytes(tampered))


def test_check_ins_and_reports_are_signed_xml_plists(new_mac):
    log: list = []
    device = new_mac(log=log).enroll()
    device.poll()
    puts = [(headers, body) for method, path, body, headers in log if method == "PUT"]
    kinds = [plistlib.loads(body).get("MessageType") or plistlib.loads(body)["Status"] for _, body in puts]
    assert kinds == ["Authenticate", "TokenUpdate", "Idle", "Acknowledged"]
    for headers, body in puts:
        assert body.startswith(b"<?xml") and b"<plist" in body
        signer = cms.verify_detached(base64.b64decode(headers["Mdm-Signature"]), body)
        assert signer == device.identity_cert
    authenticate, token_update = (plistlib.loads(body) for _, body in puts[:2])
    assert puts[0][0]["Content-Type"] == CHECKIN_CONTENT_TYPE
    assert {"UDID", "SerialNumber", "Model", "ModelName", "ProductName", "OSVersion", "BuildVersion",
            "DeviceName", "Topic"} <= set(authenticate)  # fmt: skip
    assert isinstance(token_update["Token"], bytes) and len(token_update["Token"]) == 32
    assert token_update["AwaitingConfiguration"] is False and token_update["PushMagic"]
    scep = [path for method, path, _, _ in log if path.startswith("/mdm/apple/scep")]
    assert [p.split("operation=")[1] for p in scep] == ["GetCACaps", "GetCACert", "PKIOperation"]


# --- the command channel --------------------------------------------------------------------------------


def test_device_information_updates_the_enrollment_and_the_host(new_mac):
    device = new_mac().enroll()
    host = enrollment_of(device).host
    assert host.build == ""  # an MDM-only host knows what Authenticate said, not the build
    assert device.poll() == 1
    host.refresh_from_db()
    assert host.build == device.info.build_version and host.hardware_serial == device.serial
    answer = mdm_queue.result_plist(Command.objects.get(request_type="DeviceInformation"))
    assert answer["QueryResponses"]["UDID"] == device.udid
    assert set(answer["QueryResponses"]) <= set(commands.DEVICE_INFORMATION_QUERIES)


def test_acknowledged_and_error_answers_are_stored(mac):
    listed = enqueue(mac, "ProfileList")
    apps = enqueue(mac, "InstalledApplicationList", commands.installed_application_list())
    unknown = enqueue(mac, "FrobnicateDevice", {"Level": 11})
    assert mac.poll() == 3 and mac.poll() == 0  # an empty 200 ends the session
    assert state(listed).status == CommandStatus.ACKNOWLEDGED
    profiles = mdm_queue.result_plist(listed)["ProfileList"]
    assert [p["PayloadIdentifier"] for p in profiles] == [mac.profile.identifier]  # the MDM profile
    assert state(apps).status == CommandStatus.ACKNOWLEDGED
    assert isinstance(mdm_queue.result_plist(apps)["InstalledApplicationList"], list)
    assert state(unknown).status == CommandStatus.ERROR
    assert unknown.error_chain[0]["ErrorCode"] == 12021 and unknown.error_chain[0]["ErrorDomain"] == (
        "MCMDMErrorDomain"
    )


def test_a_malformed_command_gets_command_format_error(mac):
    lock = enqueue(mac, "DeviceLock", {"Message": "no PIN"})  # a Mac cannot lock without a PIN
    install = enqueue(mac, "InstallProfile", {"Payload": "not data"})
    mac.poll()
    assert state(lock).status == state(install).status == CommandStatus.FORMAT_ERROR
    assert not mac.locked


def test_not_now_waits_for_the_next_idle_and_order_is_priority_then_age(mac):
    first = enqueue(mac, "ProfileList")
    second = enqueue(mac, "DeviceInformation", commands.device_information())
    urgent = enqueue(mac, "InstalledApplicationList", priority=5)
    mac.not_now_rate = 1.0
    assert mac.poll() == 3  # each once: a put-off command is not handed back in the same session
    order = [urgent.uuid, first.uuid, second.uuid]
    assert [h.command_uuid for h in list(mac.history)[-3:]] == order
    assert all(
        state(c).status == CommandStatus.NOT_NOW and c.not_now_count == 1 for c in (first, second, urgent)
    )
    mac.not_now_rate = 0.0
    assert mac.poll() == 3
    assert [h.command_uuid for h in list(mac.history)[-3:]] == order
    assert all(
        state(c).status == CommandStatus.ACKNOWLEDGED and c.delivery_count == 2 for c in (first, urgent)
    )


def test_check_out_cancels_pending_commands(mac):
    pending = enqueue(mac, "ProfileList")
    mac.check_out()
    enrollment = enrollment_of(mac)
    assert not enrollment.enrolled and enrollment.checked_out_at and not enrollment.push_token
    assert state(pending).cancelled and pending.state == "cancelled"
    assert mac.installed_profiles() == [] and mac.poll() == 0


def test_profiles_are_installed_listed_and_removed(mac):
    plain = enqueue(mac, "InstallProfile", commands.install_profile(mobileconfig()))
    ca = conf.ca()
    signed = cms.sign_attached(mobileconfig("com.example.dock", "Dock"), ca.certificate, ca.key)
    signed_install = enqueue(mac, "InstallProfile", commands.install_profile(signed))
    mac.poll()
    assert state(plain).status == state(signed_install).status == CommandStatus.ACKNOWLEDGED
    wifi, dock = mac.profile_named("com.example.wifi"), mac.profile_named("com.example.dock")
    assert (wifi.display_name, wifi.signed, dock.signed) == ("Office Wi-Fi", False, True)

    bad = [
        enqueue(mac, "InstallProfile", commands.install_profile(b"<plist>nope")),
        enqueue(mac, "InstallProfile", commands.install_profile(mobileconfig(PayloadType="com.apple.mdm"))),
        enqueue(mac, "InstallProfile", commands.install_profile(b"\x30\x82garbage")),
        enqueue(mac, "RemoveProfile", commands.remove_profile("com.example.unknown")),
        enqueue(mac, "RemoveProfile", commands.remove_profile(mac.profile.identifier)),
    ]
    removed = enqueue(mac, "RemoveProfile", commands.remove_profile("com.example.wifi"))
    mac.poll()
    for command in bad:
        assert state(command).status == CommandStatus.ERROR, command
        assert {"ErrorCode", "ErrorDomain", "LocalizedDescription", "USEnglishDescription"} <= set(
            command.error_chain[0]
        )
    assert state(removed).status == CommandStatus.ACKNOWLEDGED
    assert [p.identifier for p in mac.installed_profiles()] == [mac.profile.identifier, "com.example.dock"]


# --- lock, unlock, wipe through REST ---------------------------------------------------------------------


@pytest.fixture
def api(db, settings):
    return api_for(user_with_role("admin", Role.ADMIN))


def test_lock_then_unlock_with_the_revealed_pin(api, mac):
    host = enrollment_of(mac).host
    response = api.post(f"/api/v1/hosts/{host.pk}/lock/")
    assert response.status_code == 202, response.content
    assert response.json()["command_uuid"] and device_status(host.pk).pending_action == "lock"
    mac.poll()
    assert mac.locked and device_status(host.pk).status == "locked"
    enqueue(mac, "ProfileList")
    assert mac.poll() == 0  # the lock screen says nothing

    response = api.post(f"/api/v1/hosts/{host.pk}/unlock/")
    assert response.status_code == 202, response.content
    pin = response.json()["unlock_pin"]
    assert pin == mac.lock_pin
    status = device_status(host.pk)
    assert (status.status, status.pending_action) == ("locked", "unlock")
    assert not mac.unlock("000000" if pin != "000000" else "111111")
    assert mac.unlock(pin) and mac.poll() == 1  # it talks again: unlocked, and gets its command
    assert device_status(host.pk).status == "unlocked" and device_status(host.pk).pending_action == ""


def test_wipe_erases_the_mac_and_it_goes_silent(api, new_mac):
    log: list = []
    device = new_mac(log=log).enroll()
    host = enrollment_of(device).host
    assert api.post(f"/api/v1/hosts/{host.pk}/wipe/").status_code == 202
    device.poll()
    erase = Command.objects.get(request_type="EraseDevice")
    assert erase.status == CommandStatus.ACKNOWLEDGED and device.erase_pin == services.reveal_pin(erase)
    assert device.wiped and device.installed_profiles() == [] and device_status(host.pk).status == "wiped"
    sent = len(log)
    assert device.poll() == 0 and len(log) == sent
    assert api.post(f"/api/v1/hosts/{host.pk}/lock/").status_code == 409


def test_a_wiped_mac_set_up_again_enrolls_afresh(api, new_mac):
    device = new_mac(reenroll_after_erase=True).enroll()
    first_identity = device.identity_cert
    services_host = enrollment_of(device).host
    api.post(f"/api/v1/hosts/{services_host.pk}/wipe/")
    device.poll()
    assert device.enrolled and not device.wiped and device.enrollments == 2
    assert device.identity_cert != first_identity and DeviceIdentity.objects.count() == 2
    assert enrollment_of(device).enrolled and Host.objects.count() == 1


# --- hostile requests ------------------------------------------------------------------------------------


def _csr(key, name: str = "attacker"):
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())


def test_signature_checks_refuse_with_4xx_never_500(client, mac, new_mac, tmp_path):
    idle = plistlib.dumps({"Status": "Idle", "UDID": mac.udid})
    assert put(client, idle, mac.sign(idle)).status_code == 200
    other_body = plistlib.dumps({"Status": "Idle", "UDID": mac.udid, "X": 1})
    assert put(client, other_body, mac.sign(idle)).status_code == 401  # signed one body, sent another
    assert put(client, idle, None).status_code == 401
    assert put(client, idle, "%%% not base64 %%%").status_code == 401
    assert put(client, idle, base64.b64encode(b"\x30\x03\x02\x01\x00").decode()).status_code == 401

    key = new_rsa_key(2048)
    foreign = create_ca(tmp_path / "other-ca").issue(_csr(key))
    assert (
        put(client, idle, base64.b64encode(cms.sign_detached(idle, foreign, key)).decode()).status_code == 401
    )
    unrecorded = conf.ca().issue(_csr(key))  # ours, but never handed out through SCEP
    hello = plistlib.dumps({"MessageType": "Authenticate", "UDID": "NEW-DEVICE", "Topic": mac.topic})
    assert (
        put(client, hello, base64.b64encode(cms.sign_detached(hello, unrecorded, key)).decode()).status_code
        == 401
    )
    # ... and for a device that enrolled with another certificate: refused as not that device's.
    assert (
        put(client, idle, base64.b64encode(cms.sign_detached(idle, unrecorded, key)).decode()).status_code
        == 403
    )

    garbage = b"this is not a plist"
    assert put(client, garbage, mac.sign(garbage)).status_code == 400
    array = plistlib.dumps(["Idle"])
    assert put(client, array, mac.sign(array)).status_code == 400

    other = new_mac().enroll()
    for message in (
        {"MessageType": "Authenticate", "UDID": other.udid, "SerialNumber": other.serial, "Topic": mac.topic},
        {"Status": "Idle", "UDID": other.udid},
        {
            "MessageType": "TokenUpdate",
            "UDID": other.udid,
            "Token": b"x" * 32,
            "PushMagic": "m",
            "Topic": "t",
        },
        {"MessageType": "CheckOut", "UDID": other.udid},
    ):
        body = plistlib.dumps(message)
        assert put(client, body, mac.sign(body)).status_code == 403  # our certificate, another's UDID
    assert (
        enrollment_of(other).enrolled
        and enrollment_of(other).identity.sha256 != enrollment_of(mac).identity.sha256
    )


def test_scep_with_a_wrong_challenge_gets_a_failure_reply_and_no_identity(client, mac):
    before = DeviceIdentity.objects.count()

    def post(message: bytes) -> bytes:
        response = client.generic(
            "POST",
            "/mdm/apple/scep?operation=PKIOperation",
            message,
            content_type="application/x-pki-message",
            secure=True,
        )
        assert response.status_code == 200
        return response.content

    wrong = mac.profile.challenge.split(".")[0] + ".AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    with pytest.raises(scep_client.ScepFailure):
        scep_client.enroll(conf.ca().certificate, wrong, "Fleet Identity", post)
    assert DeviceIdentity.objects.count() == before


def test_oversized_bodies_are_413(client, mac, settings):
    settings.MDM = {**settings.MDM, "MAX_BODY": 64 * 1024}
    huge = plistlib.dumps({"Status": "Idle", "UDID": mac.udid, "Padding": "x" * 70_000})
    assert put(client, huge, mac.sign(huge)).status_code == 413
    assert put(client, huge, None).status_code == 413  # the size is checked before anything else
    scep = client.generic(
        "POST", "/mdm/apple/scep?operation=PKIOperation", b"\x30" * 70_000, content_type="x", secure=True
    )
    assert 400 <= scep.status_code < 500


# --- raw commands and manage.py mdm ---------------------------------------------------------------------


def run_mdm(*args: str) -> str:
    out = StringIO()
    call_command("mdm", *args, stdout=out)
    return out.getvalue()


def test_raw_commands_through_services_and_manage_py(mac, tmp_path):
    host = enrollment_of(mac).host
    sent = services.send([host], "", raw=plistlib.dumps({"RequestType": "ProfileList"}))
    raw_file = tmp_path / "restart.plist"
    raw_file.write_bytes(
        plistlib.dumps({"CommandUUID": "RAW-RESTART-1", "Command": {"RequestType": "RestartDevice"}})
    )
    output = run_mdm("command", "send", "--host", str(host.pk), "--raw", str(raw_file))
    assert output.strip() == f"Queued RestartDevice RAW-RESTART-1 for host {host.pk}"
    with pytest.raises(CommandError, match="unique"):
        run_mdm("command", "send", "--host", str(host.pk), "--raw", str(raw_file))
    mac.poll()
    assert state(sent.commands[0]).status == CommandStatus.ACKNOWLEDGED and sent.commands[0].raw
    restart = Command.objects.get(uuid="RAW-RESTART-1")
    assert restart.raw and restart.status == CommandStatus.ACKNOWLEDGED
    shown = run_mdm("command", "show", "RAW-RESTART-1")
    assert shown.startswith("RestartDevice RAW-RESTART-1: acknowledged") and "<key>Status</key>" in shown


def test_manage_py_mdm_setup_status_devices_and_commands(api, mac):
    assert "already exists" in run_mdm("setup")
    status = run_mdm("status")
    assert "MDM CA: set up" in status and "stand-in, not Apple's" in status
    assert "Enrolled devices: 1 (0 with failing pushes)" in status
    devices = run_mdm("devices").splitlines()
    assert devices[0].startswith("UDID") and mac.udid in devices[1] and " enrolled " in devices[1]

    host = enrollment_of(mac).host
    api.post(f"/api/v1/hosts/{host.pk}/lock/")
    mac.poll()
    lock = Command.objects.get(request_type="DeviceLock")
    listing = run_mdm("command", "list", "--host", str(host.pk))
    assert f"{lock.uuid} DeviceLock" in listing and "acknowledged" in listing
    assert "DeviceInformation" in listing
    shown = run_mdm("command", "show", lock.uuid)
    assert mac.lock_pin not in shown  # only --pin reveals it
    assert run_mdm("command", "show", lock.uuid, "--pin").splitlines()[-1] == f"PIN: {mac.lock_pin}"
    with pytest.raises(CommandError, match="No command"):
        run_mdm("command", "show", "NOPE")


def test_manage_py_mdm_setup_on_a_fresh_server(db, settings, tmp_path):
    settings.MDM = {**settings.MDM, "DIR": str(tmp_path / "fresh")}
    with pytest.raises(CommandError, match="not set up"):
        run_mdm("enrollment-profile", "--server-url", SERVER)
    created = run_mdm("setup", "--dev")
    assert "Created the MDM CA" in created and "Push certificate: stand-in" in created
    assert (tmp_path / "fresh" / "apns-standin" / "ca.pem").exists()


# --- pushes ---------------------------------------------------------------------------------------------


def test_queueing_a_command_pushes_the_mac_with_its_push_magic(
    eager_celery, mac, settings, django_capture_on_commit_callbacks
):
    from mdm.apns.standin import ApnsStandIn

    standin = ApnsStandIn.from_dev_dir(conf.standin_dir()).start()
    try:
        settings.MDM = {**settings.MDM, "DEV_APNS_URL": standin.url, "PUSH_DISABLED": False}
        with django_capture_on_commit_callbacks(execute=True):
            services.send([enrollment_of(mac).host], "DeviceInformation")
        push = standin.wait_for(lambda p: p.token_hex == mac.push_token.hex(), timeout=10)
    finally:
        standin.stop()
    assert push is not None and push.push_magic == mac.push_magic and push.topic == mac.topic
    enrollment = enrollment_of(mac)
    assert enrollment.last_push_at and enrollment.last_push_error == "" and enrollment.push_failures == 0
    assert mac.poll() == 1


def test_a_second_enroll_secret_team_moves_the_mac(new_mac, team, mac):
    secret = EnrollSecret.objects.create(secret="team-two-secret", team=team).secret
    again = new_mac(secret, mac.info).enroll()
    enrollment = enrollment_of(again)
    assert enrollment.host.team == team and Host.objects.count() == 1 and enrollment.enrolled
