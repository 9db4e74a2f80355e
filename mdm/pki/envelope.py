"""CMS EnvelopedData with RSA key transport, as SCEP uses it (server side).

SCEP wraps the CSR, and the issued certificate on the way back, in EnvelopedData. Apple's client
may pick DES-EDE3-CBC, which cryptography's ``pkcs7_decrypt_der`` refuses, so both directions are
written here: asn1crypto for the structure, cryptography for RSA and the block cipher.
"""

from __future__ import annotations

import os

from asn1crypto import cms as acms
from asn1crypto import core
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import padding as symmetric_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import Encoding

from mdm.pki.cms import PARSE_ERRORS, issuer_and_serial

OID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"

# asn1crypto's name for each content cipher we accept -> (cipher factory, key length in bytes).
CIPHERS = {
    "aes128_cbc": (algorithms.AES, 16),
    "aes192_cbc": (algorithms.AES, 24),
    "aes256_cbc": (algorithms.AES, 32),
    "tripledes_3key": (TripleDES, 24),
}


class EnvelopeError(Exception):
    """The EnvelopedData is malformed, not for us, or does not decrypt."""


def _is_for(recipient: acms.KeyTransRecipientInfo, certificate: ax509.Certificate) -> bool:
    rid = recipient["rid"]
    if rid.name == "issuer_and_serial_number":
        return (
            rid.chosen["serial_number"].native == certificate.serial_number
            and rid.chosen["issuer"] == certificate.issuer
        )
    return rid.chosen.native == certificate.key_identifier


def _content_key(recipient: acms.KeyTransRecipientInfo, key: rsa.RSAPrivateKey, length: int) -> bytes:
    """Unwrap the content key; a failure yields a random key so every failure looks the same.

    Telling "bad padding" apart from "bad ciphertext" would hand an attacker a Bleichenbacher
    oracle on the CA key.
    """
    try:
        content_key = key.decrypt(recipient["encrypted_key"].native, padding.PKCS1v15())
    except ValueError:
        content_key = b""
    if len(content_key) != length:
        content_key = os.urandom(length)
    return content_key


def decrypt(data: bytes, certificate: x509.Certificate, key: rsa.RSAPrivateKey) -> tuple[bytes, str]:
    """Decrypt a ContentInfo/EnvelopedData addressed to ``certificate``; return (content, cipher).

    ``cipher`` is asn1crypto's name of the content cipher, e.g. "aes128_cbc" or "tripledes_3key".
    """
    try:
        return _decrypt(data, certificate, key)
    except PARSE_ERRORS as exc:
        raise EnvelopeError("the encrypted content is malformed") from exc


def _decrypt(data: bytes, certificate: x509.Certificate, key: rsa.RSAPrivateKey) -> tuple[bytes, str]:
    info = acms.ContentInfo.load(data, strict=True)
    if info["content_type"].dotted != OID_ENVELOPED_DATA:
        raise EnvelopeError("the content is not EnvelopedData")
    enveloped: acms.EnvelopedData = info["content"]
    ours = ax509.Certificate.load(certificate.public_bytes(Encoding.DER))
    recipients = [
        choice.chosen
        for choice in enveloped["recipient_infos"]
        if choice.name == "ktri" and _is_for(choice.chosen, ours)
    ]
    if not recipients:
        raise EnvelopeError("the content is not encrypted to this certificate")
    recipient = recipients[0]
    if recipient["key_encryption_algorithm"]["algorithm"].native != "rsaes_pkcs1v15":
        raise EnvelopeError("unsupported key transport algorithm")
    encrypted = enveloped["encrypted_content_info"]
    algorithm = encrypted["content_encryption_algorithm"]
    cipher_name = algorithm["algorithm"].native
    if cipher_name not in CIPHERS:
        raise EnvelopeError(f"unsupported content cipher {cipher_name}")
    factory, key_length = CIPHERS[cipher_name]
    block_bytes = factory.block_size // 8
    iv = algorithm["parameters"]  # asn1crypto types it as an OCTET STRING for these ciphers
    if not isinstance(iv, core.OctetString):
        raise EnvelopeError("the cipher has no IV")
    iv_bytes = iv.native
    if len(iv_bytes) != block_bytes:
        raise EnvelopeError("the cipher's IV has the wrong length")
    body = encrypted["encrypted_content"]
    if isinstance(body, core.Void):
        raise EnvelopeError("there is no encrypted content")
    ciphertext = bytes(body)
    if not ciphertext or len(ciphertext) % block_bytes:
        raise EnvelopeError("the encrypted content has a bad length")
    content_key = _content_key(recipient, key, key_length)
    decryptor = Cipher(factory(content_key), modes.CBC(iv_bytes)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = symmetric_padding.PKCS7(factory.block_size).unpadder()
    try:
        content = unpadder.update(padded) + unpadder.finalize()
    except ValueError as exc:
        raise EnvelopeError("the content does not decrypt") from exc
    return content, cipher_name


def encrypt(content: bytes, recipient: x509.Certificate, cipher: str = "aes256_cbc") -> bytes:
    """A ContentInfo/EnvelopedData (DER) that only ``recipient``'s key opens."""
    public_key = recipient.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise EnvelopeError("the recipient certificate has no RSA key")
    factory, key_length = CIPHERS[cipher]
    content_key = os.urandom(key_length)
    iv = os.urandom(factory.block_size // 8)
    padder = symmetric_padding.PKCS7(factory.block_size).padder()
    padded = padder.update(content) + padder.finalize()
    encryptor = Cipher(factory(content_key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    recipient_info = acms.KeyTransRecipientInfo(
        {
            "version": "v0",
            "rid": acms.RecipientIdentifier(
                name="issuer_and_serial_number", value=issuer_and_serial(recipient)
            ),
            "key_encryption_algorithm": {"algorithm": "rsaes_pkcs1v15"},
            "encrypted_key": public_key.encrypt(content_key, padding.PKCS1v15()),
        }
    )
    enveloped = acms.EnvelopedData(
        {
            "version": "v0",
            "recipient_infos": [acms.RecipientInfo(name="ktri", value=recipient_info)],
            "encrypted_content_info": {
                "content_type": "data",
                "content_encryption_algorithm": {"algorithm": cipher, "parameters": core.OctetString(iv)},
                "encrypted_content": ciphertext,
            },
        }
    )
    return acms.ContentInfo({"content_type": "enveloped_data", "content": enveloped}).dump()
