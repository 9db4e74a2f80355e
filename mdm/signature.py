"""Who sent an MDM message: the ``Mdm-Signature`` header checked against the body and our CA.

The header is base64 of a detached CMS SignedData over the exact body (the enrollment profile sets
``SignMessage``). The signer must hold a certificate our CA issued through SCEP and that we
recorded; anything else is refused before the body is even parsed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.hazmat.primitives.serialization import Encoding

from mdm import conf
from mdm.models import DeviceIdentity
from mdm.pki.cms import SignatureError, verify_detached

MAX_HEADER = 32 * 1024  # a real one is 2-5 KiB; front ends refuse far less (nginx: 8 KiB)


class Unauthenticated(Exception):
    """The message is not signed by a device identity we issued (HTTP 401)."""


def signer_digest(header: str | None, body: bytes) -> str:
    """The SHA-256 (hex) of the certificate that signed ``body``, once the signature verified and
    the certificate proved to be our CA's; :class:`Unauthenticated` otherwise. No database work:
    the caller matches the digest to the device's recorded identity in its own query."""
    if not header:
        raise Unauthenticated("missing Mdm-Signature header")
    if len(header) > MAX_HEADER:
        raise Unauthenticated("Mdm-Signature header too large")
    try:
        signature = base64.b64decode("".join(header.split()), validate=True)
    except (binascii.Error, ValueError):
        raise Unauthenticated("Mdm-Signature is not base64") from None
    try:
        certificate = verify_detached(signature, body)
    except SignatureError as exc:
        raise Unauthenticated(f"bad signature: {exc}") from None
    if not conf.ca().issued_by_us(certificate):
        raise Unauthenticated("the signing certificate was not issued by this server's MDM CA")
    return hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()


def identity_for(header: str | None, body: bytes) -> DeviceIdentity:
    """The recorded identity that signed ``body`` (one query)."""
    identity = DeviceIdentity.objects.filter(sha256=signer_digest(header, body)).first()
    if identity is None:
        raise Unauthenticated("unknown device certificate")
    return identity
