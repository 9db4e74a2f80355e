"""Lock, unlock and wipe over REST: Fleet's rules, the built-in scripts, and the host's device status."""

from __future__ import annotations

import pytest

from activities.models import Activity
from hosts.choices import Role
from hostscripts.models import ScriptKind, ScriptRun
from tests.factories import api_for, make_host, user_with_role
from tests.scripts_support import (
    fetch_script,
    orbit_host,
    pending_ids,
    post_result,
    switch_scripts,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(db):
    return api_for(user_with_role("admin", Role.ADMIN))


def act(api, host, kind: str):
    return api.post(f"/api/v1/hosts/{host.pk}/{kind}/")


def finish(client, host, execution_id: str, exit_code: int = 0) -> None:
    post_result(client, host, execution_id, output="done\n", exit_code=exit_code)


def detail(api, host) -> dict:
    body = api.get(f"/api/v1/hosts/{host.pk}/").json()
    return {"device_status": body["device_status"], "pending_action": body["pending_action"]}


def test_lock_then_unlock_a_linux_host(api, client):
    host = orbit_host("web-1", "ubuntu")
    assert detail(api, host) == {"device_status": "unlocked", "pending_action": ""}

    locked = act(api, host, "lock")
    assert locked.status_code == 202, locked.content
    body = locked.json()
    assert body["device_status"] == "unlocked" and body["pending_action"] == "lock"
    run = ScriptRun.objects.get(execution_id=body["execution_id"])
    assert run.kind == ScriptKind.LOCK and run.script_name == "linux_lock.sh"
    assert pending_ids(client, host) == [run.execution_id]
    assert "usermod --expiredate 1" in fetch_script(client, host, run.execution_id).json()["script_contents"]

    double = act(api, host, "lock")
    assert double.status_code == 409 and "pending lock" in double.json()["message"]
    finish(client, host, run.execution_id)
    assert detail(api, host) == {"device_status": "locked", "pending_action": ""}
    assert act(api, host, "lock").status_code == 409  # already locked

    unlocked = act(api, host, "unlock")
    assert unlocked.status_code == 202
    finish(client, host, unlocked.json()["execution_id"])
    assert detail(api, host)["device_status"] == "unlocked"
    types = set(Activity.objects.values_list("type", flat=True))
    assert {"locked_host", "unlocked_host"} <= types


def test_unlock_needs_a_locked_host_and_a_failed_lock_leaves_it_unlocked(api, client):
    host = orbit_host("pc-1", "windows")
    refused = act(api, host, "unlock")
    assert refused.status_code == 409 and "not locked" in refused.json()["message"]
    lock = act(api, host, "lock").json()
    assert ScriptRun.objects.get(execution_id=lock["execution_id"]).script_name == "windows_lock.ps1"
    finish(client, host, lock["execution_id"], exit_code=1)
    assert detail(api, host) == {"device_status": "unlocked", "pending_action": ""}


def test_wipe_then_nothing_more(api, client):
    host = orbit_host("web-2", "ubuntu")
    wipe = act(api, host, "wipe")
    assert wipe.status_code == 202 and wipe.json()["pending_action"] == "wipe"
    finish(client, host, wipe.json()["execution_id"])
    assert detail(api, host)["device_status"] == "wiped"
    for kind in ("lock", "unlock", "wipe"):
        response = act(api, host, kind)
        assert response.status_code == 409 and "wiped" in response.json()["message"]
    assert Activity.objects.filter(type="wiped_host").count() == 1


def test_macos_and_hosts_without_orbit_are_refused(api):
    mac = orbit_host("mac-1", "darwin")
    response = act(api, mac, "lock")
    assert response.status_code == 409 and "MDM" in response.json()["message"]
    plain = make_host("plain-1", platform="ubuntu")
    assert act(api, plain, "wipe").status_code == 409
    assert not ScriptRun.objects.exists()


def test_device_actions_work_while_scripts_are_disabled(api, client):
    host = orbit_host("web-3", "ubuntu")
    switch_scripts(True)
    response = act(api, host, "lock")
    assert response.status_code == 202
    assert pending_ids(client, host) == [response.json()["execution_id"]]  # still handed to orbit


def test_cancelling_a_pending_lock_clears_the_pending_action(api):
    host = orbit_host("web-4", "ubuntu")
    execution_id = act(api, host, "lock").json()["execution_id"]
    assert api.post(f"/api/v1/scripts/results/{execution_id}/cancel/").status_code == 200
    assert detail(api, host) == {"device_status": "unlocked", "pending_action": ""}
    assert Activity.objects.filter(type="canceled_lock_host").exists()


def test_host_list_leaves_device_status_out(api):
    for i in range(3):
        orbit_host(f"web-{i}", "ubuntu")
    listed = api.get("/api/v1/hosts/").json()["results"]
    assert listed and all("device_status" not in host and "pending_action" not in host for host in listed)
