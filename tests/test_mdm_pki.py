"""mdm.pki: the MDM CA, CMS signatures and SCEP, checked against each other and against openssl.

No database: these are pure cryptography. openssl (when installed) is the independent decoder, so a
mistake shared by our encoder and our decoder cannot pass unnoticed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import cms as acms
from asn1crypto import core
from asn1crypto import csr as acsr
from asn1crypto import keys as akeys
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from cryptography.x509.oid import AttributeOID, ExtendedKeyUsageOID, NameOID

from mdm.pki import cms, scep, scep_client
from mdm.pki.ca import (
    CertificateAuthority,
    CsrRejected,
    MdmNotConfigured,
    create_ca,
    load_ca,
    new_rsa_key,
    self_signed,
)

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")

BODY = (
    b'<?xml version="1.0"?>\n<plist version="1.0">\n'
    b"<dict><key>Status</key><string>Idle</string></dict>\n</plist>\n"
)


# --- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> CertificateAuthority:
    return create_ca(tmp_path_factory.mktemp("mdm") / "ca")


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory) -> CertificateAuthority:
    return create_ca(tmp_path_factory.mktemp("other") / "ca", common_name="Someone Else's CA")


@pytest.fixture(scope="module")
def device_key():
    return new_rsa_key(2048)


@pytest.fixture(scope="module")
def device_cert(ca, device_key) -> x509.Certificate:
    return ca.issue(_csr(device_key, "Mac device"))


def _csr(key, common_name: str | None, challenge: str | None = None) -> x509.CertificateSigningRequest:
    names = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(names))
    if challenge is not None:
        builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)


def _printable_challenge_csr(key, common_name: str, challenge: str) -> x509.CertificateSigningRequest:
    """A CSR whose challengePassword is a PrintableString (cryptography always writes UTF8String)."""
    info = acsr.CertificationRequestInfo(
        {
            "version": "v1",
            "subject": ax509.Name.build({"common_name": common_name}),
            "subject_pk_info": akeys.PublicKeyInfo.load(
                key.public_key().public_bytes(Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            ),
            "attributes": [
                {
                    "type": "challenge_password",
                    "values": [ax509.DirectoryString(name="printable_string", value=challenge)],
                }
            ],
        }
    )
    signature = key.sign(info.dump(), padding.PKCS1v15(), hashes.SHA256())
    request = acsr.CertificationRequest(
        {
            "certification_request_info": info,
            "signature_algorithm": {"algorithm": "sha256_rsa"},
            "signature": signature,
        }
    )
    return x509.load_der_x509_csr(request.dump())


def _run(*args: str, stdin: bytes | None = None) -> bytes:
    result = subprocess.run([OPENSSL, *args], input=stdin, capture_output=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def _pem_files(tmp_path: Path, name: str, cert: x509.Certificate, key) -> tuple[str, str]:
    cert_path, key_path = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


def _attrs(message: bytes) -> dict[str, core.Asn1Value]:
    """The signed attributes of a CMS message by dotted OID, decoded to universal types."""
    signer_info = acms.ContentInfo.load(message)["content"]["signer_infos"][0]
    return {a["type"].dotted: core.load(a["values"][0].dump()) for a in signer_info["signed_attrs"]}


def _signed_request(
    content: bytes | None, attributes: dict[str, core.Asn1Value], cert: x509.Certificate, key
) -> bytes:
    """A SCEP-shaped SignedData with whatever content and SCEP attributes a test wants."""
    items = [{"type": "content_type", "values": ["data"]}]
    items.append({"type": "message_digest", "values": [hashlib.sha256(content or b"").digest()]})
    items += [{"type": oid, "values": [value]} for oid, value in attributes.items()]
    signed_attrs = acms.CMSAttributes(items)
    is_ec = isinstance(key, ec.EllipticCurvePrivateKey)
    if is_ec:
        signature = key.sign(signed_attrs.dump(), ec.ECDSA(hashes.SHA256()))
    else:
        signature = key.sign(signed_attrs.dump(), padding.PKCS1v15(), hashes.SHA256())
    signer = ax509.Certificate.load(cert.public_bytes(Encoding.DER))
    encap = {"content_type": "data"} if content is None else {"content_type": "data", "content": content}
    signed_data = {
        "version": "v1",
        "digest_algorithms": [{"algorithm": "sha256"}],
        "encap_content_info": encap,
        "certificates": [signer],
        "signer_infos": [
            {
                "version": "v1",
                "sid": {
                    "issuer_and_serial_number": {
                        "issuer": signer.issuer,
                        "serial_number": signer.serial_number,
                    }
                },
                "digest_algorithm": {"algorithm": "sha256"},
                "signed_attrs": signed_attrs,
                "signature_algorithm": {"algorithm": "sha256_ecdsa" if is_ec else "sha256_rsa"},
                "signature": signature,
            }
        ],
    }
    return acms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()


def _scep_attributes(message_type: str = "19") -> dict[str, core.Asn1Value]:
    return {
        scep.OID_MESSAGE_TYPE: core.PrintableString(message_type),
        scep.OID_TRANSACTION_ID: core.PrintableString("TX-1"),
        scep.OID_SENDER_NONCE: core.OctetString(os.urandom(16)),
    }


def _envelope_to(cert: x509.Certificate, content: bytes) -> bytes:
    return (
        pkcs7.PKCS7EnvelopeBuilder()
        .set_data(content)
        .add_recipient(cert)
        .encrypt(Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )


def _accept(password: str, csr: x509.CertificateSigningRequest) -> object:
    if password != "s3cret":
        raise scep.ChallengeRejected("wrong challenge")
    return {"challenge": password}


# --- the CA -----------------------------------------------------------------------------------------


def test_create_ca_writes_private_files(tmp_path):
    directory = tmp_path / "new" / "ca"
    old_umask = os.umask(0)  # even a permissive umask must not expose the key
    try:
        created = create_ca(directory)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((directory / "ca.pem").stat().st_mode) == 0o644
    assert (directory / "ca.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    cert = created.certificate
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Fleet MDM CA"
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and usage.digital_signature
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert created.key.key_size == 2048
    assert created.certificate_der == cert.public_bytes(Encoding.DER)
    assert created.certificate_pem == (directory / "ca.pem").read_bytes()

    loaded = load_ca(directory)
    assert loaded.certificate == cert
    assert load_ca(directory) is loaded  # cached while the files are unchanged

    with pytest.raises(FileExistsError):
        create_ca(directory)
    replaced = create_ca(directory, force=True)
    assert stat.S_IMODE((directory / "ca.key").stat().st_mode) == 0o600
    assert replaced.certificate != cert
    assert load_ca(directory).certificate == replaced.certificate  # the cache noticed
    assert sorted(p.name for p in directory.iterdir()) == ["ca.key", "ca.pem"]  # no temporary files left


def test_load_ca_without_files(tmp_path, ca):
    with pytest.raises(MdmNotConfigured):
        load_ca(tmp_path / "nothing")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "ca.pem").write_bytes(ca.certificate_pem)
    with pytest.raises(MdmNotConfigured):
        load_ca(tmp_path / "half")
    (tmp_path / "half" / "ca.key").write_bytes(b"not a key")
    with pytest.raises(MdmNotConfigured):
        load_ca(tmp_path / "half")


def test_load_ca_rejects_a_key_of_another_certificate(tmp_path, ca, other_ca):
    directory = tmp_path / "mixed"
    directory.mkdir()
    (directory / "ca.pem").write_bytes(ca.certificate_pem)
    (directory / "ca.key").write_bytes(
        other_ca.key.private_bytes(
            Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(MdmNotConfigured, match="does not belong"):
        load_ca(directory)


def test_issue_device_certificate(ca, device_key):
    cert = ca.issue(_csr(device_key, "ABCD-1234"), days=30)
    now = datetime.now(UTC)
    assert cert.subject.rfc4514_string() == "CN=ABCD-1234"
    assert cert.issuer == ca.certificate.subject
    assert 0 < cert.serial_number < 2**159
    assert timedelta(minutes=4) < now - cert.not_valid_before_utc < timedelta(minutes=6)
    assert abs(cert.not_valid_after_utc - (now + timedelta(days=30))) < timedelta(minutes=1)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment and not usage.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(device_key.public_key())
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert ca.issued_by_us(cert)


def test_issue_falls_back_to_a_default_subject(ca, device_key):
    cert = ca.issue(_csr(device_key, None))
    assert cert.subject.rfc4514_string() == "CN=Fleet MDM device"


def test_issue_accepts_ec_keys(ca):
    cert = ca.issue(_csr(ec.generate_private_key(ec.SECP256R1()), "EC device"))
    assert ca.issued_by_us(cert)


@pytest.mark.parametrize(
    "make_key",
    [
        pytest.param(ed25519.Ed25519PrivateKey.generate, id="ed25519"),
        pytest.param(lambda: ec.generate_private_key(ec.SECP256K1()), id="secp256k1"),
    ],
)
def test_issue_refuses_other_keys(ca, make_key):
    with pytest.raises(CsrRejected):
        ca.issue(_csr(make_key(), "odd key"))


@needs_openssl
def test_issue_refuses_small_rsa_keys(ca, tmp_path):
    key_path = tmp_path / "small.key"
    _run("genrsa", "-out", str(key_path), "512")
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    with pytest.raises(CsrRejected, match="1024 to 4096"):
        ca.issue(_csr(key, "tiny"))


def test_issue_refuses_a_forged_csr(ca, device_key, other_ca):
    der = bytearray(_csr(device_key, "forged").public_bytes(Encoding.DER))
    der[-5] ^= 0x01  # inside the signature
    with pytest.raises(CsrRejected, match="signature"):
        ca.issue(x509.load_der_x509_csr(bytes(der)))
    with pytest.raises(CsrRejected, match="CA's own name"):
        ca.issue(
            x509.CertificateSigningRequestBuilder()
            .subject_name(ca.certificate.subject)
            .sign(device_key, hashes.SHA256())
        )
    assert issubclass(CsrRejected, ValueError)


def test_issued_by_us_refuses_strangers(ca, other_ca, device_key, device_cert):
    assert ca.issued_by_us(device_cert)
    assert not other_ca.issued_by_us(device_cert)
    assert not ca.issued_by_us(other_ca.issue(_csr(device_key, "elsewhere")))
    assert not ca.issued_by_us(self_signed(device_key, "me"))
    assert not ca.issued_by_us(ca.certificate)  # the CA is not a device
    # Our issuer name, but another key's signature.
    impostor = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "impostor")]))
        .issuer_name(ca.certificate.subject)
        .public_key(device_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.now(UTC) - timedelta(hours=1))
        .not_valid_after(datetime.now(UTC) + timedelta(days=1))
        .sign(other_ca.key, hashes.SHA256())
    )
    assert not ca.issued_by_us(impostor)


def test_issued_by_us_checks_the_validity_window(ca, device_cert):
    assert not ca.issued_by_us(device_cert, at=datetime.now(UTC) + timedelta(days=400))
    assert not ca.issued_by_us(device_cert, at=datetime.now(UTC) - timedelta(hours=1))
    assert ca.issued_by_us(device_cert, at=datetime.now(UTC).replace(tzinfo=None))  # naive means UTC
    short = ca.issue(_csr(new_rsa_key(1024), "short-lived"), days=0)
    assert not ca.issued_by_us(short, at=datetime.now(UTC) + timedelta(seconds=5))


def test_derive_secret(ca, other_ca):
    secret = ca.derive_secret(b"scep-challenge")
    assert len(secret) == 32
    assert ca.derive_secret(b"scep-challenge") == secret
    assert ca.derive_secret(b"something-else") != secret
    assert other_ca.derive_secret(b"scep-challenge") != secret
    with pytest.raises(ValueError):
        ca.derive_secret(b"")


# --- CMS --------------------------------------------------------------------------------------------


def test_detached_round_trip(device_cert, device_key):
    signature = cms.sign_detached(BODY, device_cert, device_key)
    assert cms.verify_detached(signature, BODY) == device_cert


def test_detached_round_trip_with_ec_key(ca):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ca.issue(_csr(key, "EC signer"))
    assert cms.verify_detached(cms.sign_detached(BODY, cert, key), BODY) == cert


def test_detached_without_signed_attributes(device_cert, device_key):
    signature = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(BODY)
        .add_signer(device_cert, device_key, hashes.SHA256())
        .sign(
            Encoding.DER,
            [
                pkcs7.PKCS7Options.DetachedSignature,
                pkcs7.PKCS7Options.Binary,
                pkcs7.PKCS7Options.NoAttributes,
            ],
        )
    )
    assert cms.verify_detached(signature, BODY) == device_cert
    with pytest.raises(cms.SignatureError):
        cms.verify_detached(signature, BODY + b" ")


def test_tampered_body_fails(device_cert, device_key):
    signature = cms.sign_detached(BODY, device_cert, device_key)
    with pytest.raises(cms.SignatureError, match="message digest does not match the body"):
        cms.verify_detached(signature, BODY.replace(b"Idle", b"Busy"))


def test_tampered_signature_fails(device_cert, device_key):
    signature = bytearray(cms.sign_detached(BODY, device_cert, device_key))
    signature[-3] ^= 0x40  # the signature value is the last field
    with pytest.raises(cms.SignatureError, match="does not verify"):
        cms.verify_detached(bytes(signature), BODY)


def test_signature_from_another_ca_verifies_but_is_not_ours(ca, other_ca, device_key):
    foreign = other_ca.issue(_csr(device_key, "foreign"))
    signer = cms.verify_detached(cms.sign_detached(BODY, foreign, device_key), BODY)
    assert signer == foreign
    assert not ca.issued_by_us(signer)


def test_missing_signer_certificate_and_extra_signers(device_cert, device_key, ca):
    no_certs = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(BODY)
        .add_signer(device_cert, device_key, hashes.SHA256())
        .sign(Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.NoCerts])
    )
    with pytest.raises(cms.SignatureError, match="no signer certificate"):
        cms.verify_detached(no_certs, BODY)
    two_signers = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(BODY)
        .add_signer(device_cert, device_key, hashes.SHA256())
        .add_signer(ca.certificate, ca.key, hashes.SHA256())
        .sign(Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary])
    )
    with pytest.raises(cms.SignatureError, match="exactly one signer"):
        cms.verify_detached(two_signers, BODY)


def test_malformed_signatures_raise_signature_error(device_cert, device_key):
    good = cms.sign_detached(BODY, device_cert, device_key)
    bad_inputs = [b"", b"\x30", b"\x30\x00", os.urandom(300), good + b"\x00", b"\x30\x80" * 2000]
    bad_inputs += [good[:cut] for cut in range(0, len(good), 7)]
    bad_inputs.append(good + b"\x00" * (64 * 1024))
    bad_inputs.append(cms.sign_attached(BODY, device_cert, device_key))  # not detached
    for data in bad_inputs:
        with pytest.raises(cms.SignatureError):
            cms.verify_detached(data, BODY)


def test_bit_flips_never_escape_as_other_exceptions(device_cert, device_key):
    good = cms.sign_detached(BODY, device_cert, device_key)
    for index in range(len(good)):
        data = bytearray(good)
        data[index] ^= 0xFF
        with contextlib.suppress(cms.SignatureError):
            cms.verify_detached(bytes(data), BODY)


def test_oversized_message_is_refused_before_parsing():
    with pytest.raises(cms.SignatureError, match="larger than"):
        cms.verify_detached(b"\x30" + b"\x00" * (cms.MAX_MESSAGE_SIZE + 1), BODY)


@needs_openssl
@pytest.mark.parametrize("digest", ["sha1", "sha256"])
@pytest.mark.parametrize("keyid", [False, True], ids=["issuer-serial", "keyid"])
def test_openssl_detached_signature_verifies(tmp_path, device_cert, device_key, digest, keyid):
    cert_path, key_path = _pem_files(tmp_path, "device", device_cert, device_key)
    body_path = tmp_path / "body"
    body_path.write_bytes(BODY)
    args = ["cms", "-sign", "-binary", "-outform", "DER", "-md", digest, "-in", str(body_path)]
    args += ["-signer", cert_path, "-inkey", key_path] + (["-keyid"] if keyid else [])
    signature = _run(*args)
    sid = acms.ContentInfo.load(signature)["content"]["signer_infos"][0]["sid"]
    assert sid.name == ("subject_key_identifier" if keyid else "issuer_and_serial_number")
    assert cms.verify_detached(signature, BODY) == device_cert
    with pytest.raises(cms.SignatureError):
        cms.verify_detached(signature, BODY[:-1])


@needs_openssl
def test_sign_attached_is_read_by_openssl(tmp_path, ca, device_cert, device_key):
    profile = b'<?xml version="1.0"?>\n<plist><dict><key>PayloadType</key></dict></plist>\n'
    signed = cms.sign_attached(profile, device_cert, device_key, chain=[ca.certificate])
    path = tmp_path / "profile.mobileconfig"
    path.write_bytes(signed)
    assert _run("cms", "-verify", "-noverify", "-inform", "DER", "-in", str(path)) == profile
    ca_path = tmp_path / "ca.pem"
    ca_path.write_bytes(ca.certificate_pem)
    # With the CA as trust anchor openssl builds the full path (purpose "any": ours is clientAuth).
    args = ["cms", "-verify", "-inform", "DER", "-in", str(path), "-CAfile", str(ca_path), "-purpose", "any"]
    assert _run(*args) == profile
    certs = _run("pkcs7", "-inform", "DER", "-in", str(path), "-print_certs")
    assert certs.count(b"BEGIN CERTIFICATE") == 2


@needs_openssl
def test_openssl_streamed_ber_verifies(tmp_path, device_cert, device_key):
    """Indefinite lengths and a chunked content OCTET STRING, as streaming signers write them."""
    cert_path, key_path = _pem_files(tmp_path, "device", device_cert, device_key)
    body_path = tmp_path / "body"
    body_path.write_bytes(BODY)
    args = ["cms", "-sign", "-binary", "-nodetach", "-stream", "-outform", "DER", "-in", str(body_path)]
    signed = _run(*args, "-signer", cert_path, "-inkey", key_path)
    assert signed[:2] == b"\x30\x80"  # really BER
    assert cms.verify_attached(signed) == (BODY, device_cert)


def test_sign_attached_round_trip(ca, device_cert, device_key):
    profile = b"<plist>\r\n mixed\n line endings\r\n</plist>"
    signed = cms.sign_attached(profile, device_cert, device_key, chain=[ca.certificate])
    assert cms.verify_attached(signed) == (profile, device_cert)
    assert cms.content_of_signed(signed) == profile
    with pytest.raises(cms.SignatureError):
        cms.verify_attached(cms.sign_detached(profile, device_cert, device_key))
    with pytest.raises(cms.SignatureError):
        cms.content_of_signed(b"garbage")
    tampered = signed.replace(b"mixed", b"mixeD")
    with pytest.raises(cms.SignatureError, match="message digest"):
        cms.verify_attached(tampered)
    assert cms.content_of_signed(tampered) == profile.replace(b"mixed", b"mixeD")


# --- SCEP ---------------------------------------------------------------------------------------------


def test_ca_caps_and_ca_cert(ca):
    caps = scep.CA_CAPS.split("\n")
    for capability in ("POSTPKIOperation", "SHA-256", "SHA-1", "AES", "DES3", "SCEPStandard", "Renewal"):
        assert capability in caps
    content_type, body = scep.get_ca_cert(ca)
    assert content_type == "application/x-x509-ca-cert"
    assert x509.load_der_x509_certificate(body) == ca.certificate


@pytest.mark.parametrize(("cipher", "reply_cipher"), [("aes", "aes256_cbc"), ("des3", "tripledes_3key")])
def test_scep_enrollment_round_trip(ca, device_key, cipher, reply_cipher):
    seen = {}

    def post(message: bytes) -> bytes:
        def check(password, csr):
            seen["challenge"] = password
            seen["cn"] = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
            return "enrollment-42"

        result = scep.handle_pki_operation(ca, message, check, days=10)
        seen["result"] = result
        return result.reply

    key, cert = scep_client.enroll(
        ca.certificate, "s3cret", "Mac C02XYZ", post, key=device_key, cipher=cipher
    )
    assert key is device_key
    assert seen["challenge"] == "s3cret" and seen["cn"] == "Mac C02XYZ"
    result = seen["result"]
    assert result.certificate == cert and result.context == "enrollment-42" and result.failure is None
    assert len(result.transaction_id) == 64
    assert ca.issued_by_us(cert)
    assert cert.subject.rfc4514_string() == "CN=Mac C02XYZ"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    assert cert.public_key().public_numbers() == device_key.public_key().public_numbers()
    assert cert.not_valid_after_utc - cert.not_valid_before_utc < timedelta(days=11)
    # The reply's envelope uses the cipher family the device chose.
    content = acms.ContentInfo.load(result.reply)["content"]["encap_content_info"]["content"].native
    algorithm = acms.ContentInfo.load(content)["content"]["encrypted_content_info"][
        "content_encryption_algorithm"
    ]
    assert algorithm["algorithm"].native == reply_cipher


def test_scep_enroll_generates_a_key(ca):
    key, cert = scep_client.enroll(
        ca.certificate, "s3cret", "Fresh Mac", lambda m: scep.handle_pki_operation(ca, m, _accept).reply
    )
    assert key.key_size == 2048
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()


def _request(ca, key, *, challenge="s3cret", cn="Mac", cipher="aes", printable=False, tid=None):
    csr = _printable_challenge_csr(key, cn, challenge) if printable else _csr(key, cn, challenge)
    signer = self_signed(key, cn)
    return scep_client.build_pkcs_req(ca.certificate, csr, signer, key, cipher=cipher, transaction_id=tid)


def test_cert_rep_attributes(ca, device_key):
    message, nonce = _request(ca, device_key, tid="TX-0001")
    result = scep.handle_pki_operation(ca, message, _accept)
    attrs = _attrs(result.reply)
    assert isinstance(attrs[scep.OID_MESSAGE_TYPE], core.PrintableString)
    assert attrs[scep.OID_MESSAGE_TYPE].native == "3"
    assert attrs[scep.OID_PKI_STATUS].native == "0"
    assert attrs[scep.OID_TRANSACTION_ID].native == "TX-0001" == result.transaction_id
    assert attrs[scep.OID_RECIPIENT_NONCE].native == nonce
    sender_nonce = attrs[scep.OID_SENDER_NONCE].native
    assert len(sender_nonce) == 16 and sender_nonce != nonce
    assert scep.OID_FAIL_INFO not in attrs
    signed_data = acms.ContentInfo.load(result.reply)["content"]
    assert signed_data["digest_algorithms"][0]["algorithm"].native == "sha256"
    signer = signed_data["signer_infos"][0]["sid"].chosen
    assert signer["serial_number"].native == ca.certificate.serial_number
    # The CertRep also verifies with our own generic CMS verifier.
    assert cms.verify_attached(result.reply)[1] == ca.certificate


def test_printable_challenge_and_renewal_are_accepted(ca, device_key):
    message, nonce = _request(ca, device_key, printable=True)
    result = scep.handle_pki_operation(ca, message, _accept)
    assert result.failure is None and result.certificate is not None
    signer = self_signed(device_key, "Mac")
    csr_der = _csr(device_key, "Mac", "s3cret").public_bytes(Encoding.DER)
    renewal = _signed_request(
        _envelope_to(ca.certificate, csr_der), _scep_attributes("17"), signer, device_key
    )
    assert scep.handle_pki_operation(ca, renewal, _accept).certificate is not None


def test_wrong_challenge_gives_a_failure_reply(ca, device_key):
    def post(message: bytes) -> bytes:
        result = scep.handle_pki_operation(ca, message, _accept)
        assert result.certificate is None and result.context is None
        assert result.failure == "wrong challenge"
        attrs = _attrs(result.reply)
        assert attrs[scep.OID_MESSAGE_TYPE].native == "3"
        assert attrs[scep.OID_PKI_STATUS].native == "2"
        assert attrs[scep.OID_FAIL_INFO].native == "2"
        encap = acms.ContentInfo.load(result.reply)["content"]["encap_content_info"]
        assert isinstance(encap["content"], core.Void)
        return result.reply

    with pytest.raises(scep_client.ScepFailure):
        scep_client.enroll(ca.certificate, "guess", "Mac", post, key=device_key)


def test_csr_without_challenge_fails_without_asking(ca, device_key):
    calls = []
    signer = self_signed(device_key, "Mac")
    message, nonce = scep_client.build_pkcs_req(ca.certificate, _csr(device_key, "Mac"), signer, device_key)
    result = scep.handle_pki_operation(ca, message, lambda p, c: calls.append(p))
    assert result.certificate is None and "challenge" in result.failure
    assert calls == []
    with pytest.raises(scep_client.ScepFailure):
        scep_client.parse_cert_rep(result.reply, device_key, expected_nonce=nonce, ca_cert=ca.certificate)


def test_unacceptable_csr_does_not_spend_the_challenge(ca, device_key):
    calls = []
    key = ec.generate_private_key(ec.SECP256K1())
    csr = _csr(key, "Mac", "s3cret")
    message, _ = scep_client.build_pkcs_req(ca.certificate, csr, self_signed(device_key, "Mac"), device_key)
    result = scep.handle_pki_operation(ca, message, lambda p, c: calls.append(p))
    assert result.certificate is None and result.failure == "unsupported elliptic curve"
    assert calls == []


def test_malformed_pki_operations_raise_scep_error(ca, other_ca, device_key):
    signer = self_signed(device_key, "Mac")
    csr_der = _csr(device_key, "Mac", "s3cret").public_bytes(Encoding.DER)
    good, _ = _request(ca, device_key)
    cases = {
        "empty": b"",
        "random": os.urandom(2048),
        "oversized": good + b"\x00" * (64 * 1024),
        "detached": cms.sign_detached(BODY, signer, device_key),
        "plain signed data": cms.sign_attached(BODY, signer, device_key),
        "no content": _signed_request(None, _scep_attributes(), signer, device_key),
        "content not enveloped": _signed_request(b"hello", _scep_attributes(), signer, device_key),
        "envelope for another CA": _signed_request(
            _envelope_to(other_ca.certificate, csr_der), _scep_attributes(), signer, device_key
        ),
        "envelope of garbage": _signed_request(
            _envelope_to(ca.certificate, b"not a csr"), _scep_attributes(), signer, device_key
        ),
        "GetCertInitial": _signed_request(
            _envelope_to(ca.certificate, csr_der), _scep_attributes("20"), signer, device_key
        ),
        "no transaction id": _signed_request(
            _envelope_to(ca.certificate, csr_der),
            {k: v for k, v in _scep_attributes().items() if k != scep.OID_TRANSACTION_ID},
            signer,
            device_key,
        ),
        "nonce is a string": _signed_request(
            _envelope_to(ca.certificate, csr_der),
            {**_scep_attributes(), scep.OID_SENDER_NONCE: core.PrintableString("nonce-nonce")},
            signer,
            device_key,
        ),
        "transaction id is bad UTF-8": _signed_request(
            _envelope_to(ca.certificate, csr_der),
            {**_scep_attributes(), scep.OID_TRANSACTION_ID: core.UTF8String.load(b"\x0c\x02\xff\xfe")},
            signer,
            device_key,
        ),
        "message type is an integer": _signed_request(
            _envelope_to(ca.certificate, csr_der),
            {**_scep_attributes(), scep.OID_MESSAGE_TYPE: core.Integer(19)},
            signer,
            device_key,
        ),
    }
    ec_key = ec.generate_private_key(ec.SECP256R1())
    cases["EC signer"] = _signed_request(
        _envelope_to(ca.certificate, csr_der), _scep_attributes(), self_signed(ec_key, "EC"), ec_key
    )
    reasons = {
        "empty": "message is empty",
        "random": "not a CMS structure",
        "oversized": "larger than 65536 bytes",
        "detached": "no enveloped content",
        "plain signed data": "no single messageType",
        "no content": "no enveloped content",
        "content not enveloped": "encrypted content is malformed",
        "envelope for another CA": "not encrypted to this certificate",
        "envelope of garbage": "does not hold a PKCS#10 CSR",
        "GetCertInitial": "unsupported messageType '20'",
        "no transaction id": "no single transactionID",
        "nonce is a string": "senderNonce",
        "transaction id is bad UTF-8": "transactionID attribute is not valid text",
        "message type is an integer": "messageType attribute is not a string",
        "EC signer": "must have an RSA key",
    }
    assert reasons.keys() == cases.keys()
    for name, message in cases.items():
        with pytest.raises(scep.ScepError) as caught:
            scep.handle_pki_operation(ca, message, _accept)
            pytest.fail(f"{name} was accepted")
        assert reasons[name] in str(caught.value), name


def test_pki_operation_fuzz_never_escapes(ca, device_key):
    good, _ = _request(ca, device_key, cipher="des3")
    rng = random.Random(1)
    outcomes = set()
    for index in list(range(0, len(good), 3)) + [rng.randrange(len(good)) for _ in range(200)]:
        data = bytearray(good)
        data[index] ^= 1 << rng.randrange(8)
        for message in (bytes(data), good[:index]):
            try:
                result = scep.handle_pki_operation(ca, message, _accept)
            except scep.ScepError:
                outcomes.add("error")
            else:
                outcomes.add("failure" if result.failure else "issued")
    assert outcomes >= {"error", "issued"}


def test_parse_cert_rep_checks_the_reply(ca, other_ca, device_key):
    message, nonce = _request(ca, device_key)
    reply = scep.handle_pki_operation(ca, message, _accept).reply
    with pytest.raises(scep_client.ScepClientError, match="recipientNonce"):
        scep_client.parse_cert_rep(reply, device_key, expected_nonce=os.urandom(16), ca_cert=ca.certificate)
    with pytest.raises(scep_client.ScepClientError, match="not signed by the CA"):
        scep_client.parse_cert_rep(reply, device_key, expected_nonce=nonce, ca_cert=other_ca.certificate)
    with pytest.raises(scep_client.ScepClientError):
        scep_client.parse_cert_rep(os.urandom(500), device_key, expected_nonce=nonce, ca_cert=ca.certificate)
    cert = scep_client.parse_cert_rep(reply, device_key, expected_nonce=nonce, ca_cert=ca.certificate)
    assert ca.issued_by_us(cert)


@needs_openssl
@pytest.mark.parametrize("cipher", ["aes", "des3"])
def test_openssl_reads_request_and_reply(tmp_path, ca, device_key, cipher):
    """openssl decodes both directions: our client's request and our server's reply."""
    ca_cert_path, ca_key_path = _pem_files(tmp_path, "ca", ca.certificate, ca.key)
    signer = self_signed(device_key, "Mac")
    signer_path, key_path = _pem_files(tmp_path, "signer", signer, device_key)
    csr = _csr(device_key, "Mac", "s3cret")
    message, _ = scep_client.build_pkcs_req(ca.certificate, csr, signer, device_key, cipher=cipher)

    (tmp_path / "request.der").write_bytes(message)
    enveloped = _run("cms", "-verify", "-noverify", "-inform", "DER", "-in", str(tmp_path / "request.der"))
    (tmp_path / "request-envelope.der").write_bytes(enveloped)
    args = ["cms", "-decrypt", "-inform", "DER", "-in", str(tmp_path / "request-envelope.der")]
    csr_der = _run(*args, "-recip", ca_cert_path, "-inkey", ca_key_path)
    assert csr_der == csr.public_bytes(Encoding.DER)

    reply = scep.handle_pki_operation(ca, message, _accept).reply
    (tmp_path / "reply.der").write_bytes(reply)
    enveloped = _run("cms", "-verify", "-noverify", "-inform", "DER", "-in", str(tmp_path / "reply.der"))
    (tmp_path / "reply-envelope.der").write_bytes(enveloped)
    args = ["cms", "-decrypt", "-inform", "DER", "-in", str(tmp_path / "reply-envelope.der")]
    certs_only = _run(*args, "-recip", signer_path, "-inkey", key_path)
    (tmp_path / "certs.der").write_bytes(certs_only)
    printed = _run("pkcs7", "-inform", "DER", "-in", str(tmp_path / "certs.der"), "-print_certs")
    assert printed.count(b"BEGIN CERTIFICATE") == 2
    assert b"subject=CN = Mac" in printed
