"""REST API tokens (django-rest-knox): issued once, stored hashed, expiring, revocable, and the
WebSocket accepts exactly the tokens the REST API accepts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from knox.models import AuthToken
from rest_framework.test import APIClient

from campaigns import services
from fleet.asgi import application
from tests.factories import make_host, token_for

pytestmark = pytest.mark.django_db


TOKEN_URL = "/api/v1/auth/token/"
HOSTS = "/api/v1/hosts/"


@pytest.fixture
def alice(db):
    return get_user_model().objects.create_superuser("alice", "alice@example.com", "s3cret-pass")


def login(client: APIClient | None = None, fmt: str | None = None, **credentials: str):
    client = client or APIClient()
    body = credentials or {"username": "alice", "password": "s3cret-pass"}
    return client.post(TOKEN_URL, body, format=fmt)


def authed(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.mark.parametrize("fmt", [None, "json"], ids=["form", "json"])
def test_login_answers_a_token_and_its_expiry(alice, settings, fmt):
    settings.API_TOKEN_TTL = timedelta(hours=5)
    before = timezone.now()
    response = login(fmt=fmt, username="alice", password="s3cret-pass")
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"token", "expiry"}
    expiry = parse_datetime(body["expiry"])
    assert before + timedelta(hours=5) <= expiry <= timezone.now() + timedelta(hours=5)
    assert authed(body["token"]).get(HOSTS).status_code == 200


def test_tokens_are_stored_hashed(alice):
    token = login().json()["token"]
    row = AuthToken.objects.get(user=alice)
    assert row.digest != token and len(row.digest) == 128  # SHA-512
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {AuthToken._meta.db_table}")
        stored = [str(value) for values in cursor.fetchall() for value in values]
    assert not any(token in value for value in stored)
    # only a short lookup prefix of the token is kept, as knox does
    assert not any(value in token and len(value) > 15 for value in stored)


def test_each_login_gives_a_new_token(alice):
    first, second = login().json()["token"], login().json()["token"]
    assert first != second
    assert authed(first).get(HOSTS).status_code == 200
    assert authed(second).get(HOSTS).status_code == 200


def test_an_expired_token_is_refused_and_forgotten(alice):
    token = login().json()["token"]
    AuthToken.objects.filter(user=alice).update(expiry=timezone.now() - timedelta(seconds=1))
    response = authed(token).get(HOSTS)
    assert response.status_code == 401
    assert response.json() == {"message": "Invalid token."}
    assert not AuthToken.objects.filter(user=alice).exists()


def test_a_token_of_an_inactive_user_is_refused(alice):
    token = login().json()["token"]
    get_user_model().objects.filter(pk=alice.pk).update(is_active=False)
    assert authed(token).get(HOSTS).status_code == 401


def test_logout_revokes_only_this_token(alice):
    kept, revoked = login().json()["token"], login().json()["token"]
    response = authed(revoked).post("/api/v1/auth/logout/")
    assert response.status_code == 204
    assert authed(revoked).get(HOSTS).status_code == 401
    assert authed(kept).get(HOSTS).status_code == 200


def test_logout_all_revokes_every_token_of_the_user(alice):
    other = get_user_model().objects.create_superuser("bob", "bob@example.com", "pw")
    bobs = token_for(other)
    tokens = [login().json()["token"] for _ in range(3)]
    assert authed(tokens[0]).post("/api/v1/auth/logout-all/").status_code == 204
    assert all(authed(token).get(HOSTS).status_code == 401 for token in tokens)
    assert authed(bobs).get(HOSTS).status_code == 200


def test_logout_needs_a_token(alice):
    response = APIClient().post("/api/v1/auth/logout/")
    assert response.status_code == 401
    assert "message" in response.json()


def test_a_user_keeps_a_bounded_number_of_tokens(alice, settings):
    settings.API_TOKEN_LIMIT_PER_USER = 2
    oldest, middle, newest = (login().json()["token"] for _ in range(3))
    assert AuthToken.objects.filter(user=alice).count() == 2
    assert authed(oldest).get(HOSTS).status_code == 401
    assert authed(middle).get(HOSTS).status_code == 200
    assert authed(newest).get(HOSTS).status_code == 200


def test_the_token_endpoints_are_in_the_schema(alice):
    schema = authed(login().json()["token"]).get(
        "/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json"
    )
    paths = schema.json()["paths"]
    assert {"/api/v1/auth/token/", "/api/v1/auth/logout/", "/api/v1/auth/logout-all/"} <= set(paths)


# --- WebSocket --------------------------------------------------------------------------------------


def _campaign_and_token(expired: bool = False, revoked: bool = False):
    admin = get_user_model().objects.create_superuser("ws-admin", "ws@example.com", "pw")
    make_host("target", seen_ago=timedelta(seconds=1))
    campaign = services.create_campaign(admin, "SELECT 1", {"all": True})
    token = token_for(admin)
    if expired:
        AuthToken.objects.filter(user=admin).update(expiry=timezone.now() - timedelta(minutes=1))
    if revoked:
        AuthToken.objects.filter(user=admin).delete()
    return campaign, token


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("state", ["expired", "revoked"])
async def test_websocket_refuses_expired_and_revoked_tokens(state):
    campaign, token = await sync_to_async(_campaign_and_token)(**{state: True})
    # In the handshake header: the socket stays anonymous and must still authenticate ...
    ws = WebsocketCommunicator(
        application, f"/ws/campaigns/{campaign.id}/", headers=[(b"authorization", f"Token {token}".encode())]
    )
    assert (await ws.connect())[0]
    # ... and in the auth message: refused, closed with 4001.
    await ws.send_json_to({"type": "auth", "data": {"token": token}})
    assert await ws.receive_json_from() == {"type": "error", "data": "invalid token"}
    assert await ws.receive_output() == {"type": "websocket.close", "code": 4001}


@pytest.mark.django_db(transaction=True)
async def test_websocket_accepts_a_live_token_in_the_auth_message():
    campaign, token = await sync_to_async(_campaign_and_token)()
    ws = WebsocketCommunicator(application, f"/ws/campaigns/{campaign.id}/")
    assert (await ws.connect())[0]
    await ws.send_json_to({"type": "auth", "data": {"token": token}})
    assert (await ws.receive_json_from())["type"] == "totals"
    await ws.disconnect()
