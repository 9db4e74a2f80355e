"""WebSocket authentication: session cookie, ``Authorization: Token`` header, and Origin checks.

Browsers always send ``Origin`` on a WebSocket handshake and attach cookies to any site's
request, so a session is trusted only when the Origin is the server itself or listed in
``DJANGO_CSRF_TRUSTED_ORIGINS``, as Django's CSRF check does for forms (no cross-site hijacking).
Scripts send no Origin and authenticate with a token (header, or a first ``auth`` message).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser


@database_sync_to_async
def user_for_token(key: Any) -> Any:
    """The active user owning a REST token, or ``None``."""
    from rest_framework.authtoken.models import Token

    if not isinstance(key, str) or not key or len(key) > 64:
        return None
    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return None
    return token.user


def _header(scope: dict, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return ""


def origin_allowed(scope: dict) -> bool:
    """Same-origin (the page's host is the one it connects to) or a CSRF-trusted origin."""
    origin = _header(scope, b"origin")
    if not origin:
        return True
    if urlsplit(origin).netloc == _header(scope, b"host"):
        return True
    return origin in settings.CSRF_TRUSTED_ORIGINS


class TokenAndOriginMiddleware:
    """After the session middleware: a token header overrides the session; a foreign Origin
    turns the session user back into an anonymous one (a token message can still log in)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        authorization = _header(scope, b"authorization")
        if authorization.startswith("Token "):
            user = await user_for_token(authorization.removeprefix("Token ").strip())
            scope = {**scope, "user": user or AnonymousUser()}
        elif not origin_allowed(scope):
            scope = {**scope, "user": AnonymousUser()}
        return await self.inner(scope, receive, send)


def WebSocketAuthStack(inner: Any) -> Any:  # noqa: N802 - reads like the Channels stacks it wraps
    return AuthMiddlewareStack(TokenAndOriginMiddleware(inner))
