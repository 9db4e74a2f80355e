"""A profile's status on a host: the device's answers and osquery's verification, end to end.

The device is played through the real command queue and result handlers; osquery through the
real agent endpoints (``distributed/read`` sends ``fleet_detail_query_macos_profiles``,
``distributed/write`` brings the rows back)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from hosts.models import Host
from hosts.services import request_refetch
from mdm.models import Enrollment, HostProfile
from mdm.pki.ca import create_ca
from mdm.profiles import reconciler, services, status
from tests.agent import Agent
from tests.mdm_profiles_support import answer, enrolled_mac, error_chain, mobileconfig, queued, row

pytestmark = pytest.mark.django_db
QUERY = "fleet_detail_query_macos_profiles"


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory):
    """An MDM CA (made once: RSA keys are slow): verification only runs where MDM is set up."""
    directory = tmp_path_factory.mktemp("mdm")
    create_ca(directory)
    return directory


@pytest.fixture(autouse=True)
def _mdm(settings, ca_dir):
    settings.MDM = {**settings.MDM, "PUSH_DISABLED": True, "DIR": str(ca_dir)}


@pytest.fixture
def mac(agent: Agent) -> tuple[Host, Enrollment]:
    """The osquery agent's host, enrolled in MDM too."""
    host = Host.objects.get()
    enrollment = Enrollment.objects.create(
        udid="UDID-1", host=host, enrolled=True, push_token="ab" * 32, push_magic="m"
    )
    return host, enrollment


def osquery_reports(agent: Agent, identifiers: list[str], query_status: int = 0, message: str = "") -> None:
    """One detail refresh: the host asks for its queries and answers them, profiles included."""
    request_refetch([Host.objects.get().pk])
    queries = agent.authed("distributed/read").json()["queries"]
    assert QUERY in queries and "macos_profiles" in queries[QUERY]
    rows = {name: [] for name in queries}
    rows[QUERY] = [
        {"display_name": i.title(), "identifier": i, "install_date": "2026-01-01 10:00:00 +0000"}
        for i in identifiers
    ]
    statuses = {name: 0 for name in queries}
    statuses[QUERY] = query_status
    body = {"queries": rows, "statuses": statuses, "messages": {QUERY: message} if message else {}}
    response = agent.authed("distributed/write", body)
    assert response.status_code == 200 and response.json() == {}


def install(host: Host, enrollment: Enrollment, identifier: str = "com.example.wifi") -> None:
    services.create_profile(team=host.team, data=mobileconfig(identifier, identifier))
    reconciler.reconcile()


def test_the_detail_query_goes_to_macs_only(client, global_secret):
    mac_agent = Agent(client, "uuid-mac")
    mac_agent.enroll(global_secret)
    linux = Agent(client, "uuid-linux", platform="ubuntu", hostname="linux-1", serial="L1")
    linux.enroll(global_secret)
    mac_read = mac_agent.authed("distributed/read").json()
    assert 'type = "Configuration"' in mac_read["queries"][QUERY]
    assert "name = 'macos_profiles'" in mac_read["discovery"][QUERY]  # fleetd's table: skipped without it
    assert QUERY not in linux.authed("distributed/read").json()["queries"]


def test_pending_verifying_verified(agent, mac):
    host, enrollment = mac
    install(host, enrollment)
    assert row(host).status == "pending"
    answer(enrollment, queued(enrollment)[0])
    assert row(host).status == "verifying"
    osquery_reports(agent, ["com.apple.mdm.other"])  # not there yet: keeps waiting
    assert row(host).status == "verifying"
    osquery_reports(agent, ["com.example.wifi", "com.fleetdm.fleet.mdm.apple"])
    hp = row(host)
    assert hp.status == "verified" and hp.detail == ""


def test_an_error_is_retried_once_then_failed(mac):
    host, enrollment = mac
    install(host, enrollment)
    first = queued(enrollment)[0]
    answer(enrollment, first, "Error", ErrorChain=error_chain(4001, text="The payload is malformed"))
    hp = row(host)
    assert hp.status == "pending" and hp.retries == 1 and hp.command_uuid != first.uuid
    assert "trying once more" in hp.detail and "The payload is malformed" in hp.detail
    second = queued(enrollment)[0]
    assert second.uuid == hp.command_uuid and second.request_type == "InstallProfile"
    answer(
        enrollment, second, "CommandFormatError", ErrorChain=error_chain(12, "MDMErrorDomain", "Bad format")
    )
    hp = row(host)
    assert hp.status == "failed" and hp.detail == "Bad format (MDMErrorDomain 12)"
    assert not queued(enrollment)


def test_an_error_without_an_error_chain_says_what_the_device_answered(mac):
    host, enrollment = mac
    install(host, enrollment)
    HostProfile.objects.update(retries=1)
    answer(enrollment, queued(enrollment)[0], "Error")
    assert row(host).detail == "The device answered Error."


def test_verified_then_missing_is_resent_then_failed(agent, mac):
    host, enrollment = mac
    install(host, enrollment)
    answer(enrollment, queued(enrollment)[0])
    osquery_reports(agent, ["com.example.wifi"])
    assert row(host).status == "verified"

    osquery_reports(agent, [])  # the user removed it
    hp = row(host)
    assert hp.status == "pending" and hp.retries == 1 and "sent it again" in hp.detail
    answer(enrollment, queued(enrollment)[0])
    osquery_reports(agent, ["com.example.wifi"])
    assert row(host).status == "verified"

    osquery_reports(agent, [])  # and again: no more retries
    hp = row(host)
    assert hp.status == "failed" and hp.detail == "The host's osquery does not report this profile."
    assert not queued(enrollment)


def test_a_failed_detail_query_changes_nothing(agent, mac):
    host, enrollment = mac
    install(host, enrollment)
    answer(enrollment, queued(enrollment)[0])
    osquery_reports(agent, ["com.example.wifi"])
    osquery_reports(agent, [], query_status=1, message="no such table: macos_profiles")
    assert row(host).status == "verified"


def test_verification_costs_one_read_and_one_write(agent, mac):
    host, enrollment = mac
    for i in range(5):
        install(host, enrollment, f"com.example.p{i}")
    for command in queued(enrollment):
        answer(enrollment, command)
    with CaptureQueriesContext(connection) as captured:
        status.verify_from_osquery(host, [{"identifier": f"com.example.p{i}"} for i in range(5)])
    assert len(captured) == 2
    assert set(HostProfile.objects.values_list("status", flat=True)) == {"verified"}
    with CaptureQueriesContext(connection) as captured:
        status.verify_from_osquery(host, [{"identifier": f"com.example.p{i}"} for i in range(5)])
    assert len(captured) == 1  # nothing to change


def test_nothing_is_verified_while_mdm_is_not_set_up(agent, mac, settings, tmp_path):
    host, enrollment = mac
    install(host, enrollment)
    answer(enrollment, queued(enrollment)[0])
    settings.MDM = {**settings.MDM, "DIR": str(tmp_path / "no-ca")}
    with CaptureQueriesContext(connection) as captured:
        status.verify_from_osquery(host, [{"identifier": "com.example.wifi"}])
    assert len(captured) == 0 and row(host).status == "verifying"


def test_verification_never_raises(mac, monkeypatch, caplog):
    host, _ = mac

    def broken(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(status, "verify_installed", broken)
    status.verify_from_osquery(host, [{"identifier": "x"}])
    assert "could not verify MDM profiles" in caplog.text


def test_profile_list_answers_verify_too(mac):
    host, enrollment = mac
    install(host, enrollment)
    answer(enrollment, queued(enrollment)[0])
    from mdm import queue

    listing = queue.enqueue(enrollment, "ProfileList", {})
    answer(enrollment, listing, ProfileList=[{"PayloadIdentifier": "com.example.wifi"}, {"Other": 1}, "junk"])
    assert row(host).status == "verified"


def test_answers_from_another_device_or_to_replaced_commands_change_nothing(mac):
    host, enrollment = mac
    install(host, enrollment)
    command = queued(enrollment)[0]
    _, stranger = enrolled_mac("stranger")
    command.enrollment = stranger
    command.save(update_fields=["enrollment"])  # as if the uuid had been reused by another device
    answer(stranger, command)
    assert row(host).status == "pending"


def test_not_now_keeps_it_pending(mac):
    host, enrollment = mac
    install(host, enrollment)
    answer(enrollment, queued(enrollment)[0], "NotNow")
    hp = row(host)
    assert hp.status == "pending" and hp.detail == status.NOT_NOW_DETAIL
    answer(enrollment, hp.command_uuid)  # the device asks for it again at its next Idle
    assert row(host).status == "verifying"
