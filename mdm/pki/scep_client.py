"""A SCEP client (RFC 8894), doing what macOS does: for the simulated Mac and for tests.

It is deliberately written apart from the server: the request is assembled here with asn1crypto
(AES envelopes by cryptography's own builder), and the reply is verified and decrypted by code
that shares nothing with ``mdm.pki.cms``, ``mdm.pki.envelope`` or ``mdm.pki.scep``. A bug in the
server's encoder then shows up as a failure here instead of being mirrored and hidden.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable

from asn1crypto import cms as acms
from asn1crypto import core
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import padding as symmetric_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, pkcs7
from cryptography.x509.oid import AttributeOID, NameOID

from mdm.pki.ca import new_rsa_key, self_signed

_MESSAGE_TYPE = "2.16.840.1.113733.1.9.2"
_PKI_STATUS = "2.16.840.1.113733.1.9.3"
_FAIL_INFO = "2.16.840.1.113733.1.9.4"
_SENDER_NONCE = "2.16.840.1.113733.1.9.5"
_RECIPIENT_NONCE = "2.16.840.1.113733.1.9.6"
_TRANSACTION_ID = "2.16.840.1.113733.1.9.7"

_REPLY_CIPHERS = {
    "aes128_cbc": (algorithms.AES, 16),
    "aes192_cbc": (algorithms.AES, 24),
    "aes256_cbc": (algorithms.AES, 32),
    "tripledes_3key": (TripleDES, 24),
}
_DIGESTS = {"sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}
_MALFORMED = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    UnsupportedAlgorithm,
)


class ScepClientError(Exception):
    """The CA's reply is unusable: malformed, not signed by the CA, or not an answer to us."""


class ScepFailure(ScepClientError):
    """The CA answered, correctly signed, that it refuses the request."""


def _asn1_cert(certificate: x509.Certificate) -> ax509.Certificate:
    return ax509.Certificate.load(certificate.public_bytes(Encoding.DER))


def _envelope_des3(content: bytes, recipient: x509.Certificate) -> bytes:
    """EnvelopedData with DES-EDE3-CBC, which cryptography's envelope builder does not offer."""
    content_key, iv = os.urandom(24), os.urandom(8)
    padder = symmetric_padding.PKCS7(64).padder()
    encryptor = Cipher(TripleDES(content_key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padder.update(content) + padder.finalize()) + encryptor.finalize()
    public_key = recipient.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise ValueError("the CA certificate has no RSA key")
    parsed = _asn1_cert(recipient)
    ktri = {
        "version": "v0",
        "rid": {
            "issuer_and_serial_number": {
                "issuer": parsed.issuer,
                "serial_number": parsed.serial_number,
            }
        },
        "key_encryption_algorithm": {"algorithm": "rsa"},
        "encrypted_key": public_key.encrypt(content_key, padding.PKCS1v15()),
    }
    enveloped = {
        "version": "v0",
        "recipient_infos": [acms.RecipientInfo(name="ktri", value=ktri)],
        "encrypted_content_info": {
            "content_type": "data",
            "content_encryption_algorithm": {"algorithm": "tripledes_3key", "parameters": iv},
            "encrypted_content": ciphertext,
        },
    }
    return acms.ContentInfo({"content_type": "enveloped_data", "content": enveloped}).dump()


def _envelope(content: bytes, recipient: x509.Certificate, cipher: str) -> bytes:
    if cipher == "aes":
        return (
            pkcs7.PKCS7EnvelopeBuilder()
            .set_data(content)
            .add_recipient(recipient)
            .set_content_encryption_algorithm(algorithms.AES128)
            .encrypt(Encoding.DER, [pkcs7.PKCS7Options.Binary])
        )
    if cipher == "des3":
        return _envelope_des3(content, recipient)
    raise ValueError(f"unknown cipher {cipher!r} (use 'aes' or 'des3')")


def build_pkcs_req(
    ca_cert: x509.Certificate,
    csr: x509.CertificateSigningRequest,
    signer_cert: x509.Certificate,
    signer_key: rsa.RSAPrivateKey,
    *,
    transaction_id: str | None = None,
    cipher: str = "aes",
) -> tuple[bytes, bytes]:
    """A PKCSReq PKIOperation body (DER) and the sender nonce to expect back in the reply."""
    csr_der = csr.public_bytes(Encoding.DER)
    enveloped = _envelope(csr_der, ca_cert, cipher)
    nonce = os.urandom(16)
    if transaction_id is None:
        # RFC 8894 suggests a hash of the public key; it stays the same across retries.
        transaction_id = hashlib.sha256(
            csr.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        ).hexdigest()
    attributes = [
        {"type": "content_type", "values": ["data"]},
        {"type": "message_digest", "values": [hashlib.sha256(enveloped).digest()]},
        {"type": _MESSAGE_TYPE, "values": [core.PrintableString("19")]},
        {"type": _TRANSACTION_ID, "values": [core.PrintableString(transaction_id)]},
        {"type": _SENDER_NONCE, "values": [core.OctetString(nonce)]},
    ]
    signed_attrs = acms.CMSAttributes(attributes)
    signature = signer_key.sign(signed_attrs.dump(), padding.PKCS1v15(), hashes.SHA256())
    signer = _asn1_cert(signer_cert)
    signed_data = {
        "version": "v1",
        "digest_algorithms": [{"algorithm": "sha256"}],
        "encap_content_info": {"content_type": "data", "content": enveloped},
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
                # Name the hash in the signature algorithm, as macOS does (the server also takes
                # the bare rsaEncryption form, which its own replies use).
                "signature_algorithm": {"algorithm": "sha256_rsa"},
                "signature": signature,
            }
        ],
    }
    message = acms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()
    return message, nonce


def _attributes(signer_info: acms.SignerInfo) -> dict[str, core.Asn1Value]:
    found: dict[str, core.Asn1Value] = {}
    for attribute in signer_info["signed_attrs"]:
        values = attribute["values"]
        if len(values) != 1 or attribute["type"].dotted in found:
            raise ScepClientError(f"attribute {attribute['type'].dotted} is not single-valued")
        found[attribute["type"].dotted] = core.load(values[0].dump())
    return found


def _check_ca_signature(signed_data: acms.SignedData, ca_cert: x509.Certificate) -> dict[str, core.Asn1Value]:
    """The reply's signed attributes, once its signature is shown to be the CA's."""
    if len(signed_data["signer_infos"]) != 1:
        raise ScepClientError("the reply does not have exactly one signer")
    signer_info = signed_data["signer_infos"][0]
    ca = _asn1_cert(ca_cert)
    sid = signer_info["sid"]
    if sid.name != "issuer_and_serial_number" or sid.chosen.native != {
        "issuer": ca.issuer.native,
        "serial_number": ca.serial_number,
    }:
        raise ScepClientError("the reply is not signed by the CA")
    attributes = _attributes(signer_info)
    content = signed_data["encap_content_info"]["content"]
    body = b"" if isinstance(content, core.Void) else content.native
    digest_name = signer_info["digest_algorithm"]["algorithm"].native
    if digest_name not in _DIGESTS:
        raise ScepClientError(f"unexpected digest algorithm {digest_name}")
    digest = attributes.get("1.2.840.113549.1.9.4")
    if digest is None or not hmac.compare_digest(digest.native, hashlib.new(digest_name, body).digest()):
        raise ScepClientError("the reply's message digest does not match")
    public_key = ca_cert.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise ScepClientError("the CA certificate has no RSA key")
    try:
        # untag(): the signature covers the attributes as a universal SET OF, not as [0].
        public_key.verify(
            signer_info["signature"].native,
            signer_info["signed_attrs"].untag().dump(),
            padding.PKCS1v15(),
            _DIGESTS[digest_name](),
        )
    except InvalidSignature as exc:
        raise ScepClientError("the reply's signature is not the CA's") from exc
    return attributes


def _open_envelope(data: bytes, key: rsa.RSAPrivateKey) -> bytes:
    enveloped = acms.ContentInfo.load(data)["content"]
    if not isinstance(enveloped, acms.EnvelopedData):
        raise ScepClientError("the reply does not hold EnvelopedData")
    encrypted = enveloped["encrypted_content_info"]
    cipher_name = encrypted["content_encryption_algorithm"]["algorithm"].native
    if cipher_name not in _REPLY_CIPHERS:
        raise ScepClientError(f"the reply uses an unexpected cipher {cipher_name}")
    factory, key_length = _REPLY_CIPHERS[cipher_name]
    iv = encrypted["content_encryption_algorithm"]["parameters"].native
    for recipient in enveloped["recipient_infos"]:
        if recipient.name != "ktri":
            continue
        try:
            content_key = key.decrypt(recipient.chosen["encrypted_key"].native, padding.PKCS1v15())
        except ValueError:
            continue
        if len(content_key) != key_length:
            continue
        decryptor = Cipher(factory(content_key), modes.CBC(iv)).decryptor()
        padded = decryptor.update(encrypted["encrypted_content"].native) + decryptor.finalize()
        unpadder = symmetric_padding.PKCS7(factory.block_size).unpadder()
        return unpadder.update(padded) + unpadder.finalize()
    raise ScepClientError("the reply is not encrypted to our key")


def _issued_certificate(
    certs_only: bytes, key: rsa.RSAPrivateKey, ca_cert: x509.Certificate
) -> x509.Certificate:
    signed_data = acms.ContentInfo.load(certs_only)["content"]
    if not isinstance(signed_data, acms.SignedData):
        raise ScepClientError("the decrypted reply is not a certs-only SignedData")
    ours = key.public_key().public_numbers()
    candidates = [
        x509.load_der_x509_certificate(choice.chosen.dump())
        for choice in signed_data["certificates"]
        if choice.name == "certificate"
    ]
    candidates = [cert for cert in candidates if cert != ca_cert]
    matching = [
        cert
        for cert in candidates
        if isinstance(cert.public_key(), rsa.RSAPublicKey) and cert.public_key().public_numbers() == ours
    ]
    if matching:
        return matching[0]
    if len(candidates) == 1:
        return candidates[0]
    raise ScepClientError("cannot tell which certificate in the reply is ours")


def parse_cert_rep(
    reply: bytes, signer_key: rsa.RSAPrivateKey, *, expected_nonce: bytes, ca_cert: x509.Certificate
) -> x509.Certificate:
    """The certificate the CA issued, from its CertRep; ``ScepFailure`` if it refused."""
    try:
        info = acms.ContentInfo.load(reply, strict=True)
        signed_data = info["content"]
        if not isinstance(signed_data, acms.SignedData):
            raise ScepClientError("the reply is not a SignedData")
        attributes = _check_ca_signature(signed_data, ca_cert)
        message_type = attributes.get(_MESSAGE_TYPE)
        if message_type is None or message_type.native != "3":
            raise ScepClientError("the reply is not a CertRep")
        recipient_nonce = attributes.get(_RECIPIENT_NONCE)
        if recipient_nonce is None or not hmac.compare_digest(recipient_nonce.native, expected_nonce):
            raise ScepClientError("the reply's recipientNonce is not our nonce")
        status = attributes.get(_PKI_STATUS)
        status_text = status.native if status is not None else None
        if status_text == "2":
            fail_info = attributes.get(_FAIL_INFO)
            raise ScepFailure(
                f"the CA refused the request (failInfo {fail_info.native if fail_info else '?'})"
            )
        if status_text != "0":
            raise ScepClientError(f"unsupported pkiStatus {status_text!r} (polling is not implemented)")
        content = signed_data["encap_content_info"]["content"]
        if isinstance(content, core.Void):
            raise ScepClientError("the successful reply has no content")
        return _issued_certificate(_open_envelope(content.native, signer_key), signer_key, ca_cert)
    except _MALFORMED as exc:
        raise ScepClientError(f"the reply is malformed: {exc}") from exc


def enroll(
    ca_cert: x509.Certificate,
    challenge: str,
    common_name: str,
    post: Callable[[bytes], bytes],
    *,
    key: rsa.RSAPrivateKey | None = None,
    cipher: str = "aes",
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """Run a whole enrolment: key, CSR with the challenge, PKIOperation via ``post``, certificate."""
    key = key or new_rsa_key(2048)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .add_attribute(AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
        .sign(key, hashes.SHA256())
    )
    signer_cert = self_signed(key, common_name)
    message, nonce = build_pkcs_req(ca_cert, csr, signer_cert, key, cipher=cipher)
    reply = post(message)
    return key, parse_cert_rep(reply, key, expected_nonce=nonce, ca_cert=ca_cert)
