"""The audit trail itself: immutable rows, the acting context, snapshots, and audit log forwarding."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction

from activities import forwarding
from activities.choices import ActivityType, Surface
from activities.context import acting_as, command_surface
from activities.models import Activity, AuditLogOutbox, ImmutableActivityError
from activities.recording import record, record_created, record_edited
from activities.snapshots import diff, snapshot
from hosts.models import EnrollSecret, Team
from queries.models import Query

pytestmark = pytest.mark.django_db


@pytest.fixture
def root():
    return get_user_model().objects.create_superuser("root", "root@example.com", "pw")


@pytest.fixture
def audit_file(settings, tmp_path) -> Path:
    """Forwarding on, to a file destination in the test's directory."""
    path = tmp_path / "audit.log"
    settings.ACTIVITY_AUDIT_LOG = {**settings.ACTIVITY_AUDIT_LOG, "ENABLED": True, "PLUGINS": ["filesystem"],
                                   "FILE": str(path)}  # fmt: skip
    forwarding.reset()
    yield path
    forwarding.reset()


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --- immutability ---------------------------------------------------------------------------------


def test_an_activity_cannot_be_changed_or_deleted_through_the_orm(root):
    with acting_as(root, Surface.REST):
        activity = record(ActivityType.CREATED_TEAM, object_type="team", object_name="Sales")
    activity.object_name = "Renamed"
    with pytest.raises(ImmutableActivityError):
        activity.save()
    with pytest.raises(ImmutableActivityError):
        activity.delete()
    with pytest.raises(ImmutableActivityError):
        Activity.objects.filter(pk=activity.pk).update(object_name="Renamed")
    with pytest.raises(ImmutableActivityError):
        Activity.objects.filter(pk=activity.pk).delete()
    with pytest.raises(ImmutableActivityError):
        Activity.objects.all().delete()
    assert Activity.objects.get(pk=activity.pk).object_name == "Sales"


def test_deleting_the_actor_or_the_team_keeps_the_trail(root):
    team = Team.objects.create(name="Sales")
    alice = get_user_model().objects.create_user("alice", "alice@example.com", "pw")
    with acting_as(alice, Surface.CONSOLE):
        activity = record_created(team)
    alice.delete()
    team.delete()
    kept = Activity.objects.get(pk=activity.pk)
    assert (kept.actor_id, kept.actor_name, kept.actor_email) == (
        activity.actor_id,
        "alice",
        "alice@example.com",
    )
    assert kept.team_id == activity.team_id and kept.object_name == "Sales"


# --- context --------------------------------------------------------------------------------------


def test_actor_and_surface_come_from_the_context(root):
    assert record(ActivityType.EDITED_TEAM).surface == Surface.SYSTEM  # nobody, nowhere
    with acting_as(root, Surface.CONSOLE):
        inner = record(ActivityType.EDITED_TEAM)
        with acting_as(surface=Surface.YAML):  # the surface changes, the actor stays
            nested = record(ActivityType.EDITED_TEAM)
    assert (inner.actor_id, inner.surface) == (root.pk, Surface.CONSOLE)
    assert (nested.actor_id, nested.surface, nested.actor_name) == (root.pk, Surface.YAML, "root")


def test_commands_name_the_operator(root):
    with command_surface():
        anonymous = record(ActivityType.CREATED_TEAM)
    with command_surface(root):
        as_root = record(ActivityType.CREATED_TEAM)
    assert anonymous.surface == Surface.COMMAND and anonymous.actor_id is None and anonymous.actor_name
    assert as_root.actor_id == root.pk and as_root.details["operator"] == anonymous.actor_name


# --- snapshots ------------------------------------------------------------------------------------


def test_snapshot_and_diff_of_an_edit(team):
    query = Query.objects.create(name="Uptime", query="SELECT * FROM uptime", team=team)
    before = snapshot(query)
    query.query, query.interval = "SELECT days FROM uptime", 300
    query.save()
    changes = diff(before, snapshot(query))
    assert changes == {
        "query": {"before": "SELECT * FROM uptime", "after": "SELECT days FROM uptime"},
        "interval": {"before": 0, "after": 300},
    }
    assert before["team"] == team.pk and "updated_at" not in before


def test_secrets_never_reach_the_trail(root, team):
    secret = EnrollSecret.objects.create(secret="super-secret-value", team=team)
    with acting_as(root, Surface.REST):
        created = record_created(secret)
        before = snapshot(secret)
        secret.secret = "another-secret-value"
        secret.save()
        edited = record_edited(secret, before)
    stored = json.dumps([created.details, edited.details, created.object_name])
    assert "super-secret-value" not in stored and "another-secret-value" not in stored
    assert created.type == edited.type == ActivityType.EDITED_ENROLL_SECRETS
    assert (created.details["action"], edited.details["action"]) == ("created", "edited")
    change = edited.details["changes"]["secret"]
    assert change["before"] != change["after"] and change["after"].startswith("<redacted")
    assert created.object_name == "Engineering" and created.team_id == team.pk


def test_user_snapshot_has_roles_and_no_password(root, team):
    from hosts.models import UserRole

    UserRole.objects.create(user=root, team=None, role="admin")
    values = snapshot(root)
    assert values["roles"] == {"global": "admin"}
    assert values["password"].startswith("<redacted") and "last_login" not in values


# --- forwarding -----------------------------------------------------------------------------------


def test_forwarding_writes_one_line_per_activity_after_commit(
    root, audit_file, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True), acting_as(root, Surface.REST):
        first = record(ActivityType.CREATED_TEAM, object_type="team", object_id=1, object_name="Sales")
        second = record(ActivityType.DELETED_TEAM, object_type="team", object_id=1, object_name="Sales")
        assert lines(audit_file) == []  # nothing before the commit
    forwarded = lines(audit_file)
    assert [line["id"] for line in forwarded] == [first.pk, second.pk]
    assert forwarded[0]["type"] == "created_team" and forwarded[0]["actor_full_name"] == "root"
    assert forwarded[0]["surface"] == "rest" and forwarded[0]["object_name"] == "Sales"
    assert not AuditLogOutbox.objects.exists()  # delivered lines leave the outbox


def test_a_rolled_back_change_is_never_forwarded(root, audit_file, django_capture_on_commit_callbacks):
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        acting_as(root, Surface.REST),
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        record(ActivityType.CREATED_TEAM, object_name="Doomed")
        raise RuntimeError("the change fails")
    assert callbacks == [] and lines(audit_file) == []
    assert not Activity.objects.exists() and not AuditLogOutbox.objects.exists()


def test_forwarding_is_off_by_default(root, settings, tmp_path, django_capture_on_commit_callbacks):
    assert settings.ACTIVITY_AUDIT_LOG["ENABLED"] is False
    with django_capture_on_commit_callbacks(execute=True), acting_as(root, Surface.REST):
        record(ActivityType.CREATED_TEAM)
    assert not AuditLogOutbox.objects.exists()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_failing_destination_never_fails_the_change_and_the_line_waits(
    root, settings, tmp_path, django_capture_on_commit_callbacks
):
    settings.ACTIVITY_AUDIT_LOG = {
        **settings.ACTIVITY_AUDIT_LOG,
        "ENABLED": True,
        "PLUGINS": ["webhook"],
        "WEBHOOK_URL": f"http://127.0.0.1:{_closed_port()}/audit",
        "DELIVERY_BUDGET": 0.5,
    }
    forwarding.reset()
    with django_capture_on_commit_callbacks(execute=True), acting_as(root, Surface.REST):
        activity = record(ActivityType.CREATED_TEAM)
    assert Activity.objects.filter(pk=activity.pk).exists()
    assert list(AuditLogOutbox.objects.values_list("activity_id", flat=True)) == [activity.pk]

    # The destination comes back (here: a file): the backlog goes out, oldest first.
    path = tmp_path / "audit.log"
    settings.ACTIVITY_AUDIT_LOG = {
        **settings.ACTIVITY_AUDIT_LOG,
        "PLUGINS": ["filesystem"],
        "FILE": str(path),
    }
    AuditLogOutbox.objects.update(created_at=activity.created_at.replace(year=2000))
    assert forwarding.deliver_backlog() == 1
    assert [line["id"] for line in lines(path)] == [activity.pk]
    assert not AuditLogOutbox.objects.exists()
    forwarding.reset()


def test_a_misconfigured_destination_is_logged_not_raised(root, settings, django_capture_on_commit_callbacks):
    settings.ACTIVITY_AUDIT_LOG = {
        **settings.ACTIVITY_AUDIT_LOG,
        "ENABLED": True,
        "PLUGINS": ["carrier-pigeon"],
    }
    forwarding.reset()
    with django_capture_on_commit_callbacks(execute=True), acting_as(root, Surface.REST):
        activity = record(ActivityType.CREATED_TEAM)
    assert AuditLogOutbox.objects.filter(activity_id=activity.pk).exists()
    forwarding.reset()


def test_user_roles_use_fleets_role_types(root, team):
    from activities.recording import record_deleted_many
    from hosts.models import UserRole

    alice = get_user_model().objects.create_user("alice", "alice@example.com", "pw")
    with acting_as(root, Surface.CONSOLE):
        on_team = record_created(UserRole.objects.create(user=alice, team=team, role="observer"))
        global_role = UserRole.objects.create(user=root, team=None, role="admin")
        deleted = record_deleted_many([global_role, UserRole.objects.get(user=alice)])
    assert on_team.type == ActivityType.CHANGED_USER_TEAM_ROLE
    assert (on_team.object_type, on_team.object_id, on_team.object_name) == ("user", str(alice.pk), "alice")
    assert on_team.details["role"] == "observer" and on_team.details["team_name"] == team.name
    assert sorted(a.type for a in deleted) == [
        ActivityType.DELETED_USER_GLOBAL_ROLE,
        ActivityType.DELETED_USER_TEAM_ROLE,
    ]


def test_every_console_model_admin_is_audited_and_a_site_mixin_audits_new_ones():
    from django.contrib import admin
    from django.contrib.admin import AdminSite

    from activities.admin_hooks import ActivityLoggingSiteMixin, AuditedModelAdmin, install_admin_hooks

    assert all(isinstance(model_admin, AuditedModelAdmin) for model_admin in admin.site._registry.values())
    assert install_admin_hooks(admin.site) == 0  # already done at start-up: idempotent

    class Site(ActivityLoggingSiteMixin, AdminSite):
        pass

    class TeamAdmin(admin.ModelAdmin):
        list_display = ["name"]

    site = Site(name="audited-test")
    site.register(Team, TeamAdmin)
    site.register(Query)
    team_admin = site.get_model_admin(Team)
    assert isinstance(team_admin, AuditedModelAdmin) and isinstance(team_admin, TeamAdmin)
    assert isinstance(site.get_model_admin(Query), AuditedModelAdmin)
