"""The My device page, ``/device/{token}``: an end user's view of their own computer.

Through the real client, with CSRF checks on (``enforce_csrf_checks``) where the form is posted.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from devices import tokens
from devices.models import DeviceToken
from hosts.models import FleetSettings, Host, Label, LabelMembership
from hostscripts.models import ScriptKind, ScriptRun
from tests.factories import make_host

pytestmark = pytest.mark.django_db


def host_with_token(name: str, **fields) -> tuple[Host, str]:
    host = make_host(name, seen_ago=timedelta(seconds=5), **fields)
    token = str(uuid.uuid4())
    tokens.set_token(host.id, token)
    return host, token


@pytest.fixture
def device(db) -> tuple[Host, str]:
    host, token = host_with_token(
        "alice-mbp",
        computer_name="Alice's MacBook",
        os_version="macOS 14.5",
        hardware_vendor="Apple Inc.",
        hardware_model="Mac14,2",
        hardware_serial="C02ALICE01",
        memory=16 * 2**30,
        cpu_brand="Apple M2",
        cpu_physical_cores=8,
        primary_ip="10.0.0.7",
        osquery_version="5.12.1",
        orbit_version="1.30.0",
        desktop_version="1.29.0",
    )
    label = Label.objects.create(name="Design team laptops")
    LabelMembership.objects.create(label=label, host=host)
    return host, token


@pytest.fixture
def org(db) -> FleetSettings:
    fleet_settings = FleetSettings.load()
    fleet_settings.org_name = "Acme Corp"
    fleet_settings.contact_url = "https://help.acme.example/it"
    fleet_settings.org_logo_url_light_background = "https://cdn.acme.example/logo.png"
    fleet_settings.save()
    return fleet_settings


def page(client, token: str, **extra):
    return client.get(f"/device/{token}", **extra)


def test_the_page_shows_the_computer(client, device, org):
    _, token = device

    response = page(client, token)

    assert response.status_code == 200
    text = response.content.decode()
    for expected in (
        "Alice&#x27;s MacBook",
        "alice-mbp",
        "macOS 14.5",
        "Apple Inc. Mac14,2",
        "C02ALICE01",
        "16 GB",
        "Apple M2 (8 cores)",
        "10.0.0.7",
        "5.12.1",
        "1.30.0",
        "1.29.0",
        "Online",
        "Last seen",
        "Design team laptops",
        "Unlocked",
    ):
        assert expected in text, expected


def test_the_page_links_to_the_admins_contact_with_the_org_logo(client, device, org):
    _, token = device
    response = page(client, token)
    text = response.content.decode()

    assert 'href="https://help.acme.example/it"' in text
    assert "Contact Acme Corp" in text
    assert 'src="https://cdn.acme.example/logo.png"' in text
    csp = response["Content-Security-Policy"]
    img_src = re.search(r"img-src ([^;]+)", csp).group(1).split()
    assert "https://cdn.acme.example" in img_src  # this page alone may load the logo


def test_the_page_has_no_console_link_and_nothing_about_another_host(client, device, org):
    _, token = device
    other, _ = host_with_token("bob-thinkpad", hardware_serial="PF0BOB999", computer_name="Bob's ThinkPad")
    secret_label = Label.objects.create(name="Bob only label")
    LabelMembership.objects.create(label=secret_label, host=other)
    ScriptRun.objects.create(host=other, script_name="bob-cleanup.sh", contents="", timeout=300)

    text = page(client, token).content.decode()

    assert "/admin" not in text
    for other_fact in ("bob-thinkpad", "PF0BOB999", "Bob", "bob-cleanup.sh"):
        assert other_fact not in text


def test_the_page_is_private_and_standalone(client, device):
    _, token = device
    response = page(client, token)
    text = response.content.decode()

    assert response["Referrer-Policy"] == "no-referrer"
    assert "noindex" in response["X-Robots-Tag"]
    assert "no-store" in response["Cache-Control"]
    assert '<meta name="robots" content="noindex, nofollow">' in text
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in text
    assert "devices/my_device.css" in text
    assert "admin/css" not in text and "<style" not in text and "style=" not in text


def test_scripts_and_actions_show_who_ran_what_but_never_output(client, device):
    host, token = device
    now = timezone.now()
    ScriptRun.objects.create(
        host=host,
        script_name="install-printer.sh",
        contents="echo secret-contents",
        timeout=300,
        requested_by_name="Ivy Admin",
        exit_code=0,
        output="TOP-SECRET-OUTPUT",
        finished_at=now,
        created_at=now - timedelta(minutes=5),
    )
    ScriptRun.objects.create(
        host=host, kind=ScriptKind.LOCK, contents="", timeout=300, requested_by_name="Ivy Admin"
    )

    text = page(client, token).content.decode()

    assert "install-printer.sh" in text
    assert "Ivy Admin" in text
    assert "Ran" in text and "Pending" in text
    assert "Lock pending" in text  # the device status's pending action
    assert "TOP-SECRET-OUTPUT" not in text and "secret-contents" not in text


def test_a_locked_computer_says_so(client, device):
    host, token = device
    ScriptRun.objects.create(
        host=host, kind=ScriptKind.LOCK, contents="", timeout=300, exit_code=0, finished_at=timezone.now()
    )
    assert "Locked" in page(client, token).content.decode()


@pytest.mark.parametrize("token", ["00000000-0000-0000-0000-000000000000", "not valid", "x" * 400])
def test_an_unknown_token_gets_a_friendly_401_page(client, device, token):
    response = page(client, token)

    assert response.status_code == 401
    text = response.content.decode()
    assert "This link has expired" in text
    assert "Fleet Desktop" in text
    assert "login" not in text.lower() and "/admin" not in text
    assert response["Referrer-Policy"] == "no-referrer"


def test_an_expired_token_gets_the_401_page(client, device):
    host, token = device
    DeviceToken.objects.filter(host=host).update(updated_at=timezone.now() - timedelta(hours=2))

    assert page(client, token).status_code == 401


def test_the_refetch_form_works_without_a_login(device):
    host, token = device
    browser = Client(enforce_csrf_checks=True)
    form_page = page(browser, token)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form_page.content.decode()).group(1)
    assert f'action="/device/{token}/refetch"' in form_page.content.decode()

    response = browser.post(f"/device/{token}/refetch", {"csrfmiddlewaretoken": csrf})

    assert response.status_code == 303
    assert response["Location"] == f"/device/{token}"
    assert Host.objects.get(pk=host.pk).refetch_requested is True
    followed = page(browser, token).content.decode()
    assert "Refetch requested" in followed


def test_the_refetch_form_needs_its_csrf_token(device):
    host, token = device
    browser = Client(enforce_csrf_checks=True)
    page(browser, token)

    response = browser.post(f"/device/{token}/refetch", {})

    assert response.status_code == 403
    assert Host.objects.get(pk=host.pk).refetch_requested is False


def test_the_refetch_form_works_over_https_with_no_referrer(device):
    """Under ``Referrer-Policy: no-referrer`` browsers post ``Origin: null`` and no Referer."""
    host, token = device
    browser = Client(enforce_csrf_checks=True)
    form_page = browser.get(f"/device/{token}", secure=True)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form_page.content.decode()).group(1)

    response = browser.post(
        f"/device/{token}/refetch", {"csrfmiddlewaretoken": csrf}, secure=True, HTTP_ORIGIN="null"
    )

    assert response.status_code == 303
    assert Host.objects.get(pk=host.pk).refetch_requested is True


def test_refetch_with_a_bad_token_gets_the_401_page(client, device):
    response = client.post(f"/device/{uuid.uuid4()}/refetch")
    assert response.status_code == 401
    assert "This link has expired" in response.content.decode()


def test_the_page_answers_get_only(client, device):
    _, token = device
    assert client.post(f"/device/{token}").status_code == 405
    assert client.get(f"/device/{token}/refetch").status_code == 405


def test_the_page_costs_a_fixed_number_of_queries(client, device, django_assert_max_num_queries):
    host, token = device
    FleetSettings.load()
    for i in range(25):
        ScriptRun.objects.create(host=host, script_name=f"s{i}.sh", contents="", timeout=300)
        LabelMembership.objects.create(label=Label.objects.create(name=f"l{i}"), host=host)
    # token and host, labels, runs, two for the device status, the organisation
    with django_assert_max_num_queries(6):
        response = page(client, token)
    assert response.content.decode().count('class="run"') == 20


@pytest.mark.parametrize("section", ["policies", "self-service", "software"])
def test_fleet_desktops_other_page_links_lead_to_the_page(client, device, section):
    _, token = device
    response = client.get(f"/device/{token}/{section}")

    assert response.status_code == 302
    assert response["Location"] == f"/device/{token}"
    assert response["Referrer-Policy"] == "no-referrer"
