"""User management leaves an audit trail (``activities``): invitations, created users, role
changes, deactivations, password resets; one record per change, with who did it and from where."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client

from activities.models import Activity
from hosts.choices import Role
from tests.factories import user_with_role

pytestmark = pytest.mark.django_db

STRONG = "Corr3ct-Horse-Battery!"


@pytest.fixture
def boss(db):
    return user_with_role("boss", Role.ADMIN)


@pytest.fixture
def admin_client(client, boss):
    client.force_login(boss)
    return client


def trail(*types: str) -> list[Activity]:
    rows = Activity.objects.order_by("pk")
    return list(rows.filter(type__in=types) if types else rows)


def test_an_invitation_and_its_acceptance_are_recorded(admin_client, boss, team):
    created = admin_client.post(
        "/admin/users/invite/add/", {"email": "dana@example.com", f"team_{team.pk}": "maintainer"}
    )
    link = re.search(r'value="http://testserver(/invite/[^"]+/)"', created.content.decode()).group(1)
    (invited,) = trail("invited_user")
    assert invited.actor == boss and invited.surface == "console" and invited.team_id == team.pk
    assert invited.details["email"] == "dana@example.com"
    assert invited.details["roles"] == {"Engineering": "maintainer"}
    assert not trail("created_invite")  # the generic console record is not written as well

    invitee = Client()
    invitee.post(link, {"username": "dana", "password1": STRONG, "password2": STRONG})
    (created_user,) = trail("created_user")
    assert created_user.object_name == "dana" and created_user.actor is None
    assert created_user.details["invited_by"] == "boss"
    assert created_user.details["roles"] == {"Engineering": "maintainer"}


def test_role_changes_in_the_console_are_recorded_per_role(admin_client, boss, team):
    olive = user_with_role("olive", Role.OBSERVER, team)
    admin_client.post(
        f"/admin/users/user/{olive.pk}/change/",
        {"username": "olive", "email": "olive@example.com", f"team_{team.pk}": "maintainer"},
    )
    (changed,) = trail("changed_user_team_role")
    assert changed.actor == boss and changed.team_id == team.pk
    expected = {
        "role": "maintainer",
        "previous_role": "observer",
        "team_name": "Engineering",
        "user_name": "olive",
    }
    assert {key: changed.details.get(key) for key in expected} == expected
    admin_client.post(
        f"/admin/users/user/{olive.pk}/change/",
        {"username": "olive", "email": "olive@example.com", "global_role": "observer", f"team_{team.pk}": ""},
    )
    assert [a.type for a in trail("deleted_user_team_role", "changed_user_global_role")] == [
        "deleted_user_team_role",
        "changed_user_global_role",
    ]


def test_deactivation_and_password_resets_are_recorded_once(admin_client, boss):
    olive = user_with_role("olive", Role.OBSERVER)
    admin_client.post(
        f"/admin/users/user/{olive.pk}/password/", {"new_password1": STRONG, "new_password2": STRONG}
    )
    admin_client.post(f"/admin/users/user/{olive.pk}/deactivate/")
    admin_client.post(f"/admin/users/user/{olive.pk}/activate/")
    types = [a.type for a in trail() if a.object_name == "olive"]
    assert types == ["changed_user_password", "deactivated_user", "activated_user"]
    deactivated = trail("deactivated_user")[0]
    assert deactivated.actor == boss and deactivated.details["sessions_ended"] == 0


def test_the_command_records_with_the_command_surface(team):
    user_with_role("boss", Role.ADMIN)
    call_command(
        "user", "add", "carl", "--email", "carl@example.com", "--role", "observer", stdout=StringIO()
    )
    call_command("user", "role", "carl", "--role", "maintainer", stdout=StringIO())
    call_command("user", "deactivate", "carl", stdout=StringIO())
    records = trail("created_user", "changed_user_global_role", "deactivated_user")
    assert [a.type for a in records] == ["created_user", "changed_user_global_role", "deactivated_user"]
    assert {a.surface for a in records} == {"command"}
