"""``manage.py user``: add (password from stdin, or a set-password link), role, list, deactivate and
activate, with the console's rules (validators, one global role or team roles, last admin)."""

from __future__ import annotations

import json
import re
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client
from knox.models import AuthToken
from rest_framework.test import APIClient

from hosts.choices import Role
from hosts.models import Team, UserRole
from tests.factories import token_for, user_with_role

pytestmark = pytest.mark.django_db

STRONG = "Corr3ct-Horse-Battery!"


@pytest.fixture
def sales(db) -> Team:
    return Team.objects.create(name="Sales")


def run(*args: str, stdin: str | None = None) -> str:
    out = StringIO()
    kwargs = {"stdin": StringIO(stdin)} if stdin is not None else {}
    call_command("user", *args, stdout=out, stderr=StringIO(), **kwargs)
    return out.getvalue()


def roles_of(username: str) -> dict:
    return dict(UserRole.objects.filter(user__username=username).values_list("team_id", "role"))


# --- add ---------------------------------------------------------------------------------------------------


def test_add_with_a_password_from_stdin(team):
    out = run(
        "add", "alice", "--email", "alice@example.com", "--role", "maintainer", "--team", "Engineering",
        "--name", "Alice Doe", "--password-stdin", stdin=STRONG + "\n",
    )  # fmt: skip
    assert 'Created user "alice": Maintainer on Engineering.' in out
    assert "set-password" not in out and STRONG not in out
    alice = get_user_model().objects.get(username="alice")
    assert alice.check_password(STRONG) and alice.email == "alice@example.com"
    assert alice.get_full_name() == "Alice Doe" and not alice.is_staff
    assert roles_of("alice") == {team.pk: "maintainer"}
    login = Client().post("/admin/login/?next=/admin/", {"username": "alice", "password": STRONG})
    assert login.status_code == 302 and login["Location"] == "/admin/"


def test_add_without_a_password_prints_a_set_password_link(settings):
    settings.FLEET_SERVER_URL = "https://fleet.example.com/"
    out = run("add", "bob", "--email", "bob@example.com", "--role", "observer")
    assert 'Created user "bob": Observer (global).' in out
    assert re.search(r"https://fleet\.example\.com/set-password/[\w-]+/[\w-]+/", out)
    assert "3 days" in out
    assert not get_user_model().objects.get(username="bob").has_usable_password()


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--role", "observer", "--team", "Nope"], None, 'No team named "Nope" (teams: Engineering).'),
        (["--role", "root"], None, "invalid choice: 'root'"),
        (["--role", "observer", "--password-stdin"], "short\n", "Weak password: This password is too short."),
        (["--role", "observer", "--password-stdin"], "abcdefghijklmnop\n", "at least one number"),
        (["--role", "observer", "--password-stdin"], "\n", "No password on stdin"),
    ],
    ids=["unknown_team_case", "bad_role_case", "short_case", "no_digit_case", "empty_stdin_case"],
)
def test_add_errors(team, args, stdin, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        run("add", "carol", "--email", "carol@example.com", *args, stdin=stdin)
    assert not get_user_model().objects.filter(username="carol").exists()


def test_weak_passwords_list_every_validator_message():
    with pytest.raises(CommandError) as caught:
        run(
            "add",
            "carol",
            "--email",
            "c@example.com",
            "--role",
            "observer",
            "--password-stdin",
            stdin="1234\n",
        )
    message = str(caught.value)
    for expected in (
        "This password is too short. It must contain at least 12 characters.",
        "This password is too common.",
        "This password is entirely numeric.",
        "This password must contain at least one symbol",
    ):
        assert expected in message


def test_add_refuses_duplicate_usernames_and_emails():
    run("add", "dave", "--email", "dave@example.com", "--role", "observer")
    with pytest.raises(CommandError, match='Username: The username "DAVE" is already taken.'):
        run("add", "DAVE", "--email", "other@example.com", "--role", "observer")
    with pytest.raises(CommandError, match="Email: A user with the email Dave@example.com already exists."):
        run("add", "dave2", "--email", "Dave@example.com", "--role", "observer")
    with pytest.raises(CommandError, match="Enter a valid email address."):
        run("add", "dave3", "--email", "nope", "--role", "observer")


# --- role -------------------------------------------------------------------------------------------------


def test_role_sets_and_removes_team_roles(team, sales):
    user_with_role("erin", Role.OBSERVER, team)
    out = run("role", "erin", "--role", "maintainer", "--team", "Sales")
    assert '"erin": Observer on Engineering, Maintainer on Sales.' in out
    assert roles_of("erin") == {team.pk: "observer", sales.pk: "maintainer"}
    out = run("role", "erin", "--role", "admin", "--team", "engineering")  # names match ignoring case
    assert '"erin": Admin on Engineering, Maintainer on Sales.' in out
    out = run("role", "erin", "--remove", "--team", "Sales")
    assert roles_of("erin") == {team.pk: "admin"} and "Admin on Engineering." in out
    with pytest.raises(CommandError, match='"erin" has no role on Sales.'):
        run("role", "erin", "--remove", "--team", "Sales")


def test_role_keeps_one_global_role_or_team_roles(team):
    user_with_role("erin", Role.OBSERVER, team)
    with pytest.raises(
        CommandError, match="either one global role or roles on teams, not both. For erin: remove"
    ):
        run("role", "erin", "--role", "admin")
    run("role", "erin", "--remove", "--team", "Engineering")
    run("role", "erin", "--role", "observer_plus")
    assert roles_of("erin") == {None: "observer_plus"}
    run("role", "erin", "--role", "gitops")
    assert roles_of("erin") == {None: "gitops"}
    with pytest.raises(CommandError, match="not both"):
        run("role", "erin", "--role", "admin", "--team", "Engineering")
    run("role", "erin", "--remove")
    assert roles_of("erin") == {}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ghost", "--role", "admin"], 'No user named "ghost".'),
        (["erin"], "--role is required (or --remove)."),
        (["erin", "--role", "admin", "--remove"], "Give either --role or --remove, not both."),
        (["erin", "--role", "admin", "--team", "Nope"], 'No team named "Nope"'),
    ],
)
def test_role_errors(team, args, message):
    user_with_role("erin", Role.OBSERVER, team)
    with pytest.raises(CommandError, match=re.escape(message)):
        run("role", *args)


def test_the_last_global_admin_cannot_be_demoted_or_deactivated():
    user_with_role("boss", Role.ADMIN)
    with pytest.raises(CommandError, match='"boss" is the last active global admin and cannot be demoted'):
        run("role", "boss", "--role", "observer")
    with pytest.raises(CommandError, match="cannot be demoted"):
        run("role", "boss", "--remove")
    with pytest.raises(
        CommandError, match='"boss" is the last active global admin and cannot be deactivated'
    ):
        run("deactivate", "boss")
    user_with_role("deputy", Role.ADMIN)
    run("role", "boss", "--role", "observer")
    assert roles_of("boss") == {None: "observer"}
    with pytest.raises(CommandError, match="last active global admin"):
        run("deactivate", "deputy")


# --- list, deactivate, activate, password -----------------------------------------------------------------


def test_list_as_a_table_and_as_json(team, sales):
    user_with_role("boss", Role.ADMIN)
    mixed = user_with_role("mike", Role.OBSERVER, sales)
    mixed.email = "mike@example.com"
    mixed.save()
    UserRole.objects.create(user=mixed, team=team, role=Role.MAINTAINER)
    get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    get_user_model().objects.filter(username="boss").update(is_active=False)
    lines = run("list").splitlines()
    assert lines[0].split() == ["USERNAME", "EMAIL", "ACTIVE", "ROLES"]
    assert lines[1].split() == ["boss", "no", "Admin", "(global)"]
    assert lines[2].split() == [
        "mike",
        "mike@example.com",
        "yes",
        "Maintainer",
        "on",
        "Engineering,",
        "Observer",
        "on",
        "Sales",
    ]
    assert lines[3].split() == ["root", "root@example.com", "yes", "Admin", "(global,", "superuser)"]

    data = json.loads(run("list", "--json"))
    assert [u["username"] for u in data] == ["boss", "mike", "root"]
    assert data[0]["global_role"] == "admin" and data[0]["active"] is False
    assert data[1]["teams"] == [
        {"team": "Engineering", "role": "maintainer"},
        {"team": "Sales", "role": "observer"},
    ]
    assert data[1]["global_role"] is None and data[2]["superuser"] is True


def test_list_when_empty():
    assert run("list") == "No users.\n"


def test_deactivate_revokes_tokens_and_activate_lets_the_user_back(team):
    erin = user_with_role("erin", Role.OBSERVER, team)
    token = token_for(erin)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api.get("/api/v1/hosts/").status_code == 200
    out = run("deactivate", "erin")
    assert 'Deactivated "erin": 1 API token(s) and 0 session(s) revoked.' in out
    assert api.get("/api/v1/hosts/").status_code == 401
    assert not AuthToken.objects.filter(user=erin).exists()
    assert "already deactivated" in run("deactivate", "erin")
    login = Client().post("/admin/login/?next=/admin/", {"username": "erin", "password": "pw-erin"})
    assert login.status_code == 200  # refused
    assert 'Reactivated "erin".' in run("activate", "erin")
    assert "already active" in run("activate", "erin")
    login = Client().post("/admin/login/?next=/admin/", {"username": "erin", "password": "pw-erin"})
    assert login.status_code == 302


def test_password_from_stdin_or_a_link(team):
    erin = user_with_role("erin", Role.OBSERVER, team)
    token = token_for(erin)
    with pytest.raises(CommandError, match="too short"):
        run("password", "erin", "--password-stdin", stdin="x\n")
    assert "1 API token(s) revoked" in run("password", "erin", "--password-stdin", stdin=STRONG + "\r\n")
    erin.refresh_from_db()
    assert erin.check_password(STRONG)
    assert not AuthToken.objects.filter(token_key=token[:15]).exists()
    out = run("password", "erin")
    assert "/set-password/" in out and "current password keeps working" in out
