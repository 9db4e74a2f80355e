"""The script library over REST: CRUD, Fleet's content rules, uploads, team scopes and roles."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from activities.models import Activity
from hosts.choices import Role
from hosts.models import Team
from hostscripts.models import Script
from hostscripts.validation import MAX_SAVED_CHARS
from tests.factories import api_for, user_with_role
from tests.scripts_support import SCRIPTS

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_api():
    return api_for(user_with_role("admin", Role.ADMIN))


def create(api, **body):
    return api.post(SCRIPTS, body, format="json")


def test_create_list_retrieve_update_delete(admin_api, team):
    created = create(admin_api, name="hello.sh", contents="#!/bin/sh\necho hello\n", team_id=team.pk)
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["name"] == "hello.sh" and body["team_id"] == team.pk and body["team_name"] == team.name
    assert body["contents"] == "#!/bin/sh\necho hello\n" and body["platforms"] == "macOS, Linux"
    assert body["author"] == "admin"
    script_id = body["id"]

    listed = admin_api.get(SCRIPTS).json()
    assert listed["count"] == 1 and "contents" not in listed["results"][0]
    assert admin_api.get(f"{SCRIPTS}{script_id}/").json()["contents"].startswith("#!/bin/sh")

    changed = admin_api.patch(f"{SCRIPTS}{script_id}/", {"contents": "echo bye\n"}, format="json")
    assert changed.status_code == 200, changed.content
    assert changed.json()["contents"] == "echo bye\n" and changed.json()["name"] == "hello.sh"
    renamed = admin_api.put(
        f"{SCRIPTS}{script_id}/", {"name": "bye.sh", "contents": "echo bye\n"}, format="json"
    )
    assert renamed.status_code == 200 and renamed.json()["name"] == "bye.sh"

    assert admin_api.delete(f"{SCRIPTS}{script_id}/").status_code == 204
    assert not Script.objects.exists()
    types = list(Activity.objects.order_by("id").values_list("type", flat=True))
    assert types == ["added_script", "edited_script", "edited_script", "deleted_script"]
    deleted = Activity.objects.get(type="deleted_script")
    assert deleted.details["script_name"] == "bye.sh" and deleted.details["team_id"] == team.pk


def test_list_filters_by_team_and_global(admin_api, team):
    Script.objects.create(name="global.sh", contents="echo")
    Script.objects.create(name="team.sh", contents="echo", team=team)
    names = lambda query: [s["name"] for s in admin_api.get(SCRIPTS + query).json()["results"]]  # noqa: E731
    assert names("") == ["global.sh", "team.sh"]
    assert names(f"?team_id={team.pk}") == ["team.sh"]
    assert names("?team_id=0") == ["global.sh"]
    assert names("?team_id=99999999999999999999999") == []


def test_multipart_upload_takes_the_file_name(admin_api):
    upload = SimpleUploadedFile("install.ps1", b"Write-Output 'hi'\r\n", content_type="text/plain")
    response = admin_api.post(SCRIPTS, {"script": upload}, format="multipart")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "install.ps1" and body["platforms"] == "Windows" and body["team_id"] is None
    assert body["contents"] == "Write-Output 'hi'\n"  # Windows line ends stored as \n


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "bad.sh", "contents": "#!/usr/bin/python\nprint(1)"}, "Interpreter not supported"),
        ({"name": "big.sh", "contents": "#" * (MAX_SAVED_CHARS + 1)}, "Script is too large"),
        ({"name": "empty.sh", "contents": "  \n"}, "must not be empty"),
        ({"name": "nul.sh", "contents": "echo \x00"}, "Only plain text allowed"),
        ({"name": "script.py", "contents": "print(1)"}, "File type not supported"),
        ({"name": "", "contents": "echo"}, "needs a name"),
    ],
    ids=["shebang", "too-large", "empty", "binary", "extension", "no-name"],
)
def test_invalid_scripts_are_400_with_fleets_message(admin_api, body, message):
    response = create(admin_api, **body)
    assert response.status_code == 400, response.content
    assert message in response.json()["message"]
    assert not Script.objects.exists()


def test_binary_upload_is_refused(admin_api):
    upload = SimpleUploadedFile("blob.sh", b"\xff\xfe\x00binary", content_type="application/octet-stream")
    response = admin_api.post(SCRIPTS, {"script": upload}, format="multipart")
    assert response.status_code == 400
    assert "Only plain text allowed" in response.json()["message"]


def test_duplicate_name_in_a_team_is_refused_but_other_teams_may_reuse_it(admin_api, team):
    assert create(admin_api, name="a.sh", contents="echo", team_id=team.pk).status_code == 201
    duplicate = create(admin_api, name="a.sh", contents="echo 2", team_id=team.pk)
    assert duplicate.status_code == 400 and "already exists" in duplicate.json()["message"]
    assert create(admin_api, name="a.sh", contents="echo").status_code == 201  # global
    other = Team.objects.create(name="Other")
    assert create(admin_api, name="a.sh", contents="echo", team_id=other.pk).status_code == 201


def test_team_of_a_script_does_not_change_and_unknown_team_is_400(admin_api, team):
    script = Script.objects.create(name="a.sh", contents="echo", team=team)
    moved = admin_api.patch(f"{SCRIPTS}{script.pk}/", {"team_id": 0}, format="json")
    assert moved.status_code == 400 and "cannot be changed" in moved.json()["message"]
    assert create(admin_api, name="b.sh", contents="echo", team_id=424242).status_code == 400


def test_bad_input_types_are_400_not_500(admin_api):
    for body in (
        {"name": ["x"], "contents": "echo"},
        {"name": "a.sh", "contents": {"x": 1}},
        {"team_id": "x"},
    ):
        response = admin_api.post(SCRIPTS, body, format="json")
        assert response.status_code == 400, (body, response.content)


# --- roles ---------------------------------------------------------------------------------------


def test_team_maintainer_writes_own_team_only(team):
    other = Team.objects.create(name="Other")
    api = api_for(user_with_role("maint", Role.MAINTAINER, team))
    assert create(api, name="ok.sh", contents="echo", team_id=team.pk).status_code == 201
    assert create(api, name="no.sh", contents="echo", team_id=other.pk).status_code == 400  # not theirs
    assert create(api, name="global.sh", contents="echo").status_code == 403
    foreign = Script.objects.create(name="f.sh", contents="echo", team=other)
    assert api.get(f"{SCRIPTS}{foreign.pk}/").status_code == 404
    assert api.delete(f"{SCRIPTS}{foreign.pk}/").status_code == 404
    glob = Script.objects.create(name="g.sh", contents="echo")
    assert api.get(f"{SCRIPTS}{glob.pk}/").status_code == 200  # global scripts are readable
    assert api.patch(f"{SCRIPTS}{glob.pk}/", {"contents": "x"}, format="json").status_code == 403


@pytest.mark.parametrize("role", [Role.OBSERVER, Role.OBSERVER_PLUS])
def test_observers_read_their_teams_scripts_and_write_none(team, role):
    other = Team.objects.create(name="Other")
    mine = Script.objects.create(name="mine.sh", contents="echo", team=team)
    Script.objects.create(name="theirs.sh", contents="echo", team=other)
    api = api_for(user_with_role("obs", role, team))
    assert [s["name"] for s in api.get(SCRIPTS).json()["results"]] == ["mine.sh"]
    assert api.get(f"{SCRIPTS}{mine.pk}/").status_code == 200
    assert create(api, name="x.sh", contents="echo", team_id=team.pk).status_code == 403
    assert api.delete(f"{SCRIPTS}{mine.pk}/").status_code == 403


def test_gitops_and_roleless_users_get_403():
    Script.objects.create(name="g.sh", contents="echo")
    assert api_for(user_with_role("gitops", Role.GITOPS)).get(SCRIPTS).status_code == 403
    assert api_for(user_with_role("nobody")).get(SCRIPTS).status_code == 403
