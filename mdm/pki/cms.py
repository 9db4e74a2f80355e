"""CMS (PKCS#7) SignedData: verifying what devices send, and signing what we send them.

Apple devices sign every MDM request body and put a detached CMS signature in the ``Mdm-Signature``
header; SCEP requests are CMS as well. cryptography can build these messages but cannot verify
them, so verification is done here with asn1crypto for the structure and cryptography for the
arithmetic. Everything that parses device input funnels its errors into ``SignatureError`` so a
hostile message can only ever produce that one, expected, exception.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from collections.abc import Iterator, Sequence

from asn1crypto import algos, core
from asn1crypto import cms as acms
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

# What a device may send us: an Mdm-Signature header or a SCEP request is a few KiB at most.
MAX_MESSAGE_SIZE = 64 * 1024
# Signed profiles carry their payload inside, so they get more room (they are ours or an admin's).
MAX_ATTACHED_SIZE = 1024 * 1024

OID_DATA = "1.2.840.113549.1.7.1"
OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"

# Everything asn1crypto and cryptography raise on malformed input (asn1crypto parses lazily, so
# these surface on attribute access too, not only on load). Deep nesting ends in RecursionError.
PARSE_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    RecursionError,
    UnsupportedAlgorithm,
)

DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class SignatureError(Exception):
    """A CMS message is malformed or does not verify; the message says why, briefly."""


@contextlib.contextmanager
def malformed_as(error: type[Exception], reason: str) -> Iterator[None]:
    """Turn any parse error inside the block into ``error(reason)``; our own errors pass through."""
    try:
        yield
    except PARSE_ERRORS as exc:
        raise error(reason) from exc


def der_length(length: int) -> bytes:
    """The DER encoding of a length (short form below 128, long form above)."""
    if length < 0x80:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def load_signed_data(data: bytes, *, max_size: int = MAX_MESSAGE_SIZE) -> acms.SignedData:
    """Parse a ContentInfo that must hold a SignedData, within ``max_size`` bytes."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SignatureError("the message is not bytes")
    if len(data) > max_size:
        raise SignatureError(f"the message is larger than {max_size} bytes")
    if not data:
        raise SignatureError("the message is empty")
    with malformed_as(SignatureError, "the message is not a CMS structure"):
        info = acms.ContentInfo.load(bytes(data), strict=True)
        if info["content_type"].dotted != "1.2.840.113549.1.7.2":
            raise SignatureError("the message is not a CMS SignedData")
        signed_data = info["content"]
        if not isinstance(signed_data, acms.SignedData):
            raise SignatureError("the message is not a CMS SignedData")
        return signed_data


def encapsulated_content(signed_data: acms.SignedData) -> bytes | None:
    """The eContent octets, or None for a detached or certs-only message."""
    with malformed_as(SignatureError, "the encapsulated content is malformed"):
        content = signed_data["encap_content_info"]["content"]
        if isinstance(content, core.Void):
            return None
        return bytes(content)


def signed_attribute_values(signer_info: acms.SignerInfo, oid: str) -> list[core.Asn1Value]:
    """The values of the signed attribute ``oid`` (dotted), [] if the attribute is absent."""
    with malformed_as(SignatureError, "the signed attributes are malformed"):
        attrs = signer_info["signed_attrs"]
        if isinstance(attrs, core.Void):
            return []
        found = [attr for attr in attrs if attr["type"].dotted == oid]
        if len(found) > 1:
            raise SignatureError(f"the signed attribute {oid} appears more than once")
        return list(found[0]["values"]) if found else []


def _signer_certificate(signed_data: acms.SignedData, sid: acms.SignerIdentifier) -> x509.Certificate:
    certificates = signed_data["certificates"]
    if isinstance(certificates, core.Void):
        raise SignatureError("no signer certificate")
    for choice in certificates:
        if choice.name != "certificate":
            continue
        candidate: ax509.Certificate = choice.chosen
        if sid.name == "issuer_and_serial_number":
            wanted = sid.chosen
            # Same encoding first: asn1crypto's Name equality normalises every value, which costs
            # more than the signature check itself, and a device names its issuer as its
            # certificate does.
            matches = candidate.serial_number == wanted["serial_number"].native and (
                candidate.issuer.dump() == wanted["issuer"].dump() or candidate.issuer == wanted["issuer"]
            )
        else:
            matches = candidate.key_identifier == sid.chosen.native
        if matches:
            return x509.load_der_x509_certificate(candidate.dump())
    raise SignatureError("no signer certificate")


def _digest_name(signer_info: acms.SignerInfo) -> str:
    name = signer_info["digest_algorithm"]["algorithm"].native
    if name not in DIGESTS:
        raise SignatureError(f"unsupported digest algorithm {name}")
    return name


def _check_signature(
    signer_info: acms.SignerInfo, certificate: x509.Certificate, signed: bytes, digest_name: str
) -> None:
    algorithm: algos.SignedDigestAlgorithm = signer_info["signature_algorithm"]
    try:
        kind = algorithm.signature_algo
    except ValueError as exc:
        raise SignatureError("unsupported signature algorithm") from exc
    with contextlib.suppress(ValueError):  # bare rsaEncryption / ecdsa names no hash of its own
        if algorithm.hash_algo != digest_name:
            raise SignatureError("the signature and digest algorithms disagree")
    hash_algorithm = DIGESTS[digest_name]()
    signature = signer_info["signature"].native
    public_key = certificate.public_key()
    try:
        if kind == "rsassa_pkcs1v15" and isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, signed, padding.PKCS1v15(), hash_algorithm)
        elif kind == "ecdsa" and isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, signed, ec.ECDSA(hash_algorithm))
        else:
            raise SignatureError("unsupported signature algorithm for the signer's key")
    except InvalidSignature as exc:
        raise SignatureError("the signature does not verify") from exc


def verify_signed_data(
    signed_data: acms.SignedData, content: bytes
) -> tuple[x509.Certificate, acms.SignerInfo]:
    """Check the one signature on ``signed_data`` over ``content``; return the signer and its info.

    Only the cryptography is checked here; whether the signer is trusted is the caller's question.
    """
    with malformed_as(SignatureError, "the signature is malformed"):
        signer_infos = signed_data["signer_infos"]
        if len(signer_infos) != 1:
            raise SignatureError("expected exactly one signer")
        signer_info: acms.SignerInfo = signer_infos[0]
        digest_name = _digest_name(signer_info)
        certificate = _signer_certificate(signed_data, signer_info["sid"])
        attrs = signer_info["signed_attrs"]
        if isinstance(attrs, core.Void):
            signed = bytes(content)
        else:
            content_types = signed_attribute_values(signer_info, OID_CONTENT_TYPE)
            if len(content_types) != 1:
                raise SignatureError("no content-type attribute")
            content_type = acms.ContentType.load(content_types[0].dump())
            if content_type.dotted != signed_data["encap_content_info"]["content_type"].dotted:
                raise SignatureError("the content-type attribute does not match the content")
            digests = signed_attribute_values(signer_info, OID_MESSAGE_DIGEST)
            if len(digests) != 1:
                raise SignatureError("no message-digest attribute")
            claimed = core.OctetString.load(digests[0].dump()).native
            actual = hashlib.new(digest_name, bytes(content)).digest()
            if not hmac.compare_digest(claimed, actual):
                raise SignatureError("message digest does not match the body")
            # The signature covers the attributes as a SET OF (tag 0x31), not as the [0] field.
            signed = b"\x31" + der_length(len(attrs.contents)) + attrs.contents
        _check_signature(signer_info, certificate, signed, digest_name)
        return certificate, signer_info


def verify_detached(signature: bytes, content: bytes) -> x509.Certificate:
    """Verify a detached CMS ``signature`` (DER) over ``content``; return the signer certificate.

    This is the ``Mdm-Signature`` check: the caller still has to ask the CA whether it issued the
    returned certificate.
    """
    signed_data = load_signed_data(signature)
    if encapsulated_content(signed_data) is not None:
        raise SignatureError("expected a detached signature")
    certificate, _ = verify_signed_data(signed_data, content)
    return certificate


def verify_attached(data: bytes) -> tuple[bytes, x509.Certificate]:
    """Verify a CMS message with its content inside (a signed profile); return (content, signer)."""
    signed_data = load_signed_data(data, max_size=MAX_ATTACHED_SIZE)
    content = encapsulated_content(signed_data)
    if content is None:
        raise SignatureError("the message has no content")
    certificate, _ = verify_signed_data(signed_data, content)
    return content, certificate


def content_of_signed(data: bytes) -> bytes:
    """The content inside a signed message, unverified: for tooling that only wants to look."""
    content = encapsulated_content(load_signed_data(data, max_size=MAX_ATTACHED_SIZE))
    if content is None:
        raise SignatureError("the message has no content")
    return content


def issuer_and_serial(certificate: x509.Certificate) -> acms.IssuerAndSerialNumber:
    """How CMS names a certificate: its issuer's name and its serial number."""
    parsed = ax509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))
    return acms.IssuerAndSerialNumber(
        {"issuer": parsed["tbs_certificate"]["issuer"], "serial_number": parsed.serial_number}
    )


def sign_with_attributes(
    content: bytes | None,
    certificate: x509.Certificate,
    key: rsa.RSAPrivateKey,
    attributes: Sequence[acms.CMSAttribute],
    *,
    certificates: Sequence[x509.Certificate] = (),
) -> bytes:
    """A SHA-256/RSA SignedData (ContentInfo DER) with extra signed attributes.

    cryptography's builder has no way to add attributes, and SCEP replies need several. Without
    ``content`` the message has no eContent and the digest is over the empty string, as SCEP
    failure replies do.
    """
    attrs = acms.CMSAttributes(
        [
            acms.CMSAttribute({"type": "content_type", "values": ["data"]}),
            acms.CMSAttribute(
                {"type": "message_digest", "values": [hashlib.sha256(content or b"").digest()]}
            ),
            *attributes,
        ]
    )
    # dump() of a SET OF sorts the members, so these are the DER bytes a verifier re-creates.
    signature = key.sign(attrs.dump(), padding.PKCS1v15(), hashes.SHA256())
    signer_info = acms.SignerInfo(
        {
            "version": "v1",
            "sid": acms.SignerIdentifier(
                name="issuer_and_serial_number", value=issuer_and_serial(certificate)
            ),
            "digest_algorithm": {"algorithm": "sha256"},
            "signed_attrs": attrs,
            "signature_algorithm": {"algorithm": "rsassa_pkcs1v15"},
            "signature": signature,
        }
    )
    encap: dict[str, object] = {"content_type": "data"}
    if content is not None:
        encap["content"] = content
    embedded = [certificate, *(extra for extra in certificates if extra != certificate)]
    signed_data = acms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [{"algorithm": "sha256"}],
            "encap_content_info": encap,
            "certificates": [
                ax509.Certificate.load(cert.public_bytes(serialization.Encoding.DER)) for cert in embedded
            ],
            "signer_infos": [signer_info],
        }
    )
    return acms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()


def sign_detached(
    content: bytes, certificate: x509.Certificate, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
) -> bytes:
    """A detached SHA-256 signature over ``content`` (DER), as a device puts in ``Mdm-Signature``."""
    return (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(content)
        .add_signer(certificate, key, hashes.SHA256())
        # Binary: sign the bytes as they are; otherwise line endings are rewritten to CRLF first.
        .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary])
    )


def sign_attached(
    content: bytes,
    certificate: x509.Certificate,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    chain: Sequence[x509.Certificate] = (),
) -> bytes:
    """A SHA-256 signed message with ``content`` inside (DER): how signed .mobileconfig files look.

    The chain certificates are included so a device can build the path to a root it trusts.
    """
    builder = pkcs7.PKCS7SignatureBuilder().set_data(content).add_signer(certificate, key, hashes.SHA256())
    for extra in chain:
        if extra != certificate:
            builder = builder.add_certificate(extra)
    return builder.sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
