"""Enrolment through the real agent endpoints (fleet-reference §1.2, §1.10)."""

from __future__ import annotations

import pytest

from hosts.models import Host, HostSeenTime
from hosts.nodekeys import hash_node_key
from tests.agent import Agent

pytestmark = pytest.mark.django_db


def test_enroll_returns_node_key_and_fills_vitals_at_once(client, global_secret):
    agent = Agent(client, "uuid-A", hostname="alice-mbp.local", serial="C02ALICE")
    body = agent.enroll(global_secret)

    assert set(body) == {"node_key"} and len(body["node_key"]) >= 32
    host = Host.objects.get(osquery_host_id="uuid-A")
    assert host.hostname == "alice-mbp.local"
    assert host.computer_name == "alice-mbp"
    assert host.platform == "darwin"
    assert host.os_version == "macOS 14.5.0"
    assert host.osquery_version == "5.12.1"
    assert host.hardware_serial == "C02ALICE"
    assert host.cpu_brand == "Apple M2" and host.cpu_physical_cores == 8
    assert host.memory == 17179869184
    assert host.public_ip == "127.0.0.1"
    assert host.refetch_requested is True
    assert host.team is None


def test_node_key_is_stored_only_as_a_hash(agent):
    host = Host.objects.get()
    assert host.node_key_hash == hash_node_key(agent.node_key)
    assert agent.node_key not in str(Host.objects.values().get())


def test_team_secret_puts_host_in_team(client, team, team_secret):
    Agent(client, "uuid-T").enroll(team_secret)
    assert Host.objects.get().team == team


def test_reenrolment_reuses_the_row_moves_team_and_invalidates_old_key(
    client, global_secret, team, team_secret
):
    first = Agent(client, "uuid-R")
    first.enroll(global_secret)
    old_key = first.node_key
    again = Agent(client, "uuid-R")
    again.enroll(team_secret)

    assert Host.objects.count() == 1
    assert Host.objects.get().team == team
    assert again.node_key != old_key
    first.node_key = old_key
    stale = first.authed("distributed/read")
    assert stale.status_code == 401 and stale.json()["node_invalid"] is True
    assert again.authed("distributed/read").status_code == 200


def test_secret_is_whitespace_trimmed(client, global_secret):
    body = Agent(client, "uuid-W").enroll(f"  {global_secret}\n")
    assert "node_key" in body


@pytest.mark.parametrize("secret", ["wrong", "", None, 42])
def test_bad_secret_is_node_invalid_401(client, global_secret, secret):
    response = Agent(client, "uuid-X").post(
        "enroll", {"enroll_secret": secret, "host_identifier": "uuid-X", "host_details": {}}
    )
    assert response.status_code == 401
    body = response.json()
    assert body["node_invalid"] is True and body["error"]
    assert not Host.objects.exists()


def test_fleetctl_debug_connection_probe(client, global_secret):
    """`fleetctl debug connection` enrolls with --invalid-- and expects 401 + error + node_invalid."""
    response = Agent(client).post("enroll", {"enroll_secret": "--invalid--", "host_identifier": "x"})
    assert response.status_code == 401
    assert response.json()["node_invalid"] is True and response.json()["error"]


def test_v1_alias_enrolls_too(client, global_secret):
    agent = Agent(client, "uuid-V1", prefix="/api/v1/osquery")
    assert "node_key" in agent.enroll(global_secret)


def test_enroll_marks_host_seen(client, global_secret):
    from hosts import seen

    Agent(client, "uuid-S").enroll(global_secret)
    assert seen.flush() == 1
    assert HostSeenTime.objects.get().host.osquery_host_id == "uuid-S"


def test_host_identifier_uuid_mode(client, global_secret, settings):
    settings.OSQUERY = {**settings.OSQUERY, "HOST_IDENTIFIER": "uuid"}
    agent = Agent(client, "some-hostname")
    agent.details["osquery_info"]["uuid"] = "REAL-UUID"
    agent.enroll(global_secret)
    assert Host.objects.get().osquery_host_id == "REAL-UUID"


def test_enroll_cooldown_refuses_storms(client, global_secret, settings):
    settings.OSQUERY = {**settings.OSQUERY, "ENROLL_COOLDOWN": 60}
    Agent(client, "uuid-C").enroll(global_secret)
    body = Agent(client, "uuid-C").enroll(global_secret)
    assert body.get("node_invalid") is True and "too often" in body["error"]
