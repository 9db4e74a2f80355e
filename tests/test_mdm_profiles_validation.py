"""Uploading configuration profiles: every refusal, signed profiles, uniqueness per team, label
modes, and the audit trail of the write path (``mdm.profiles.validation`` and ``services``)."""

from __future__ import annotations

import plistlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from activities.models import Activity
from hosts.models import Label, LabelMembershipType, Team
from mdm.models import Profile
from mdm.profiles import services
from mdm.profiles.validation import MAX_PROFILE_BYTES, ProfileError, checksum_of, parse
from tests.mdm_profiles_support import mobileconfig, payload, profile_dict

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_push(settings):
    settings.MDM = {**settings.MDM, "PUSH_DISABLED": True}


def refusal(data: bytes) -> str:
    with pytest.raises(ProfileError) as caught:
        parse(data)
    assert caught.value.status == 400
    return caught.value.message


def plist(**top) -> bytes:
    return plistlib.dumps(profile_dict(**top), fmt=plistlib.FMT_XML)


def test_a_valid_profile_is_read():
    data = mobileconfig("com.example.wifi", "Office Wi-Fi")
    parsed = parse(data)
    assert parsed.identifier == "com.example.wifi" and parsed.name == "Office Wi-Fi"
    assert parsed.payload_types == ("com.apple.wifi.managed",)
    assert parsed.checksum == checksum_of(data) and len(parsed.checksum) == 64 and not parsed.signed


def test_binary_plists_are_accepted():
    data = plistlib.dumps(profile_dict(), fmt=plistlib.FMT_BINARY)
    assert parse(data).identifier == "com.example.wifi"


def _signer():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Profile signer")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert, key


def test_signed_profiles_are_unwrapped_and_kept_signed():
    from mdm.pki import cms

    inner = mobileconfig("com.example.signed", "Signed")
    signed = cms.sign_attached(inner, *_signer())
    parsed = parse(signed)
    assert parsed.signed and parsed.identifier == "com.example.signed"
    assert parsed.data == signed and parsed.checksum == checksum_of(signed)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"<?xml version='1.0'?><plist><dict><key>a</key>", "not a valid property list"),
        (b"\x00\x01garbage that is not DER", "neither a property list nor a signed profile"),
        (plistlib.dumps(["not", "a", "dict"]), "top level must be a dictionary"),
        (plist(PayloadType="Something"), '"Configuration"'),
        (plist(PayloadType=None), '"Configuration"'),
        (plist(PayloadIdentifier=None), "PayloadIdentifier"),
        (plist(PayloadIdentifier=""), "PayloadIdentifier"),
        (plist(PayloadIdentifier=7), "PayloadIdentifier"),
        (plist(PayloadIdentifier="x" * 256), "longer than 255"),
        (plist(PayloadDisplayName=None), "PayloadDisplayName"),
        (plist(PayloadDisplayName="  "), "PayloadDisplayName"),
        (plist(PayloadUUID=None), "PayloadUUID"),
        (plist(PayloadContent=None), "PayloadContent must be a list"),
        (plist(PayloadContent={"a": 1}), "PayloadContent must be a list"),
        (plist(PayloadContent=[]), "no payloads"),
        (plist(PayloadContent=["text"]), "Payload 1 of PayloadContent is not a dictionary"),
        (plist(PayloadContent=[{"PayloadIdentifier": "a", "PayloadUUID": "b"}]), "payload 1 PayloadType"),
        (plist(PayloadContent=[{"PayloadType": "a", "PayloadUUID": "b"}]), "payload 1 PayloadIdentifier"),
        (plist(PayloadContent=[{"PayloadType": "a", "PayloadIdentifier": "b"}]), "payload 1 PayloadUUID"),
        (plist(EncryptedPayloadContent=b"secret"), "Encrypted profiles"),
        (plist(PayloadScope="User"), "User-scoped"),
    ],
)
def test_malformed_profiles_are_refused(data, message):
    assert message in refusal(data)


def test_entity_declarations_are_refused():
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE plist [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
        b"<plist><dict><key>PayloadType</key><string>&b;</string></dict></plist>"
    )
    assert "not a valid property list" in refusal(bomb)


def test_too_large_profiles_are_refused():
    padding = "x" * (MAX_PROFILE_BYTES + 1)
    assert "larger than 1 MiB" in refusal(plist(PayloadDescription=padding))


@pytest.mark.parametrize(
    "payload_type",
    [
        "com.apple.mdm",
        "com.apple.security.scep",
        "com.apple.security.acme",
        "com.apple.MCX.FileVault2",
        "com.apple.security.FDERecoveryKeyEscrow",
    ],
)
def test_payload_types_the_mdm_manages_are_refused(payload_type):
    data = plist(PayloadContent=[payload(), payload(payload_type)])
    assert f"Payload type {payload_type} cannot be used" in refusal(data)


def test_reserved_identifiers_are_refused():
    assert "MDM enrollment profile's" in refusal(mobileconfig("com.fleetdm.fleet.mdm.apple"))
    assert "is reserved" in refusal(mobileconfig("com.fleetdm.fleet.mdm.filevault"))
    nested = plist(PayloadContent=[payload(identifier="com.fleetdm.fleet.mdm.apple.scep2")])
    assert "Payload 1's identifier" in refusal(nested)
    assert parse(mobileconfig("com.fleetdm.other")).identifier == "com.fleetdm.other"  # only mdm is reserved


# --- the write path -------------------------------------------------------------------------------


def test_identifier_and_name_are_unique_per_team(team):
    other = Team.objects.create(name="Other")
    services.create_profile(team=team, data=mobileconfig("com.example.a", "A"))
    services.create_profile(team=other, data=mobileconfig("com.example.a", "A"))  # another team: fine
    services.create_profile(team=None, data=mobileconfig("com.example.a", "A"))  # no team: fine
    for scope in (team, other, None):
        with pytest.raises(ProfileError) as same_identifier:
            services.create_profile(team=scope, data=mobileconfig("com.example.a", "Another name"))
        assert same_identifier.value.status == 409
        assert "A profile with identifier com.example.a already exists" in same_identifier.value.message
        with pytest.raises(ProfileError) as same_name:
            services.create_profile(team=scope, data=mobileconfig("com.example.b", "A"))
        assert same_name.value.status == 409 and "named 'A' already exists" in same_name.value.message
    assert Profile.objects.count() == 3
    assert sorted(Profile.objects.values_list("scope", flat=True)) == sorted([0, team.pk, other.pk])


def test_only_one_label_mode_and_known_labels():
    red = Label.objects.create(name="red", query="SELECT 1")
    blue = Label.objects.create(name="blue", label_membership_type=LabelMembershipType.MANUAL)
    with pytest.raises(ProfileError, match="Only one of"):
        services.create_profile(
            team=None, data=mobileconfig(), labels_include_all=["red"], labels_exclude_any=["blue"]
        )
    for unknown in (["nope"], [99999], ["99999999999999999999999"], [True]):
        with pytest.raises(ProfileError, match="Unknown label"):
            services.create_profile(team=None, data=mobileconfig(), labels_include_any=unknown)
    profile = services.create_profile(
        team=None, data=mobileconfig(), labels_include_any=["red", str(blue.pk)]
    )
    assert set(profile.labels_include_any.all()) == {red, blue}
    assert not profile.labels_include_all.exists() and not profile.labels_exclude_any.exists()


def test_unknown_team_is_refused():
    with pytest.raises(ProfileError, match="No team with id 4242"):
        services.create_profile(team=4242, data=mobileconfig())


def test_create_replace_delete_are_recorded_like_fleet(team):
    profile = services.create_profile(team=team, data=mobileconfig("com.example.a", "A"))
    created = Activity.objects.get(type="created_macos_profile")
    assert created.details == {
        "profile_name": "A",
        "profile_identifier": "com.example.a",
        "team_id": team.pk,
        "team_name": team.name,
    }
    assert created.team_id == team.pk

    services.replace_profile(profile, mobileconfig("com.example.a", "A renamed"))
    profile.refresh_from_db()
    assert profile.name == "A renamed" and profile.checksum == checksum_of(bytes(profile.mobileconfig))
    assert Activity.objects.get(type="edited_macos_profile").details["profile_name"] == "A renamed"
    with pytest.raises(ProfileError, match="differs from com.example.a"):
        services.replace_profile(profile, mobileconfig("com.example.other", "A renamed"))

    services.delete_profile(profile)
    assert not Profile.objects.exists()
    deleted = Activity.objects.get(type="deleted_macos_profile")
    assert (
        deleted.details["profile_identifier"] == "com.example.a" and deleted.details["team_name"] == team.name
    )


def test_batch_sets_exactly_the_given_profiles(team):
    keep = services.create_profile(team=team, data=mobileconfig("com.example.keep", "Keep"))
    change = services.create_profile(team=team, data=mobileconfig("com.example.change", "Change"))
    services.create_profile(team=team, data=mobileconfig("com.example.drop", "Drop"))
    services.create_profile(
        team=None, data=mobileconfig("com.example.drop", "Drop")
    )  # other scope, untouched
    before = Activity.objects.count()

    batch = [
        ("keep.mobileconfig", bytes(keep.mobileconfig)),
        ("change.mobileconfig", mobileconfig("com.example.change", "Changed")),
        ("new.mobileconfig", mobileconfig("com.example.new", "New")),
    ]
    dry = services.batch_set(team, batch, dry_run=True)
    assert [p.identifier for p in dry.created] == ["com.example.new"] and dry.deleted == ["com.example.drop"]
    assert Profile.objects.filter(team=team).count() == 3 and Activity.objects.count() == before

    result = services.batch_set(team, batch)
    assert [p.identifier for p in result.created] == ["com.example.new"]
    assert [p.identifier for p in result.updated] == ["com.example.change"]
    assert [p.identifier for p in result.unchanged] == ["com.example.keep"]
    assert result.deleted == ["com.example.drop"]
    assert set(Profile.objects.filter(team=team).values_list("identifier", flat=True)) == {
        "com.example.keep",
        "com.example.change",
        "com.example.new",
    }
    assert Profile.objects.filter(team=None, identifier="com.example.drop").exists()
    change.refresh_from_db()
    assert change.name == "Changed"
    activity = Activity.objects.get(type="edited_macos_profile")
    assert activity.details["team_id"] == team.pk and activity.details["deleted"] == ["com.example.drop"]


def test_batch_is_all_or_nothing(team):
    services.create_profile(team=team, data=mobileconfig("com.example.keep", "Keep"))
    with pytest.raises(ProfileError, match="bad.mobileconfig: .*reserved"):
        services.batch_set(
            team,
            [
                ("good", mobileconfig("com.example.new", "New")),
                ("bad.mobileconfig", mobileconfig("com.fleetdm.fleet.mdm.x")),
            ],
        )
    with pytest.raises(ProfileError, match="appears more than once"):
        services.batch_set(
            team, [("a", mobileconfig("com.example.a", "A")), ("b", mobileconfig("com.example.a", "B"))]
        )
    with pytest.raises(ProfileError, match="name 'A' appears more than once"):
        services.batch_set(
            team, [("a", mobileconfig("com.example.a", "A")), ("b", mobileconfig("com.example.b", "A"))]
        )
    assert list(Profile.objects.values_list("identifier", flat=True)) == ["com.example.keep"]
