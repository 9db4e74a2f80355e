"""Apple MDM set-up and enrollment: `mdm setup`, the APNs certificate (CSR, upload, renewal guard,
expiry warning), the signed enrollment profile per team, and who may see and do what."""

from __future__ import annotations

import plistlib
import shutil
import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.core.management import call_command
from django.test import Client

from activities.models import Activity
from fleet.sealing import UnsealError, seal, unseal
from hosts.choices import Role
from hosts.models import EnrollSecret, Team
from mdm import challenge, conf, push_certificate, services
from mdm.apns.certificate import TOPIC_OID
from mdm.models import PushCertificate
from mdm.pki import cms
from mdm.pki.scep import ChallengeRejected
from tests.factories import api_for, user_with_role

pytestmark = pytest.mark.django_db


@pytest.fixture
def mdm_dev(settings):
    settings.MDM = {**settings.MDM, "PUSH_DISABLED": True, "SERVER_URL": "https://mdm.example.test"}
    services.setup(dev=True)


def apple_issues(csr_pem: bytes, topic: str, days: int = 365) -> bytes:
    """What identity.apple.com gives back: a certificate for the CSR's key, its UID the topic."""
    csr = x509.load_pem_x509_csr(csr_pem)
    issuer_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(TOPIC_OID, topic),
            x509.NameAttribute(NameOID.COMMON_NAME, f"APSP:{topic.rsplit('.', 1)[-1]}"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Apple Application Integration 2")]))
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=400))
        .not_valid_after(now + timedelta(days=days, minutes=-1))
        .sign(issuer_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def new_topic() -> str:
    return f"com.apple.mgmt.External.{uuid.uuid4()}"


# --- setup ----------------------------------------------------------------------------------------


def test_setup_creates_the_ca_once_with_an_owner_only_key(settings, capsys):
    call_command("mdm", "setup")
    key = conf.ca_dir() / "ca.key"
    assert key.stat().st_mode & 0o777 == 0o600
    first = key.read_bytes()
    call_command("mdm", "setup")
    assert key.read_bytes() == first  # never replaced without --force
    out = capsys.readouterr().out
    assert "already exists" in out and "BEGIN" not in out  # no key material printed


def test_setup_dev_installs_a_stand_in_push_certificate(settings, capsys):
    call_command("mdm", "setup", "--dev")
    row = PushCertificate.objects.get(pk=1)
    assert row.is_dev and row.topic.startswith("com.apple.mgmt.External.")
    assert "PRIVATE KEY" not in row.sealed_key  # sealed, not PEM
    material = push_certificate.material()
    assert material.url == settings.MDM["DEV_APNS_URL"] and material.key_pem.startswith(b"-----BEGIN")
    assert (conf.standin_dir() / "ca.pem").exists()


def test_sealed_values_are_bound_to_their_purpose():
    sealed = seal(b"secret", "one")
    assert unseal(sealed, "one") == b"secret"
    with pytest.raises(UnsealError):
        unseal(sealed, "another")
    with pytest.raises(UnsealError):
        unseal("v1:garbage", "one")


# --- APNs certificate -----------------------------------------------------------------------------


def test_csr_then_upload_then_renewal_with_the_same_topic(mdm_dev):
    PushCertificate.objects.filter(pk=1).update(certificate_pem="", is_dev=False, topic="")
    admin = api_for(user_with_role("admin", Role.ADMIN))
    csr = admin.post("/api/v1/mdm/apple/apns/csr/", {"email": "it@example.com"}, format="json")
    assert csr.status_code == 200 and csr.content.startswith(b"-----BEGIN CERTIFICATE REQUEST")
    topic = new_topic()
    upload = admin.post("/api/v1/mdm/apple/apns/", {"certificate": apple_issues(csr.content, topic).decode()})
    assert upload.status_code == 201, upload.content
    assert upload.json()["topic"] == topic and "key" not in str(upload.json()).lower().replace("not_", "")
    state = admin.get("/api/v1/mdm/apple/").json()
    assert state["apns_certificate"]["topic"] == topic and state["apns_warning"] is None
    assert Activity.objects.filter(type="uploaded_apns_certificate").exists()

    # Renewal: a new CSR, the same topic: accepted.
    csr2 = admin.post("/api/v1/mdm/apple/apns/csr/", {"email": "it@example.com"}, format="json").content
    renewed = admin.post("/api/v1/mdm/apple/apns/", {"certificate": apple_issues(csr2, topic, 400).decode()})
    assert renewed.status_code == 201


def test_upload_with_another_topic_is_refused_and_keeps_the_current_one(mdm_dev):
    PushCertificate.objects.filter(pk=1).update(certificate_pem="", is_dev=False, topic="")
    admin = api_for(user_with_role("admin", Role.ADMIN))
    first = admin.post("/api/v1/mdm/apple/apns/csr/", {"email": "a@example.com"}, format="json").content
    topic = new_topic()
    assert (
        admin.post(
            "/api/v1/mdm/apple/apns/", {"certificate": apple_issues(first, topic).decode()}
        ).status_code
        == 201
    )
    second = admin.post("/api/v1/mdm/apple/apns/csr/", {"email": "a@example.com"}, format="json").content
    refused = admin.post(
        "/api/v1/mdm/apple/apns/", {"certificate": apple_issues(second, new_topic()).decode()}
    )
    assert refused.status_code == 400
    assert "re-enroll" in refused.json()["message"].lower() or "topic" in refused.json()["message"].lower()
    assert push_certificate.topic() == topic


def test_upload_refuses_garbage_a_foreign_key_and_an_expired_certificate(mdm_dev):
    admin = api_for(user_with_role("admin", Role.ADMIN))
    csr = admin.post("/api/v1/mdm/apple/apns/csr/", {"email": "a@example.com"}, format="json").content
    assert admin.post("/api/v1/mdm/apple/apns/", {"certificate": "not a certificate"}).status_code == 400
    other_csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    )
    foreign = apple_issues(other_csr.public_bytes(serialization.Encoding.PEM), new_topic())
    assert admin.post("/api/v1/mdm/apple/apns/", {"certificate": foreign.decode()}).status_code == 400
    expired = apple_issues(csr, new_topic(), days=-2)
    assert admin.post("/api/v1/mdm/apple/apns/", {"certificate": expired.decode()}).status_code == 400
    assert admin.post("/api/v1/mdm/apple/apns/", {}).status_code == 400


def test_only_global_admins_manage_the_push_certificate(mdm_dev, team):
    for user in (
        user_with_role("maint", Role.MAINTAINER),
        user_with_role("teamadmin", Role.ADMIN, team),
        user_with_role("obs", Role.OBSERVER),
    ):
        client = api_for(user)
        assert (
            client.post("/api/v1/mdm/apple/apns/csr/", {"email": "a@b.co"}, format="json").status_code == 403
        )
        assert client.post("/api/v1/mdm/apple/apns/", {"certificate": "x"}).status_code == 403
    state = api_for(user_with_role("obs2", Role.OBSERVER)).get("/api/v1/mdm/apple/").json()
    assert "sealed_key" not in str(state) and "PRIVATE" not in str(state)


def test_expiry_warning_thirty_days_ahead(mdm_dev, capsys):
    soon = datetime.now(UTC) + timedelta(days=10)
    PushCertificate.objects.filter(pk=1).update(not_after=soon)
    warning = push_certificate.warning()
    assert warning and ("10 days" in warning or "9 days" in warning)
    call_command("mdm", "status")
    assert "Warning" in capsys.readouterr().out
    PushCertificate.objects.filter(pk=1).update(not_after=datetime.now(UTC) + timedelta(days=90))
    assert push_certificate.warning() is None


# --- enrollment profile ---------------------------------------------------------------------------


def _profile(response) -> dict:
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/x-apple-aspen-config"
    content, signer = cms.verify_attached(response.content)
    assert conf.ca().certificate == signer or signer.issuer == conf.ca().certificate.subject
    return plistlib.loads(content)


def test_enrollment_profile_is_signed_and_carries_scep_and_mdm_payloads(mdm_dev, client, global_secret):
    profile = _profile(client.get("/api/mdm/apple/enroll", {"enroll_secret": global_secret}))
    scep, mdm = profile["PayloadContent"]
    assert scep["PayloadType"] == "com.apple.security.scep"
    assert scep["PayloadContent"]["URL"] == "https://mdm.example.test/mdm/apple/scep"
    assert challenge.team_of_challenge(scep["PayloadContent"]["Challenge"]) is None  # no team
    assert mdm["PayloadType"] == "com.apple.mdm"
    assert mdm["ServerURL"] == "https://mdm.example.test/mdm/apple/mdm"
    assert mdm["Topic"] == push_certificate.topic()
    assert mdm["SignMessage"] is True and mdm["CheckOutWhenRemoved"] is True
    assert mdm["AccessRights"] == 8191 and mdm["IdentityCertificateUUID"] == scep["PayloadUUID"]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_openssl_verifies_the_enrollment_profile_against_the_mdm_ca(mdm_dev, client, global_secret, tmp_path):
    body = client.get("/api/mdm/apple/enroll", {"enroll_secret": global_secret}).content
    (tmp_path / "p.der").write_bytes(body)
    (tmp_path / "ca.pem").write_bytes(conf.ca().certificate_pem)
    result = subprocess.run(
        [
            "openssl",
            "cms",
            "-verify",
            "-inform",
            "DER",
            "-in",
            tmp_path / "p.der",
            "-CAfile",
            tmp_path / "ca.pem",
        ],
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert plistlib.loads(result.stdout)["PayloadType"] == "Configuration"


def test_a_team_secret_gives_that_team_s_challenge(mdm_dev, client, team, team_secret):
    profile = _profile(client.get("/api/mdm/apple/enroll", {"enroll_secret": team_secret}))
    password = profile["PayloadContent"][0]["PayloadContent"]["Challenge"]
    assert challenge.team_of_challenge(password) == team.pk
    other = Team.objects.create(name="Other")
    forged = f"{other.pk}.{password.split('.', 1)[1]}"
    with pytest.raises(ChallengeRejected):
        challenge.team_of_challenge(forged)


def test_enrollment_profile_refusals(settings, client, global_secret):
    assert client.get("/api/mdm/apple/enroll", {"enroll_secret": global_secret}).status_code == 409  # no CA
    services.setup()
    no_push = client.get("/api/mdm/apple/enroll", {"enroll_secret": global_secret})
    assert no_push.status_code == 409 and b"APNs" in no_push.content
    settings.MDM = {**settings.MDM, "PUSH_DISABLED": True}
    services.setup(dev=True)
    assert client.get("/api/mdm/apple/enroll", {"enroll_secret": "wrong"}).status_code == 401
    assert client.get("/api/mdm/apple/enroll").status_code == 401
    assert client.put("/api/mdm/apple/enroll").status_code == 405


def test_console_and_rest_downloads_check_the_team(mdm_dev, team):
    other = Team.objects.create(name="Other")
    maint = user_with_role("maint", Role.MAINTAINER, team)
    api = api_for(maint)
    assert api.get("/api/v1/mdm/apple/enrollment-profile/", {"team_id": team.pk}).status_code == 200
    assert api.get("/api/v1/mdm/apple/enrollment-profile/", {"team_id": other.pk}).status_code == 404
    assert api.get("/api/v1/mdm/apple/enrollment-profile/").status_code == 403  # no team: global roles
    observer = api_for(user_with_role("obs", Role.OBSERVER, team))
    assert observer.get("/api/v1/mdm/apple/enrollment-profile/", {"team_id": team.pk}).status_code == 404


def test_console_mdm_page_for_admins_and_refusal_for_observers(mdm_dev, team):
    admin = Client()
    admin.force_login(user_with_role("admin", Role.ADMIN))
    page = admin.get("/admin/mdm/pushcertificate/")
    assert page.status_code == 200
    text = page.content.decode()
    assert push_certificate.topic() in text and "stand-in" in text and "Engineering" in text
    assert "PRIVATE KEY" not in text
    bad = admin.post("/admin/mdm/pushcertificate/upload/", {"certificate": _file(b"garbage")})
    assert bad.status_code == 200 and "errorlist" in bad.content.decode()
    observer = Client()
    observer.force_login(user_with_role("obs", Role.OBSERVER))
    assert observer.get("/admin/mdm/pushcertificate/").status_code == 403


def test_my_device_offers_mdm_to_an_unenrolled_mac(mdm_dev, client, global_secret):
    from devices import tokens
    from tests.factories import make_host

    mac = make_host("mac", platform="darwin")
    linux = make_host("linux", platform="ubuntu")
    for host, token in ((mac, "mac-token-1234567890"), (linux, "linux-token-123456789")):
        tokens.set_token(host.pk, token)
    page = client.get("/device/mac-token-1234567890")
    assert page.status_code == 200 and "Turn on MDM" in page.content.decode()
    assert "Turn on MDM" not in client.get("/device/linux-token-123456789").content.decode()
    profile = client.get("/device/mac-token-1234567890/mdm-enrollment")
    assert _profile(profile)["PayloadType"] == "Configuration"
    assert profile["Referrer-Policy"] == "no-referrer"
    assert client.get("/device/wrong-token-123456789/mdm-enrollment").status_code == 401


def _file(data: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("cert.pem", data)


def test_enroll_secret_rows_are_not_touched_by_downloads(mdm_dev, client, global_secret):
    before = list(EnrollSecret.objects.values_list("pk", "secret_digest"))
    client.get("/api/mdm/apple/enroll", {"enroll_secret": global_secret})
    assert list(EnrollSecret.objects.values_list("pk", "secret_digest")) == before
