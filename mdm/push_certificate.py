"""The APNs push certificate: the CSR step, the upload (with the renewal guard), the dev stand-in,
and the client material pushes are sent with. One row; its keys are sealed at rest."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from fleet.sealing import seal, unseal
from mdm import conf
from mdm.apns import certificate as apns_cert
from mdm.models import PushCertificate

_KEY_PURPOSE = "mdm-apns-key"
_PENDING_PURPOSE = "mdm-apns-csr-key"


@dataclass(frozen=True)
class PushMaterial:
    """What the APNs client needs: never logged, never returned by REST or the console."""

    url: str
    topic: str
    cert_pem: bytes
    key_pem: bytes
    ca_file: str | None


def current() -> PushCertificate:
    row, _ = PushCertificate.objects.get_or_create(pk=1)
    return row


def topic() -> str:
    return PushCertificate.objects.filter(pk=1).values_list("topic", flat=True).first() or ""


def make_csr(email: str, organization: str = "Fleet") -> bytes:
    """A new CSR to submit to Apple; its key waits (sealed) for the certificate's upload."""
    key_pem, csr_pem = apns_cert.make_csr(email=email, organization=organization)
    with transaction.atomic():
        row = PushCertificate.objects.select_for_update().get_or_create(pk=1)[0]
        row.pending_sealed_key = seal(key_pem, _PENDING_PURPOSE)
        row.pending_csr_pem = csr_pem.decode()
        row.pending_created_at = timezone.now()
        row.save()
    return csr_pem


def upload(data: bytes, *, user: Any = None, key_pem: bytes | None = None) -> PushCertificate:
    """Install the certificate Apple issued for our CSR (or for ``key_pem``, when given).

    Refused (:class:`~mdm.apns.certificate.PushCertificateError`) when it is not for our key, when it
    expired, or when its topic differs from the current one: a new topic means every enrolled Mac
    must enroll again, the renewal mistake Fleet's users report.
    """
    cert = apns_cert.load_certificate(data)
    with transaction.atomic():
        row = PushCertificate.objects.select_for_update().get_or_create(pk=1)[0]
        if key_pem is None:
            if not row.pending_sealed_key:
                raise apns_cert.PushCertificateError(
                    "There is no pending CSR: make one first (`manage.py mdm apns csr`) and upload the "
                    "certificate Apple issues for it."
                )
            key_pem = unseal(row.pending_sealed_key, _PENDING_PURPOSE)
        apns_cert.check_pair(cert, key_pem)
        if cert.not_valid_after_utc <= timezone.now().astimezone(UTC):
            raise apns_cert.PushCertificateError("This certificate has already expired.")
        apns_cert.check_renewal(row.topic if row.certificate_pem and not row.is_dev else None, cert)
        _install(row, cert, key_pem, is_dev=False, user=user)
        row.pending_sealed_key = ""
        row.pending_csr_pem = ""
        row.pending_created_at = None
        row.save()
    return row


def install_dev(bundle: apns_cert.DevPushBundle) -> PushCertificate:
    """The stand-in certificate ``mdm setup --dev`` made (no Apple account needed)."""
    cert = apns_cert.load_certificate(bundle.push_cert_pem)
    with transaction.atomic():
        row = PushCertificate.objects.select_for_update().get_or_create(pk=1)[0]
        _install(row, cert, bundle.push_key_pem, is_dev=True, user=None)
        row.save()
    return row


def _install(
    row: PushCertificate, cert: x509.Certificate, key_pem: bytes, *, is_dev: bool, user: Any
) -> None:
    info = apns_cert.describe(cert)
    row.topic = info.topic
    row.certificate_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    row.sealed_key = seal(key_pem, _KEY_PURPOSE)
    row.not_before = info.not_before
    row.not_after = info.not_after
    row.serial_hex = info.serial_hex
    row.sha256_hex = info.sha256_hex
    row.is_dev = is_dev
    row.uploaded_at = timezone.now()
    row.uploaded_by = user if getattr(user, "is_authenticated", False) else None


def material() -> PushMaterial | None:
    """The client material, or ``None`` when no certificate is installed."""
    row = PushCertificate.objects.filter(pk=1).first()
    if row is None or not row.certificate_pem or not row.sealed_key:
        return None
    if row.is_dev:
        url, ca_file = settings.MDM["DEV_APNS_URL"], str(conf.standin_dir() / "ca.pem")
    else:
        url, ca_file = settings.MDM["APNS_URL"], None
    return PushMaterial(
        url=url,
        topic=row.topic,
        cert_pem=row.certificate_pem.encode(),
        key_pem=unseal(row.sealed_key, _KEY_PURPOSE),
        ca_file=ca_file,
    )


def warning(row: PushCertificate | None = None) -> str | None:
    """The expiry warning admins see (30 days ahead), or ``None``."""
    row = row if row is not None else PushCertificate.objects.filter(pk=1).first()
    if row is None or row.not_after is None:
        return None
    return apns_cert.expiry_warning(row.not_after)
