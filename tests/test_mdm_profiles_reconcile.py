"""The profile reconciler and scoping: which Macs get which profile, the commands that follow
from changes (uploads, deletions, labels, teams), stuck rows, and what a pass costs."""

from __future__ import annotations

import plistlib
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from hosts.models import Host, Label, LabelMembership, LabelMembershipType, Team
from mdm import queue
from mdm.models import Command, HostProfile
from mdm.profiles import reconciler, scope, services
from mdm.profiles.scope import Catalog, HostFacts
from tests.factories import make_host
from tests.mdm_profiles_support import LONG_AGO, age, answer, enrolled_mac, mobileconfig, queued, row

pytestmark = pytest.mark.django_db
ZERO = {"installs": 0, "removals": 0, "resent_stuck": 0, "hosts": 0}


@pytest.fixture(autouse=True)
def _no_push(settings):
    settings.MDM = {**settings.MDM, "PUSH_DISABLED": True, "STUCK_AFTER": 900.0}


def sent_payload(command: Command) -> dict:
    return plistlib.loads(bytes(command.payload))["Command"]


# --- scope -----------------------------------------------------------------------------------------


def names(host: Host) -> list[str]:
    return sorted(p.identifier for p in scope.profiles_for_host(host))


def test_team_hosts_get_their_teams_profiles_and_no_team_hosts_the_global_ones(team):
    services.create_profile(team=None, data=mobileconfig("com.example.global", "Global"))
    services.create_profile(team=team, data=mobileconfig("com.example.team", "Team"))
    services.create_profile(
        team=Team.objects.create(name="Other"), data=mobileconfig("com.example.other", "O")
    )
    assert names(make_host("no-team")) == ["com.example.global"]
    assert names(make_host("in-team", team=team)) == ["com.example.team"]


def test_label_modes(team):
    red = Label.objects.create(name="red", query="SELECT 1")
    blue = Label.objects.create(name="blue", query="SELECT 1")
    services.create_profile(
        team=None, data=mobileconfig("com.example.all", "All"), labels_include_all=[red, blue]
    )
    services.create_profile(
        team=None, data=mobileconfig("com.example.any", "Any"), labels_include_any=[red, blue]
    )
    services.create_profile(
        team=None, data=mobileconfig("com.example.none", "None"), labels_exclude_any=[red]
    )
    fresh = timezone.now() + timedelta(seconds=1)
    both, only_red, neither = (make_host(n, label_updated_at=fresh) for n in ("both", "red", "neither"))
    for host, labels in ((both, [red, blue]), (only_red, [red])):
        LabelMembership.objects.bulk_create([LabelMembership(host=host, label=label) for label in labels])
    assert names(both) == ["com.example.all", "com.example.any"]
    assert names(only_red) == ["com.example.any"]
    assert names(neither) == ["com.example.none"]


def test_exclude_any_waits_until_the_host_reported_its_dynamic_labels():
    dynamic = Label.objects.create(name="dynamic", query="SELECT 1")
    manual = Label.objects.create(name="manual", label_membership_type=LabelMembershipType.MANUAL)
    services.create_profile(team=None, data=mobileconfig("com.example.d", "D"), labels_exclude_any=[dynamic])
    services.create_profile(team=None, data=mobileconfig("com.example.m", "M"), labels_exclude_any=[manual])
    stale = make_host("stale", label_updated_at=LONG_AGO)
    assert names(stale) == ["com.example.m"]  # manual membership is known at once
    Host.objects.filter(pk=stale.pk).update(label_updated_at=timezone.now() + timedelta(seconds=1))
    stale.refresh_from_db()
    assert names(stale) == ["com.example.d", "com.example.m"]


def test_catalog_costs_a_fixed_number_of_queries_for_any_number_of_hosts():
    red = Label.objects.create(name="red", query="SELECT 1")
    for i in range(5):
        services.create_profile(
            team=None, data=mobileconfig(f"com.example.{i}", f"P{i}"), labels_exclude_any=[red]
        )
    hosts = [make_host(f"h{i}") for i in range(40)]
    with CaptureQueriesContext(connection) as load:
        catalog = Catalog.load()
    with CaptureQueriesContext(connection) as desired:
        catalog.desired([HostFacts.of(h) for h in hosts])
    assert len(load) == 5 and len(desired) == 1


# --- installs and removals -----------------------------------------------------------------------


def test_a_new_profile_is_installed_once(team):
    host, enrollment = enrolled_mac("mac", team=team)
    profile = services.create_profile(team=team, data=mobileconfig())
    assert reconciler.reconcile() == {**ZERO, "installs": 1, "hosts": 1}
    hp = row(host)
    assert (hp.operation, hp.status, hp.profile_id, hp.checksum) == (
        "install",
        "pending",
        profile.pk,
        profile.checksum,
    )
    [command] = queued(enrollment)
    assert command.uuid == hp.command_uuid and command.request_type == "InstallProfile"
    assert sent_payload(command)["Payload"] == bytes(profile.mobileconfig)
    assert reconciler.reconcile() == {**ZERO, "hosts": 1}  # nothing more to do
    assert len(queued(enrollment)) == 1


def test_hosts_not_enrolled_get_nothing(team):
    make_host("plain", team=team, platform="darwin")
    _, enrollment = enrolled_mac("checked-out", team=team)
    enrollment.enrolled = False
    enrollment.save()
    services.create_profile(team=team, data=mobileconfig())
    assert reconciler.reconcile() == ZERO
    assert not HostProfile.objects.exists()


def test_new_contents_are_sent_again_and_the_old_command_cancelled(team):
    host, enrollment = enrolled_mac("mac", team=team)
    profile = services.create_profile(team=team, data=mobileconfig(name="V1"))
    reconciler.reconcile()
    [first] = queued(enrollment)
    answer(enrollment, first)
    assert row(host).status == "verifying"
    services.replace_profile(profile, mobileconfig(name="V2"))
    assert reconciler.reconcile()["installs"] == 1
    hp = row(host)
    assert hp.status == "pending" and hp.name == "V2" and hp.command_uuid != first.uuid
    [second] = queued(enrollment)
    assert b"V2" in sent_payload(second)["Payload"]
    # A change while the install is still queued: the unanswered command is cancelled.
    services.replace_profile(profile, mobileconfig(name="V3"))
    reconciler.reconcile()
    assert Command.objects.get(uuid=second.uuid).cancelled
    assert [b"V3" in sent_payload(c)["Payload"] for c in queued(enrollment)] == [True]


def test_a_deleted_profile_is_removed_and_the_row_goes_when_acknowledged(team):
    host, enrollment = enrolled_mac("mac", team=team)
    profile = services.create_profile(team=team, data=mobileconfig())
    reconciler.reconcile()
    answer(enrollment, queued(enrollment)[0])
    services.delete_profile(profile)
    assert reconciler.reconcile() == {**ZERO, "removals": 1, "hosts": 1}
    hp = row(host)
    assert (hp.operation, hp.status, hp.profile_id) == ("remove", "pending", None)
    [removal] = queued(enrollment)
    assert sent_payload(removal) == {"RequestType": "RemoveProfile", "Identifier": "com.example.wifi"}
    assert reconciler.reconcile()["removals"] == 0  # in progress: not sent twice
    answer(enrollment, removal)
    assert not HostProfile.objects.exists()


def test_a_failed_removal_is_failed_and_a_missing_profile_counts_as_removed(team):
    host, enrollment = enrolled_mac("mac", team=team)
    other, other_enrollment = enrolled_mac("other", team=team)
    profile = services.create_profile(team=team, data=mobileconfig())
    reconciler.reconcile()
    for e in (enrollment, other_enrollment):
        answer(e, queued(e)[0])
    services.delete_profile(profile)
    reconciler.reconcile()
    chain = [{"ErrorCode": 4000, "ErrorDomain": "MCProfileErrorDomain", "USEnglishDescription": "Locked"}]
    answer(enrollment, queued(enrollment)[0], "Error", ErrorChain=chain)
    hp = row(host)
    assert hp.status == "failed" and hp.detail == "Removal failed: Locked (MCProfileErrorDomain 4000)"
    not_there = [
        {"ErrorCode": 89, "ErrorDomain": "MCMDMErrorDomain", "LocalizedDescription": "Not installed"}
    ]
    answer(other_enrollment, queued(other_enrollment)[0], "Error", ErrorChain=not_there)
    assert not HostProfile.objects.filter(host=other).exists()


def test_label_and_team_changes_move_profiles(team):
    red = Label.objects.create(name="red", label_membership_type=LabelMembershipType.MANUAL)
    other_team = Team.objects.create(name="Other")
    host, enrollment = enrolled_mac("mac", team=team)
    LabelMembership.objects.create(host=host, label=red)
    services.create_profile(team=team, data=mobileconfig("com.example.red", "Red"), labels_include_any=[red])
    services.create_profile(team=other_team, data=mobileconfig("com.example.other", "Other"))
    reconciler.reconcile()
    assert row(host, "com.example.red").operation == "install"

    LabelMembership.objects.filter(host=host).delete()
    assert reconciler.reconcile()["removals"] == 1
    assert row(host, "com.example.red").operation == "remove"
    LabelMembership.objects.create(host=host, label=red)
    assert reconciler.reconcile()["installs"] == 1  # wanted again while being removed: install wins
    assert row(host, "com.example.red").operation == "install"

    Host.objects.filter(pk=host.pk).update(team=other_team)
    counts = reconciler.reconcile()
    assert counts["installs"] == 1 and counts["removals"] == 1
    assert row(host, "com.example.red").operation == "remove"
    assert row(host, "com.example.other").operation == "install"


def test_same_identifier_in_the_new_team_replaces_the_old_teams_profile(team):
    other_team = Team.objects.create(name="Other")
    host, enrollment = enrolled_mac("mac", team=team)
    services.create_profile(team=team, data=mobileconfig(name="Team Wi-Fi"))
    moved_to = services.create_profile(team=other_team, data=mobileconfig(name="Other Wi-Fi"))
    reconciler.reconcile()
    Host.objects.filter(pk=host.pk).update(team=other_team)
    assert reconciler.reconcile() == {**ZERO, "installs": 1, "hosts": 1}
    hp = row(host)
    assert hp.profile_id == moved_to.pk and hp.operation == "install" and hp.name == "Other Wi-Fi"


def test_a_failed_install_that_is_no_longer_wanted_is_just_forgotten(team):
    host, enrollment = enrolled_mac("mac", team=team)
    profile = services.create_profile(team=team, data=mobileconfig())
    reconciler.reconcile()
    HostProfile.objects.filter(host=host).update(status="failed", retries=1)
    services.delete_profile(profile)
    assert reconciler.reconcile() == {**ZERO, "hosts": 1}
    assert not HostProfile.objects.exists() and not queued(enrollment, "RemoveProfile")


# --- stuck rows ------------------------------------------------------------------------------------


def test_stuck_verifying_is_resent_once_osquery_had_a_chance(team, caplog):
    host, enrollment = enrolled_mac("mac", team=team)
    services.create_profile(team=team, data=mobileconfig())
    reconciler.reconcile()
    answer(enrollment, queued(enrollment)[0])
    age(row(host), 1000)
    assert reconciler.reconcile()["resent_stuck"] == 0  # osquery has not reported since: wait
    Host.objects.filter(pk=host.pk).update(detail_updated_at=timezone.now())
    with caplog.at_level("WARNING", logger="mdm.profiles.reconciler"):
        assert reconciler.reconcile() == {**ZERO, "resent_stuck": 1, "hosts": 1}
    assert "re-sent 1 stuck command" in caplog.text
    hp = row(host)
    assert hp.status == "pending" and hp.resends == 1 and "osquery" in hp.detail
    assert [c.uuid for c in queued(enrollment)] == [hp.command_uuid]


def test_stuck_pending_is_resent_only_when_the_device_took_it(team):
    host, enrollment = enrolled_mac("mac", team=team)
    services.create_profile(team=team, data=mobileconfig())
    reconciler.reconcile()
    first = row(host).command_uuid
    age(row(host), 1000)
    assert reconciler.reconcile()["resent_stuck"] == 0  # never fetched: the device is away
    assert queue.next_command(enrollment, reporting_not_now=False).uuid == first  # it fetched it ...
    assert reconciler.reconcile()["resent_stuck"] == 1  # ... and never answered
    assert Command.objects.get(uuid=first).cancelled
    hp = row(host)
    assert hp.status == "pending" and hp.resends == 1 and hp.command_uuid != first
    # A late answer to the cancelled command changes nothing.
    answer(enrollment, first)
    assert row(host).status == "pending"


def test_not_now_waits_for_the_device(team):
    host, enrollment = enrolled_mac("mac", team=team)
    services.create_profile(team=team, data=mobileconfig())
    reconciler.reconcile()
    answer(enrollment, queued(enrollment)[0], "NotNow")
    hp = row(host)
    assert hp.status == "pending" and "NotNow" in hp.detail
    age(hp, 1000)
    assert reconciler.reconcile()["resent_stuck"] == 0


def test_stuck_rows_fail_after_the_resend_limit(team):
    host, enrollment = enrolled_mac("mac", team=team)
    services.create_profile(team=team, data=mobileconfig())
    reconciler.reconcile()
    for _ in range(reconciler.MAX_STUCK_RESENDS):
        queue.next_command(enrollment, reporting_not_now=False)
        age(row(host), 1000)
        assert reconciler.reconcile()["resent_stuck"] == 1
    queue.next_command(enrollment, reporting_not_now=False)
    age(row(host), 1000)
    assert reconciler.reconcile()["resent_stuck"] == 0
    hp = row(host)
    assert hp.status == "failed" and hp.detail.startswith("Gave up after 3 resends")


def test_a_lost_command_is_resent(team):
    host, enrollment = enrolled_mac("mac", team=team)
    services.create_profile(team=team, data=mobileconfig())
    reconciler.reconcile()
    Command.objects.filter(uuid=row(host).command_uuid).update(cancelled=True)
    age(row(host), 1000)
    assert reconciler.reconcile()["resent_stuck"] == 1
    assert len(queued(enrollment)) == 1


# --- running it ------------------------------------------------------------------------------------


def test_request_reconcile_runs_after_commit_in_eager_mode(
    eager_celery, team, django_capture_on_commit_callbacks
):
    host, enrollment = enrolled_mac("mac", team=team)
    with django_capture_on_commit_callbacks(execute=True):
        services.create_profile(team=team, data=mobileconfig())
    assert row(host).status == "pending" and len(queued(enrollment)) == 1


def test_request_reconcile_never_raises(
    eager_celery, team, monkeypatch, django_capture_on_commit_callbacks, caplog
):
    def broken() -> dict:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(reconciler, "_pass", broken)
    with django_capture_on_commit_callbacks(execute=True):
        services.create_profile(team=team, data=mobileconfig())  # no exception reaches the caller
    assert "the profile reconciler failed" in caplog.text


def test_request_reconcile_uses_the_worker_when_not_eager(monkeypatch, django_capture_on_commit_callbacks):
    from celery import current_app

    from mdm import tasks

    delayed = []
    monkeypatch.setattr(tasks.reconcile_profiles, "delay", lambda: delayed.append(1))
    eager = current_app.conf.task_always_eager
    current_app.conf.task_always_eager = False
    try:
        with django_capture_on_commit_callbacks(execute=True):
            reconciler.request_reconcile()
    finally:
        current_app.conf.task_always_eager = eager
    assert delayed == [1]


def test_reconcile_is_not_reentered_in_a_thread_nor_run_twice_at_once(team):
    enrolled_mac("mac", team=team)
    services.create_profile(team=team, data=mobileconfig())
    reconciler._local.running = True
    try:
        assert reconciler.reconcile() == ZERO
    finally:
        reconciler._local.running = False
    from django.core.cache import cache

    cache.set(reconciler.LOCK_KEY, "someone-else")
    assert reconciler.reconcile() == ZERO
    assert cache.get(reconciler.AGAIN_KEY)  # the running pass is asked to go around again
    cache.delete(reconciler.LOCK_KEY)
    assert reconciler.reconcile()["installs"] == 1


def test_hosts_are_processed_in_chunks_with_bounded_queries(team, monkeypatch):
    services.create_profile(team=team, data=mobileconfig("com.example.a", "A"))
    services.create_profile(team=team, data=mobileconfig("com.example.b", "B"))
    for i in range(6):
        enrolled_mac(f"mac{i}", team=team)
    monkeypatch.setattr(reconciler, "CHUNK", 4)
    assert reconciler.reconcile() == {**ZERO, "installs": 12, "hosts": 6}
    assert HostProfile.objects.count() == 12 and Command.objects.count() == 12

    def idle_pass_queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert reconciler.reconcile()["installs"] == 0
        return len(captured)

    few = idle_pass_queries()
    for i in range(6, 12):
        enrolled_mac(f"mac{i}", team=team)
    reconciler.reconcile()
    many = idle_pass_queries()
    assert many == few + 3  # one more chunk: its enrollments, memberships are not needed, its rows
