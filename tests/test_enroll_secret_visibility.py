"""Enroll secrets: found by digest and compared in constant time at enrolment, and shown only to
those Fleet shows them to (admins and maintainers of their scope; never observers or gitops)."""

from __future__ import annotations

import hashlib
from io import StringIO

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from hosts.choices import Role
from hosts.enrollment import EnrollmentError, find_secret
from hosts.models import EnrollSecret, Team, UserRole
from hosts.serializers import EnrollSecretSerializer
from tests.agent import Agent
from tests.factories import api_for, user_with_role

pytestmark = pytest.mark.django_db

SECRETS = "/api/v1/enroll-secrets/"
ADD_HOSTS = "/admin/hosts/host/add-hosts/"
NO_SECRET_ROLES = [Role.OBSERVER, Role.OBSERVER_PLUS, Role.GITOPS]


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


# --- storage and lookup ---------------------------------------------------------------------------


def test_every_write_path_stores_the_digest(team):
    created = EnrollSecret.objects.create(secret="created-secret")
    EnrollSecret.objects.bulk_create([EnrollSecret(secret="bulk-secret", team=team)])
    assert EnrollSecret.objects.get(pk=created.pk).secret_digest == sha256("created-secret")
    assert EnrollSecret.objects.get(secret="bulk-secret").secret_digest == sha256("bulk-secret")
    created.secret = "changed-secret"
    created.save(update_fields=["secret"])
    assert EnrollSecret.objects.get(pk=created.pk).secret_digest == sha256("changed-secret")


def test_find_secret_is_one_indexed_query_on_the_digest(global_secret):
    with CaptureQueriesContext(connection) as queries:
        found = find_secret(f"  {global_secret} ")
    assert found.secret == global_secret
    assert len(queries) == 1
    sql = queries[0]["sql"]
    assert "secret_digest" in sql and global_secret not in sql


@pytest.mark.parametrize("guess", ["global-secret-12", "global-secret-1234", "GLOBAL-SECRET-123", "", "  "])
def test_find_secret_refuses_near_misses(global_secret, guess):
    with pytest.raises(EnrollmentError):
        find_secret(guess)


def test_enrolment_still_works_with_the_secret(client, team_secret, team):
    agent = Agent(client)
    agent.enroll(team_secret)
    assert agent.node_key
    refused = Agent(client, identifier="other").enroll("team-secret-45")
    assert refused.get("node_invalid") is True and "node_key" not in refused


def test_the_migration_fills_digests_of_existing_rows(global_secret):
    from importlib import import_module

    migration = import_module("hosts.migrations.0004_enroll_secret_digest")
    EnrollSecret.objects.update(secret_digest="")  # as the column was before the migration ran
    migration.fill_digests(apps, None)
    assert EnrollSecret.objects.get().secret_digest == sha256(global_secret)


# --- REST API ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", NO_SECRET_ROLES)
@pytest.mark.parametrize("scoped", [False, True], ids=["global", "team"])
def test_observers_and_gitops_get_403_on_the_secret_endpoints(team, global_secret, team_secret, role, scoped):
    api = api_for(user_with_role(f"u-{role}-{scoped}", role, team if scoped else None))
    listing = api.get(SECRETS)
    assert listing.status_code == 403
    assert global_secret not in listing.content.decode() and team_secret not in listing.content.decode()
    for secret in EnrollSecret.objects.all():
        detail = api.get(f"{SECRETS}{secret.pk}/")
        assert detail.status_code in (403, 404)
        assert secret.secret not in detail.content.decode()


def test_team_maintainer_sees_only_their_teams_secrets(team, global_secret, team_secret):
    api = api_for(user_with_role("tm", Role.MAINTAINER, team))
    rows = api.get(SECRETS).json()["results"]
    assert [row["secret"] for row in rows] == [team_secret]
    global_id = EnrollSecret.objects.get(secret=global_secret).pk
    assert api.get(f"{SECRETS}{global_id}/").status_code == 404


def test_global_maintainer_and_admin_see_every_secret(team, global_secret, team_secret):
    for role in (Role.MAINTAINER, Role.ADMIN):
        rows = api_for(user_with_role(f"g-{role}", role)).get(SECRETS).json()["results"]
        assert {row["secret"] for row in rows} == {global_secret, team_secret}


def test_a_writer_without_read_access_never_gets_the_value_back(team_secret):
    """Gitops may set secrets (through specs) but not read them: the representation drops it."""
    gitops = user_with_role("ops", Role.GITOPS)
    request = Request(APIRequestFactory().get("/"))
    request.user = gitops
    data = EnrollSecretSerializer(EnrollSecret.objects.get(), context={"request": request}).data
    assert "secret" not in data and data["team_name"] == "Engineering"
    request.user = user_with_role("tm2", Role.MAINTAINER, Team.objects.get())
    assert EnrollSecretSerializer(EnrollSecret.objects.get(), context={"request": request}).data["secret"]


# --- console -----------------------------------------------------------------------------------------


def staff_with_role(username: str, role: str, team: Team | None = None):
    """A console user: the Fleet role alone opens the console (no is_staff, no Django permissions)."""
    user = get_user_model().objects.create_user(username, password="pw")
    UserRole.objects.create(user=user, team=team, role=role)
    return user


@pytest.fixture
def cert(settings, tmp_path):
    path = tmp_path / "cert.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    settings.TLS_CERT_FILE = str(path)
    return path


@pytest.mark.parametrize("role", NO_SECRET_ROLES)
@pytest.mark.parametrize("scoped", [False, True], ids=["global", "team"])
def test_console_shows_no_secret_to_observers_and_gitops(
    client, cert, team, global_secret, team_secret, role, scoped
):
    client.force_login(staff_with_role(f"c-{role}-{scoped}", role, team if scoped else None))
    pages = [
        client.get(ADD_HOSTS),
        client.get(f"{ADD_HOSTS}?team={team.pk}"),
        client.get("/admin/hosts/enrollsecret/"),
        client.get(f"/admin/hosts/team/{team.pk}/change/"),
    ]
    for page in pages:
        body = page.content.decode()
        assert global_secret not in body and team_secret not in body
    if role == Role.GITOPS:  # gitops has no console at all: every page asks for another login
        assert all(page.status_code == 302 and "/admin/login/" in page["Location"] for page in pages)
        return
    assert "You cannot see any enroll secret" in pages[0].content.decode()
    for secret in EnrollSecret.objects.all():
        assert client.get(f"{ADD_HOSTS}secret/{secret.pk}/secret.txt").status_code == 403
        change = client.get(f"/admin/hosts/enrollsecret/{secret.pk}/change/")
        assert change.status_code == 403  # their role may not read enroll secrets at all


def test_console_shows_a_team_maintainer_their_teams_secret_only(
    client, cert, team, global_secret, team_secret
):
    client.force_login(staff_with_role("cm", Role.MAINTAINER, team))
    page = client.get(ADD_HOSTS).content.decode()
    assert team_secret in page and global_secret not in page
    assert client.get(f"{ADD_HOSTS}?team=").content.decode().count(global_secret) == 0
    team_id = EnrollSecret.objects.get(secret=team_secret).pk
    global_id = EnrollSecret.objects.get(secret=global_secret).pk
    assert client.get(f"{ADD_HOSTS}secret/{team_id}/secret.txt").content.decode() == team_secret
    assert client.get(f"{ADD_HOSTS}secret/{global_id}/secret.txt").status_code == 403


# --- command line ------------------------------------------------------------------------------------


def test_enroll_secret_list_is_for_operators(global_secret):
    """``manage.py`` runs with the server's own database credentials: it shows the values."""
    out = StringIO()
    call_command("enroll_secret", "list", stdout=out)
    assert global_secret in out.getvalue()
