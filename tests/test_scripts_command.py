"""``manage.py run_script``: targets, script sources, waiting for results, cancelling, the actor recorded."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from activities.models import Activity
from hosts.choices import Role
from hosts.models import Label, LabelMembership, Team
from hostscripts.models import Script, ScriptRun
from tests.factories import make_host, user_with_role
from tests.scripts_support import answer_when_queued, orbit_host, pending_ids, switch_scripts

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("run_script", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_queue_on_hosts_by_name_and_id_without_waiting(client):
    web = orbit_host("web-1.local", "ubuntu", computer_name="web-1")
    db = orbit_host("db-1", "debian")
    out, _ = run("--host", "web-1", "--host", str(db.pk), "--contents", "uptime")
    runs = ScriptRun.objects.order_by("host_id")
    assert [r.host_id for r in runs] == sorted([web.pk, db.pk])
    assert all(r.execution_id in out for r in runs)
    assert pending_ids(client, web) == [runs.get(host=web).execution_id]
    activity = Activity.objects.filter(type="ran_script").first()
    assert activity.surface == "command" and activity.actor_id is None and activity.actor_name
    assert runs.first().requested_by_name == activity.actor_name  # the operator's account


def test_label_and_team_targets_with_a_saved_script(team):
    in_team = orbit_host("web-2", "ubuntu", team=team)
    labelled = orbit_host("web-3", "ubuntu")
    label = Label.objects.create(name="Web", query="SELECT 1")
    LabelMembership.objects.create(label=label, host=labelled)
    orbit_host("web-4", "ubuntu")  # neither
    Script.objects.create(name="patch.sh", contents="echo patched", team=None)
    run("--label", "Web", "--team", team.name, "--script-name", "patch.sh")
    assert set(ScriptRun.objects.values_list("host_id", flat=True)) == {in_team.pk, labelled.pk}
    assert set(ScriptRun.objects.values_list("contents", flat=True)) == {"echo patched"}


def test_file_name_decides_the_platforms(tmp_path):
    linux = orbit_host("web-5", "ubuntu")
    pc = orbit_host("pc-1", "windows")
    script = tmp_path / "fix.ps1"
    script.write_text("Write-Output fixed\n")
    with pytest.raises(CommandError, match="1 host\\(s\\) skipped"):
        run("--host", str(linux.pk), "--host", str(pc.pk), "--file", str(script))
    assert list(ScriptRun.objects.values_list("host_id", flat=True)) == [pc.pk]


@pytest.mark.django_db(transaction=True)
def test_wait_prints_the_output_and_exit_code(settings):
    settings.SCRIPTS = {**settings.SCRIPTS, "SYNC_POLL_INTERVAL": 0.02}
    host = orbit_host("web-6", "ubuntu")
    thread = answer_when_queued(host, output="hello from the host\n")
    out, _ = run("--host", "web-6", "--contents", "echo hello", "--wait", "5")
    thread.join(5)
    assert "== web-6: exit code 0" in out and "hello from the host" in out


@pytest.mark.django_db(transaction=True)
def test_wait_exits_non_zero_when_the_script_fails(settings):
    settings.SCRIPTS = {**settings.SCRIPTS, "SYNC_POLL_INTERVAL": 0.02}
    host = orbit_host("web-7", "ubuntu")
    thread = answer_when_queued(host, output="boom\n", exit_code=3)
    with pytest.raises(CommandError, match="1 run\\(s\\) failed") as failure:
        run("--host", "web-7", "--contents", "exit 3", "--wait", "5")
    thread.join(5)
    assert failure.value.returncode == 1


def test_wait_without_answer_exits_2_and_keeps_the_run_queued():
    orbit_host("web-8", "ubuntu")
    with pytest.raises(CommandError, match="did not answer") as failure:
        run("--host", "web-8", "--contents", "echo", "--wait", "0")
    assert failure.value.returncode == 2
    assert ScriptRun.objects.get().status == "pending"


def test_user_limits_hosts_and_is_the_actor(team):
    mine = orbit_host("mine", "ubuntu", team=team)
    orbit_host("theirs", "ubuntu", team=Team.objects.create(name="Other"))
    user_with_role("maint", Role.MAINTAINER, team)
    with pytest.raises(CommandError, match="no host matches theirs"):
        run("--host", "theirs", "--contents", "echo", "--user", "maint")
    run("--host", "mine", "--contents", "echo", "--user", "maint")
    assert ScriptRun.objects.get().host == mine
    assert Activity.objects.get(type="ran_script").actor.username == "maint"
    user_with_role("obs", Role.OBSERVER, team)
    with pytest.raises(CommandError, match="no host can run"):
        run("--host", "mine", "--contents", "echo", "--user", "obs")


def test_cancel(client):
    host = orbit_host("web-9", "ubuntu")
    run("--host", "web-9", "--contents", "echo")
    execution_id = ScriptRun.objects.get().execution_id
    out, _ = run("--cancel", execution_id)
    assert "cancelled" in out and pending_ids(client, host) == []
    with pytest.raises(CommandError, match="already has a result"):
        run("--cancel", execution_id)
    with pytest.raises(CommandError, match="no run"):
        run("--cancel", "nope")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--contents", "echo"], "give the targets"),
        (["--host", "web-10"], "give the script"),
        (["--host", "ghost", "--contents", "echo"], "no host matches ghost"),
        (["--label", "Nope", "--contents", "echo"], "no label named"),
        (["--team", "Nope", "--contents", "echo"], "no team named"),
        (["--host", "web-10", "--script-id", "999"], "no script with id 999"),
        (["--host", "web-10", "--file", "/nonexistent/x.sh"], "cannot read"),
        (["--host", "web-10", "--contents", "echo", "--user", "ghost"], "no active user"),
        (["--host", "web-10", "--contents", "#!/bin/bash\necho"], "Interpreter not supported"),
    ],
)
def test_clear_errors(args, message):
    orbit_host("web-10", "ubuntu")
    with pytest.raises(CommandError, match=message):
        run(*args)
    assert not ScriptRun.objects.exists()


def test_switch_off_is_an_error():
    make_host("plain", platform="ubuntu")
    orbit_host("web-11", "ubuntu")
    switch_scripts(True)
    with pytest.raises(CommandError, match="disabled"):
        run("--host", "web-11", "--contents", "echo")
