"""The MDM certificate authority: one RSA key and a self-signed certificate on disk.

Devices get their identity certificate from this CA over SCEP and then sign every MDM request with
it, so the server's trust decision is "was this certificate issued by our CA, and is it still
valid". Keeping the CA as two plain files (``ca.pem``, ``ca.key``) lets an operator back it up or
replace it without a database; the HMAC key for SCEP challenges is derived from the CA key
(``derive_secret``) so there is no third secret to lose.
"""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_FILE = "ca.pem"
KEY_FILE = "ca.key"

DEVICE_FALLBACK_CN = "Fleet MDM device"

# Device keys we are willing to certify: RSA in this size range, or EC on the NIST curves that
# Apple's Secure Enclave and SCEP clients use. Anything else is refused before it reaches a signer.
RSA_MIN_BITS = 1024
RSA_MAX_BITS = 4096
EC_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)

# Clocks on freshly wiped devices are often a little behind; backdating avoids "not yet valid".
BACKDATE = timedelta(minutes=5)


class MdmNotConfigured(Exception):
    """There is no usable CA on disk (run the management command that creates it)."""


class CsrRejected(ValueError):
    """The CA will not sign this request: bad signature, unsupported key, unusable subject."""


def new_rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    """A fresh RSA key with the usual public exponent (a helper so callers need not know it)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def self_signed(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, common_name: str, days: int = 1
) -> x509.Certificate:
    """A throwaway self-signed certificate: SCEP clients sign their first request with one."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )


def _check_device_key(csr: x509.CertificateSigningRequest) -> None:
    """Refuse keys we would not want to vouch for (tiny RSA, huge RSA that slows us, odd curves)."""
    try:
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CsrRejected("the CSR's public key cannot be read") from exc
    if isinstance(public_key, rsa.RSAPublicKey):
        if not RSA_MIN_BITS <= public_key.key_size <= RSA_MAX_BITS:
            raise CsrRejected(f"RSA keys must have {RSA_MIN_BITS} to {RSA_MAX_BITS} bits")
        return
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, EC_CURVES):
            raise CsrRejected("unsupported elliptic curve")
        return
    raise CsrRejected("only RSA and EC keys are accepted")


@dataclass(frozen=True)
class CertificateAuthority:
    """The loaded CA: issues device certificates and recognises the ones it issued."""

    certificate: x509.Certificate
    key: rsa.RSAPrivateKey

    @property
    def certificate_der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def _subject_key_identifier(self) -> x509.SubjectKeyIdentifier:
        try:
            return self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound:
            return x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())

    def validate_csr(self, csr: x509.CertificateSigningRequest) -> x509.Name:
        """Raise ``CsrRejected`` unless ``issue`` would accept ``csr``; return its subject.

        SCEP runs this before spending a one-time challenge on a request that would fail anyway.
        """
        try:
            signature_ok = csr.is_signature_valid
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise CsrRejected("the CSR's signature cannot be checked") from exc
        if not signature_ok:
            raise CsrRejected("the CSR's signature is invalid")
        _check_device_key(csr)
        try:
            subject = csr.subject
            subject.rfc4514_string()  # parses every attribute now rather than inside the builder
        except ValueError as exc:
            raise CsrRejected("the CSR's subject cannot be read") from exc
        if subject == self.certificate.subject:
            raise CsrRejected("the CSR's subject is the CA's own name")
        return subject

    def issue(self, csr: x509.CertificateSigningRequest, *, days: int = 365) -> x509.Certificate:
        """A device identity certificate for ``csr`` (which comes from a device: checked first).

        Only the subject and key are taken from the request; every extension is ours, so a device
        cannot ask for a CA certificate or extra usages.
        """
        subject = self.validate_csr(csr)
        if len(subject) == 0:
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DEVICE_FALLBACK_CN)])
        public_key = csr.public_key()
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                    self._subject_key_identifier()
                ),
                critical=False,
            )
        )
        try:
            return builder.sign(self.key, hashes.SHA256())
        except ValueError as exc:  # e.g. a subject attribute cryptography refuses to encode
            raise CsrRejected(f"cannot issue a certificate for this CSR: {exc}") from exc

    def issued_by_us(self, cert: x509.Certificate, *, at: datetime | None = None) -> bool:
        """True if ``cert`` names us as issuer, carries our signature and is valid at ``at``.

        This is the whole trust decision for device identities, so it never raises: any defect in
        the certificate is simply "not ours". The CA certificate itself is not a device identity
        and does not count.
        """
        when = at or datetime.now(UTC)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        try:
            if cert == self.certificate:
                return False
            if cert.issuer != self.certificate.subject:
                return False
            cert.verify_directly_issued_by(self.certificate)
            return cert.not_valid_before_utc <= when <= cert.not_valid_after_utc
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            return False

    def derive_secret(self, purpose: bytes) -> bytes:
        """32 bytes bound to this CA key and ``purpose``: secrets that live and die with the CA."""
        if not purpose:
            raise ValueError("purpose must be a non-empty label")
        key_der = self.key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(key_der)


def _ca_certificate(
    key: rsa.RSAPrivateKey, common_name: str, organization: str, days: int
) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        ]
    )
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the first byte on; fails if it already exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _replace(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` beside ``path`` under a fresh name, then rename it over ``path``."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp uses 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def create_ca(
    directory: Path,
    *,
    common_name: str = "Fleet MDM CA",
    organization: str = "Fleet",
    days: int = 3650,
    force: bool = False,
) -> CertificateAuthority:
    """Generate the CA and write it to ``directory``; refuses to replace a key unless ``force``.

    Replacing the CA orphans every enrolled device, hence the explicit ``force``.
    """
    directory = Path(directory)
    key_path = directory / KEY_FILE
    cert_path = directory / CERT_FILE
    if key_path.exists() and not force:
        raise FileExistsError(f"{key_path} already exists (use force to replace the CA)")
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
    key = new_rsa_key(2048)
    certificate = _ca_certificate(key, common_name, organization, days)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    if force:
        _replace(key_path, key_pem, 0o600)
    else:
        _write_new(key_path, key_pem, 0o600)
    _replace(cert_path, cert_pem, 0o644)
    return CertificateAuthority(certificate=certificate, key=key)


_cache: dict[str, tuple[tuple[int, int, int, int], CertificateAuthority]] = {}
_cache_lock = threading.Lock()


def load_ca(directory: Path) -> CertificateAuthority:
    """The CA in ``directory``, cached until either file changes (this runs on every MDM request)."""
    directory = Path(directory)
    cert_path = directory / CERT_FILE
    key_path = directory / KEY_FILE
    try:
        cert_stat = cert_path.stat()
        key_stat = key_path.stat()
    except FileNotFoundError as exc:
        raise MdmNotConfigured(f"no MDM CA in {directory} ({exc.filename} is missing)") from exc
    stamp = (cert_stat.st_mtime_ns, cert_stat.st_size, key_stat.st_mtime_ns, key_stat.st_size)
    cache_key = str(directory.resolve())
    with _cache_lock:
        cached = _cache.get(cache_key)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise MdmNotConfigured(f"no MDM CA in {directory} ({exc.filename} is missing)") from exc
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise MdmNotConfigured(f"the MDM CA in {directory} cannot be read: {exc}") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise MdmNotConfigured(f"{key_path} is not an RSA key")
    if key.public_key().public_numbers() != certificate.public_key().public_numbers():
        raise MdmNotConfigured(f"{key_path} does not belong to {cert_path}")
    ca = CertificateAuthority(certificate=certificate, key=key)
    with _cache_lock:
        _cache[cache_key] = (stamp, ca)
    return ca
