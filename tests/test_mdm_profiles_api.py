"""Configuration profiles over REST: upload, list, download, status, delete, batch, a host's
profiles and resend; roles and team scoping; errors as JSON, never a 500."""

from __future__ import annotations

import base64

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from activities.models import Activity
from hosts.choices import Role
from hosts.models import Label, LabelMembershipType, Team
from mdm.models import HostProfile, Profile
from mdm.profiles import reconciler, services
from tests.factories import api_for, make_host, user_with_role
from tests.mdm_profiles_support import PROFILES, answer, enrolled_mac, mobileconfig, queued

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.MDM = {**settings.MDM, "PUSH_DISABLED": True}


@pytest.fixture
def other_team(db) -> Team:
    return Team.objects.create(name="Other")


@pytest.fixture
def admin_api():
    return api_for(user_with_role("admin", Role.ADMIN))


@pytest.fixture
def maintainer_api(team):
    return api_for(user_with_role("maintainer", Role.MAINTAINER, team))


@pytest.fixture
def observer_api(team):
    return api_for(user_with_role("observer", Role.OBSERVER, team))


def upload(api, data: bytes, **fields):
    return api.post(
        PROFILES, {"profile": SimpleUploadedFile("p.mobileconfig", data), **fields}, format="multipart"
    )


def as_json(api, data: bytes, **fields):
    return api.post(PROFILES, {"mobileconfig": base64.b64encode(data).decode(), **fields}, format="json")


def test_upload_list_get_download_status_delete(maintainer_api, team):
    data = mobileconfig("com.example.wifi", "Office Wi-Fi")
    created = upload(maintainer_api, data, team_id=team.pk)
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["identifier"] == "com.example.wifi" and body["name"] == "Office Wi-Fi"
    assert body["team_id"] == team.pk and body["team_name"] == team.name and body["platform"] == "darwin"
    assert body["labels_include_all"] == [] and len(body["checksum"]) == 64
    url = f"{PROFILES}{body['uuid']}/"

    listed = maintainer_api.get(PROFILES).json()
    assert listed["count"] == 1 and listed["results"][0]["uuid"] == body["uuid"]
    assert maintainer_api.get(url).json()["name"] == "Office Wi-Fi"
    download = maintainer_api.get(f"{url}download/")
    assert download.status_code == 200 and download.content == data
    assert download["Content-Type"] == "application/x-apple-aspen-config"
    assert 'filename="Office-Wi-Fi.mobileconfig"' in download["Content-Disposition"]
    assert maintainer_api.get(f"{url}status/").json() == {
        "verified": 0,
        "verifying": 0,
        "pending": 0,
        "failed": 0,
    }

    assert maintainer_api.delete(url).status_code == 204
    assert not Profile.objects.exists()
    assert list(Activity.objects.order_by("id").values_list("type", "surface")) == [
        ("created_macos_profile", "rest"),
        ("deleted_macos_profile", "rest"),
    ]


def test_status_counts_hosts(admin_api, team):
    profile = services.create_profile(team=team, data=mobileconfig())
    hosts = [enrolled_mac(f"mac{i}", team=team) for i in range(4)]
    reconciler.reconcile()
    answer(hosts[0][1], queued(hosts[0][1])[0])
    answer(hosts[1][1], queued(hosts[1][1])[0])
    HostProfile.objects.filter(host=hosts[1][0]).update(status="verified")
    HostProfile.objects.filter(host=hosts[2][0]).update(status="failed")
    body = admin_api.get(f"{PROFILES}{profile.uuid}/status/").json()
    assert body == {"verified": 1, "verifying": 1, "pending": 1, "failed": 1}


def test_json_upload_with_labels(admin_api):
    red = Label.objects.create(name="red", label_membership_type=LabelMembershipType.MANUAL)
    blue = Label.objects.create(name="blue", query="SELECT 1")
    response = as_json(admin_api, mobileconfig(), labels_exclude_any=["red", str(blue.pk)])
    assert response.status_code == 201, response.content
    assert {label["name"] for label in response.json()["labels_exclude_any"]} == {"red", "blue"}
    assert response.json()["team_id"] is None
    form = upload(admin_api, mobileconfig("com.example.form", "Form"), labels_include_any=[str(red.pk)])
    assert form.status_code == 201 and form.json()["labels_include_any"] == [{"id": red.pk, "name": "red"}]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Send the profile as"),
        ({"mobileconfig": "!!!not base64!!!"}, "not valid base64"),
        ({"mobileconfig": base64.b64encode(b"<plist><dict>").decode()}, "not a valid property list"),
        ({"mobileconfig": base64.b64encode(mobileconfig("com.fleetdm.fleet.mdm.x")).decode()}, "reserved"),
        ({"mobileconfig": "A" * 2_000_000}, "larger than 1 MiB"),
        (
            {
                "mobileconfig": base64.b64encode(mobileconfig()).decode(),
                "labels_include_all": ["a"],
                "labels_include_any": ["b"],
            },
            "Only one of",
        ),
        (
            {"mobileconfig": base64.b64encode(mobileconfig()).decode(), "labels_include_any": ["ghost"]},
            "Unknown",
        ),
    ],
)
def test_bad_uploads_are_400_with_a_message(admin_api, body, message, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000_000
    response = admin_api.post(PROFILES, body, format="json")
    assert response.status_code == 400, response.content
    assert message in response.json()["message"]


def test_field_errors_are_400_too(admin_api):
    for body in ({"team_id": "abc"}, {"team_id": -1}, {"labels_include_any": "not-a-list"}):
        response = admin_api.post(PROFILES, {"mobileconfig": "eA==", **body}, format="json")
        assert response.status_code == 400 and "errors" in response.json()


def test_same_identifier_twice_is_409(admin_api, team):
    assert as_json(admin_api, mobileconfig(), team_id=team.pk).status_code == 201
    again = as_json(admin_api, mobileconfig(name="Another name"), team_id=team.pk)
    assert again.status_code == 409
    assert again.json() == {
        "message": "A profile with identifier com.example.wifi already exists in this team."
    }
    assert as_json(admin_api, mobileconfig(), team_id=0).status_code == 201  # no team is its own scope


def test_roles_and_team_scopes(team, other_team, maintainer_api, observer_api):
    mine = services.create_profile(team=team, data=mobileconfig("com.example.mine", "Mine"))
    theirs = services.create_profile(team=other_team, data=mobileconfig("com.example.theirs", "Theirs"))
    shared = services.create_profile(team=None, data=mobileconfig("com.example.shared", "Shared"))

    for api in (maintainer_api, observer_api):
        listed = {p["identifier"] for p in api.get(PROFILES).json()["results"]}
        assert listed == {"com.example.mine", "com.example.shared"}
        assert api.get(f"{PROFILES}{theirs.uuid}/").status_code == 404
        assert api.get(f"{PROFILES}{theirs.uuid}/download/").status_code == 404
        assert api.get(f"{PROFILES}{mine.uuid}/download/").status_code == 200

    # Observers read only.
    assert upload(observer_api, mobileconfig(), team_id=team.pk).status_code == 403
    assert observer_api.delete(f"{PROFILES}{mine.uuid}/").status_code == 403
    # Maintainers write their team's, not another team's (404: not visible) nor no-team ones (403).
    assert upload(maintainer_api, mobileconfig(), team_id=other_team.pk).status_code == 404
    assert upload(maintainer_api, mobileconfig()).status_code == 403
    assert maintainer_api.delete(f"{PROFILES}{shared.uuid}/").status_code == 403
    assert maintainer_api.delete(f"{PROFILES}{theirs.uuid}/").status_code == 404
    assert upload(maintainer_api, mobileconfig(), team_id=team.pk).status_code == 201
    assert maintainer_api.delete(f"{PROFILES}{mine.uuid}/").status_code == 204

    gitops = api_for(user_with_role("gitops", Role.GITOPS))
    nobody = api_for(user_with_role("nobody"))
    for api in (gitops, nobody):
        assert api.get(PROFILES).status_code == 403
        assert as_json(api, mobileconfig("com.example.x", "X")).status_code == 403
    assert APIClient().get(PROFILES).status_code in (401, 403)


def test_list_filters_by_team(admin_api, team):
    services.create_profile(team=team, data=mobileconfig("com.example.t", "T"))
    services.create_profile(team=None, data=mobileconfig("com.example.g", "G"))
    ids = lambda query: [p["identifier"] for p in admin_api.get(PROFILES + query).json()["results"]]  # noqa: E731
    assert ids(f"?team_id={team.pk}") == ["com.example.t"]
    assert ids("?team_id=0") == ["com.example.g"]
    assert ids("?team_id=99999999999999999999999") == [] and ids("?team_id=x") == []
    assert ids("?search=com.example.g") == ["com.example.g"]


def test_batch(admin_api, maintainer_api, observer_api, team):
    services.create_profile(team=team, data=mobileconfig("com.example.old", "Old"))
    encoded = lambda data: base64.b64encode(data).decode()  # noqa: E731
    batch = {
        "profiles": [
            {"name": "a.mobileconfig", "profile": encoded(mobileconfig("com.example.a", "A"))},
            {
                "name": "b.mobileconfig",
                "profile": encoded(mobileconfig("com.example.b", "B")),
                "labels_include_any": [],
            },
        ]
    }
    url = f"{PROFILES}batch/?team_id={team.pk}"
    dry = maintainer_api.post(url + "&dry_run=true", batch, format="json")
    assert dry.status_code == 200 and dry.json()["dry_run"] is True
    assert dry.json()["created"] == ["com.example.a", "com.example.b"] and dry.json()["deleted"] == [
        "com.example.old"
    ]
    assert Profile.objects.get().identifier == "com.example.old"

    done = maintainer_api.post(url, batch, format="json")
    assert done.status_code == 200, done.content
    assert sorted(Profile.objects.values_list("identifier", flat=True)) == ["com.example.a", "com.example.b"]
    again = maintainer_api.post(url, batch, format="json").json()
    assert again["unchanged"] == ["com.example.a", "com.example.b"] and again["created"] == []

    assert observer_api.post(url, batch, format="json").status_code == 403
    assert maintainer_api.post(f"{PROFILES}batch/", batch, format="json").status_code == 403  # no team
    bad = {"profiles": [{"name": "bad.mobileconfig", "profile": encoded(b"nope")}]}
    refused = admin_api.post(url, bad, format="json")
    assert refused.status_code == 400 and refused.json()["message"].startswith("bad.mobileconfig: ")
    assert admin_api.post(url, {"profiles": "x"}, format="json").status_code == 400
    assert admin_api.post(f"{PROFILES}batch/?team_id=abc", batch, format="json").status_code == 400
    assert admin_api.post(f"{PROFILES}batch/?team_id=424242", batch, format="json").status_code == 404


def test_a_hosts_profiles_and_resend(team, other_team, maintainer_api, observer_api):
    host, enrollment = enrolled_mac("mac", team=team)
    services.create_profile(team=team, data=mobileconfig("com.example.sent", "Sent"))
    reconciler.reconcile()
    late = services.create_profile(team=team, data=mobileconfig("com.example.late", "Late"))
    answer(enrollment, queued(enrollment)[0], "Error", ErrorChain=[{"USEnglishDescription": "Nope"}])
    answer(enrollment, queued(enrollment)[0], "Error", ErrorChain=[{"USEnglishDescription": "Nope"}])
    url = f"/api/v1/hosts/{host.pk}/configuration-profiles/"

    body = observer_api.get(url).json()
    assert body["count"] == 2
    late_entry, sent_entry = body["results"]
    assert late_entry == {
        "name": "Late",
        "identifier": "com.example.late",
        "profile_uuid": late.uuid,
        "operation": "install",
        "status": "pending",
        "detail": "Waiting to be sent.",
        "updated_at": None,
        "retries": 0,
        "resends": 0,
    }
    assert sent_entry["status"] == "failed" and sent_entry["detail"] == "Nope" and sent_entry["retries"] == 1

    assert observer_api.post(f"{url}com.example.sent/resend/").status_code == 403
    resent = maintainer_api.post(f"{url}com.example.sent/resend/")
    assert resent.status_code == 202, resent.content
    assert resent.json()["status"] == "pending" and resent.json()["resends"] == 1
    assert queued(enrollment)[0].uuid == resent.json()["command_uuid"]
    activity = Activity.objects.get(type="resent_configuration_profile")
    assert (
        activity.details["profile_identifier"] == "com.example.sent"
        and activity.details["host_id"] == host.pk
    )
    by_uuid = maintainer_api.post(f"{url}{Profile.objects.get(identifier='com.example.sent').uuid}/resend/")
    assert by_uuid.status_code == 202 and by_uuid.json()["resends"] == 2
    assert len(queued(enrollment)) == 1  # the earlier, unanswered resend was cancelled

    assert maintainer_api.post(f"{url}com.example.late/resend/").status_code == 404  # not queued yet
    assert maintainer_api.post(f"{url}no.such.profile/resend/").status_code == 404
    stranger, _ = enrolled_mac("stranger", team=other_team)
    assert maintainer_api.get(f"/api/v1/hosts/{stranger.pk}/configuration-profiles/").status_code == 404
    enrollment.enrolled = False
    enrollment.save()
    gone = maintainer_api.post(f"{url}com.example.sent/resend/")
    assert gone.status_code == 409 and "not enrolled" in gone.json()["message"]


def test_a_host_without_mdm_lists_only_its_rows(admin_api):
    host = make_host("linux", platform="ubuntu")
    services.create_profile(team=None, data=mobileconfig())
    assert admin_api.get(f"/api/v1/hosts/{host.pk}/configuration-profiles/").json()["count"] == 0


def test_odd_urls_are_404(admin_api):
    assert admin_api.get(f"{PROFILES}not-a-uuid!/").status_code == 404
    assert admin_api.get(f"{PROFILES}{'A' * 64}/").status_code == 404
    assert admin_api.get("/api/v1/hosts/999999999/configuration-profiles/").status_code == 404


def test_schema_documents_the_routes(admin_api):
    schema = admin_api.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    paths = schema["paths"]
    assert "/api/v1/configuration-profiles/" in paths and "/api/v1/configuration-profiles/batch/" in paths
    assert "/api/v1/configuration-profiles/{uuid}/download/" in paths
    assert "/api/v1/hosts/{host_id}/configuration-profiles/{key}/resend/" in paths
    assert paths["/api/v1/configuration-profiles/"]["post"]["summary"] == "Upload a configuration profile"
