"""The WebSocket Origin check compares the scheme too, not only the host.

A page served over plain HTTP can be tampered with by anyone on the network; it must not ride
the browser session of the HTTPS site on the same host.
"""

from __future__ import annotations

import pytest

from fleet.ws_auth import origin_allowed


def scope(origin: str | None, scheme: str = "ws", host: str = "fleet.test", **headers: str) -> dict:
    pairs = [(b"host", host.encode())]
    if origin is not None:
        pairs.append((b"origin", origin.encode()))
    pairs += [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]
    return {"type": "websocket", "scheme": scheme, "headers": pairs}


@pytest.mark.parametrize(
    "origin, scheme, allowed",
    [
        ("http://fleet.test", "ws", True),
        ("https://fleet.test", "wss", True),
        ("http://fleet.test", "wss", False),  # an HTTP page on the HTTPS site's socket
        ("https://fleet.test", "ws", False),
        ("https://evil.example", "wss", False),
        ("http://fleet.test:8080", "ws", False),  # another port is another origin
        (None, "wss", True),  # scripts send no Origin; they authenticate with a token
    ],
)
def test_origin_must_match_scheme_and_host(origin, scheme, allowed):
    assert origin_allowed(scope(origin, scheme)) is allowed


def test_behind_a_trusted_proxy_the_forwarded_scheme_decides(settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert origin_allowed(scope("https://fleet.test", "ws", x_forwarded_proto="https"))
    assert not origin_allowed(scope("http://fleet.test", "ws", x_forwarded_proto="https"))


def test_without_a_trusted_proxy_a_forwarded_scheme_is_ignored(settings):
    settings.SECURE_PROXY_SSL_HEADER = None
    assert not origin_allowed(scope("https://fleet.test", "ws", x_forwarded_proto="https"))


def test_csrf_trusted_origins_are_allowed_exactly(settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://console.example.com"]
    assert origin_allowed(scope("https://console.example.com", "wss"))
    assert not origin_allowed(scope("http://console.example.com", "wss"))
