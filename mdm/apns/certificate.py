"""The APNs push certificate: the CSR an admin gets signed, checks on the certificate Apple returns,
and throwaway development material for the local APNs stand-in.

Apple MDM pushes authenticate with a TLS client certificate issued by Apple for one topic (the
certificate's UID attribute). Every enrolled Mac remembers that topic, so the checks here exist to
stop an admin from installing a certificate that would silently cut every device off: one that was
not made from this server's key, or one for a different topic (another Apple ID).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "MAX_CERTIFICATE_BYTES",
    "TOPIC_OID",
    "DevPushBundle",
    "PushCertificateError",
    "PushCertificateInfo",
    "StandInMaterial",
    "check_pair",
    "check_renewal",
    "describe",
    "expiry_warning",
    "load_certificate",
    "load_dev_bundle",
    "make_csr",
    "make_dev_bundle",
    "topic_of",
    "write_dev_bundle",
]

#: The subject attribute (LDAP "UID", userId) in which Apple puts the push topic.
TOPIC_OID = x509.ObjectIdentifier("0.9.2342.19200300.100.1.1")

#: Apple's push certificate is ~2 KiB; anything far larger is not one, and is not worth parsing.
MAX_CERTIFICATE_BYTES = 64 * 1024

_PORTAL = "the Apple Push Certificates Portal (identity.apple.com)"
_PEM_CERT_MARKER = b"-----BEGIN CERTIFICATE-----"


class PushCertificateError(ValueError):
    """A push certificate (or its key) cannot be used; the message tells an admin what to do."""


def topic_of(cert: x509.Certificate) -> str:
    """The APNs topic a push certificate may push to: its subject's UID attribute."""
    values = {str(attr.value) for attr in cert.subject.get_attributes_for_oid(TOPIC_OID)}
    values.discard("")
    if not values:
        raise PushCertificateError(
            "This certificate has no push topic (no UID in its subject), so it is not an APNs MDM push "
            f"certificate. Download the MDM push certificate from {_PORTAL}."
        )
    if len(values) > 1:
        raise PushCertificateError(
            "This certificate names more than one push topic; it is not an Apple MDM push certificate."
        )
    return values.pop()


def make_csr(*, email: str, organization: str = "Fleet") -> tuple[bytes, bytes]:
    """A fresh RSA 2048 key and the CSR an admin submits to obtain a push certificate.

    Apple issues the certificate for the CSR's public key, so the server keeps the key (returned
    first, unencrypted PKCS#8 PEM: the caller stores it protected) and later pairs the certificate
    with it via `check_pair`.
    """
    email = email.strip()
    if "@" not in email or any(c.isspace() for c in email):
        raise PushCertificateError(f"{email!r} is not an email address; give the admin's Apple ID email.")
    organization = organization.strip() or "Fleet"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"{organization} MDM push"[:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization[:64]),
            x509.NameAttribute(NameOID.EMAIL_ADDRESS, email),
        ]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def load_certificate(data: bytes) -> x509.Certificate:
    """Parse an uploaded push certificate, PEM (Apple's download) or DER (a .cer export)."""
    if isinstance(data, str):
        data = data.encode("utf-8", "replace")
    if len(data) > MAX_CERTIFICATE_BYTES:
        raise PushCertificateError(
            f"This file is {len(data)} bytes, far too large for a push certificate "
            f"(limit {MAX_CERTIFICATE_BYTES}). Upload the .pem file from {_PORTAL}."
        )
    # Whitespace and a byte-order mark are stripped only to find PEM text: DER is binary, and its
    # last byte (the signature's) is a whitespace byte in about one certificate in forty.
    stripped = data.strip().removeprefix(b"\xef\xbb\xbf")
    start = stripped.find(_PEM_CERT_MARKER)
    if start < 0 and stripped.startswith(b"-----BEGIN"):
        raise PushCertificateError(
            "This PEM file holds no certificate (perhaps only a key or a CSR). "
            f"Upload the push certificate downloaded from {_PORTAL}."
        )
    try:
        if start >= 0:
            return x509.load_pem_x509_certificate(stripped[start:])
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise PushCertificateError(
            "This file is not an X.509 certificate in PEM or DER form. "
            f"Upload the push certificate downloaded from {_PORTAL}."
        ) from None


def _public_key_der(public_key) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_pair(cert: x509.Certificate, key_pem: bytes) -> None:
    """Refuse a certificate whose public key is not this server's key (it could never authenticate)."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise PushCertificateError(
            "This server's push private key cannot be read; create a new CSR and request a new certificate."
        ) from None
    if _public_key_der(cert.public_key()) != _public_key_der(key.public_key()):
        raise PushCertificateError(
            "The certificate was not made from this server's CSR: its public key does not match the "
            "server's private key. Upload the certificate Apple issued for the CSR downloaded from this "
            "server (or create a new CSR and have it signed)."
        )


def check_renewal(current_topic: str | None, new_cert: x509.Certificate) -> None:
    """Refuse a replacement certificate for another topic: it would strand every enrolled Mac."""
    new_topic = topic_of(new_cert)
    if current_topic and new_topic != current_topic:
        raise PushCertificateError(
            f"This certificate is for push topic {new_topic}, but enrolled Macs use {current_topic}. "
            "A different topic means a different Apple ID or a new certificate rather than a renewal: "
            "every Mac would have to re-enroll. Renew the existing certificate in "
            f"{_PORTAL}, signed in with the Apple ID that created it."
        )


@dataclass
class PushCertificateInfo:
    """What an admin needs to see about the installed push certificate."""

    topic: str
    not_before: dt.datetime
    not_after: dt.datetime
    serial_hex: str
    sha256_hex: str


def describe(cert: x509.Certificate) -> PushCertificateInfo:
    """Summarize a push certificate for display and expiry checks."""
    return PushCertificateInfo(
        topic=topic_of(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        serial_hex=f"{cert.serial_number:x}",
        sha256_hex=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
    )


def expiry_warning(not_after: dt.datetime, *, now: dt.datetime | None = None, days: int = 30) -> str | None:
    """A warning when the certificate expires within `days` (or already has); None otherwise.

    An expired push certificate silently stops all pushes, and renewing it needs the original Apple
    ID, so admins need warning well ahead.
    """
    if not_after.tzinfo is None:
        not_after = not_after.replace(tzinfo=dt.UTC)
    now = now or dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    remaining = not_after - now
    date = not_after.date().isoformat()
    if remaining <= dt.timedelta(0):
        return (
            f"The APNs push certificate expired on {date}: devices no longer receive pushes. "
            f"Renew it in {_PORTAL} with the Apple ID that created it."
        )
    if remaining > dt.timedelta(days=days):
        return None
    left = math.ceil(remaining / dt.timedelta(days=1))
    unit = "day" if left == 1 else "days"
    return (
        f"The APNs push certificate expires in {left} {unit} on {date}. "
        f"Renew it in {_PORTAL} with the Apple ID that created it."
    )


# --- development material -------------------------------------------------------------------------


@dataclass
class DevPushBundle:
    """Throwaway APNs material for development: a CA, a push certificate, and the stand-in's TLS cert.

    All PEM bytes. The CA plays Apple twice: it issues the push (client) certificate the stand-in
    checks, and the stand-in's server certificate the client trusts instead of the system store.
    """

    ca_cert_pem: bytes
    push_cert_pem: bytes
    push_key_pem: bytes
    server_cert_pem: bytes
    server_key_pem: bytes
    topic: str


@dataclass
class StandInMaterial:
    """What the stand-in needs from a dev bundle directory, and the CA file its clients trust."""

    ca_cert_pem: bytes
    server_cert_pem: bytes
    server_key_pem: bytes
    ca_file: Path


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _issue(
    *,
    subject: x509.Name,
    public_key,
    issuer: x509.Name,
    issuer_key,
    days: int,
    extensions: list[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False)
    )
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _key_usage(*, digital_signature=False, key_encipherment=False, cert_sign=False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _san_entries(hostname: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.DNSName("localhost"),
    ]
    try:
        extra: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        extra = x509.DNSName(hostname)
    if extra not in names:
        names.append(extra)
    return names


def make_dev_bundle(*, hostname: str = "127.0.0.1") -> DevPushBundle:
    """Generate a CA, a push certificate for a random `com.apple.mgmt.External.<uuid>` topic, and a
    server certificate for the stand-in at `hostname` (plus 127.0.0.1 and localhost)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "APNs stand-in CA (development only)"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Fleet development"),
        ]
    )
    ca_cert = _issue(
        subject=ca_name,
        public_key=ca_key.public_key(),
        issuer=ca_name,
        issuer_key=ca_key,
        days=3650,
        extensions=[
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (_key_usage(cert_sign=True), True),
        ],
    )

    # Like Apple's: RSA 2048, subject UID = topic, CN = "APSP:<uuid>".
    ident = str(uuid.uuid4())
    topic = f"com.apple.mgmt.External.{ident}"
    push_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    push_cert = _issue(
        subject=x509.Name(
            [
                x509.NameAttribute(TOPIC_OID, topic),
                x509.NameAttribute(NameOID.COMMON_NAME, f"APSP:{ident}"),
                x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            ]
        ),
        public_key=push_key.public_key(),
        issuer=ca_name,
        issuer_key=ca_key,
        days=365,
        extensions=[
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (_key_usage(digital_signature=True, key_encipherment=True), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False),
        ],
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _issue(
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]),
        public_key=server_key.public_key(),
        issuer=ca_name,
        issuer_key=ca_key,
        days=825,
        extensions=[
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (_key_usage(digital_signature=True), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
            (x509.SubjectAlternativeName(_san_entries(hostname)), False),
        ],
    )
    return DevPushBundle(
        ca_cert_pem=_pem(ca_cert),
        push_cert_pem=_pem(push_cert),
        push_key_pem=_key_pem(push_key),
        server_cert_pem=_pem(server_cert),
        server_key_pem=_key_pem(server_key),
        topic=topic,
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write with `mode` from the first byte (no window where a key is world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)


def write_dev_bundle(directory: Path, bundle: DevPushBundle) -> None:
    """Store the stand-in's files (`ca.pem`, `server.pem`, `server.key` 0600) in `directory`.

    The push certificate and key are not written here: the caller stores them where the real ones
    live, so development exercises the same code path as production.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write(directory / "ca.pem", bundle.ca_cert_pem, 0o644)
    _write(directory / "server.pem", bundle.server_cert_pem, 0o644)
    _write(directory / "server.key", bundle.server_key_pem, 0o600)


def load_dev_bundle(directory: Path) -> StandInMaterial:
    """Read what `write_dev_bundle` stored; a clear error when the dev setup has not been run."""
    directory = Path(directory)
    try:
        return StandInMaterial(
            ca_cert_pem=(directory / "ca.pem").read_bytes(),
            server_cert_pem=(directory / "server.pem").read_bytes(),
            server_key_pem=(directory / "server.key").read_bytes(),
            ca_file=directory / "ca.pem",
        )
    except FileNotFoundError as exc:
        raise PushCertificateError(
            f"No APNs stand-in material in {directory} ({exc.filename} is missing); "
            "run `manage.py mdm setup --dev` first."
        ) from None
