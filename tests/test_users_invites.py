"""Invitations: an admin invites by email with roles, the link is shown once (and emailed when a
mail server is configured), the invitee creates their account and lands in the console; unusable
links get a 404 page, and the page is rate-limited per address."""

from __future__ import annotations

import hashlib
import html
import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone

from hosts.choices import Role
from hosts.models import Team, UserRole
from tests.factories import user_with_role
from users import services
from users.models import Invite, InviteRole

pytestmark = pytest.mark.django_db

INVITES = "/admin/users/invite/"
ADD_INVITE = "/admin/users/invite/add/"
STRONG = "Corr3ct-Horse-Battery!"


@pytest.fixture
def sales(db) -> Team:
    return Team.objects.create(name="Sales")


@pytest.fixture
def admin_client(client):
    client.force_login(user_with_role("boss", Role.ADMIN))
    return client


def invite_link_from(page: str) -> str:
    match = re.search(r'value="(http://testserver/invite/[^"]+/)"', page)
    assert match, page
    return match.group(1)


def path_of(link: str) -> str:
    return link.removeprefix("http://testserver")


def invite(email: str = "new@example.com", roles=None, **kwargs) -> tuple[Invite, str]:
    return services.create_invite(email, roles or {None: Role.OBSERVER}, **kwargs)


def text(response) -> str:
    return html.unescape(response.content.decode())


def accept(client: Client, link: str, password: str = STRONG, username: str = "newbie", **extra):
    data = {"username": username, "name": "New Person", "password1": password, "password2": password}
    return client.post(path_of(link), {**data, **extra})


# --- inviting -------------------------------------------------------------------------------------------


def test_admin_invites_and_the_invitee_lands_in_the_console_with_the_role(admin_client, team):
    page = admin_client.get(ADD_INVITE).content.decode()
    assert "No mail server is configured" in page and "Global role" in page and "Engineering" in page

    created = admin_client.post(
        ADD_INVITE,
        {
            "email": "Dana@Example.com",
            "name": "Dana Scully",
            "global_role": "",
            f"team_{team.pk}": "maintainer",
        },
    )
    assert created.status_code == 200
    assert "no-store" in created["Cache-Control"]
    body = created.content.decode()
    assert "This link is shown only now" in body and "Maintainer on Engineering" in body
    link = invite_link_from(body)
    token = link.rstrip("/").rsplit("/", 1)[1]
    assert len(token) >= 43  # 32 random bytes

    row = Invite.objects.get()
    assert row.email == "Dana@example.com" and row.invited_by.username == "boss"
    assert row.token_digest == hashlib.sha256(token.encode()).hexdigest()
    assert timedelta(days=4, hours=23) < row.expires_at - timezone.now() <= timedelta(days=5)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {Invite._meta.db_table}")
        assert not any(token in str(value) for values in cursor.fetchall() for value in values)
    # shown once: neither the list nor the invitation's page shows it again
    assert token not in admin_client.get(INVITES).content.decode()
    assert token not in admin_client.get(f"{INVITES}{row.pk}/change/").content.decode()

    invitee = Client()
    form = invitee.get(path_of(link))
    assert form.status_code == 200
    assert (
        "Dana@example.com" in form.content.decode() and "Maintainer on Engineering" in form.content.decode()
    )
    response = accept(invitee, link, username="dana", name="Dana Katherine Scully")
    assert response.status_code == 302 and response["Location"] == "/admin/"

    user = get_user_model().objects.get(username="dana")
    assert user.email == "Dana@example.com" and user.get_full_name() == "Dana Katherine Scully"
    assert not user.is_staff and not user.is_superuser
    assert list(UserRole.objects.filter(user=user).values_list("team_id", "role")) == [
        (team.pk, "maintainer")
    ]
    assert invitee.session["_auth_user_id"] == str(user.pk)
    assert invitee.get("/admin/").status_code == 200  # the role alone opens the console
    row.refresh_from_db()
    assert row.accepted_at is not None and row.user == user
    # the link worked once
    again = Client().get(path_of(link))
    assert again.status_code == 404 and "already been used" in again.content.decode()
    login = Client().post("/admin/login/?next=/admin/", {"username": "dana", "password": STRONG})
    assert login.status_code == 302 and login["Location"] == "/admin/"


def test_the_invitation_is_emailed_when_a_mail_server_is_configured(admin_client, settings):
    settings.EMAIL_HOST = "smtp.example.com"
    page = admin_client.get(ADD_INVITE).content.decode()
    assert "The link is emailed to this address" in page
    created = admin_client.post(ADD_INVITE, {"email": "eve@example.com", "global_role": "observer_plus"})
    body = created.content.decode()
    link = invite_link_from(body)
    assert "The link was emailed to eve@example.com" in body
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["eve@example.com"] and link in message.body and "Observer+ (global)" in message.body


def test_a_failing_mail_server_still_shows_the_link(admin_client, settings, monkeypatch):
    settings.EMAIL_HOST = "smtp.example.com"

    def refuse(*args, **kwargs):
        raise ConnectionRefusedError("no SMTP here")

    monkeypatch.setattr("users.links.send_mail", refuse)
    created = admin_client.post(ADD_INVITE, {"email": "eve@example.com", "global_role": "observer"})
    assert created.status_code == 200
    body = created.content.decode()
    assert "could not be sent" in body
    invite_link_from(body)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"email": "not-an-email", "global_role": "observer"}, "Enter a valid email address."),
        (
            {"email": "boss@example.com", "global_role": "observer"},
            "A user with the email boss@example.com already exists.",
        ),
        ({"email": "pending@example.com", "global_role": "observer"}, "already has a pending invitation"),
        ({"email": "x@example.com", "global_role": ""}, "Choose a role"),
        ({"email": "x@example.com", "global_role": "admin", "team": "maintainer"}, "not both"),
    ],
    ids=["bad_email_case", "existing_user_case", "pending_case", "no_role_case", "global_and_team_case"],
)
def test_invitation_errors_are_shown_on_the_form(admin_client, team, data, message):
    get_user_model().objects.filter(username="boss").update(email="boss@example.com")
    invite("pending@example.com")
    if "team" in data:
        data = {**data, f"team_{team.pk}": data.pop("team")}
    response = admin_client.post(ADD_INVITE, data)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert Invite.objects.count() == 1


def test_pending_invitations_are_listed_and_revocable(admin_client):
    first, first_token = invite("one@example.com")
    invite("two@example.com")
    old, _ = invite("old@example.com")
    Invite.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    pending = admin_client.get(f"{INVITES}?status=pending").content.decode()
    assert "one@example.com" in pending and "two@example.com" in pending and "old@example.com" not in pending
    assert "Expired" in admin_client.get(f"{INVITES}?status=expired").content.decode()
    assert "Pending invitations (2)" in admin_client.get("/admin/users/user/").content.decode()

    response = admin_client.post(INVITES, {"action": "revoke_selected", "_selected_action": [first.pk]})
    assert response.status_code == 302
    assert not Invite.objects.filter(pk=first.pk).exists()
    gone = Client().get(f"/invite/{first_token}/")
    assert gone.status_code == 404 and "not valid" in gone.content.decode()


def test_team_admins_invite_to_their_teams_only(client, team, sales):
    lead = user_with_role("lead", Role.ADMIN, team)
    client.force_login(lead)
    page = client.get(ADD_INVITE).content.decode()
    assert "Global role" not in page and "Engineering" in page and "Sales" not in page

    # fields they do not have are ignored: no global role, no role on Sales
    refused = client.post(
        ADD_INVITE, {"email": "x@example.com", "global_role": "admin", f"team_{sales.pk}": "admin"}
    )
    assert refused.status_code == 200 and "Choose a role" in refused.content.decode()
    assert not Invite.objects.exists()

    ok = client.post(ADD_INVITE, {"email": "x@example.com", f"team_{team.pk}": "observer"})
    assert ok.status_code == 200
    assert list(InviteRole.objects.values_list("team_id", "role")) == [(team.pk, "observer")]

    invite("global@example.com", {None: Role.ADMIN})
    invite("sales@example.com", {sales.pk: Role.OBSERVER})
    listed = client.get(INVITES).content.decode()
    assert "x@example.com" in listed
    assert "global@example.com" not in listed and "sales@example.com" not in listed


@pytest.mark.parametrize("role", [Role.MAINTAINER, Role.OBSERVER, Role.OBSERVER_PLUS])
def test_non_admins_cannot_invite(client, team, role):
    client.force_login(user_with_role(f"u-{role}", role))
    assert client.get(INVITES).status_code == 403
    assert client.get(ADD_INVITE).status_code == 403
    assert client.post(ADD_INVITE, {"email": "x@example.com", "global_role": "admin"}).status_code == 403
    assert not Invite.objects.exists()


# --- accepting ---------------------------------------------------------------------------------------------


def test_weak_passwords_are_refused_with_the_validators_messages(client):
    _, token = invite()
    link = f"/invite/{token}/"
    for password, messages in [
        ("short1!", ["This password is too short. It must contain at least 12 characters."]),
        ("abcdefghijklmnop", ["at least one number", "at least one symbol"]),
        ("123456789012", ["This password is entirely numeric.", "at least one symbol"]),
        ("verylongusername1!", ["The password is too similar to the username."]),
        ("1234567890-=", ["This password is too common."]),
        ("qwerty123456", ["This password is too common.", "at least one symbol"]),
    ]:
        response = accept(client, link, password=password, username="verylongusername")
        assert response.status_code == 200, password
        for message in messages:
            assert message in text(response), (password, message)
    mismatch = client.post(link, {"username": "newbie", "password1": STRONG, "password2": STRONG + "x"})
    assert "The two password fields didn’t match." in mismatch.content.decode()
    assert not get_user_model().objects.exclude(username="boss").exists()
    assert Invite.objects.get().accepted_at is None


def test_a_taken_username_is_a_form_error(client):
    user_with_role("newbie", Role.OBSERVER)
    _, token = invite()
    response = accept(client, f"/invite/{token}/", username="NEWBIE")
    assert response.status_code == 200
    assert 'The username "NEWBIE" is already taken.' in text(response)


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda row: Invite.objects.filter(pk=row.pk).update(expires_at=timezone.now()), "has expired"),
        (
            lambda row: Invite.objects.filter(pk=row.pk).update(accepted_at=timezone.now()),
            "already been used",
        ),
        (lambda row: Invite.objects.filter(pk=row.pk).delete(), "not valid"),
        (lambda row: Team.objects.all().delete(), "no longer valid"),
    ],
    ids=["expired_case", "used_case", "revoked_case", "team_deleted_case"],
)
def test_unusable_links_get_a_404_page(client, team, spoil, message):
    row, token = invite(roles={team.pk: Role.OBSERVER})
    spoil(row)
    for response in (client.get(f"/invite/{token}/"), accept(client, f"/invite/{token}/")):
        assert response.status_code == 404
        assert message in response.content.decode()
    assert not get_user_model().objects.filter(username="newbie").exists()


def test_an_unknown_token_gets_a_404_page(client):
    response = client.get("/invite/" + "A" * 43 + "/")
    assert response.status_code == 404 and "This invitation link is not valid" in response.content.decode()


def test_the_invitation_pages_are_rate_limited_per_address(client, settings):
    settings.LINK_PAGE_RATE = "5/min"
    _, token = invite()
    statuses = [client.get(f"/invite/guess-{n}/", REMOTE_ADDR="203.0.113.9").status_code for n in range(5)]
    assert statuses == [404] * 5
    refused = client.get(f"/invite/{token}/", REMOTE_ADDR="203.0.113.9")
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert "Too many requests" in refused.content.decode()
    # the invitee, from their own address, is not affected
    assert client.get(f"/invite/{token}/", REMOTE_ADDR="198.51.100.7").status_code == 200


# --- set-password links (manage.py user add without a password) ---------------------------------------------


def test_a_set_password_link_sets_the_password_once_and_logs_in(client, capsys):
    from io import StringIO

    out = StringIO()
    call_command("user", "add", "carol", "--email", "carol@example.com", "--role", "observer", stdout=out)
    link = re.search(r"http://\S+/set-password/\S+/", out.getvalue()).group(0)
    path = link.split("://", 1)[1].split("/", 1)[1]
    carol = get_user_model().objects.get(username="carol")
    assert not carol.has_usable_password()

    page = client.get(f"/{path}")
    assert page.status_code == 200 and "carol" in page.content.decode()
    weak = client.post(f"/{path}", {"new_password1": "carol", "new_password2": "carol"})
    assert weak.status_code == 200 and "This password is too short" in weak.content.decode()
    done = client.post(f"/{path}", {"new_password1": STRONG, "new_password2": STRONG})
    assert done.status_code == 302 and done["Location"] == "/admin/"
    assert client.session["_auth_user_id"] == str(carol.pk)
    carol.refresh_from_db()
    assert carol.check_password(STRONG)
    used = Client().get(f"/{path}")
    assert used.status_code == 404 and "expired or was already used" in used.content.decode()


def test_a_set_password_link_of_a_deactivated_user_is_refused(client):
    from users.links import password_setup_link

    user = user_with_role("gone", Role.OBSERVER)
    link = password_setup_link(user)
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)
    assert client.get(path_of(link)).status_code == 404


def test_a_gitops_invitee_lands_on_the_api_docs(client):
    _, token = invite(roles={None: Role.GITOPS})
    response = accept(client, f"/invite/{token}/")
    assert response.status_code == 302 and response["Location"] == "/api/v1/docs/"
    assert client.get("/api/v1/docs/").status_code == 200
