"""Device tokens: check them, store them (digest only) and find the host behind one.

The lifecycle is Fleet's (device-management.md §1): a token is valid for ``TOKEN_TTL`` after it
was set; re-sending the same token changes nothing (Fleet's upsert only moves ``updated_at``
when the token differs); since Fleet 4.78 the token before a rotation is accepted as well, so
a My device page opened just before orbit's hourly rotation does not break.

The previous token stays valid until one TTL after the rotation, but never beyond two TTLs
after it was itself set: orbit rotates as soon as a token is an hour old, so in practice that
is "one more hour", while a token that had long expired (a host offline for days) is not
brought back to life by its rotation.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from devices.models import DeviceToken

# Fleet's column is VARCHAR(255); orbit sends a 36-character UUID.
MAX_TOKEN_LENGTH = 255
# What Go's url.QueryEscape leaves unchanged, which is Fleet's test for a URL-safe token.
_URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")


class TokenRefused(ValueError):
    """The token cannot be used (empty, too long, not URL-safe): the agent's error, a 400."""


class TokenConflict(Exception):
    """Another host holds this token (Fleet's ConflictError, a 409)."""


def token_ttl() -> timedelta:
    return timedelta(seconds=settings.FLEET_DESKTOP["TOKEN_TTL"])


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def looks_valid(token: str) -> bool:
    """Whether ``token`` could be a token at all (checked before any database work)."""
    return 0 < len(token) <= MAX_TOKEN_LENGTH and _URL_SAFE.fullmatch(token) is not None


def check_token(token: object) -> str:
    """The token, or :class:`TokenRefused` with the reason, as Fleet words it."""
    if not isinstance(token, str):
        raise TokenRefused("device_auth_token must be a string")
    if not token:
        raise TokenRefused("device auth token cannot be empty")
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenRefused(f"device auth token is longer than {MAX_TOKEN_LENGTH} characters")
    if not _URL_SAFE.fullmatch(token):
        raise TokenRefused("device auth token contains invalid characters")
    return token


def _previous_expiry(current: DeviceToken, now: datetime) -> datetime | None:
    """Until when the token being replaced stays valid (see the module docstring)."""
    ttl = token_ttl()
    expires = min(now, current.updated_at + ttl) + ttl
    return expires if expires > now else None


def _store(host_id: int, digest: str, now: datetime) -> None:
    current = DeviceToken.objects.select_for_update().filter(host_id=host_id).first()
    if current is not None and current.token_digest == digest:
        return  # the same token again: its life is not extended
    others = list(
        DeviceToken.objects.select_for_update()
        .filter(Q(token_digest=digest) | Q(previous_digest=digest))
        .exclude(host_id=host_id)
    )
    for other in others:
        still_valid = other.previous_expires_at is not None and other.previous_expires_at > now
        if other.token_digest == digest or still_valid:
            raise TokenConflict("device auth token is already in use by another host")
        # Another host's previous token that has expired: forget it, it is worth nothing.
        DeviceToken.objects.filter(pk=other.pk).update(previous_digest=None, previous_expires_at=None)
    if current is None:
        DeviceToken.objects.create(host_id=host_id, token_digest=digest, updated_at=now, created_at=now)
        return
    previous_expires = _previous_expiry(current, now)
    current.previous_digest = current.token_digest if previous_expires else None
    current.previous_expires_at = previous_expires
    current.token_digest = digest
    current.updated_at = now
    current.save(update_fields=["token_digest", "updated_at", "previous_digest", "previous_expires_at"])


def set_token(host_id: int, token: object, now: datetime | None = None) -> None:
    """Make ``token`` the host's device token (Fleet's SetOrUpdateDeviceAuthToken).

    Raises :class:`TokenRefused` for a token that cannot be used and :class:`TokenConflict`
    when another host holds it. Two requests racing for the same host are both answered: the
    loser of the insert race retries once, as an update.
    """
    digest = token_digest(check_token(token))
    for attempt in range(2):
        try:
            with transaction.atomic():
                _store(host_id, digest, now or timezone.now())
            return
        except IntegrityError:
            # A concurrent insert for this host, or another host taking the same token.
            if attempt == 1 or not DeviceToken.objects.filter(host_id=host_id).exists():
                raise TokenConflict("device auth token is already in use by another host") from None


def valid_tokens(digest: str, now: datetime | None = None) -> Q:
    """The condition matching a row whose current or previous token is ``digest`` and still valid."""
    now = now or timezone.now()
    return Q(token_digest=digest, updated_at__gte=now - token_ttl()) | Q(
        previous_digest=digest, previous_expires_at__gt=now
    )


def find(token: str, now: datetime | None = None) -> DeviceToken | None:
    """The token's row with its host (team and seen time joined), or ``None``: one indexed query.

    A string that cannot be a token costs no query at all.
    """
    if not looks_valid(token):
        return None
    return (
        DeviceToken.objects.select_related("host", "host__team", "host__seen")
        .filter(valid_tokens(token_digest(token), now))
        .first()
    )
