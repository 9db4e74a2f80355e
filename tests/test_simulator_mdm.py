"""Simulated Macs in the host simulator: which hosts are Macs, what their osquery reports about
their profiles, and a run against a live server where they enroll through SCEP, get woken by the
APNs stand-in and answer commands, on the same hosts their osquery enrolled."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from types import SimpleNamespace

import pytest

from agentapi.simulator.agent import AgentSettings
from agentapi.simulator.apple import InstalledProfile, MacInfo, SimulatedMac
from agentapi.simulator.apple_sim import MacRunner, MdmSettings, start_standin, with_macs
from agentapi.simulator.identity import make_identities, make_identity, parse_templates
from agentapi.simulator.runner import SimulationConfig, simulate
from agentapi.simulator.sql import execute
from agentapi.simulator.stats import Stats
from agentapi.simulator.tables import AgentState, HostTables


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.django_db
def test_make_run_sets_up_mdm_and_the_demo_profiles_once(tmp_path, settings):
    import io

    from django.core.management import call_command

    from mdm.conf import configured, standin_dir
    from mdm.models import Profile

    settings.TLS_CERT_FILE = str(tmp_path / "cert.pem")
    settings.TLS_KEY_FILE = str(tmp_path / "key.pem")
    for _ in range(2):
        out = io.StringIO()
        call_command("prepare_demo", password_file=str(tmp_path / "pw"), stdout=out)
        lines = dict(line.split("=", 1) for line in out.getvalue().splitlines() if "=" in line)
        assert lines["mdm_profiles"] == "2" and lines["mdm_topic"].startswith("com.apple.mgmt.External.")
    assert configured() and (standin_dir() / "ca.pem").exists()
    assert sorted(Profile.objects.values_list("name", flat=True)) == [
        "Demo: firewall on",
        "Demo: screen saver after 10 minutes",
    ]


def test_the_first_hosts_become_macs_when_too_few_are():
    linux_only = make_identities(7, 4, parse_templates("ubuntu"))
    identities, positions = with_macs(linux_only, MdmSettings(count=2))
    assert positions == [0, 1]
    assert [i.template.key for i in identities] == ["macos", "macos", "ubuntu", "ubuntu"]
    assert identities[2] == linux_only[2]
    # Stable: the same options give the same Macs (a restarted simulation re-enrolls as itself).
    assert with_macs(linux_only, MdmSettings(count=2))[0][0].uuid == identities[0].uuid


def test_enough_macs_are_kept_and_a_rate_picks_a_share_of_them():
    mixed = make_identities(7, 10, parse_templates("macos:1,ubuntu:1"))
    identities, positions = with_macs(mixed, MdmSettings(count=3))
    assert identities == mixed and positions == [0, 2, 4]
    assert with_macs(mixed, MdmSettings(rate=0.5))[1] == [0, 2, 4]
    assert with_macs(mixed, MdmSettings(rate=0.0))[1] == []


def test_macos_profiles_lists_what_the_mac_installed():
    identity = make_identity(3, 0, parse_templates("macos"))
    state = AgentState()
    tables = HostTables(identity, state)
    assert not tables.has("macos_profiles")  # neither fleetd nor MDM: the extension is not there
    mac = SimulatedMac(MacInfo.from_identity(identity), send=None, base_url="https://fleet.example")  # type: ignore[arg-type]
    state.mdm = mac
    mac.install_profile(
        InstalledProfile(
            identifier="com.example.wifi",
            uuid="A1",
            display_name="Office Wi-Fi",
            organization="Example",
            description="",
            install_date=mac.now(),
            payloads=(),
            signed=False,
            managed=True,
        )
    )
    result = execute(
        'SELECT display_name, identifier, install_date FROM macos_profiles WHERE type = "Configuration"',
        tables,
    )
    assert result.ok, result.message
    assert result.rows == [
        {
            "display_name": "Office Wi-Fi",
            "identifier": "com.example.wifi",
            "install_date": mac.profile_named("com.example.wifi").install_date_text,
        }
    ]
    assert result.rows[0]["install_date"].endswith(" +0000")
    # The Mac's UDID is its osquery hardware UUID, and the serial is the same.
    assert mac.udid == tables.rows("system_info")[0]["uuid"] and mac.serial == identity.serial
    assert not HostTables(make_identity(3, 1, parse_templates("ubuntu")), AgentState(mdm=mac)).has(
        "macos_profiles"
    )


def test_a_locked_mac_is_unlocked_by_its_user_after_the_set_time():
    mac = SimulatedMac(MacInfo.example(), send=None, base_url="https://fleet.example")  # type: ignore[arg-type]
    now = [1000.0]
    agent = SimpleNamespace(state=AgentState(), node_key="key")
    settings = MdmSettings(unlock_after=120.0, interval=60.0)
    runner = MacRunner(mac, agent, settings, Stats(), asyncio.Event(), clock=lambda: now[0])
    assert agent.state.mdm is mac and runner._unlock_if_due() is None
    mac.lock("123456")
    assert runner._unlock_if_due() == 120.0  # the clock starts when the runner first sees the lock
    now[0] += 119.5
    assert runner._unlock_if_due() == pytest.approx(0.5) and mac.locked
    now[0] += 0.5
    assert runner._unlock_if_due() is None and not mac.locked
    assert not mac.unlock("123456")  # nothing left to unlock


def test_without_the_standin_the_macs_just_poll(tmp_path):
    from mdm.apns.certificate import make_dev_bundle, write_dev_bundle

    lines: list[str] = []
    missing = MdmSettings(standin_dir=str(tmp_path / "nothing-here"), apns_url="https://127.0.0.1:1")
    assert start_standin(missing, print, lines.append) is None
    assert "no APNs stand-in material" in lines[-1]
    write_dev_bundle(tmp_path / "standin", make_dev_bundle())
    with socket.socket() as busy:  # another stand-in (or anything) already has the port
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = MdmSettings(
            standin_dir=str(tmp_path / "standin"), apns_url=f"https://127.0.0.1:{busy.getsockname()[1]}"
        )
        assert start_standin(taken, print, lines.append) is None
    assert "not started" in lines[-1] and "without pushes" in lines[-1]


@pytest.mark.django_db(transaction=True)
def test_simulated_macs_enroll_answer_and_are_woken_by_pushes(eager_celery, live_server, settings, tmp_path):
    from hosts.management.commands.prepare_demo import DEMO_PROFILES, _demo_mobileconfig
    from hosts.models import EnrollSecret, Host
    from mdm import services
    from mdm.conf import standin_dir
    from mdm.models import Command, CommandStatus, Enrollment, HostProfile, ProfileStatus
    from mdm.profiles.services import create_profile

    apns_url = f"https://127.0.0.1:{free_port()}"
    settings.MDM = {
        **settings.MDM,
        "DIR": str(tmp_path / "mdm"),
        "SERVER_URL": "",
        "PUSH_DISABLED": False,
        "DEV_APNS_URL": apns_url,
    }
    # Detail queries every 2 s: osquery's macos_profiles soon sees what MDM installed.
    settings.OSQUERY = {**settings.OSQUERY, "DETAIL_UPDATE_INTERVAL": 2}
    services.setup(dev=True)
    EnrollSecret.objects.create(secret="sim-mdm-secret")
    identifier, name, payload = DEMO_PROFILES[0]
    create_profile(team=None, data=_demo_mobileconfig(identifier, name, payload))
    config = SimulationConfig(
        url=live_server.url,
        enroll_secret="sim-mdm-secret",
        count=3,
        seed=11,
        start_period=0.2,
        templates="ubuntu:1",  # no Mac in the mix: --mdm 2 makes the first two hosts Macs
        duration=8.0,
        progress_interval=60,
        agent=AgentSettings(distributed_interval=0.5, logger_tls_period=1, follow_config_options=False),
        # A long poll period: a command queued later only arrives this fast through a push.
        mdm=MdmSettings(
            count=2,
            interval=60.0,
            not_now_rate=0.0,
            standin_dir=str(standin_dir()),
            apns_url=apns_url,
        ),
    )
    outcome: dict[str, object] = {}

    def queue_after_enrollment() -> None:
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            done = Command.objects.filter(request_type="DeviceInformation", status=CommandStatus.ACKNOWLEDGED)
            if done.count() == 2:
                break
            time.sleep(0.1)
        time.sleep(0.3)  # both Macs are back to waiting out their 60 s period
        hosts = list(Host.objects.filter(mdm_enrollment__enrolled=True))
        outcome["queued"] = time.monotonic()
        outcome["sent"] = services.send(hosts, "ProfileList").commands

    worker = threading.Thread(target=queue_after_enrollment)
    worker.start()
    lines: list[str] = []
    stats = asyncio.run(simulate(config, out=lines.append))
    worker.join()

    assert stats.mdm_enrollments == 2, (stats.last_errors, lines)
    assert stats.requests["mdm/scep"] == 6 and stats.failures["mdm/scep"] == 0  # caps, cert, PKIOperation
    assert all(n == 0 for name, n in stats.failures.items() if name.startswith("mdm/")), stats.last_errors
    assert any("APNs stand-in listening" in line for line in lines), lines
    enrollments = list(Enrollment.objects.select_related("host", "identity"))
    assert len(enrollments) == 2 and all(e.enrolled and e.identity_id for e in enrollments)
    # One host per machine: each Mac landed on the host its osquery enrolled, and shows as MDM-enrolled.
    assert Host.objects.count() == 3
    for enrollment in enrollments:
        host = enrollment.host
        assert host.platform == "darwin" and host.node_key_hash, host
        assert host.uuid == enrollment.udid and host.hardware_serial == enrollment.serial_number
        assert Host.objects.filter(mdm_enrollment__enrolled=True, pk=host.pk).exists()
    info = Command.objects.filter(request_type="DeviceInformation")
    assert info.count() == 2 and all(c.status == CommandStatus.ACKNOWLEDGED for c in info)
    assert all(e.model_name and e.os_version for e in Enrollment.objects.all())
    # Queued while the Macs slept: the push woke them and they answered at once.
    listed = Command.objects.filter(request_type="ProfileList")
    assert listed.count() == 2 and all(c.status == CommandStatus.ACKNOWLEDGED for c in listed), [
        c.state for c in listed
    ]
    assert stats.mdm_pushes >= 2 and stats.mdm_commands["ProfileList:Acknowledged"] == 2
    assert all(e.push_failures == 0 for e in Enrollment.objects.all())
    # The reconciler sent the profile, the Macs installed it, and their osquery verified it.
    rows = list(HostProfile.objects.filter(identifier=identifier))
    assert len(rows) == 2 and {r.host_id for r in rows} == {e.host_id for e in enrollments}
    assert all(r.status == ProfileStatus.VERIFIED for r in rows), [(r.status, r.detail) for r in rows]
    assert "mdm 2 enrolled" in lines[-1] or any("mdm 2 enrolled" in line for line in lines), lines
