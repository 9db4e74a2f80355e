"""Password guessing on the token endpoint and the console login is stopped (django-axes per
username and address, plus a per-address rate on the token endpoint), without locking the real
user out for long or from elsewhere."""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.db.models import F
from django.test import Client

from fleet.api_auth import client_address

pytestmark = pytest.mark.django_db


TOKEN_URL = "/api/v1/auth/token/"
ADMIN_LOGIN = "/admin/login/"
ATTACKER = "203.0.113.66"
ELSEWHERE = "198.51.100.7"


@pytest.fixture
def alice(db):
    return get_user_model().objects.create_superuser("alice", "alice@example.com", "right-password")


@pytest.fixture
def generous_rate(settings):
    """Only axes counts: the per-address rate is tested on its own below."""
    settings.API_LOGIN_RATE = "1000/min"


def token_login(client: Client, password: str, username: str = "alice", address: str = ATTACKER):
    return client.post(TOKEN_URL, {"username": username, "password": password}, REMOTE_ADDR=address)


def admin_login(client: Client, password: str, address: str = ATTACKER):
    return client.post(
        f"{ADMIN_LOGIN}?next=/admin/", {"username": "alice", "password": password}, REMOTE_ADDR=address
    )


def pass_the_cool_off(minutes: int = 16) -> None:
    """Age the recorded failures as the clock would."""
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(minutes=minutes))


# --- token endpoint ---------------------------------------------------------------------------------


def test_a_hundred_wrong_passwords_on_the_token_endpoint_end_in_429(client, alice, settings, generous_rate):
    statuses = []
    for attempt in range(100):
        response = token_login(client, f"guess-{attempt}")
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert response["Content-Type"] == "application/json"
            assert response.json() == {
                "message": "Too many failed logins for this account from your address. "
                "Try again in 15 minutes."
            }
            assert response["Retry-After"] == "900"
    limit = settings.AXES_FAILURE_LIMIT
    assert statuses[: limit - 1] == [400] * (limit - 1)
    assert statuses[limit - 1 :] == [429] * (101 - limit)
    # Locked out: the right password does not help the attacker's pair ...
    assert token_login(client, "right-password").status_code == 429
    # ... but the real user, from their own address, is not locked out.
    assert token_login(client, "right-password", address=ELSEWHERE).status_code == 200


def test_the_right_password_works_again_after_the_cool_off(client, alice, settings, generous_rate):
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        token_login(client, f"guess-{attempt}")
    assert token_login(client, "right-password").status_code == 429
    pass_the_cool_off(minutes=10)
    assert token_login(client, "right-password").status_code == 429  # not yet
    pass_the_cool_off(minutes=6)
    response = token_login(client, "right-password")
    assert response.status_code == 200 and response.json()["token"]


def test_a_success_clears_earlier_failures(client, alice, settings, generous_rate):
    for round_ in range(2):
        for attempt in range(settings.AXES_FAILURE_LIMIT - 1):
            assert token_login(client, f"typo-{round_}-{attempt}").status_code == 400
        assert token_login(client, "right-password").status_code == 200


def test_json_logins_are_counted_too(client, alice, settings, generous_rate):
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        response = client.post(
            TOKEN_URL,
            {"username": "alice", "password": f"guess-{attempt}"},
            content_type="application/json",
            REMOTE_ADDR=ATTACKER,
        )
    assert response.status_code == 429


def test_one_address_trying_many_usernames_is_rate_limited(client, settings):
    settings.API_LOGIN_RATE = "30/min"
    statuses = [token_login(client, "pw", username=f"user-{n}").status_code for n in range(100)]
    assert statuses[:30] == [400] * 30
    assert statuses[30:] == [429] * 70
    refused = token_login(client, "pw", username="user-x")
    assert refused.json()["message"].startswith("Request was throttled.")
    assert int(refused["Retry-After"]) > 0
    # another address is not affected
    assert token_login(client, "pw", username="user-x", address=ELSEWHERE).status_code == 400


# --- console login ----------------------------------------------------------------------------------


def test_a_hundred_wrong_passwords_on_the_console_login_show_a_lockout_page(client, alice, settings):
    limit = settings.AXES_FAILURE_LIMIT
    for attempt in range(100):
        response = admin_login(client, f"guess-{attempt}")
        if attempt < limit - 1:
            assert response.status_code == 200
            assert "Please enter the correct username and password" in response.content.decode()
        else:
            assert response.status_code == 429, attempt
            page = response.content.decode()
            assert "Too many failed logins for this account from your address" in page
            assert "Try again in 15 minutes" in page
    response = admin_login(client, "right-password")
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    assert client.get("/admin/", REMOTE_ADDR=ATTACKER).status_code == 302  # still not signed in


def test_console_lockout_spares_the_real_user_and_ends_after_the_cool_off(client, alice, settings):
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        admin_login(client, f"guess-{attempt}")
    assert admin_login(client, "right-password").status_code == 429

    elsewhere = Client()
    response = admin_login(elsewhere, "right-password", address=ELSEWHERE)
    assert response.status_code == 302 and response["Location"] == "/admin/"

    pass_the_cool_off()
    response = admin_login(client, "right-password")
    assert response.status_code == 302 and response["Location"] == "/admin/"


def test_console_and_token_failures_count_together(client, alice, settings, generous_rate):
    half = settings.AXES_FAILURE_LIMIT // 2
    for attempt in range(half):
        admin_login(client, f"console-{attempt}")
    for attempt in range(settings.AXES_FAILURE_LIMIT - half):
        response = token_login(client, f"api-{attempt}")
    assert response.status_code == 429
    assert admin_login(client, "right-password").status_code == 429


# --- client address -----------------------------------------------------------------------------------


def test_behind_a_proxy_the_address_is_the_one_the_load_balancer_saw(client, alice, settings, generous_rate):
    settings.CLIENT_ADDRESS_FROM_X_FORWARDED_FOR = True
    # The attacker varies the X-Forwarded-For entries it controls; the balancer appends its peer.
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        response = client.post(
            TOKEN_URL,
            {"username": "alice", "password": f"guess-{attempt}"},
            REMOTE_ADDR="10.0.0.2",
            HTTP_X_FORWARDED_FOR=f"192.0.2.{attempt}, {ATTACKER}",
        )
    assert response.status_code == 429
    assert AccessAttempt.objects.get().ip_address == ATTACKER
    ok = client.post(
        TOKEN_URL,
        {"username": "alice", "password": "right-password"},
        REMOTE_ADDR="10.0.0.2",
        HTTP_X_FORWARDED_FOR=ELSEWHERE,
    )
    assert ok.status_code == 200


def test_without_a_proxy_forwarded_headers_are_ignored(rf, settings):
    settings.CLIENT_ADDRESS_FROM_X_FORWARDED_FOR = False
    request = rf.post("/", REMOTE_ADDR=ATTACKER, HTTP_X_FORWARDED_FOR="192.0.2.1")
    assert client_address(request) == ATTACKER
