"""Orbit (fleetd) enrolment and config (fleet-reference §10), through the real endpoints."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hosts import services
from hosts.models import FleetSettings, Host
from hosts.nodekeys import hash_node_key
from tests.agent import Agent

pytestmark = pytest.mark.django_db

ENROLL = "/api/fleet/orbit/enroll"
CONFIG = "/api/fleet/orbit/config"
CONFIG_FIELDS = {
    "script_execution_timeout",
    "command_line_startup_flags",
    "extensions",
    "nudge_config",
    "notifications",
    "update_channels",
}


def orbit_post(client, url: str, body: Any):
    return client.post(url, data=json.dumps(body), content_type="application/json")


def orbit_body(secret: str, hardware_uuid: str = "uuid-0001", **overrides: str) -> dict[str, str]:
    """What orbit sends to /api/fleet/orbit/enroll (fleet-reference §10)."""
    return {
        "enroll_secret": secret,
        "hardware_uuid": hardware_uuid,
        "hardware_serial": "C02ORBIT0001",
        "hostname": "orbit-mac.local",
        "platform": "darwin",
        "osquery_identifier": "",
        "computer_name": "orbit-mac",
        "hardware_model": "Mac14,2",
        **overrides,
    }


def orbit_enroll(client, secret: str, hardware_uuid: str = "uuid-0001", **overrides: str) -> str:
    response = orbit_post(client, ENROLL, orbit_body(secret, hardware_uuid, **overrides))
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"orbit_node_key"}
    return body["orbit_node_key"]


def assert_node_invalid(response) -> None:
    assert response.status_code == 401
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    assert body["node_invalid"] is True


# --- Enrolment -------------------------------------------------------------------------------------


def test_enroll_with_good_secret_returns_orbit_node_key_and_creates_host(client, global_secret):
    key = orbit_enroll(client, global_secret)

    assert isinstance(key, str) and len(key) >= 32
    host = Host.objects.get()
    assert host.osquery_host_id == "uuid-0001"
    assert host.uuid == "uuid-0001"
    assert (host.hostname, host.computer_name, host.platform) == ("orbit-mac.local", "orbit-mac", "darwin")
    assert (host.hardware_serial, host.hardware_model) == ("C02ORBIT0001", "Mac14,2")
    assert host.team is None
    assert host.orbit_node_key_hash == hash_node_key(key)
    assert key not in str(Host.objects.values().get())  # only the hash is stored
    assert host.node_key_hash is None  # osquery has not enrolled yet


def test_enroll_secret_is_whitespace_trimmed(client, global_secret):
    orbit_enroll(client, f"  {global_secret}\n")
    assert Host.objects.count() == 1


def test_team_secret_puts_orbit_host_in_team(client, team, team_secret):
    orbit_enroll(client, team_secret)
    assert Host.objects.get().team == team


@pytest.mark.parametrize(
    "secret",
    ["wrong-secret", "", None, 42, ["global-secret-123"]],
    ids=["wrong", "empty", "null", "int", "list"],
)
def test_enroll_with_bad_secret_is_401_node_invalid(client, global_secret, secret):
    assert_node_invalid(orbit_post(client, ENROLL, orbit_body(secret)))
    body = orbit_body(global_secret)
    del body["enroll_secret"]
    assert_node_invalid(orbit_post(client, ENROLL, body))
    assert Host.objects.count() == 0


def test_enroll_without_any_hardware_identity_is_refused(client, global_secret):
    response = orbit_post(client, ENROLL, orbit_body(global_secret, hardware_uuid="", osquery_identifier=""))
    assert_node_invalid(response)
    assert Host.objects.count() == 0


@pytest.mark.parametrize("field", ["hardware_uuid", "hostname", "platform", "hardware_serial"])
def test_enroll_with_non_string_field_is_400(client, global_secret, field):
    body: dict[str, Any] = orbit_body(global_secret)
    body[field] = ["not", "a", "string"]
    response = orbit_post(client, ENROLL, body)
    assert response.status_code == 400
    assert field in response.json()["error"] and "node_invalid" not in response.json()
    assert Host.objects.count() == 0


def test_reenrol_with_same_hardware_uuid_reuses_host_and_rotates_key(
    client, global_secret, team, team_secret
):
    first = orbit_enroll(client, global_secret)
    host_id = Host.objects.get().id
    assert orbit_post(client, CONFIG, {"orbit_node_key": first}).status_code == 200  # now cached

    second = orbit_enroll(client, team_secret, hostname="renamed.local")

    assert second != first
    assert Host.objects.count() == 1
    host = Host.objects.get()
    assert host.id == host_id and host.team == team
    assert host.orbit_node_key_hash == hash_node_key(second)
    assert host.hostname == "orbit-mac.local"  # known vitals are not overwritten by orbit
    assert orbit_post(client, CONFIG, {"orbit_node_key": second}).status_code == 200
    assert_node_invalid(orbit_post(client, CONFIG, {"orbit_node_key": first}))


def test_orbit_then_osquery_share_one_host_row(client, global_secret):
    orbit_key = orbit_enroll(client, global_secret, hardware_uuid="uuid-0001")
    agent = Agent(client, "uuid-0001", hostname="mac-1.local")
    agent.enroll(global_secret)

    host = Host.objects.get()
    assert host.orbit_node_key_hash == hash_node_key(orbit_key)
    assert host.node_key_hash == hash_node_key(agent.node_key)
    assert host.hostname == "mac-1.local"  # osquery's reported details win
    assert agent.authed("distributed/read").status_code == 200
    assert orbit_post(client, CONFIG, {"orbit_node_key": orbit_key}).status_code == 200


def test_osquery_then_orbit_share_one_host_row_and_keep_both_keys(client, global_secret):
    agent = Agent(client, "uuid-0001")
    agent.enroll(global_secret)
    host_id = Host.objects.get().id
    orbit_key = orbit_enroll(client, global_secret, osquery_identifier="uuid-0001", hardware_uuid="HW-UUID-1")

    host = Host.objects.get()
    assert host.id == host_id
    assert host.orbit_node_key_hash == hash_node_key(orbit_key)
    # Orbit enrolling does not log osquery out.
    assert host.node_key_hash == hash_node_key(agent.node_key)
    assert agent.authed("distributed/read").status_code == 200
    assert agent.authed("config").status_code == 200


def test_hardware_uuid_matches_the_osquery_host_identifier(client, global_secret):
    Agent(client, "uuid-0001").enroll(global_secret)
    orbit_enroll(client, global_secret, hardware_uuid="uuid-0001")
    assert Host.objects.count() == 1


def test_different_hardware_gets_different_hosts(client, global_secret):
    a = orbit_enroll(client, global_secret, hardware_uuid="uuid-A")
    b = orbit_enroll(client, global_secret, hardware_uuid="uuid-B")
    assert a != b and Host.objects.count() == 2


def test_orbit_and_osquery_keys_are_not_interchangeable(client, global_secret):
    orbit_key = orbit_enroll(client, global_secret)
    agent = Agent(client, "uuid-0001")
    agent.enroll(global_secret)

    osquery_with_orbit_key = agent.post("distributed/read", {"node_key": orbit_key})
    assert osquery_with_orbit_key.status_code == 401 and osquery_with_orbit_key.json()["node_invalid"] is True
    assert_node_invalid(orbit_post(client, CONFIG, {"orbit_node_key": agent.node_key}))


# --- Config ----------------------------------------------------------------------------------------


def test_config_with_valid_key_has_fleets_fields(client, global_secret):
    key = orbit_enroll(client, global_secret)
    response = orbit_post(client, CONFIG, {"orbit_node_key": key})

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    config = response.json()
    assert set(config) == CONFIG_FIELDS and "error" not in config
    assert config["script_execution_timeout"] == 300
    assert config["command_line_startup_flags"] == {}
    assert config["extensions"] == {}
    assert config["nudge_config"] is None
    assert config["notifications"] == {}
    assert config["update_channels"] == {}


def test_config_follows_global_agent_options(client, global_secret):
    settings_row = FleetSettings.load()
    settings_row.agent_options = {
        **settings_row.agent_options,
        "command_line_flags": {"verbose": True},
        "script_execution_timeout": 600,
        "update_channels": {"orbit": "stable", "osqueryd": "5.12.1", "desktop": "edge"},
    }
    settings_row.save()
    key = orbit_enroll(client, global_secret)

    config = orbit_post(client, CONFIG, {"orbit_node_key": key}).json()
    assert config["command_line_startup_flags"] == {"verbose": True}
    assert config["script_execution_timeout"] == 600
    assert config["update_channels"] == {"orbit": "stable", "osqueryd": "5.12.1", "desktop": "edge"}


def test_team_agent_options_replace_global_ones(client, team, team_secret):
    team.agent_options = {"config": {"options": {}}, "command_line_flags": {"disable_tables": "curl"}}
    team.save()
    key = orbit_enroll(client, team_secret)
    config = orbit_post(client, CONFIG, {"orbit_node_key": key}).json()
    assert config["command_line_startup_flags"] == {"disable_tables": "curl"}
    assert config["script_execution_timeout"] == 300


@pytest.mark.parametrize(
    "body",
    [
        {"orbit_node_key": "not-a-key-this-server-issued"},
        {"orbit_node_key": ""},
        {"orbit_node_key": None},
        {"orbit_node_key": 12345},
        {"orbit_node_key": ["k"]},
        {},
        {"node_key": "k"},
    ],
    ids=["unknown", "empty", "null", "int", "list", "missing", "osquery-field"],
)
def test_config_with_unknown_or_missing_key_is_401_node_invalid(client, global_secret, body):
    orbit_enroll(client, global_secret)
    response = orbit_post(client, CONFIG, body)
    assert_node_invalid(response)
    assert b'"node_invalid":true' in response.content


def test_config_for_a_deleted_host_is_node_invalid(client, global_secret):
    """Deleting a host must make orbit re-enroll, even right after a cached check-in."""
    key = orbit_enroll(client, global_secret)
    assert orbit_post(client, CONFIG, {"orbit_node_key": key}).status_code == 200
    services.delete_hosts([Host.objects.get().id])
    assert_node_invalid(orbit_post(client, CONFIG, {"orbit_node_key": key}))


@pytest.mark.parametrize("url", [ENROLL, CONFIG])
@pytest.mark.parametrize(
    "data", [b"", b"not json", b"{", b"[]", b'"orbit_node_key"', b"null"], ids=lambda d: repr(d)
)
def test_bad_json_is_400(client, global_secret, url, data):
    response = client.post(url, data=data, content_type="application/json")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] and "node_invalid" not in body
    assert Host.objects.count() == 0


@pytest.mark.parametrize("url", [ENROLL, CONFIG])
def test_orbit_endpoints_only_accept_post(client, url):
    response = client.get(url)
    assert response.status_code == 405 and response["Allow"] == "POST"
    assert response.json()["error"]


def test_oversized_orbit_config_request_is_413(client, global_secret, settings):
    key = orbit_enroll(client, global_secret)
    settings.OSQUERY = {**settings.OSQUERY, "MAX_REQUEST_SIZE": 256}
    response = orbit_post(client, CONFIG, {"orbit_node_key": key, "padding": "x" * 1024})
    assert response.status_code == 413 and response.json()["error"]


def test_gzip_orbit_config_is_accepted(client, global_secret):
    import gzip

    key = orbit_enroll(client, global_secret)
    data = gzip.compress(json.dumps({"orbit_node_key": key}).encode())
    response = client.post(CONFIG, data=data, content_type="application/json", HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 200 and set(response.json()) == CONFIG_FIELDS


def test_config_with_scripts_costs_at_most_two_queries(client, global_secret, django_assert_max_num_queries):
    key = orbit_enroll(client, global_secret)
    FleetSettings.load()
    with django_assert_max_num_queries(2):
        assert orbit_post(client, CONFIG, {"orbit_node_key": key}).status_code == 200
