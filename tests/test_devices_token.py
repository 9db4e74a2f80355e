"""orbit's ``POST /api/fleet/orbit/device_token`` and the token lifecycle (device-management.md §1).

Through the real endpoints: orbit enrolls, sets its token, and the device API accepts or refuses
it. Time moves by ageing the stored timestamps (``age``), as if the clock had advanced.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

import pytest
from django.db.models import F

from devices import tokens
from devices.models import DeviceToken
from hosts.models import Host
from tests.test_orbit import orbit_enroll, orbit_post

pytestmark = pytest.mark.django_db

DEVICE_TOKEN = "/api/fleet/orbit/device_token"
HOUR = timedelta(hours=1)


def set_token(client, orbit_key: str, token):
    return orbit_post(client, DEVICE_TOKEN, {"orbit_node_key": orbit_key, "device_auth_token": token})


def desktop(client, token: str):
    return client.get(f"/api/latest/fleet/device/{token}/desktop")


def age(host_id: int, by: timedelta) -> None:
    """Move the clock forward by ``by`` for this host's tokens."""
    DeviceToken.objects.filter(host_id=host_id).update(
        updated_at=F("updated_at") - by, previous_expires_at=F("previous_expires_at") - by
    )


@pytest.fixture
def orbit_key(client, global_secret) -> str:
    return orbit_enroll(client, global_secret)


@pytest.fixture
def host_id(orbit_key) -> int:
    return Host.objects.get().id


def test_set_token_answers_an_empty_object_and_the_token_works(client, orbit_key, host_id):
    token = str(uuid.uuid4())

    response = set_token(client, orbit_key, token)

    assert response.status_code == 200
    assert response.json() == {}
    assert desktop(client, token).status_code == 200


def test_only_the_digest_is_stored(client, orbit_key, host_id):
    token = str(uuid.uuid4())
    set_token(client, orbit_key, token)

    row = DeviceToken.objects.values().get()
    assert row["token_digest"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(row)


def test_one_token_per_host_is_upserted(client, orbit_key, host_id):
    for _ in range(3):
        assert set_token(client, orbit_key, str(uuid.uuid4())).status_code == 200
    assert DeviceToken.objects.count() == 1


def test_rotation_keeps_the_previous_token_working(client, orbit_key, host_id):
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    set_token(client, orbit_key, first)
    age(host_id, HOUR - timedelta(minutes=1))

    set_token(client, orbit_key, second)

    assert desktop(client, second).status_code == 200
    assert desktop(client, first).status_code == 200  # a page opened just before rotation


def test_the_previous_token_gets_one_more_hour_after_rotation(client, orbit_key, host_id):
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    set_token(client, orbit_key, first)
    age(host_id, HOUR + timedelta(seconds=20))  # orbit rotates once the token is an hour old
    assert desktop(client, first).status_code == 401  # expired, until the rotation...

    set_token(client, orbit_key, second)
    assert desktop(client, first).status_code == 200  # ...gives it one more hour

    age(host_id, HOUR - timedelta(minutes=1))
    assert desktop(client, first).status_code == 200
    assert desktop(client, second).status_code == 200
    age(host_id, timedelta(minutes=2))
    assert desktop(client, first).status_code == 401
    assert desktop(client, second).status_code == 401  # the current one is over an hour old too


def test_a_long_expired_token_is_not_revived_by_its_rotation(client, orbit_key, host_id):
    stale, fresh = str(uuid.uuid4()), str(uuid.uuid4())
    set_token(client, orbit_key, stale)
    age(host_id, timedelta(days=2))  # the computer was off for two days

    set_token(client, orbit_key, fresh)

    assert desktop(client, stale).status_code == 401
    assert desktop(client, fresh).status_code == 200


def test_a_token_expires_an_hour_after_it_was_set(client, orbit_key, host_id):
    token = str(uuid.uuid4())
    set_token(client, orbit_key, token)

    age(host_id, HOUR - timedelta(seconds=30))
    assert desktop(client, token).status_code == 200
    age(host_id, timedelta(minutes=1))
    response = desktop(client, token)
    assert response.status_code == 401
    assert "invalid device authentication token" in response.json()["message"]


def test_setting_the_same_token_again_does_not_extend_its_life(client, orbit_key, host_id):
    token = str(uuid.uuid4())
    set_token(client, orbit_key, token)
    age(host_id, HOUR - timedelta(minutes=5))
    before = DeviceToken.objects.get().updated_at

    assert set_token(client, orbit_key, token).status_code == 200

    assert DeviceToken.objects.get().updated_at == before
    age(host_id, timedelta(minutes=6))
    assert desktop(client, token).status_code == 401


def test_a_token_held_by_another_host_is_a_conflict(client, global_secret):
    key_a = orbit_enroll(client, global_secret, "uuid-a")
    key_b = orbit_enroll(client, global_secret, "uuid-b")
    token = str(uuid.uuid4())
    assert set_token(client, key_a, token).status_code == 200

    response = set_token(client, key_b, token)

    assert response.status_code == 409
    assert "another host" in response.json()["error"]
    host_a = Host.objects.get(uuid="uuid-a")
    assert DeviceToken.objects.get(token_digest=tokens.token_digest(token)).host_id == host_a.id


def test_another_hosts_previous_token_is_a_conflict_while_it_is_valid(client, global_secret):
    key_a = orbit_enroll(client, global_secret, "uuid-a")
    key_b = orbit_enroll(client, global_secret, "uuid-b")
    old, new = str(uuid.uuid4()), str(uuid.uuid4())
    set_token(client, key_a, old)
    set_token(client, key_a, new)  # ``old`` is host A's previous token now

    assert set_token(client, key_b, old).status_code == 409

    age(Host.objects.get(uuid="uuid-a").id, 2 * HOUR)  # A's previous token has expired
    assert set_token(client, key_b, old).status_code == 200
    assert desktop(client, old).status_code == 200
    row_a = DeviceToken.objects.get(host__uuid="uuid-a")
    assert row_a.previous_digest is None


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "cannot be empty"),
        ("has space", "invalid characters"),
        ("slash/in/it", "invalid characters"),
        ("percent%20", "invalid characters"),
        ("ünïcode", "invalid characters"),
        ("x" * 256, "longer than 255"),
        (12345, "must be a string"),
        (None, "must be a string"),
    ],
)
def test_unusable_tokens_are_refused_with_400(client, orbit_key, host_id, token, reason):
    response = set_token(client, orbit_key, token)

    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert "node_invalid" not in response.json()
    assert not DeviceToken.objects.exists()


def test_url_safe_tokens_of_every_allowed_character_are_accepted(client, orbit_key, host_id):
    token = "AZaz09-_.~" * 25  # 250 characters, Go's url.QueryEscape leaves each unchanged
    assert set_token(client, orbit_key, token).status_code == 200
    assert desktop(client, token).status_code == 200


def test_an_unknown_orbit_node_key_is_node_invalid(client, global_secret):
    response = set_token(client, "not-a-real-key", str(uuid.uuid4()))

    assert response.status_code == 401
    assert response.json()["node_invalid"] is True


def test_a_missing_orbit_node_key_is_refused(client, global_secret):
    response = orbit_post(client, DEVICE_TOKEN, {"device_auth_token": str(uuid.uuid4())})

    assert response.status_code == 401
    assert response.json()["node_invalid"] is True


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b""])
def test_bad_bodies_get_a_json_400(client, body):
    response = client.post(DEVICE_TOKEN, data=body, content_type="application/json")

    assert response.status_code in (400, 401)
    assert isinstance(response.json()["error"], str)


def test_only_post_is_accepted(client):
    response = client.get(DEVICE_TOKEN)

    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert "error" in response.json()


def test_deleting_the_host_deletes_its_token(client, orbit_key, host_id):
    token = str(uuid.uuid4())
    set_token(client, orbit_key, token)

    Host.objects.filter(id=host_id).delete()

    assert not DeviceToken.objects.exists()
    assert desktop(client, token).status_code == 401
