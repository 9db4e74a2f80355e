"""The enrollment profile: a signed ``.mobileconfig`` with a SCEP payload (the device's identity,
its challenge naming the team) and the MDM payload (where to check in, the push topic, what we may
do). Signed so macOS shows who it is from; with ``FLEET_MDM_SIGNING_CERT_FILE`` set to a
certificate macOS trusts (the server's TLS certificate), it shows as "Verified"."""

from __future__ import annotations

import plistlib
import uuid
from functools import cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.conf import settings

from hosts.models import FleetSettings, Team
from mdm import challenge, conf, push_certificate
from mdm.pki import cms

ACCESS_RIGHTS_ALL = 8191
SCEP_PAYLOAD_ID = "com.fleetdm.fleet.mdm.apple.scep"
MDM_PAYLOAD_ID = "com.fleetdm.fleet.mdm.apple.mdm"
PROFILE_ID = "com.fleetdm.fleet.mdm.apple"


class NotReady(Exception):
    """MDM is not set up far enough to enroll (no CA, or no push certificate)."""


def _uuid(name: str) -> str:
    """Stable payload UUIDs per server and team: a re-download replaces, never duplicates."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{settings.MDM['DIR']}#{name}")).upper()


def build(team: Team | None, base_url: str) -> bytes:
    """The unsigned profile (XML plist) for ``team`` (``None``: no team)."""
    if not conf.configured():
        raise NotReady("MDM is not set up: run `manage.py mdm setup`.")
    topic = push_certificate.topic()
    if not topic:
        raise NotReady("No APNs push certificate: upload one (`manage.py mdm apns upload`).")
    org = FleetSettings.load().org_name or "Fleet"
    team_key = f"team-{team.pk if team else 0}"
    scep_uuid = _uuid(f"{team_key}-scep")
    scep = {
        "PayloadType": "com.apple.security.scep",
        "PayloadIdentifier": SCEP_PAYLOAD_ID,
        "PayloadUUID": scep_uuid,
        "PayloadVersion": 1,
        "PayloadDisplayName": f"{org} identity",
        "PayloadContent": {
            "URL": f"{base_url}/mdm/apple/scep",
            "Challenge": challenge.challenge_for(team.pk if team else None),
            "Keysize": 2048,
            "Key Type": "RSA",
            "Key Usage": 5,  # signing and encryption
            "Name": "Fleet MDM identity",
            "Subject": [[["O", org[:64]]], [["CN", "Fleet Identity"]]],
        },
    }
    mdm = {
        "PayloadType": "com.apple.mdm",
        "PayloadIdentifier": MDM_PAYLOAD_ID,
        "PayloadUUID": _uuid(f"{team_key}-mdm"),
        "PayloadVersion": 1,
        "PayloadDisplayName": f"{org} device management",
        "ServerURL": f"{base_url}/mdm/apple/mdm",
        "CheckInURL": f"{base_url}/mdm/apple/mdm",
        "Topic": topic,
        "IdentityCertificateUUID": scep_uuid,
        "SignMessage": True,
        "AccessRights": ACCESS_RIGHTS_ALL,
        "CheckOutWhenRemoved": True,
        "ServerCapabilities": ["com.apple.mdm.per-user-connections", "com.apple.mdm.bootstraptoken"],
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadIdentifier": PROFILE_ID,
        "PayloadUUID": _uuid(f"{team_key}-profile"),
        "PayloadVersion": 1,
        "PayloadDisplayName": f"{org} enrollment" + (f" ({team.name})" if team else ""),
        "PayloadDescription": f"Lets {org} manage this device: settings, updates, lock and erase.",
        "PayloadOrganization": org,
        "PayloadScope": "System",
        "PayloadContent": [scep, mdm],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=True)


@cache
def _signer_from_files(
    cert_file: str, key_file: str
) -> tuple[x509.Certificate, object, list[x509.Certificate]]:
    chain = x509.load_pem_x509_certificates(Path(cert_file).read_bytes())
    key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
    return chain[0], key, chain[1:]


def signed(team: Team | None, base_url: str) -> bytes:
    """The profile, CMS-signed (DER), as served at ``/api/mdm/apple/enroll``."""
    content = build(team, base_url)
    cert_file, key_file = settings.MDM["SIGNING_CERT_FILE"], settings.MDM["SIGNING_KEY_FILE"]
    if cert_file and key_file:
        certificate, key, chain = _signer_from_files(cert_file, key_file)
    else:
        authority = conf.ca()
        certificate, key, chain = authority.certificate, authority.key, []
    return cms.sign_attached(content, certificate, key, chain)


def filename(team: Team | None) -> str:
    suffix = f"-{team.pk}" if team else ""
    return f"fleet-mdm-enrollment{suffix}.mobileconfig"
