"""Scripts in the console: the library, the host page's Scripts block, the host list's action, lock and
wipe confirmations, the runs pages, and the Fleet settings switch."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile

from activities.models import Activity
from hosts.choices import Role
from hosts.models import FleetSettings, Team
from hostscripts import services
from hostscripts.models import Script, ScriptKind, ScriptRun
from tests.factories import make_host, user_with_role
from tests.scripts_support import orbit_host, post_result

pytestmark = pytest.mark.django_db

LIBRARY = "/admin/hostscripts/script/"
RUNS = "/admin/hostscripts/scriptrun/"
HOSTS = "/admin/hosts/host/"


@pytest.fixture
def admin_client(client):
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    return client


def logged_in(client, role: str, team: Team | None = None):
    client.force_login(user_with_role(f"{role}-user", role, team))
    return client


def script_activities() -> list[str]:
    return list(
        Activity.objects.filter(type__endswith="_script").order_by("id").values_list("type", flat=True)
    )


# --- the library -----------------------------------------------------------------------------------


def test_add_a_script_with_a_form_error_then_correctly(admin_client, team):
    bad = admin_client.post(
        f"{LIBRARY}add/", {"name": "fix.sh", "team": team.pk, "contents": "#!/usr/bin/env python\nprint(1)"}
    )
    assert bad.status_code == 200
    assert "Interpreter not supported" in str(bad.context["adminform"].form.errors["contents"])
    assert not Script.objects.exists()

    good = admin_client.post(
        f"{LIBRARY}add/", {"name": "fix.sh", "team": team.pk, "contents": "echo fixed\r\n"}
    )
    assert good.status_code == 302, good.context and good.context["adminform"].form.errors
    script = Script.objects.get()
    assert (script.name, script.team, script.contents) == ("fix.sh", team, "echo fixed\n")
    assert script.author.username == "root"
    assert script_activities() == ["added_script"]  # once, not twice

    duplicate = admin_client.post(f"{LIBRARY}add/", {"name": "fix.sh", "team": team.pk, "contents": "echo"})
    assert "already exists" in str(duplicate.context["adminform"].form.errors["name"])


def test_upload_names_the_script_and_list_shows_platforms(admin_client):
    upload = SimpleUploadedFile("setup.ps1", b"Write-Output 'hi'\n")
    response = admin_client.post(f"{LIBRARY}add/", {"name": "", "team": "", "contents": "", "upload": upload})
    assert response.status_code == 302
    assert Script.objects.get().name == "setup.ps1"
    page = admin_client.get(LIBRARY).content.decode()
    assert "setup.ps1" in page and "Windows" in page and "Global" in page

    binary = SimpleUploadedFile("blob.sh", b"\xff\xfe\x00")
    refused = admin_client.post(f"{LIBRARY}add/", {"name": "", "team": "", "contents": "", "upload": binary})
    assert "Only plain text allowed" in str(refused.context["adminform"].form.errors["upload"])


def test_edit_and_delete_record_fleets_activities(admin_client):
    script = services.save_script(name="a.sh", contents="echo 1", team_id=None)
    edited = admin_client.post(f"{LIBRARY}{script.pk}/change/", {"name": "a.sh", "contents": "echo 2"})
    assert edited.status_code == 302
    assert Script.objects.get().contents == "echo 2"
    deleted = admin_client.post(f"{LIBRARY}{script.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 302 and not Script.objects.exists()
    assert script_activities() == ["added_script", "edited_script", "deleted_script"]


def test_team_maintainer_must_choose_their_team_and_observer_only_reads(client, team):
    Script.objects.create(name="theirs.sh", contents="echo", team=Team.objects.create(name="Other"))
    maint = logged_in(client, Role.MAINTAINER, team)
    no_team = maint.post(f"{LIBRARY}add/", {"name": "x.sh", "team": "", "contents": "echo"})
    assert no_team.status_code == 200 and "team" in no_team.context["adminform"].form.errors
    assert (
        maint.post(f"{LIBRARY}add/", {"name": "x.sh", "team": team.pk, "contents": "echo"}).status_code == 302
    )
    assert [s.name for s in maint.get(LIBRARY).context["cl"].result_list] == ["x.sh"]

    observer = logged_in(client, Role.OBSERVER, team)
    assert observer.get(LIBRARY).status_code == 200
    assert observer.get(f"{LIBRARY}add/").status_code == 403
    assert observer.get(f"{RUNS}add/").status_code == 403


# --- the host page -------------------------------------------------------------------------------------


def test_host_page_shows_the_scripts_block_with_run_form_and_device_actions(admin_client):
    host = orbit_host("web-1", "ubuntu")
    Script.objects.create(name="uptime.sh", contents="uptime")
    run = services.run_on_host(host, contents="echo pending")
    page = admin_client.get(f"{HOSTS}{host.pk}/change/").content.decode()
    assert 'id="host-scripts"' in page and 'id="run-script-form"' in page
    assert "uptime.sh (global)" in page
    assert f'data-execution-id="{run.execution_id}" data-status="pending"' in page
    assert f'data-runs-url="/api/v1/hosts/{host.pk}/scripts/"' in page
    assert "hostscripts/host_scripts.js" in page and "<script>" not in page  # no inline script (CSP)
    assert 'id="device-status" data-status="unlocked"' in page
    assert f'action="{RUNS}host/{host.pk}/lock/"' in page and f'href="{RUNS}host/{host.pk}/wipe/"' in page


def test_observer_sees_runs_but_no_run_form(client, team):
    host = orbit_host("web-2", "ubuntu", team=team)
    services.run_on_host(host, contents="echo")
    page = logged_in(client, Role.OBSERVER, team).get(f"{HOSTS}{host.pk}/change/").content.decode()
    assert 'id="host-scripts"' in page and 'id="script-runs"' in page
    assert 'id="run-script-form"' not in page and "device-action-lock" not in page


def test_run_from_the_host_page_then_the_result_shows(admin_client, client):
    host = orbit_host("web-3", "ubuntu")
    response = admin_client.post(f"{RUNS}host/{host.pk}/run/", {"contents": "echo from console"})
    assert response.status_code == 302 and response["Location"].endswith(f"{host.pk}/change/#host-scripts")
    run = ScriptRun.objects.get()
    assert run.contents == "echo from console" and run.requested_by_name == "root"
    post_result(client, host, run.execution_id, output="from console\n")
    page = admin_client.get(f"{HOSTS}{host.pk}/change/").content.decode()
    assert 'data-status="ran"' in page and "from console\n</pre>" in page


def test_run_form_errors_come_back_on_the_form(admin_client):
    host = orbit_host("web-4", "ubuntu")
    empty = admin_client.post(f"{RUNS}host/{host.pk}/run/", {"contents": "  "})
    assert empty.status_code == 200 and "Choose a saved script or type one." in empty.content.decode()
    windows_only = Script.objects.create(name="win.ps1", contents="Write-Output 1")
    mismatch = admin_client.post(f"{RUNS}host/{host.pk}/run/", {"script": windows_only.pk})
    assert mismatch.status_code == 200 and "Windows only" in mismatch.content.decode()
    assert not ScriptRun.objects.exists()


def test_observer_cannot_post_runs_and_other_teams_host_is_not_found(client, team):
    host = orbit_host("web-5", "ubuntu", team=team)
    other = orbit_host("web-6", "ubuntu", team=Team.objects.create(name="Other"))
    observer = logged_in(client, Role.OBSERVER, team)
    assert observer.post(f"{RUNS}host/{host.pk}/run/", {"contents": "echo"}).status_code == 403
    assert observer.post(f"{RUNS}host/{other.pk}/run/", {"contents": "echo"}).status_code == 404
    assert not ScriptRun.objects.exists()


# --- lock, unlock, wipe -----------------------------------------------------------------------------------


def test_lock_button_queues_the_lock(admin_client):
    host = orbit_host("web-7", "ubuntu")
    response = admin_client.post(f"{RUNS}host/{host.pk}/lock/")
    assert response.status_code == 302
    assert ScriptRun.objects.get().kind == ScriptKind.LOCK
    page = admin_client.get(f"{HOSTS}{host.pk}/change/").content.decode()
    assert '<strong id="pending-action">lock</strong>' in page
    again = admin_client.post(f"{RUNS}host/{host.pk}/lock/")
    assert again.status_code == 200 and "pending lock" in again.content.decode()


def test_wipe_asks_for_the_hostname(admin_client):
    host = orbit_host("web-8.local", "ubuntu", computer_name="web-8")
    confirm = admin_client.get(f"{RUNS}host/{host.pk}/wipe/")
    assert confirm.status_code == 200 and "cannot be undone" in confirm.content.decode()
    wrong = admin_client.post(f"{RUNS}host/{host.pk}/wipe/", {"hostname": "web-9"})
    assert wrong.status_code == 200 and "not this host" in str(wrong.context["form"].errors["hostname"])
    assert not ScriptRun.objects.exists()
    right = admin_client.post(f"{RUNS}host/{host.pk}/wipe/", {"hostname": "web-8.local"})
    assert right.status_code == 302
    assert ScriptRun.objects.get().kind == ScriptKind.WIPE


def test_macos_lock_is_explained_not_offered(admin_client):
    mac = orbit_host("mac-1", "darwin")
    page = admin_client.get(f"{HOSTS}{mac.pk}/change/").content.decode()
    assert "device-action-lock" not in page
    refused = admin_client.post(f"{RUNS}host/{mac.pk}/lock/")
    assert refused.status_code == 200 and "MDM" in refused.content.decode()
    assert not ScriptRun.objects.exists()


# --- the host list's action ------------------------------------------------------------------------------


def test_run_script_action_asks_for_the_script_then_reports_queued_and_skipped(admin_client):
    linux = orbit_host("web-10", "ubuntu")
    pc = orbit_host("pc-1", "windows")
    plain = make_host("plain-1", platform="ubuntu")
    shell = Script.objects.create(name="patch.sh", contents="echo")
    data = {"action": "run_script_hosts", "_selected_action": [linux.pk, pc.pk, plain.pk], "index": 0}
    step = admin_client.post(HOSTS, data)
    assert step.status_code == 200 and "Run a script on hosts" in step.content.decode()
    done = admin_client.post(HOSTS, {**data, "script": shell.pk, "apply": "Run script"}, follow=True)
    text = done.content.decode()
    assert "Queued on 1 host:" in text
    assert "Skipped 1 host: PowerShell (.ps1) scripts run on Windows only" in text
    assert "Skipped 1 host: Script can&#x27;t run: the host has no fleetd" in text
    assert list(ScriptRun.objects.values_list("host_id", flat=True)) == [linux.pk]


def test_run_script_action_is_not_offered_to_observers(client, team):
    page = logged_in(client, Role.OBSERVER, team).get(HOSTS).content.decode()
    assert "run_script_hosts" not in page


# --- the runs pages ---------------------------------------------------------------------------------------


def test_run_list_and_page_with_output_and_cancel(admin_client, client):
    host = orbit_host("web-11", "ubuntu")
    done = services.run_on_host(host, contents="echo done")
    post_result(client, host, done.execution_id, output="<b>done</b>\n", exit_code=-1)
    pending = services.run_on_host(host, contents="echo later")

    listing = admin_client.get(RUNS)
    assert listing.status_code == 200
    assert {r.pk for r in listing.context["cl"].result_list} == {done.pk, pending.pk}
    assert [r.pk for r in admin_client.get(f"{RUNS}?status=error").context["cl"].result_list] == [done.pk]

    page = admin_client.get(f"{RUNS}{done.pk}/change/").content.decode()
    assert "&lt;b&gt;done&lt;/b&gt;" in page and "Timeout. Fleet stopped the script" in page
    assert 'id="cancel-run"' not in page
    pending_page = admin_client.get(f"{RUNS}{pending.pk}/change/").content.decode()
    assert 'id="cancel-run"' in pending_page
    cancelled = admin_client.post(
        f"{RUNS}cancel/{pending.execution_id}/", {"next": f"{RUNS}{pending.pk}/change/"}
    )
    assert cancelled.status_code == 302
    pending.refresh_from_db()
    assert pending.cancelled is True


def test_team_user_sees_their_teams_runs_only(client, team):
    mine = services.run_on_host(orbit_host("a", "ubuntu", team=team), contents="echo")
    theirs = services.run_on_host(
        orbit_host("b", "ubuntu", team=Team.objects.create(name="B")), contents="echo"
    )
    viewer = logged_in(client, Role.OBSERVER, team)
    assert [r.pk for r in viewer.get(RUNS).context["cl"].result_list] == [mine.pk]
    assert viewer.get(f"{RUNS}{theirs.pk}/change/").status_code == 302  # "not found": back to the index
    assert viewer.post(f"{RUNS}cancel/{mine.execution_id}/").status_code == 403


# --- the switch ---------------------------------------------------------------------------------------------


def test_fleet_settings_switch_takes_effect_at_once(admin_client):
    host = orbit_host("web-12", "ubuntu")
    assert services.scripts_disabled() is False  # now cached
    settings_row = FleetSettings.load()
    form = {
        "org_name": "",
        "org_logo_url": "",
        "org_logo_url_light_background": "",
        "contact_url": "",
        "transparency_url": "",
        "scripts_disabled": "on",
        "agent_options": "{}",
    }
    response = admin_client.post(f"/admin/hosts/fleetsettings/{settings_row.pk}/change/", form)
    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    assert services.scripts_disabled() is True
    page = admin_client.get(f"{HOSTS}{host.pk}/change/").content.decode()
    assert "Running scripts is disabled in the Fleet settings" in page
