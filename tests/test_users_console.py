"""The console's user pages: the list with role summaries, roles edited as in Fleet (one global
role or one per team), what team admins may do, deactivation (API tokens and sessions revoked),
the last-admin rule, password resets through the validators; and no stock user or group pages."""

from __future__ import annotations

import html

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from knox.models import AuthToken
from rest_framework.test import APIClient

from hosts.choices import Role
from hosts.models import Team, UserRole
from tests.factories import token_for, user_with_role

pytestmark = pytest.mark.django_db

USERS = "/admin/users/user/"
STRONG = "Corr3ct-Horse-Battery!"


@pytest.fixture
def sales(db) -> Team:
    return Team.objects.create(name="Sales")


@pytest.fixture
def boss(db):
    return user_with_role("boss", Role.ADMIN)


@pytest.fixture
def admin_client(client, boss):
    client.force_login(boss)
    return client


def text(response) -> str:
    return html.unescape(response.content.decode())


def roles_of(user) -> dict:
    return dict(UserRole.objects.filter(user=user).values_list("team_id", "role"))


def page_url(user, suffix: str = "change/") -> str:
    return f"{USERS}{user.pk}/{suffix}"


def account(user, **changes) -> dict:
    return {
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email or f"{user.username}@example.com",
        **changes,
    }


def authed(token: str) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return api


# --- list and user page -----------------------------------------------------------------------------------


def test_the_list_shows_fleet_like_role_summaries(admin_client, team, sales):
    obs = user_with_role("olive", Role.OBSERVER)
    obs.first_name, obs.last_name, obs.email = "Olive", "Oyl", "olive@example.com"
    obs.save()
    mixed = user_with_role("mike", Role.OBSERVER, sales)
    UserRole.objects.create(user=mixed, team=team, role=Role.MAINTAINER)
    user_with_role("nobody")
    page = text(admin_client.get(USERS))
    for expected in [
        "olive",
        "Olive Oyl",
        "olive@example.com",
        "Observer (global)",
        "Maintainer on Engineering, Observer on Sales",
        "No role",
        "Admin (global)",
        "Invite user",
        "Pending invitations (0)",
    ]:
        assert expected in page, expected
    filtered = text(admin_client.get(f"{USERS}?team={sales.pk}"))
    assert "mike" in filtered and "olive" not in filtered
    assert "olive" in text(admin_client.get(f"{USERS}?role=observer"))


def test_the_user_page_has_no_staff_superuser_group_or_permission_fields(admin_client, team):
    user = user_with_role("olive", Role.OBSERVER)
    page = admin_client.get(page_url(user))
    assert page.status_code == 200
    fields = page.context["adminform"].form.fields
    assert set(fields) == {"username", "first_name", "last_name", "email", "global_role", f"team_{team.pk}"}
    body = text(page)
    for absent in ("is_staff", "is_superuser", "user_permissions", "groups"):
        assert f'name="{absent}"' not in body
    assert "Reset password" in body and "Deactivate" in body


def test_stock_user_and_group_pages_are_gone(admin_client):
    assert admin_client.get("/admin/auth/user/").status_code == 404
    assert admin_client.get("/admin/auth/group/").status_code == 404
    assert admin_client.get("/admin/users/user/add/")["Location"] == "/admin/users/invite/add/"


def test_an_admin_sets_one_global_role_or_roles_per_team(admin_client, team, sales):
    user = user_with_role("olive", Role.OBSERVER, team)
    ok = admin_client.post(
        page_url(user), {**account(user), f"team_{team.pk}": "maintainer", f"team_{sales.pk}": "observer"}
    )
    assert ok.status_code == 302, text(ok)
    assert roles_of(user) == {team.pk: "maintainer", sales.pk: "observer"}

    mixed = admin_client.post(
        page_url(user), {**account(user), "global_role": "admin", f"team_{team.pk}": "observer"}
    )
    assert mixed.status_code == 200
    assert "A user has either one global role or roles on teams, not both." in text(mixed)
    assert roles_of(user) == {team.pk: "maintainer", sales.pk: "observer"}

    to_global = admin_client.post(page_url(user), {**account(user), "global_role": "observer_plus"})
    assert to_global.status_code == 302
    assert roles_of(user) == {None: "observer_plus"}
    assert "Observer+ (global)" in text(admin_client.get(USERS))


def test_account_fields_are_validated(admin_client):
    user_with_role("taken", Role.OBSERVER).__class__.objects.filter(username="taken").update(
        email="t@example.com"
    )
    user = user_with_role("olive", Role.OBSERVER)
    response = admin_client.post(
        page_url(user), {**account(user, username="TAKEN", email="T@example.com"), "global_role": "observer"}
    )
    body = text(response)
    assert 'The username "TAKEN" is already taken.' in body
    assert "A user with the email T@example.com already exists." in body
    renamed = admin_client.post(
        page_url(user), {**account(user, username="olive2", first_name="Olive"), "global_role": "observer"}
    )
    assert renamed.status_code == 302
    user.refresh_from_db()
    assert (user.username, user.first_name) == ("olive2", "Olive")


# --- who may manage users ---------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.MAINTAINER, Role.OBSERVER, Role.OBSERVER_PLUS])
@pytest.mark.parametrize("on_team", [False, True], ids=["global", "team"])
def test_non_admins_cannot_open_user_management(client, team, role, on_team):
    user = user_with_role(f"u-{role}", role, team if on_team else None)
    other = user_with_role("other", Role.OBSERVER, team)
    client.force_login(user)
    assert client.get("/admin/").status_code == 200  # they do have the console ...
    for url in (
        USERS,
        page_url(other),
        page_url(other, "password/"),
        page_url(other, "deactivate/"),
        f"{USERS}add-to-team/",
    ):
        assert client.get(url).status_code == 403, url  # ... but no user management
    assert client.post(page_url(other, "deactivate/")).status_code == 403
    assert get_user_model().objects.get(pk=other.pk).is_active
    assert "/admin/users/" not in client.get("/admin/").content.decode()


def test_team_admins_manage_their_teams_roles_only(client, team, sales):
    lead = user_with_role("lead", Role.ADMIN, team)
    member = user_with_role("member", Role.OBSERVER, team)
    UserRole.objects.create(user=member, team=sales, role=Role.MAINTAINER)
    outsider = user_with_role("outsider", Role.OBSERVER, sales)
    global_user = user_with_role("globe", Role.OBSERVER)
    client.force_login(lead)

    listed = text(client.get(USERS))
    assert "member" in listed and "lead" in listed
    assert "outsider" not in listed and "globe" not in listed
    assert "Observer on Engineering, 1 other team" in listed and "Sales" not in listed
    for hidden in (outsider, global_user):
        assert client.get(page_url(hidden)).status_code == 302  # not theirs: "no such user"

    page = client.get(page_url(member))
    assert set(page.context["adminform"].form.fields) == {f"team_{team.pk}"}
    assert "Reset password" not in text(page) and "Deactivate" not in text(page)

    response = client.post(
        page_url(member),
        {
            f"team_{team.pk}": "maintainer",
            f"team_{sales.pk}": "",  # not theirs: ignored
            "global_role": "admin",  # not theirs: ignored
            "username": "hijacked",  # read-only for them: ignored
        },
    )
    assert response.status_code == 302
    assert roles_of(member) == {team.pk: "maintainer", sales.pk: "maintainer"}
    member.refresh_from_db()
    assert member.username == "member"

    removed = client.post(page_url(member), {f"team_{team.pk}": ""})
    assert removed.status_code == 302
    assert roles_of(member) == {sales.pk: "maintainer"}

    for suffix in ("password/", "deactivate/"):
        assert client.get(page_url(lead, suffix)).status_code == 403
    changelist = client.get(USERS)
    assert "deactivate_selected" not in text(changelist)


def test_team_admins_add_existing_users_to_their_team(client, team, sales):
    lead = user_with_role("lead", Role.ADMIN, team)
    loner = user_with_role("loner")
    loner.email = "loner@example.com"
    loner.save()
    client.force_login(lead)
    url = f"{USERS}add-to-team/"
    form = client.get(url)
    assert list(form.context["form"].fields["team"].queryset) == [team]

    missing = client.post(url, {"user": "ghost", "team": team.pk, "role": "observer"})
    assert "No active user has this username or email" in text(missing)
    not_theirs = client.post(url, {"user": "loner", "team": sales.pk, "role": "observer"})
    assert "Select a valid choice" in text(not_theirs)
    done = client.post(url, {"user": "LONER@example.com", "team": team.pk, "role": "observer_plus"})
    assert done.status_code == 302 and done["Location"] == page_url(loner)
    assert roles_of(loner) == {team.pk: "observer_plus"}

    globe = user_with_role("globe", Role.OBSERVER)
    mixed = client.post(url, {"user": "globe", "team": team.pk, "role": "observer"})
    assert "either one global role or roles on teams" in text(mixed)
    assert roles_of(globe) == {None: "observer"}


def test_only_superusers_edit_superusers(admin_client, client):
    root = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    page = admin_client.get(page_url(root))
    assert page.status_code == 200
    assert "Admin (global, superuser)" in text(page)
    assert "Reset password" not in text(page)
    assert not page.context["adminform"].form.fields  # a read-only page
    assert admin_client.get(page_url(root, "password/")).status_code == 403
    assert admin_client.post(page_url(root, "deactivate/")).status_code == 403
    assert get_user_model().objects.get(pk=root.pk).is_active


# --- deactivation -----------------------------------------------------------------------------------------


def test_deactivation_revokes_api_tokens_and_sessions_and_blocks_login(admin_client, team):
    olive = user_with_role("olive", Role.OBSERVER, team)
    olive.set_password(STRONG)
    olive.save()
    token = token_for(olive)
    assert authed(token).get("/api/v1/hosts/").status_code == 200
    session = Client()
    session.force_login(olive)
    assert session.get("/admin/").status_code == 200

    confirm = admin_client.get(page_url(olive, "deactivate/"))
    assert confirm.status_code == 200 and "1 API token is revoked" in text(confirm)
    done = admin_client.post(page_url(olive, "deactivate/"))
    assert done.status_code == 302

    olive.refresh_from_db()
    assert not olive.is_active
    assert not AuthToken.objects.filter(user=olive).exists()
    assert authed(token).get("/api/v1/hosts/").status_code == 401
    assert session.get("/admin/").status_code == 302  # signed out
    login = Client().post("/admin/login/?next=/admin/", {"username": "olive", "password": STRONG})
    assert login.status_code == 200 and "_auth_user_id" not in login.client.session
    api_login = APIClient().post("/api/v1/auth/token/", {"username": "olive", "password": STRONG})
    assert api_login.status_code == 400
    assert "Deactivated" in text(admin_client.get(page_url(olive)))
    assert roles_of(olive) == {team.pk: "observer"}  # kept for a reactivation

    admin_client.post(page_url(olive, "activate/"))
    olive.refresh_from_db()
    assert olive.is_active
    assert authed(token).get("/api/v1/hosts/").status_code == 401  # old tokens stay revoked
    again = Client().post("/admin/login/?next=/admin/", {"username": "olive", "password": STRONG})
    assert again.status_code == 302


def test_the_list_actions_deactivate_and_reactivate(admin_client, boss):
    olive = user_with_role("olive", Role.OBSERVER)
    mike = user_with_role("mike", Role.MAINTAINER)
    token = token_for(mike)
    response = admin_client.post(
        USERS,
        {"action": "deactivate_selected", "_selected_action": [olive.pk, mike.pk, boss.pk]},
        follow=True,
    )
    body = text(response)
    assert "Deactivated: mike, olive." in body
    assert "You cannot deactivate your own account." in body
    assert list(get_user_model().objects.filter(is_active=True).values_list("username", flat=True)) == [
        "boss"
    ]
    assert authed(token).get("/api/v1/hosts/").status_code == 401
    admin_client.post(USERS, {"action": "reactivate_selected", "_selected_action": [olive.pk]})
    assert get_user_model().objects.get(pk=olive.pk).is_active


def test_nobody_deactivates_themselves(admin_client, boss):
    page = admin_client.get(page_url(boss))
    assert "Deactivate" not in text(page)  # no button on your own page ...
    refused = admin_client.post(page_url(boss, "deactivate/"))
    assert refused.status_code == 200 and "You cannot deactivate your own account." in text(refused)
    boss.refresh_from_db()
    assert boss.is_active


def test_the_last_active_global_admin_cannot_be_demoted(admin_client, boss, team):
    refused = admin_client.post(page_url(boss), {**account(boss), "global_role": "observer"})
    assert refused.status_code == 200
    assert '"boss" is the last active global admin and cannot be demoted' in text(refused)
    assert roles_of(boss) == {None: "admin"}

    other = user_with_role("other", Role.ADMIN)
    demoted = admin_client.post(page_url(boss), {**account(boss), "global_role": "observer"})
    assert demoted.status_code == 302
    assert roles_of(boss) == {None: "observer"}
    # boss is no admin any more: user management is closed to them now
    assert admin_client.get(USERS).status_code == 403

    root_client = Client()
    root_client.force_login(other)
    # other is now the last admin: demoting them is refused, deactivating them too (by another admin)
    refused = root_client.post(page_url(other), {**account(other), f"team_{team.pk}": "admin"})
    assert "last active global admin" in text(refused)
    get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    allowed = root_client.post(page_url(other), {**account(other), f"team_{team.pk}": "admin"})
    assert allowed.status_code == 302  # a superuser is a global admin too


def test_the_last_admin_cannot_be_deactivated_by_a_superuser_either(client, boss):
    root = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(root)
    assert client.post(page_url(boss, "deactivate/")).status_code == 302  # root remains
    boss.refresh_from_db()
    assert not boss.is_active
    get_user_model().objects.filter(pk=boss.pk).update(is_active=True, is_superuser=True)
    client.post(page_url(boss, "deactivate/"))  # two superusers: fine
    assert not get_user_model().objects.get(pk=boss.pk).is_active


# --- passwords --------------------------------------------------------------------------------------------


def test_an_admin_resets_a_password_through_the_validators(admin_client, team):
    olive = user_with_role("olive", Role.OBSERVER, team)
    token = token_for(olive)
    url = page_url(olive, "password/")
    assert admin_client.get(url).status_code == 200
    weak = admin_client.post(url, {"new_password1": "olive", "new_password2": "olive"})
    assert weak.status_code == 200
    body = text(weak)
    for message in (
        "This password is too short. It must contain at least 12 characters.",
        "This password must contain at least one number.",
        "This password must contain at least one symbol",
    ):
        assert message in body
    done = admin_client.post(url, {"new_password1": STRONG, "new_password2": STRONG})
    assert done.status_code == 302
    olive.refresh_from_db()
    assert olive.check_password(STRONG)
    assert authed(token).get("/api/v1/hosts/").status_code == 401
    assert "Reset the password." in text(admin_client.get(page_url(olive, "history/")))


def test_the_consoles_own_password_change_applies_the_rules(client):
    olive = user_with_role("olive", Role.OBSERVER)
    client.force_login(olive)
    weak = client.post(
        "/admin/password_change/",
        {"old_password": "pw-olive", "new_password1": "abcdefghijklm", "new_password2": "abcdefghijklm"},
    )
    assert weak.status_code == 200
    assert "This password must contain at least one number." in text(weak)
    ok = client.post(
        "/admin/password_change/",
        {"old_password": "pw-olive", "new_password1": STRONG, "new_password2": STRONG},
    )
    assert ok.status_code == 302
