"""Addresses that guess device tokens are banned (Fleet's IP banner), good tokens are not slowed.

The limit is lowered through settings; addresses are set the way a proxy does (X-Real-IP) or
by the socket (REMOTE_ADDR), as ``agentapi.wire.client_ip`` reads them.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.core.cache import cache

from devices import throttle, tokens
from tests.factories import make_host

pytestmark = pytest.mark.django_db

ATTACKER = "203.0.113.66"
NEIGHBOUR = "198.51.100.7"


@pytest.fixture(autouse=True)
def _low_limit(settings):
    settings.FLEET_DESKTOP = {
        **settings.FLEET_DESKTOP,
        "FAILURE_LIMIT": 5,
        "FAILURE_WINDOW": 60,
        "BAN_SECONDS": 60,
    }


@pytest.fixture
def token(db) -> str:
    host = make_host("alice-mbp", seen_ago=timedelta(seconds=5))
    value = str(uuid.uuid4())
    tokens.set_token(host.id, value)
    return value


def desktop(client, token: str, address: str):
    return client.get(f"/api/latest/fleet/device/{token}/desktop", REMOTE_ADDR=address)


def guess(client, address: str, times: int) -> list[int]:
    return [desktop(client, str(uuid.uuid4()), address).status_code for _ in range(times)]


def test_the_limit_bans_the_address_even_for_a_good_token(client, token):
    assert guess(client, ATTACKER, 4) == [401] * 4
    assert desktop(client, token, ATTACKER).status_code == 200  # not banned yet

    assert guess(client, ATTACKER, 1) == [401]  # the fifth failure bans
    response = desktop(client, token, ATTACKER)

    assert response.status_code == 429
    assert response["Content-Type"] == "application/json"
    assert "too many failed" in response.json()["message"]
    assert 1 <= int(response["Retry-After"]) <= 60


def test_another_address_with_a_good_token_still_works(client, token):
    guess(client, ATTACKER, 5)

    assert desktop(client, token, ATTACKER).status_code == 429
    assert desktop(client, token, NEIGHBOUR).status_code == 200
    assert client.get(f"/device/{token}", REMOTE_ADDR=NEIGHBOUR).status_code == 200


def test_the_ban_covers_every_device_route_and_the_page(client, token):
    guess(client, ATTACKER, 5)

    api = f"/api/latest/fleet/device/{token}"
    assert client.get(api, REMOTE_ADDR=ATTACKER).status_code == 429
    assert client.post(f"{api}/refetch", REMOTE_ADDR=ATTACKER).status_code == 429
    assert client.head(f"{api}/ping", REMOTE_ADDR=ATTACKER).status_code == 429
    page = client.get(f"/device/{token}", REMOTE_ADDR=ATTACKER)
    assert page.status_code == 429
    assert "Too many attempts" in page.content.decode()


def test_failures_on_the_page_count_too(client, token):
    for _ in range(5):
        assert client.get(f"/device/{uuid.uuid4()}", REMOTE_ADDR=ATTACKER).status_code == 401
    assert desktop(client, token, ATTACKER).status_code == 429


def test_the_address_is_read_from_the_proxy_headers(client, token):
    for _ in range(5):
        client.get(f"/api/latest/fleet/device/{uuid.uuid4()}", HTTP_X_REAL_IP=ATTACKER)

    assert client.get(f"/api/latest/fleet/device/{token}", HTTP_X_REAL_IP=ATTACKER).status_code == 429
    assert client.get(f"/api/latest/fleet/device/{token}", HTTP_X_REAL_IP=NEIGHBOUR).status_code == 200


def test_the_ban_ends(client, token):
    guess(client, ATTACKER, 5)
    assert desktop(client, token, ATTACKER).status_code == 429

    cache.delete_many([k for k in _keys(ATTACKER)])  # as the ban's expiry would

    assert desktop(client, token, ATTACKER).status_code == 200


def test_good_tokens_write_nothing_to_the_cache(client, token):
    for _ in range(20):
        assert desktop(client, token, NEIGHBOUR).status_code == 200
    assert all(cache.get(key) is None for key in _keys(NEIGHBOUR))


def test_failures_below_the_limit_ban_nothing(client, token):
    assert guess(client, ATTACKER, 4) == [401] * 4
    assert throttle.banned_for(ATTACKER) == 0


def test_hostile_address_headers_make_valid_keys(client, token):
    weird = "x" * 40 + " \n\x00 ünï"
    for _ in range(5):
        client.get(f"/api/latest/fleet/device/{uuid.uuid4()}", HTTP_X_REAL_IP=weird)
    assert client.get(f"/api/latest/fleet/device/{token}", HTTP_X_REAL_IP=weird).status_code == 429


def test_a_cache_outage_neither_bans_nor_fails(client, token, monkeypatch):
    def broken(*args, **kwargs):
        raise ConnectionError("cache down")

    monkeypatch.setattr(cache, "get", broken)
    monkeypatch.setattr(cache, "incr", broken)
    monkeypatch.setattr(cache, "add", broken)

    assert guess(client, ATTACKER, 10) == [401] * 10
    assert desktop(client, token, ATTACKER).status_code == 200


def _keys(address: str) -> list[str]:
    ident = throttle._ident(address)
    return [throttle._BAN_PREFIX + ident, throttle._FAILURE_PREFIX + ident]
