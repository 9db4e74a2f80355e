"""SCEP server (RFC 8894): how a device trades a challenge and a CSR for its identity certificate.

macOS and iOS enrol this way from the SCEP payload of the enrollment profile: GetCACaps, GetCACert,
then one PKIOperation carrying a PKCSReq. The request is a SignedData (signed with a throwaway
self-signed certificate) around an EnvelopedData (encrypted to the CA) around the CSR; the reply
mirrors it. The caller decides about the challenge (``check_challenge``); everything else is here.
A request we cannot even parse raises ``ScepError`` (HTTP 400); a well-formed request we refuse
gets a signed FAILURE reply, which is what SCEP clients understand.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from asn1crypto import cms as acms
from asn1crypto import core
from asn1crypto import csr as acsr
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mdm.pki import cms, envelope
from mdm.pki.ca import CertificateAuthority, CsrRejected

OID_MESSAGE_TYPE = "2.16.840.1.113733.1.9.2"
OID_PKI_STATUS = "2.16.840.1.113733.1.9.3"
OID_FAIL_INFO = "2.16.840.1.113733.1.9.4"
OID_SENDER_NONCE = "2.16.840.1.113733.1.9.5"
OID_RECIPIENT_NONCE = "2.16.840.1.113733.1.9.6"
OID_TRANSACTION_ID = "2.16.840.1.113733.1.9.7"

MESSAGE_CERT_REP = "3"
MESSAGE_RENEWAL_REQ = "17"
MESSAGE_PKCS_REQ = "19"
STATUS_SUCCESS = "0"
STATUS_FAILURE = "2"
FAIL_BAD_REQUEST = "2"

MAX_TRANSACTION_ID = 128
NONCE_SIZES = range(8, 65)  # RFC 8894 says 16 bytes; tolerate other sane lengths

CA_CAPS = "\n".join(
    ["POSTPKIOperation", "SHA-256", "SHA-512", "SHA-1", "AES", "DES3", "SCEPStandard", "Renewal"]
)


class ScepError(Exception):
    """The PKIOperation body is not a SCEP request we can read (the view answers HTTP 400)."""


class ChallengeRejected(Exception):
    """Raised by ``check_challenge`` to refuse a request; the device gets a FAILURE reply."""


@dataclass
class ScepResult:
    """The reply to send, and what happened: an issued certificate, or why not."""

    reply: bytes
    certificate: x509.Certificate | None
    context: object | None
    transaction_id: str
    failure: str | None


@dataclass(frozen=True)
class _Request:
    signer: x509.Certificate
    transaction_id: str
    transaction_id_der: bytes  # echoed verbatim, whatever string type the client chose
    sender_nonce: bytes
    cipher: str
    csr_der: bytes


def get_ca_cert(ca: CertificateAuthority) -> tuple[str, bytes]:
    """The GetCACert reply: the CA certificate alone (no RA), so a bare DER certificate."""
    return "application/x-x509-ca-cert", ca.certificate_der


def _single_value(signer_info: acms.SignerInfo, oid: str, name: str) -> core.Asn1Value:
    try:
        values = cms.signed_attribute_values(signer_info, oid)
    except cms.SignatureError as exc:
        raise ScepError(str(exc)) from exc
    if len(values) != 1:
        raise ScepError(f"the request has no single {name} attribute")
    with cms.malformed_as(ScepError, f"the {name} attribute is malformed"):
        return core.load(values[0].dump(), strict=True)


def _string_attribute(signer_info: acms.SignerInfo, oid: str, name: str) -> tuple[str, bytes]:
    """The attribute's text and its DER (to echo it back in the same string type)."""
    value = _single_value(signer_info, oid, name)
    if not isinstance(value, core.PrintableString | core.UTF8String | core.IA5String):
        raise ScepError(f"the {name} attribute is not a string")
    with cms.malformed_as(ScepError, f"the {name} attribute is not valid text"):
        return value.native, value.dump()


def _parse_request(ca: CertificateAuthority, message: bytes) -> _Request:
    try:
        signed_data = cms.load_signed_data(message)
        content = cms.encapsulated_content(signed_data)
        if content is None:
            raise ScepError("the request has no enveloped content")
        signer, signer_info = cms.verify_signed_data(signed_data, content)
    except cms.SignatureError as exc:
        raise ScepError(f"bad request: {exc}") from exc
    message_type, _ = _string_attribute(signer_info, OID_MESSAGE_TYPE, "messageType")
    if message_type not in (MESSAGE_PKCS_REQ, MESSAGE_RENEWAL_REQ):
        raise ScepError(f"unsupported messageType {message_type[:8]!r}")
    transaction_id, transaction_der = _string_attribute(signer_info, OID_TRANSACTION_ID, "transactionID")
    if not transaction_id or len(transaction_id) > MAX_TRANSACTION_ID or not transaction_id.isprintable():
        raise ScepError("the transactionID is empty, too long or not printable")
    nonce = _single_value(signer_info, OID_SENDER_NONCE, "senderNonce")
    if not isinstance(nonce, core.OctetString) or len(nonce.native) not in NONCE_SIZES:
        raise ScepError("the senderNonce is not a 8 to 64 byte OCTET STRING")
    if not isinstance(signer.public_key(), rsa.RSAPublicKey):
        raise ScepError("the signer certificate must have an RSA key (the reply is encrypted to it)")
    try:
        csr_der, cipher = envelope.decrypt(content, ca.certificate, ca.key)
    except envelope.EnvelopeError as exc:
        raise ScepError(str(exc)) from exc
    return _Request(signer, transaction_id, transaction_der, nonce.native, cipher, csr_der)


def _load_csr(csr_der: bytes) -> tuple[x509.CertificateSigningRequest, str | None]:
    """The CSR and its challengePassword (None if it has none we can read)."""
    with cms.malformed_as(ScepError, "the request does not hold a PKCS#10 CSR"):
        csr = x509.load_der_x509_csr(csr_der)
        parsed = acsr.CertificationRequest.load(csr_der, strict=True)
        passwords = []
        for attribute in parsed["certification_request_info"]["attributes"]:
            if attribute["type"].native != "challenge_password":
                continue
            for value in attribute["values"]:
                if value.name in ("printable_string", "utf8_string"):
                    passwords.append(value.native)
    if len(passwords) != 1:
        return csr, None
    return csr, passwords[0]


def _attribute(oid: str, value: core.Asn1Value) -> acms.CMSAttribute:
    return acms.CMSAttribute({"type": oid, "values": [value]})


def _cert_rep(ca: CertificateAuthority, request: _Request, status: str, content: bytes | None) -> bytes:
    attributes = [
        _attribute(OID_MESSAGE_TYPE, core.PrintableString(MESSAGE_CERT_REP)),
        _attribute(OID_PKI_STATUS, core.PrintableString(status)),
        _attribute(OID_TRANSACTION_ID, core.load(request.transaction_id_der)),
        _attribute(OID_RECIPIENT_NONCE, core.OctetString(request.sender_nonce)),
        _attribute(OID_SENDER_NONCE, core.OctetString(os.urandom(16))),
    ]
    if status == STATUS_FAILURE:
        attributes.append(_attribute(OID_FAIL_INFO, core.PrintableString(FAIL_BAD_REQUEST)))
    return cms.sign_with_attributes(content, ca.certificate, ca.key, attributes)


def _certs_only(certificates: list[x509.Certificate]) -> bytes:
    """A degenerate SignedData: no signers, just certificates (how SCEP ships the issued one)."""
    signed_data = acms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [],
            "encap_content_info": {"content_type": "data"},
            "certificates": [
                ax509.Certificate.load(cert.public_bytes(serialization.Encoding.DER)) for cert in certificates
            ],
            "signer_infos": [],
        }
    )
    return acms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()


def handle_pki_operation(
    ca: CertificateAuthority,
    message: bytes,
    check_challenge: Callable[[str, x509.CertificateSigningRequest], object],
    *,
    days: int = 365,
) -> ScepResult:
    """Answer one PKIOperation (PKCSReq or RenewalReq) with a signed CertRep.

    ``check_challenge(password, csr)`` returns a context object for the caller (e.g. the enrollment
    the challenge belongs to) or raises ``ChallengeRejected``. It is only called for a CSR the CA
    would sign, so a one-time challenge is not spent on a request that fails anyway.
    """
    request = _parse_request(ca, message)
    csr, password = _load_csr(request.csr_der)

    def failure(reason: str, context: object | None = None) -> ScepResult:
        reply = _cert_rep(ca, request, STATUS_FAILURE, None)
        return ScepResult(reply, None, context, request.transaction_id, reason)

    try:
        ca.validate_csr(csr)
    except CsrRejected as exc:
        return failure(str(exc))
    if password is None:
        return failure("the CSR has no challenge password")
    try:
        context = check_challenge(password, csr)
    except ChallengeRejected as exc:
        return failure(str(exc) or "the challenge was rejected")
    try:
        issued = ca.issue(csr, days=days)
    except CsrRejected as exc:
        return failure(str(exc), context)
    reply_cipher = "aes256_cbc" if request.cipher.startswith("aes") else "tripledes_3key"
    degenerate = _certs_only([issued, ca.certificate])
    enveloped = envelope.encrypt(degenerate, request.signer, reply_cipher)
    reply = _cert_rep(ca, request, STATUS_SUCCESS, enveloped)
    return ScepResult(reply, issued, context, request.transaction_id, None)
