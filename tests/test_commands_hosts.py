"""``manage.py team`` and ``manage.py enroll_secret``."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from hosts.models import EnrollSecret, Host, Team

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


# --- team -----------------------------------------------------------------------------------------------


def test_team_add_prints_its_enroll_secret():
    out = run("team", "add", "Laptops", "--description", "Everyone's laptops")
    team = Team.objects.get(name="Laptops")
    assert team.description == "Everyone's laptops"
    secret = team.secrets.get().secret
    assert 'Created team "Laptops"' in out and f"Enroll secret: {secret}" in out


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Engineering", 'A team named "Engineering" already exists.'),
        ("All fleets", '"All fleets" is reserved.'),
        (" ", "A team needs a name."),
    ],
)
def test_team_add_errors(team, name, message):
    with pytest.raises(CommandError, match=message):
        run("team", "add", name)


def test_team_list_with_host_counts(team):
    Team.objects.create(name="Sales", description="Field team")
    Host.objects.bulk_create(
        [
            Host(osquery_host_id="a", team=team),
            Host(osquery_host_id="b", team=team),
            Host(osquery_host_id="c"),
        ]
    )
    lines = run("team", "list").splitlines()
    assert lines[0].split() == ["ID", "NAME", "HOSTS", "DESCRIPTION"]
    assert lines[1].split()[1:3] == ["Engineering", "2"]
    assert lines[2].split()[1:] == ["Sales", "0", "Field", "team"]


def test_team_list_when_empty():
    assert run("team", "list").strip() == "No teams."


def test_team_remove(team, team_secret):
    Host.objects.create(osquery_host_id="a", team=team)
    out = run("team", "remove", "Engineering")
    assert "1 host(s) now have no team" in out
    assert not Team.objects.exists() and not EnrollSecret.objects.exists()
    assert Host.objects.get().team is None
    with pytest.raises(CommandError, match='No team named "Engineering"'):
        run("team", "remove", "Engineering")


def test_team_needs_an_action():
    with pytest.raises(CommandError):
        run("team")


# --- enroll_secret -------------------------------------------------------------------------------------


def test_enroll_secret_add_global_and_team(team):
    out = run("enroll_secret", "add", "my-global-secret")
    assert "no team (global)" in out and "my-global-secret" in out
    assert EnrollSecret.objects.get(secret="my-global-secret").team is None
    run("enroll_secret", "add", "eng-secret", "--team", "Engineering")
    assert EnrollSecret.objects.get(secret="eng-secret").team == team


def test_enroll_secret_add_generates_one_when_left_out():
    out = run("enroll_secret", "add")
    secret = EnrollSecret.objects.get()
    assert len(secret.secret) == 24 and secret.secret in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["global-secret-123"], "This secret is already in use."),
        (["x", "--team", "Nope"], 'No team named "Nope"'),
        (["  "], "The secret cannot be empty."),
    ],
)
def test_enroll_secret_add_errors(global_secret, args, message):
    with pytest.raises(CommandError, match=message):
        run("enroll_secret", "add", *args)


def test_enroll_secret_add_stops_at_fifty(team):
    EnrollSecret.objects.bulk_create(EnrollSecret(secret=f"s{i}", team=team) for i in range(50))
    with pytest.raises(CommandError, match="team Engineering already has 50 secrets, the maximum."):
        run("enroll_secret", "add", "--team", "Engineering")


def test_enroll_secret_list(global_secret, team_secret):
    lines = run("enroll_secret", "list").splitlines()
    assert lines[0].split() == ["SECRET", "TEAM", "CREATED", "(UTC)"]
    rows = {line.split()[0]: line.split()[1] for line in lines[1:]}
    assert rows == {global_secret: "(global)", team_secret: "Engineering"}
    only_team = run("enroll_secret", "list", "--team", "Engineering")
    assert team_secret in only_team and global_secret not in only_team


def test_enroll_secret_list_when_empty():
    assert run("enroll_secret", "list").strip() == "No enroll secrets."


def test_enroll_secret_remove(global_secret):
    assert "Removed the enroll secret" in run("enroll_secret", "remove", global_secret)
    assert not EnrollSecret.objects.exists()
    with pytest.raises(CommandError, match="No such enroll secret."):
        run("enroll_secret", "remove", global_secret)
