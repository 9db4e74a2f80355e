"""Running scripts over REST: async, sync (waiting for orbit's answer), batch, results, cancel, the switch.

The host is played through orbit's real endpoints (``tests.scripts_support``): its config lists
the pending execution ids, ``scripts/request`` hands the script over, ``scripts/result`` reports.
"""

from __future__ import annotations

import pytest

from activities.models import Activity
from hosts.choices import Role
from hosts.models import Label, LabelMembership, Team
from hostscripts import messages
from hostscripts.models import Script, ScriptRun
from tests.factories import api_for, make_host, user_with_role
from tests.scripts_support import (
    BATCH,
    RUN,
    SYNC,
    answer_when_queued,
    fetch_script,
    orbit_host,
    pending_ids,
    post_result,
    results,
    switch_scripts,
)

RESULT_FIELDS = {
    "script_contents", "script_id", "script_name", "exit_code", "output", "message", "runtime", "timeout",
    "host_id", "hostname", "host_timeout", "execution_id", "created_at", "sent_at", "finished_at", "status",
    "kind", "requested_by",
}  # fmt: skip


@pytest.fixture
def admin(db):
    return user_with_role("admin", Role.ADMIN)


@pytest.fixture
def api(admin):
    return api_for(admin)


@pytest.fixture
def linux(db):
    return orbit_host("web-1", "ubuntu")


def test_async_run_then_orbit_runs_it_and_the_result_reads_like_fleets(api, client, linux):
    response = api.post(RUN, {"host_id": linux.pk, "script_contents": "echo hi"}, format="json")
    assert response.status_code == 202, response.content
    execution_id = response.json()["execution_id"]
    assert response.json() == {"host_id": linux.pk, "execution_id": execution_id}

    pending = api.get(results(f"{execution_id}/")).json()
    assert set(pending) == RESULT_FIELDS
    assert (pending["status"], pending["exit_code"], pending["message"]) == (
        "pending",
        None,
        messages.PENDING,
    )
    assert pending["requested_by"] == "admin" and pending["hostname"] == "web-1"

    assert pending_ids(client, linux) == [execution_id]
    script = fetch_script(client, linux, execution_id).json()
    assert script["script_contents"] == "echo hi" and script["exit_code"] is None
    post_result(client, linux, execution_id, output="hi\n", exit_code=0, runtime=2)

    done = api.get(results(f"{execution_id}/")).json()
    assert done["status"] == "ran" and done["exit_code"] == 0 and done["output"] == "hi\n"
    assert done["runtime"] == 2 and done["message"] == "" and done["host_timeout"] is False
    assert done["script_contents"] == "echo hi" and done["script_id"] is None and done["kind"] == "script"
    assert pending_ids(client, linux) == []
    activity = Activity.objects.get(type="ran_script")
    assert activity.details["execution_id"] == execution_id and activity.object_id == str(linux.pk)


def test_saved_script_by_id_and_by_name(api, client, team):
    host = orbit_host("web-2", "ubuntu", team=team)
    saved = Script.objects.create(name="uptime.sh", contents="uptime", team=team)
    by_id = api.post(RUN, {"host_id": host.pk, "script_id": saved.pk}, format="json")
    by_name = api.post(
        RUN, {"host_id": host.pk, "script_name": "uptime.sh", "team_id": team.pk}, format="json"
    )
    assert by_id.status_code == by_name.status_code == 202
    run = ScriptRun.objects.get(execution_id=by_name.json()["execution_id"])
    assert (run.script_id, run.script_name, run.contents) == (saved.pk, "uptime.sh", "uptime")
    assert pending_ids(client, host) == [by_id.json()["execution_id"], by_name.json()["execution_id"]]
    missing = api.post(RUN, {"host_id": host.pk, "script_name": "nope.sh"}, format="json")
    assert missing.status_code == 404


HOST = object()  # stands for the host's id in the bodies below


@pytest.mark.parametrize(
    "body",
    [
        {"host_id": HOST},
        {"script_contents": "echo"},
        {"host_id": HOST, "script_id": 1, "script_contents": "echo"},
        {"host_id": HOST, "script_contents": "echo", "team_id": 3},
        {"host_id": "x", "script_contents": "echo"},
    ],
    ids=["no-script", "no-host", "two-scripts", "team-with-contents", "bad-host-id"],
)
def test_bad_run_requests_are_400(api, linux, body):
    body = {key: linux.pk if value is HOST else value for key, value in body.items()}
    response = api.post(RUN, body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["message"]


def test_unknown_host_is_404_and_platform_mismatch_is_422(api):
    assert api.post(RUN, {"host_id": 999999, "script_contents": "echo"}, format="json").status_code == 404
    windows = orbit_host("pc-1", "windows")
    shell = Script.objects.create(name="a.sh", contents="echo")
    response = api.post(RUN, {"host_id": windows.pk, "script_id": shell.pk}, format="json")
    assert response.status_code == 422 and "Windows" in response.json()["message"]
    no_orbit = make_host("plain-1", platform="ubuntu")
    response = api.post(RUN, {"host_id": no_orbit.pk, "script_contents": "echo"}, format="json")
    assert response.status_code == 422 and "orbit" in response.json()["message"]


def test_invalid_adhoc_contents_are_refused(api, linux):
    too_big = api.post(RUN, {"host_id": linux.pk, "script_contents": "#" * 10_001}, format="json")
    assert too_big.status_code == 422 and "too large" in too_big.json()["message"]
    shebang = api.post(RUN, {"host_id": linux.pk, "script_contents": "#!/bin/bash\necho"}, format="json")
    assert shebang.status_code == 422 and "Interpreter" in shebang.json()["message"]


# --- sync ------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_sync_run_returns_the_result_posted_while_it_waits(settings):
    settings.SCRIPTS = {**settings.SCRIPTS, "SYNC_MAX_WAIT": 5.0, "SYNC_POLL_INTERVAL": 0.02}
    api = api_for(user_with_role("admin", Role.ADMIN))
    host = orbit_host("web-sync", "ubuntu")
    host_thread = answer_when_queued(host, output="synced\n", exit_code=0)
    response = api.post(SYNC, {"host_id": host.pk, "script_contents": "echo synced"}, format="json")
    host_thread.join(5)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["output"] == "synced\n" and body["exit_code"] == 0 and body["status"] == "ran"
    assert body["host_timeout"] is False and body["host_id"] == host.pk
    assert Activity.objects.get(type="ran_script").details["async"] is False


def test_sync_run_without_answer_is_408_with_host_timeout(api, linux, settings):
    settings.SCRIPTS = {**settings.SCRIPTS, "SYNC_MAX_WAIT": 0.1, "SYNC_POLL_INTERVAL": 0.02}
    response = api.post(SYNC, {"host_id": linux.pk, "script_contents": "sleep 100"}, format="json")
    assert response.status_code == 408, response.content
    body = response.json()
    assert body["host_timeout"] is True and body["exit_code"] is None and body["status"] == "pending"
    assert "didn't hear back" in body["message"]
    assert ScriptRun.objects.get(execution_id=body["execution_id"]).sync_request is True  # still queued


def test_result_messages_for_timeout_and_disabled_exit_codes(api, client, linux):
    first = api.post(RUN, {"host_id": linux.pk, "script_contents": "sleep 999"}, format="json").json()
    second = api.post(RUN, {"host_id": linux.pk, "script_contents": "echo"}, format="json").json()
    post_result(client, linux, first["execution_id"], output="", exit_code=-1)
    post_result(client, linux, second["execution_id"], output="", exit_code=-2)
    timed_out = api.get(results(f"{first['execution_id']}/")).json()
    assert timed_out["status"] == "error" and timed_out["message"].startswith("Timeout.")
    disabled = api.get(results(f"{second['execution_id']}/")).json()
    assert disabled["message"] == messages.DISABLED_ON_HOST


# --- batch -----------------------------------------------------------------------------------------


def test_batch_by_hosts_labels_and_team_with_skipped_reasons(api, team):
    web = orbit_host("web-3", "ubuntu", team=team)
    mac = orbit_host("mac-1", "darwin")
    pc = orbit_host("pc-2", "windows", team=team)
    plain = make_host("plain-2", platform="ubuntu")
    label = Label.objects.create(name="Servers", query="SELECT 1")
    LabelMembership.objects.create(label=label, host=mac)
    shell = Script.objects.create(name="patch.sh", contents="echo patched")

    response = api.post(
        BATCH,
        {"script_id": shell.pk, "host_ids": [plain.pk, 987654], "label_ids": [label.pk], "team_id": team.pk},
        format="json",
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["queued"] == 2 and len(body["execution_ids"]) == 2
    queued = set(
        ScriptRun.objects.filter(execution_id__in=body["execution_ids"]).values_list("host_id", flat=True)
    )
    assert queued == {web.pk, mac.pk}
    skipped = {entry["reason"]: entry["host_ids"] for entry in body["skipped"]}
    assert skipped == {
        "PowerShell (.ps1) scripts run on Windows only; shell (.sh) scripts on macOS and Linux only.": [
            pc.pk
        ],
        "Script can't run: the host has no fleetd (orbit) enrolled.": [plain.pk],
        "No such host (or not one you may see).": [987654],
    }


def test_batch_is_bounded_and_needs_targets(api, settings):
    settings.SCRIPTS = {**settings.SCRIPTS, "MAX_HOSTS_PER_RUN": 2}
    hosts = [orbit_host(f"h-{i}", "ubuntu") for i in range(3)]
    too_many = api.post(BATCH, {"script_contents": "echo", "host_ids": [h.pk for h in hosts]}, format="json")
    assert too_many.status_code == 400 and "at most 2" in too_many.json()["message"]
    assert api.post(BATCH, {"script_contents": "echo"}, format="json").status_code == 400
    assert not ScriptRun.objects.exists()


def test_batch_keeps_to_hosts_the_user_may_run_on(team):
    other = Team.objects.create(name="Other")
    mine, theirs = orbit_host("mine", "ubuntu", team=team), orbit_host("theirs", "ubuntu", team=other)
    api = api_for(user_with_role("m", Role.MAINTAINER, team))
    body = api.post(
        BATCH, {"script_contents": "echo", "host_ids": [mine.pk, theirs.pk]}, format="json"
    ).json()
    assert body["queued"] == 1
    assert body["skipped"] == [{"reason": "No such host (or not one you may see).", "host_ids": [theirs.pk]}]


# --- cancel, the host's queue --------------------------------------------------------------------------


def test_cancel_removes_the_run_from_orbits_queue(api, client, linux):
    execution_id = api.post(RUN, {"host_id": linux.pk, "script_contents": "echo"}, format="json").json()[
        "execution_id"
    ]
    cancelled = api.post(results(f"{execution_id}/cancel/"))
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert pending_ids(client, linux) == []
    assert fetch_script(client, linux, execution_id).status_code == 404
    again = api.post(results(f"{execution_id}/cancel/"))
    assert again.status_code == 409
    assert Activity.objects.filter(type="canceled_run_script").count() == 1


def test_cancel_a_finished_run_is_409(api, client, linux):
    execution_id = api.post(RUN, {"host_id": linux.pk, "script_contents": "echo"}, format="json").json()[
        "execution_id"
    ]
    post_result(client, linux, execution_id)
    response = api.post(results(f"{execution_id}/cancel/"))
    assert response.status_code == 409 and "already has a result" in response.json()["message"]


def test_host_scripts_upcoming_and_delete_upcoming(api, client, linux):
    ids = [
        api.post(RUN, {"host_id": linux.pk, "script_contents": f"echo {i}"}, format="json").json()[
            "execution_id"
        ]
        for i in range(3)
    ]
    post_result(client, linux, ids[0])
    runs = api.get(f"/api/v1/hosts/{linux.pk}/scripts/").json()
    assert [r["execution_id"] for r in runs["results"]] == ids[::-1]  # newest first
    assert "script_contents" not in runs["results"][0]
    upcoming = api.get(f"/api/v1/hosts/{linux.pk}/activities/upcoming/").json()
    assert [r["execution_id"] for r in upcoming["results"]] == ids[1:]  # queue order
    assert api.delete(f"/api/v1/hosts/{linux.pk}/activities/upcoming/{ids[1]}/").status_code == 204
    assert pending_ids(client, linux) == [ids[2]]
    assert api.delete(f"/api/v1/hosts/{linux.pk}/activities/upcoming/{ids[0]}/").status_code == 409
    assert api.get("/api/v1/hosts/999999/scripts/").status_code == 404


def test_results_list_filters(api, client, linux):
    first = api.post(RUN, {"host_id": linux.pk, "script_contents": "echo 1"}, format="json").json()
    api.post(RUN, {"host_id": linux.pk, "script_contents": "echo 2"}, format="json")
    post_result(client, linux, first["execution_id"], exit_code=3)
    listed = lambda q: [r["status"] for r in api.get(results(q)).json()["results"]]  # noqa: E731
    assert listed("") == ["pending", "error"]
    assert listed("?status=error") == ["error"]
    assert listed(f"?host_id={linux.pk}&status=pending") == ["pending"]
    assert listed("?host_id=1e99") == []


# --- the server-wide switch --------------------------------------------------------------------------


def test_switch_refuses_runs_with_403_and_hides_queued_scripts(api, client, linux):
    queued = api.post(RUN, {"host_id": linux.pk, "script_contents": "echo"}, format="json").json()
    switch_scripts(True)
    refused = api.post(RUN, {"host_id": linux.pk, "script_contents": "echo"}, format="json")
    assert refused.status_code == 403 and "disabled" in refused.json()["message"]
    assert (
        api.post(BATCH, {"script_contents": "echo", "host_ids": [linux.pk]}, format="json").status_code == 403
    )
    assert pending_ids(client, linux) == []
    switch_scripts(False)
    assert pending_ids(client, linux) == [queued["execution_id"]]


@pytest.mark.parametrize(
    ("url", "body"),
    [
        (RUN, {"host_id": 10**30, "script_contents": "echo"}),
        (RUN, {"host_id": HOST, "script_id": 10**30}),
        (RUN, {"host_id": HOST, "script_name": "x.sh", "team_id": 10**30}),
        (RUN, {"host_id": HOST, "script_contents": ["echo"]}),
        (BATCH, {"script_contents": "echo", "host_ids": [10**30]}),
        (BATCH, {"script_contents": "echo", "label_ids": ["x"]}),
        (BATCH, {"script_contents": "echo", "host_ids": "1,2"}),
        (SYNC, {"host_id": -1, "script_contents": "echo"}),
    ],
)
def test_hostile_run_requests_are_4xx_never_500(api, linux, url, body):
    body = {key: linux.pk if value is HOST else value for key, value in body.items()}
    response = api.post(url, body, format="json")
    assert 400 <= response.status_code < 500, response.content
    assert response.json()["message"]


def test_odd_result_urls_are_404(api):
    assert api.get(results("not-a-run/")).status_code == 404
    assert api.get(results(f"{'a' * 37}/")).status_code == 404
    assert api.post(results("nope/cancel/")).status_code == 404


def test_openapi_schema_documents_the_scripts_api(api):
    schema = api.get("/api/v1/schema/?format=json").json()
    for path in (
        "/api/v1/scripts/",
        "/api/v1/scripts/run/",
        "/api/v1/scripts/run/sync/",
        "/api/v1/scripts/run/batch/",
        "/api/v1/scripts/results/{execution_id}/",
        "/api/v1/scripts/results/{execution_id}/cancel/",
        "/api/v1/hosts/{host_id}/scripts/",
        "/api/v1/hosts/{host_id}/activities/upcoming/",
        "/api/v1/hosts/{host_id}/lock/",
    ):
        assert path in schema["paths"], path
