"""Configuration profiles in the console: the list with status counts, the upload form and its
errors, the read-only page with Download and Delete, and the host page's "MDM profiles" block
with its Resend button."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile

from activities.models import Activity
from hosts.choices import Role
from hosts.models import Label, LabelMembershipType, Team
from mdm.models import HostProfile, Profile
from mdm.profiles import reconciler, services
from tests.factories import make_host, user_with_role
from tests.mdm_profiles_support import answer, enrolled_mac, error_chain, mobileconfig, queued

pytestmark = pytest.mark.django_db

PAGES = "/admin/mdm/profile/"
HOSTS = "/admin/hosts/host/"


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.MDM = {**settings.MDM, "PUSH_DISABLED": True}


@pytest.fixture
def admin_client(client):
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    return client


def logged_in(client, role: str, team: Team | None = None):
    name = f"{role}-{team.pk if team else 'global'}"
    user = get_user_model().objects.filter(username=name).first() or user_with_role(name, role, team)
    client.force_login(user)
    return client


def add(client, data: bytes, **fields):
    return client.post(f"{PAGES}add/", {"upload": SimpleUploadedFile("p.mobileconfig", data), **fields})


def form_errors(response) -> dict:
    return response.context["adminform"].form.errors


def test_upload_with_form_errors_then_correctly(admin_client, team):
    bad = add(admin_client, mobileconfig(PayloadContent=[{"PayloadType": "com.apple.mdm"}]), team=team.pk)
    assert bad.status_code == 200
    assert "PayloadIdentifier" in str(form_errors(bad)["upload"])
    reserved = add(admin_client, mobileconfig("com.fleetdm.fleet.mdm.apple"), team=team.pk)
    assert "enrollment profile" in str(form_errors(reserved)["upload"])
    red = Label.objects.create(name="red", label_membership_type=LabelMembershipType.MANUAL)
    no_labels = add(admin_client, mobileconfig(), team=team.pk, label_mode="include_any")
    assert "Choose the labels" in str(form_errors(no_labels)["labels"])
    assert not Profile.objects.exists()

    good = add(admin_client, mobileconfig(), team=team.pk, label_mode="include_any", labels=[red.pk])
    assert good.status_code == 302, good.context and form_errors(good)
    profile = Profile.objects.get()
    assert profile.team == team and list(profile.labels_include_any.all()) == [red]
    assert list(Activity.objects.filter(type__contains="profile").values_list("type", "surface")) == [
        ("created_macos_profile", "console")
    ]

    duplicate = add(admin_client, mobileconfig(name="Other name"), team=team.pk)
    assert "already exists in this team" in str(form_errors(duplicate)["upload"])


def test_list_shows_scope_and_counts_and_the_page_downloads(admin_client, team):
    profile = services.create_profile(team=team, data=mobileconfig())
    for i in range(3):
        enrolled_mac(f"mac{i}", team=team)
    reconciler.reconcile()
    HostProfile.objects.filter(host__hostname="mac0").update(status="verified")
    HostProfile.objects.filter(host__hostname="mac1").update(status="failed")
    page = admin_client.get(PAGES)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Office Wi-Fi" in html and "com.example.wifi" in html and "All hosts of the team" in html
    assert '<td class="field-verified">1</td>' in html and '<td class="field-pending">1</td>' in html
    assert admin_client.get(f"{PAGES}?team_id=0").content.decode().count("com.example.wifi") == 0

    detail = admin_client.get(f"{PAGES}{profile.pk}/change/")
    assert detail.status_code == 200
    body = detail.content.decode()
    assert "1 verified" in body and "1 failed" in body and "&lt;key&gt;PayloadIdentifier&lt;/key&gt;" in body
    download = admin_client.get(f"{PAGES}{profile.pk}/download/")
    assert download.status_code == 200 and download.content == bytes(profile.mobileconfig)


def test_delete_goes_through_the_service(admin_client, team):
    profile = services.create_profile(team=team, data=mobileconfig())
    response = admin_client.post(f"{PAGES}{profile.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Profile.objects.exists()
    assert list(
        Activity.objects.filter(type__contains="profile").order_by("id").values_list("type", flat=True)
    ) == [
        "created_macos_profile",
        "deleted_macos_profile",
    ]


def test_roles(client, team):
    other = Team.objects.create(name="Other")
    mine = services.create_profile(team=team, data=mobileconfig("com.example.mine", "Mine"))
    theirs = services.create_profile(team=other, data=mobileconfig("com.example.theirs", "Theirs"))
    global_ = services.create_profile(team=None, data=mobileconfig("com.example.global", "Global"))

    observer = logged_in(client, Role.OBSERVER, team)
    listing = observer.get(PAGES).content.decode()
    assert "com.example.mine" in listing and "com.example.global" in listing and "theirs" not in listing
    assert observer.get(f"{PAGES}add/").status_code == 403
    assert observer.get(f"{PAGES}{theirs.pk}/download/").status_code == 404
    assert observer.post(f"{PAGES}{mine.pk}/delete/", {"post": "yes"}).status_code == 403

    maintainer = logged_in(client, Role.MAINTAINER, team)
    form = maintainer.get(f"{PAGES}add/")
    assert form.status_code == 200
    choices = [label for _, label in form.context["adminform"].form.fields["team"].choices]
    assert choices == ["Engineering"]  # no "No team": that needs a global role
    assert maintainer.post(f"{PAGES}{global_.pk}/delete/", {"post": "yes"}).status_code == 403
    assert maintainer.post(f"{PAGES}{mine.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not Profile.objects.filter(pk=mine.pk).exists()


def test_host_page_block_and_resend(client, team):
    host, enrollment = enrolled_mac("mac", team=team)
    services.create_profile(team=team, data=mobileconfig())
    reconciler.reconcile()
    first = queued(enrollment)[0]
    answer(enrollment, first, "Error", ErrorChain=error_chain(text="Bad Wi-Fi password"))
    answer(enrollment, queued(enrollment)[0], "Error", ErrorChain=error_chain(text="Bad Wi-Fi password"))
    services.create_profile(team=team, data=mobileconfig("com.example.vpn", "VPN"))

    observer = logged_in(client, Role.OBSERVER, team)
    page = observer.get(f"{HOSTS}{host.pk}/change/").content.decode()
    assert 'id="host-mdm-profiles"' in page and "Bad Wi-Fi password (MCProfileErrorDomain 4001)" in page
    assert "Waiting to be sent." in page and ">Resend<" not in page

    maintainer = logged_in(client, Role.MAINTAINER, team)
    page = maintainer.get(f"{HOSTS}{host.pk}/change/").content.decode()
    assert page.count(">Resend<") == 1  # the failed one; the VPN is not queued yet
    row = HostProfile.objects.get(host=host)
    url = f"{PAGES}host/{host.pk}/resend/{row.pk}/"
    assert url in page and "csrfmiddlewaretoken" in page
    assert maintainer.get(url).status_code == 403  # POST only
    response = maintainer.post(url)
    assert response.status_code == 302 and response["Location"].endswith(
        f"/{host.pk}/change/#host-mdm-profiles"
    )
    row.refresh_from_db()
    assert row.status == "pending" and row.resends == 1
    assert Activity.objects.filter(type="resent_configuration_profile", surface="console").count() == 1

    outsider = logged_in(client, Role.MAINTAINER, Team.objects.create(name="Other"))
    assert outsider.post(url).status_code == 404
    observer = logged_in(client, Role.OBSERVER, team)
    assert observer.post(url).status_code == 403


def test_host_page_block_only_for_macs(admin_client):
    linux = make_host("linux", platform="ubuntu")
    assert 'id="host-mdm-profiles"' not in admin_client.get(f"{HOSTS}{linux.pk}/change/").content.decode()
    mac = make_host("mac", platform="darwin")
    page = admin_client.get(f"{HOSTS}{mac.pk}/change/").content.decode()
    assert 'id="host-mdm-profiles"' in page and "not enrolled in MDM" in page
