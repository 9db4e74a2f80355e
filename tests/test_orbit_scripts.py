"""orbit's script protocol, as Fleet serves it: pending ids in the config, request, result.

Through the real endpoints with a real orbit node key; the runs are queued through the service
every admin surface uses.
"""

from __future__ import annotations

import json

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from hosts.models import FleetSettings, Host, Team
from hostscripts import device_actions, services
from hostscripts.device_status import device_status
from hostscripts.models import EXIT_DISABLED, EXIT_TIMEOUT, ScriptKind, ScriptRun
from tests.test_orbit import orbit_enroll

pytestmark = pytest.mark.django_db

CONFIG = "/api/fleet/orbit/config"
REQUEST = "/api/fleet/orbit/scripts/request"
RESULT = "/api/fleet/orbit/scripts/result"


def post(client, url, body):
    return client.post(url, data=json.dumps(body), content_type="application/json")


@pytest.fixture
def linux_host(client, global_secret):
    key = orbit_enroll(client, global_secret, "uuid-linux-1", platform="ubuntu", hostname="web-1")
    return Host.objects.get(uuid="uuid-linux-1"), key


def pending_ids(client, key):
    response = post(client, CONFIG, {"orbit_node_key": key})
    assert response.status_code == 200, response.content
    return response.json()["notifications"].get("pending_script_execution_ids", [])


def test_config_lists_the_queue_oldest_first_and_only_the_hosts_own(client, global_secret, linux_host):
    host, key = linux_host
    other_key = orbit_enroll(client, global_secret, "uuid-linux-2", platform="debian")
    assert pending_ids(client, key) == []
    first = services.run_on_host(host, contents="echo one")
    second = services.run_on_host(host, contents="echo two")
    assert pending_ids(client, key) == [first.execution_id, second.execution_id]
    assert pending_ids(client, other_key) == []
    config = post(client, CONFIG, {"orbit_node_key": key}).json()
    assert config["script_execution_timeout"] == 300


def test_request_returns_the_script_and_result_is_stored_once(client, linux_host):
    host, key = linux_host
    run = services.run_on_host(host, contents="#!/bin/sh\necho hello")
    response = post(client, REQUEST, {"orbit_node_key": key, "execution_id": run.execution_id})
    assert response.status_code == 200
    body = response.json()
    assert body["script_contents"] == "#!/bin/sh\necho hello"
    assert body["execution_id"] == run.execution_id and body["host_id"] == host.pk
    assert body["exit_code"] is None
    result = {"orbit_node_key": key, "execution_id": run.execution_id, "output": "hello\n", "runtime": 2}
    assert post(client, RESULT, {**result, "exit_code": 0, "timeout": 300}).status_code == 200
    run.refresh_from_db()
    assert (run.output, run.exit_code, run.runtime, run.status) == ("hello\n", 0, 2, "ran")
    assert run.sent_at is not None and run.finished_at is not None
    # A repeat (orbit retrying) changes nothing; the config no longer lists the run.
    assert post(client, RESULT, {**result, "output": "again", "exit_code": 3}).status_code == 200
    run.refresh_from_db()
    assert (run.output, run.exit_code) == ("hello\n", 0)
    assert pending_ids(client, key) == []
    # orbit skips a script whose exit code is already set.
    assert (
        post(client, REQUEST, {"orbit_node_key": key, "execution_id": run.execution_id}).json()["exit_code"]
        == 0
    )


def test_output_keeps_its_last_10000_characters(client, linux_host):
    host, key = linux_host
    run = services.run_on_host(host, contents="yes | head -n 100000")
    output = "x" * 50_000 + "THE END"
    body = {
        "orbit_node_key": key,
        "execution_id": run.execution_id,
        "output": output,
        "runtime": 1,
        "exit_code": 0,
    }
    assert post(client, RESULT, body).status_code == 200
    run.refresh_from_db()
    assert len(run.output) == 10_000 and run.output.endswith("THE END")


@pytest.mark.parametrize(
    ("exit_code", "status"), [(EXIT_TIMEOUT, "error"), (EXIT_DISABLED, "error"), (7, "error")]
)
def test_timeouts_and_disabled_hosts_are_errors(client, linux_host, exit_code, status):
    host, key = linux_host
    run = services.run_on_host(host, contents="sleep 1000")
    body = {"orbit_node_key": key, "execution_id": run.execution_id, "output": "", "runtime": 300}
    assert post(client, RESULT, {**body, "exit_code": exit_code, "timeout": 300}).status_code == 200
    run.refresh_from_db()
    assert run.exit_code == exit_code and run.status == status
    assert run.timed_out == (exit_code == EXIT_TIMEOUT)


def test_another_hosts_execution_is_not_found_and_bad_keys_are_node_invalid(
    client, global_secret, linux_host
):
    host, key = linux_host
    other_key = orbit_enroll(client, global_secret, "uuid-linux-2", platform="debian")
    run = services.run_on_host(host, contents="echo mine")
    response = post(client, REQUEST, {"orbit_node_key": other_key, "execution_id": run.execution_id})
    assert response.status_code == 404 and "error" in response.json()
    body = {"orbit_node_key": other_key, "execution_id": run.execution_id, "output": "x", "exit_code": 0}
    assert post(client, RESULT, body).status_code == 404
    run.refresh_from_db()
    assert run.exit_code is None
    bad = post(client, REQUEST, {"orbit_node_key": "not-a-key", "execution_id": run.execution_id})
    assert bad.status_code == 401 and bad.json()["node_invalid"] is True


@pytest.mark.parametrize(
    "change",
    [
        {"execution_id": 5},
        {"execution_id": ""},
        {"execution_id": "x" * 37},
        {"exit_code": "0"},
        {"exit_code": 2**40},
        {"exit_code": True},
        {"output": ["list"]},
        {"runtime": "fast"},
    ],
)
def test_malformed_results_are_refused_and_store_nothing(client, linux_host, change):
    host, key = linux_host
    run = services.run_on_host(host, contents="echo hi")
    body = {
        "orbit_node_key": key,
        "execution_id": run.execution_id,
        "output": "",
        "runtime": 0,
        "exit_code": 0,
    }
    response = post(client, RESULT, {**body, **change})
    assert response.status_code == 400 and isinstance(response.json()["error"], str)
    run.refresh_from_db()
    assert run.exit_code is None


def test_missing_exit_code_is_refused(client, linux_host):
    host, key = linux_host
    run = services.run_on_host(host, contents="echo hi")
    response = post(client, RESULT, {"orbit_node_key": key, "execution_id": run.execution_id, "output": ""})
    assert response.status_code == 400


def test_a_cancelled_run_is_neither_listed_nor_sent_nor_stored(client, linux_host):
    host, key = linux_host
    run = services.run_on_host(host, contents="echo hi")
    assert services.cancel_run(run) is True
    assert services.cancel_run(run) is False
    assert pending_ids(client, key) == []
    assert post(client, REQUEST, {"orbit_node_key": key, "execution_id": run.execution_id}).status_code == 404
    body = {"orbit_node_key": key, "execution_id": run.execution_id, "output": "late", "exit_code": 0}
    assert post(client, RESULT, body).status_code == 200  # orbit is not made to retry forever
    run.refresh_from_db()
    assert run.status == "cancelled" and run.output == ""


def test_the_switch_hides_queued_scripts_but_not_device_actions(client, linux_host):
    host, key = linux_host
    script = services.run_on_host(host, contents="echo hi")
    FleetSettings.objects.filter(pk=1).update(scripts_disabled=True) or FleetSettings.objects.create(
        pk=1, scripts_disabled=True
    )
    services.forget_switch()
    lock = device_actions.request_action(host, ScriptKind.LOCK)
    assert pending_ids(client, key) == [lock.execution_id]
    assert (
        post(client, REQUEST, {"orbit_node_key": key, "execution_id": script.execution_id}).status_code == 403
    )
    with pytest.raises(services.ScriptError):
        services.run_on_host(host, contents="echo refused")


def test_timeout_follows_the_team_agent_options_within_bounds(client, global_secret):
    team = Team.objects.create(name="Slow", agent_options={"script_execution_timeout": 900})
    from hosts.models import EnrollSecret

    EnrollSecret.objects.create(secret="slow-secret-1", team=team)
    key = orbit_enroll(client, "slow-secret-1", "uuid-slow", platform="ubuntu")
    assert post(client, CONFIG, {"orbit_node_key": key}).json()["script_execution_timeout"] == 900
    run = services.run_on_host(Host.objects.get(uuid="uuid-slow"), contents="echo hi")
    assert run.timeout == 900
    assert services.timeout_for({"script_execution_timeout": 10**6}) == services.MAX_TIMEOUT
    assert services.timeout_for({"script_execution_timeout": "soon"}) == services.DEFAULT_TIMEOUT


def test_config_costs_a_constant_number_of_queries(client, linux_host):
    host, key = linux_host
    post(client, CONFIG, {"orbit_node_key": key})  # warm the switch cache
    for _ in range(5):
        services.run_on_host(host, contents="echo hi")
    with CaptureQueriesContext(connection) as queries:
        assert len(pending_ids(client, key)) == 5
    few = len(queries)
    for _ in range(10):
        services.run_on_host(host, contents="echo hi")
    with CaptureQueriesContext(connection) as queries:
        assert len(pending_ids(client, key)) == 15
    assert len(queries) == few <= 3


# --- which hosts can run what -------------------------------------------------------------------


def test_scripts_need_orbit_and_a_matching_platform(client, global_secret, agent):
    osquery_only = Host.objects.get()
    with pytest.raises(services.ScriptError, match="no fleetd"):
        services.run_on_host(osquery_only, contents="echo hi")
    orbit_enroll(client, global_secret, "uuid-win", platform="windows")
    windows = Host.objects.get(uuid="uuid-win")
    with pytest.raises(services.ScriptError, match="PowerShell"):
        services.run_on_host(windows, contents="echo hi", name="fix.sh")
    assert services.run_on_host(windows, contents="Write-Output hi").script_name == "script.ps1"
    Host.objects.filter(pk=windows.pk).update(scripts_enabled=False)
    windows.refresh_from_db()
    with pytest.raises(services.ScriptError, match="disabled for this host"):
        services.run_on_host(windows, contents="Write-Output hi")


@pytest.mark.parametrize(
    ("contents", "message"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("x" * 10_001, "too large"),
        ("#!/bin/bash\necho hi", "Interpreter"),
        ("#!/usr/bin/python3\nprint(1)", "Interpreter"),
        ("echo \x00", "plain text"),
        ("echo \ud800", "plain text"),
    ],
)
def test_bad_ad_hoc_scripts_are_refused(linux_host, contents, message):
    host, _ = linux_host
    with pytest.raises(services.ScriptError, match=message):
        services.run_on_host(host, contents=contents)
    assert not ScriptRun.objects.exists()


def test_zsh_and_sh_shebangs_are_accepted(linux_host):
    host, _ = linux_host
    assert services.run_on_host(host, contents="#!/bin/zsh\necho hi").status == "pending"
    assert services.run_on_host(host, contents="#! /bin/sh -e\necho hi").status == "pending"


# --- lock, unlock, wipe ---------------------------------------------------------------------------


def finish(client, key, run, exit_code=0):
    body = {"orbit_node_key": key, "execution_id": run.execution_id, "output": "ok", "runtime": 1}
    assert post(client, RESULT, {**body, "exit_code": exit_code}).status_code == 200


def test_lock_unlock_wipe_follow_the_device_status(client, linux_host):
    host, key = linux_host
    assert device_status(host.pk).as_fleet() == {"device_status": "unlocked", "pending_action": ""}
    with pytest.raises(services.ScriptError, match="not locked"):
        device_actions.request_action(host, ScriptKind.UNLOCK)
    lock = device_actions.request_action(host, ScriptKind.LOCK)
    assert "Built-in device action: lock" in lock.contents and lock.script_name == "linux_lock.sh"
    assert device_status(host.pk).as_fleet() == {"device_status": "unlocked", "pending_action": "lock"}
    with pytest.raises(services.ScriptError, match="pending lock"):
        device_actions.request_action(host, ScriptKind.WIPE)
    finish(client, key, lock)
    assert device_status(host.pk).status == "locked"
    with pytest.raises(services.ScriptError, match="already locked"):
        device_actions.request_action(host, ScriptKind.LOCK)
    unlock = device_actions.request_action(host, ScriptKind.UNLOCK)
    finish(client, key, unlock, exit_code=1)  # a failed unlock leaves the host locked
    assert device_status(host.pk).as_fleet() == {"device_status": "locked", "pending_action": ""}
    wipe = device_actions.request_action(host, ScriptKind.WIPE)
    finish(client, key, wipe)
    assert device_status(host.pk).status == "wiped"
    for kind in (ScriptKind.LOCK, ScriptKind.UNLOCK, ScriptKind.WIPE):
        with pytest.raises(services.ScriptError, match="wiped"):
            device_actions.request_action(host, kind)


def test_windows_gets_powershell_and_macos_waits_for_mdm(client, global_secret):
    orbit_enroll(client, global_secret, "uuid-win", platform="windows")
    run = device_actions.request_action(Host.objects.get(uuid="uuid-win"), ScriptKind.LOCK)
    assert run.script_name == "windows_lock.ps1" and "Disable-LocalUser" in run.contents
    orbit_enroll(client, global_secret, "uuid-mac", platform="darwin")
    with pytest.raises(services.ScriptError, match="MDM"):
        device_actions.request_action(Host.objects.get(uuid="uuid-mac"), ScriptKind.LOCK)


def test_a_cancelled_lock_is_no_longer_pending(client, linux_host):
    host, _ = linux_host
    lock = device_actions.request_action(host, ScriptKind.LOCK)
    services.cancel_run(lock)
    assert device_status(host.pk).as_fleet() == {"device_status": "unlocked", "pending_action": ""}
    cache.clear()


# --- capabilities -------------------------------------------------------------------------------


def test_orbit_responses_advertise_what_is_implemented(client, global_secret):
    """orbit posts Desktop tokens only to a server that lists token_rotation (Fleet's header)."""
    ping = client.head("/api/fleet/orbit/ping")
    assert ping.status_code == 200
    assert set(ping["X-Fleet-Capabilities"].split(",")) == {"orbit_endpoints", "token_rotation"}
    response = post(
        client,
        "/api/fleet/orbit/enroll",
        {"enroll_secret": global_secret, "hardware_uuid": "uuid-cap", "platform": "ubuntu"},
    )
    assert response.status_code == 200 and "token_rotation" in response["X-Fleet-Capabilities"]
    refused = post(client, CONFIG, {"orbit_node_key": "wrong"})
    assert refused.status_code == 401 and "orbit_endpoints" in refused["X-Fleet-Capabilities"]
    assert client.post("/api/fleet/orbit/ping").status_code == 405


# --- the library's names --------------------------------------------------------------------------


def test_names_are_unique_per_scope_in_the_database_too():
    """Global scripts have no team (NULL): the constraint holds for them on MariaDB as well."""
    from django.db import IntegrityError, transaction

    from hostscripts.models import Script

    team = Team.objects.create(name="Ops")
    Script.objects.create(name="fix.sh", contents="echo 1")
    Script.objects.create(name="fix.sh", contents="echo 2", team=team)  # another scope: allowed
    for duplicate_team in (None, team):
        with pytest.raises(IntegrityError), transaction.atomic():
            Script.objects.create(name="fix.sh", contents="echo 3", team=duplicate_team)
    assert sorted(Script.objects.values_list("scope", flat=True)) == [0, team.pk]
