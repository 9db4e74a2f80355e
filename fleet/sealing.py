"""Secrets at rest: seal what the server must read back (an APNs key, a lock PIN, a task's
password) with AES-256-GCM under the server's private key.

The key is ``FLEET_SERVER_PRIVATE_KEY`` (Fleet's name for the same thing) or, when unset, derived
from ``SECRET_KEY``; changing it makes sealed values unreadable, so production sets it explicitly
and keeps it. Each value gets a fresh nonce and names its purpose as associated data, so a value
sealed for one purpose cannot be replayed as another.
"""

from __future__ import annotations

import base64
import os
from functools import cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

_VERSION = "v1"


class UnsealError(ValueError):
    """A sealed value is corrupt, or was sealed under another server key."""


@cache
def _key(material: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"fleet-sealing", info=b"aes-gcm").derive(
        material.encode()
    )


def _server_key() -> bytes:
    return _key(getattr(settings, "SERVER_PRIVATE_KEY", "") or settings.SECRET_KEY)


def seal(value: bytes, purpose: str) -> str:
    """``value`` encrypted for ``purpose``, as ASCII text fit for a text column."""
    nonce = os.urandom(12)
    sealed = AESGCM(_server_key()).encrypt(nonce, value, purpose.encode())
    return f"{_VERSION}:{base64.b64encode(nonce + sealed).decode()}"


def unseal(text: str, purpose: str) -> bytes:
    """The value :func:`seal` sealed for ``purpose``; :class:`UnsealError` otherwise."""
    version, _, body = text.partition(":")
    if version != _VERSION or not body:
        raise UnsealError("not a sealed value")
    try:
        raw = base64.b64decode(body, validate=True)
        return AESGCM(_server_key()).decrypt(raw[:12], raw[12:], purpose.encode())
    except (ValueError, InvalidTag) as exc:
        raise UnsealError("the value cannot be unsealed with this server's key") from exc
