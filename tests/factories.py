"""Building blocks shared by the tests: hosts in a given state, users with roles, API clients."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from hosts.models import Host, HostSeenTime, Team, UserRole


def make_host(
    name: str,
    team: Team | None = None,
    seen_ago: timedelta | None = None,
    created_ago: timedelta = timedelta(days=3),
    **fields,
) -> Host:
    """A host as enrolment leaves it; ``seen_ago`` adds its seen-time row (online for 70 s)."""
    now = timezone.now()
    host = Host.objects.create(
        osquery_host_id=f"id-{name}",
        hostname=name,
        uuid=f"uuid-{name}",
        team=team,
        created_at=now - created_ago,
        **fields,
    )
    if seen_ago is not None:
        seen = now - seen_ago
        HostSeenTime.objects.create(host=host, seen_time=seen, offline_after=seen + timedelta(seconds=70))
    return host


def user_with_role(username: str, role: str | None = None, team: Team | None = None):
    user = get_user_model().objects.create_user(username, password="pw-" + username)
    if role:
        UserRole.objects.create(user=user, team=team, role=role)
    return user


def token_for(user, expiry: timedelta | None = timedelta(hours=1)) -> str:
    """A new REST API token for ``user`` (what ``POST /api/v1/auth/token/`` hands out)."""
    return AuthToken.objects.create(user=user, expiry=expiry)[1]


def api_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    return client
