"""Reading an uploaded ``.mobileconfig`` and refusing what we must not send (Fleet's rules).

A profile is a property list (XML, or binary) whose top level is a ``Configuration`` dictionary
with an identifier, a display name, a UUID and a list of payloads. A signed profile (CMS
SignedData around that plist, as Apple Configurator and ``security cms -S`` produce) is accepted
too: we read its content, but store and send the signed bytes unchanged, so the Mac still shows
who signed it. Its signature is not verified here: the signer is shown to the user by macOS, and
what we need is only the identifier and the payload types.

Refused, each with its own message (a :class:`ProfileError`, 400 in REST, a form error in the
console):

- anything larger than 1 MiB, empty, or not a plist (billion-laughs XML is refused by
  ``plistlib``, which rejects entity declarations);
- a top level that is not ``PayloadType`` ``Configuration``, lacks a non-empty string
  ``PayloadIdentifier``, ``PayloadDisplayName`` or ``PayloadUUID``, or whose ``PayloadContent`` is
  not a non-empty list of dictionaries that each have those three keys;
- encrypted profiles (``EncryptedPayloadContent``: we could not read their payload types) and
  user-scoped ones (``PayloadScope`` ``User``: we only speak to the device channel);
- payload types the MDM itself manages: the MDM and SCEP/ACME identity payloads belong to the
  enrollment profile (a second one would move the device to another server or identity), and
  FileVault and its recovery key escrow are disk-encryption settings (Fleet refuses the same);
- identifiers under ``com.fleetdm.fleet.mdm``, Fleet's reserved namespace, which our enrollment
  profile uses: a custom profile with its identifier would replace the enrollment on the Mac.
"""

from __future__ import annotations

import hashlib
import logging
import plistlib
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

MAX_PROFILE_BYTES = 1024 * 1024
MAX_TEXT = 255  # the model's name and identifier columns
RESERVED_IDENTIFIER_PREFIX = "com.fleetdm.fleet.mdm"
# Payload type -> why it is refused (the message completes "... is managed by ...").
RESERVED_PAYLOAD_TYPES = {
    "com.apple.mdm": "the MDM enrollment profile",
    "com.apple.security.scep": "the MDM enrollment profile (the device's identity)",
    "com.apple.security.acme": "the MDM enrollment profile (the device's identity)",
    "com.apple.MCX.FileVault2": "disk encryption settings (FileVault)",
    "com.apple.security.FDERecoveryKeyEscrow": "disk encryption settings (FileVault key escrow)",
    "com.apple.security.FDERecoveryRedirect": "disk encryption settings (FileVault key escrow)",
}
_PLIST_STARTS = (b"<?xml", b"<plist", b"<!DOCTYPE", b"bplist00")


class ProfileError(Exception):
    """A profile we refuse, or a write that conflicts (``status`` 409) or is not found (404)."""

    def __init__(self, message: str, status: int = 400, field: str = "profile") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field


@dataclass(frozen=True)
class ParsedProfile:
    """What we keep of a valid profile; ``data`` is the upload exactly as given."""

    identifier: str
    name: str
    uuid: str
    payload_types: tuple[str, ...]
    data: bytes
    checksum: str
    signed: bool


def checksum_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def enrollment_profile_identifier() -> str:
    """The enrollment profile's identifier (its module pulls in the CA code, so imported late)."""
    try:
        from mdm.enrollment_profile import PROFILE_ID
    except ImportError:  # pragma: no cover - the module is part of the app; the prefix still applies
        return RESERVED_IDENTIFIER_PREFIX + ".apple"
    return PROFILE_ID


def _looks_like_plist(data: bytes) -> bool:
    head = data[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(_PLIST_STARTS)


def _unwrap_signed(data: bytes) -> bytes:
    """The plist inside a CMS-signed profile, or :class:`ProfileError` when it is not one."""
    try:
        from mdm.pki import cms
    except ImportError:
        raise ProfileError(
            "The file is not a property list, and signed profiles cannot be read on this server."
        ) from None
    try:
        return cms.content_of_signed(data)
    except Exception:  # any parse failure means "not a signed message": one answer for all of them
        logger.debug("uploaded profile is neither a plist nor CMS SignedData", exc_info=True)
        raise ProfileError(
            "The file is not a configuration profile: neither a property list nor a signed profile."
        ) from None


def _text(value: Any, what: str, *, limit: int | None = MAX_TEXT) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ProfileError(f"The profile's {what} is missing or not a non-empty string.")
    if limit is not None and len(value) > limit:
        raise ProfileError(f"The profile's {what} is longer than {limit} characters.")
    return value


def _check_identifier(identifier: str, where: str) -> None:
    if identifier == enrollment_profile_identifier():
        raise ProfileError(
            f"{where} {identifier} is the MDM enrollment profile's; it cannot be uploaded as a "
            "configuration profile."
        )
    if identifier.startswith(RESERVED_IDENTIFIER_PREFIX):
        raise ProfileError(
            f"{where} {identifier} is reserved: identifiers starting with {RESERVED_IDENTIFIER_PREFIX} "
            "belong to Fleet's own profiles."
        )


def _payloads(content: Any) -> tuple[str, ...]:
    if not isinstance(content, list):
        raise ProfileError("The profile's PayloadContent must be a list of payloads.")
    if not content:
        raise ProfileError("The profile has no payloads (PayloadContent is empty).")
    types = []
    for index, payload in enumerate(content, start=1):
        if not isinstance(payload, dict):
            raise ProfileError(f"Payload {index} of PayloadContent is not a dictionary.")
        payload_type = _text(payload.get("PayloadType"), f"payload {index} PayloadType")
        identifier = _text(payload.get("PayloadIdentifier"), f"payload {index} PayloadIdentifier", limit=None)
        _text(payload.get("PayloadUUID"), f"payload {index} PayloadUUID", limit=None)
        if payload_type in RESERVED_PAYLOAD_TYPES:
            raise ProfileError(
                f"Payload type {payload_type} cannot be used in a configuration profile: it is managed "
                f"by {RESERVED_PAYLOAD_TYPES[payload_type]}."
            )
        _check_identifier(identifier, f"Payload {index}'s identifier")
        types.append(payload_type)
    return tuple(types)


def parse(data: bytes) -> ParsedProfile:
    """The profile in ``data``, checked; :class:`ProfileError` names the first problem found."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProfileError("The profile must be given as bytes.")
    data = bytes(data)
    if not data.strip():
        raise ProfileError("The profile is empty.")
    if len(data) > MAX_PROFILE_BYTES:
        raise ProfileError(f"The profile is larger than {MAX_PROFILE_BYTES // (1024 * 1024)} MiB.")
    signed = not _looks_like_plist(data)
    content = _unwrap_signed(data) if signed else data
    try:
        body = plistlib.loads(content)
    except Exception:  # plistlib raises a handful of types on garbage: all mean "not a plist"
        raise ProfileError("The profile is not a valid property list (.mobileconfig).") from None
    if not isinstance(body, dict):
        raise ProfileError("The profile's top level must be a dictionary.")
    if body.get("PayloadType") != "Configuration":
        raise ProfileError('The profile\'s top-level PayloadType must be "Configuration".')
    identifier = _text(body.get("PayloadIdentifier"), "PayloadIdentifier")
    name = _text(body.get("PayloadDisplayName"), "PayloadDisplayName (its name)")
    payload_uuid = _text(body.get("PayloadUUID"), "PayloadUUID")
    if "EncryptedPayloadContent" in body:
        raise ProfileError("Encrypted profiles are not supported: upload the profile unencrypted.")
    if str(body.get("PayloadScope", "System")).lower() == "user":
        raise ProfileError(
            'User-scoped profiles (PayloadScope "User") are not supported: profiles are installed on '
            "the device."
        )
    _check_identifier(identifier, "The profile identifier")
    types = _payloads(body.get("PayloadContent"))
    return ParsedProfile(
        identifier=identifier,
        name=name.strip(),
        uuid=payload_uuid,
        payload_types=types,
        data=data,
        checksum=checksum_of(data),
        signed=signed,
    )
