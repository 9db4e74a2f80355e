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
    """The active user owning a live REST token, or ``None``.

    The same check as the REST API's (``knox.auth.TokenAuthentication``): the token's digest is
    compared in constant time, an expired token is refused (and deleted), so is an inactive user.
    """
    from knox.auth import TokenAuthentication
    from rest_framework.exceptions import AuthenticationFailed

    if not isinstance(key, str) or not key or len(key) > 128:
        return None
    try:
        user, _token = TokenAuthentication().authenticate_credentials(key.encode())
    except AuthenticationFailed:
        return None
    return user


def _header(scope: dict, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return ""


def _page_scheme(scope: dict) -> str:
    """``http`` or ``https``: how the browser reached us (the proxy's word when it is trusted)."""
    if settings.SECURE_PROXY_SSL_HEADER:
        forwarded = _header(scope, b"x-forwarded-proto").split(",")[0].strip().lower()
        if forwarded in ("http", "https"):
            return forwarded
    return "https" if scope.get("scheme") in ("wss", "https") else "http"


def origin_allowed(scope: dict) -> bool:
    """Same origin (the page's scheme and host are the socket's) or a CSRF-trusted origin.

    The scheme counts: a page served over plain HTTP (where anyone on the network may inject
    script) must not ride the session of the HTTPS site on the same host.
    """
    origin = _header(scope, b"origin")
    if not origin:
        return True
    parts = urlsplit(origin)
    if parts.netloc == _header(scope, b"host") and parts.scheme == _page_scheme(scope):
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
