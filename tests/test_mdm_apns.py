"""APNs: the HTTP/2 client against the local stand-in for real, and the push-certificate helpers."""

from __future__ import annotations

import datetime as dt
import logging
import socket
import ssl
import stat
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from mdm.apns.certificate import (
    DevPushBundle,
    PushCertificateError,
    check_pair,
    check_renewal,
    describe,
    expiry_warning,
    load_certificate,
    load_dev_bundle,
    make_csr,
    make_dev_bundle,
    topic_of,
    write_dev_bundle,
)
from mdm.apns.client import ApnsClient, PushTarget
from mdm.apns.standin import ApnsStandIn
from mdm.apns.tls import client_context

TOKEN = "a1b2c3d4e5f60718" * 4  # 32 bytes, like a real device token


def token(n: int) -> str:
    return f"{n:064x}"


@pytest.fixture(scope="module")
def dev(tmp_path_factory) -> tuple[DevPushBundle, Path]:
    bundle = make_dev_bundle()
    directory = tmp_path_factory.mktemp("apns-dev")
    write_dev_bundle(directory, bundle)
    return bundle, directory


@pytest.fixture(scope="module")
def other_bundle() -> DevPushBundle:
    """Material from an unrelated CA (another server's dev setup, or an attacker's)."""
    return make_dev_bundle()


@pytest.fixture
def standin(dev):
    server = ApnsStandIn.from_dev_dir(dev[1]).start()
    yield server
    server.stop()


def make_client(dev, url: str, **overrides) -> ApnsClient:
    bundle, directory = dev
    options = {
        "base_url": url,
        "cert_pem": bundle.push_cert_pem,
        "key_pem": bundle.push_key_pem,
        "topic": bundle.topic,
        "ca_file": str(directory / "ca.pem"),
        "timeout": 5.0,
    }
    return ApnsClient(**{**options, **overrides})


@pytest.fixture
def client(dev, standin):
    with make_client(dev, standin.url) as apns:
        yield apns


# --- client against the stand-in ------------------------------------------------------------------


def test_push_arrives_over_http2_with_magic_and_topic(dev, standin, client):
    [outcome] = client.push([PushTarget(TOKEN, "magic-1")])

    assert outcome.ok and outcome.status == 200 and outcome.reason == ""
    uuid.UUID(outcome.apns_id)
    push = standin.wait_for(lambda p: p.token_hex == TOKEN, timeout=2)
    assert push is not None
    assert push.push_magic == "magic-1"
    assert push.topic == dev[0].topic
    [connection] = standin.connections
    assert connection.alpn_protocol == "h2"
    assert connection.client_topic == dev[0].topic


def test_fifty_concurrent_pushes_share_one_connection(standin, client):
    targets = [PushTarget(token(n), f"magic-{n}") for n in range(50)]

    outcomes = client.push(targets)

    assert [o.token_hex for o in outcomes] == [t.token_hex for t in targets]
    assert all(o.ok for o in outcomes)
    pushes = standin.pushes
    assert {(p.token_hex, p.push_magic) for p in pushes} == {(t.token_hex, t.push_magic) for t in targets}
    assert len(standin.connections) == 1
    assert {p.connection_id for p in pushes} == {standin.connections[0].connection_id}


def test_later_calls_reuse_the_connection(standin, client):
    assert client.push([PushTarget(token(1), "m")])[0].ok
    assert client.push([PushTarget(token(2), "m")])[0].ok
    assert len(standin.connections) == 1


def test_client_certificate_from_another_ca_is_refused(dev, other_bundle, standin):
    with make_client(
        dev, standin.url, cert_pem=other_bundle.push_cert_pem, key_pem=other_bundle.push_key_pem
    ) as apns:
        [outcome] = apns.push([PushTarget(TOKEN, "magic")])

    assert not outcome.ok
    assert outcome.status == 0 and outcome.reason.startswith("connection failed")
    assert outcome.retryable
    assert standin.pushes == [] and standin.connections == []


def test_wrong_topic_is_disallowed(dev, standin):
    with make_client(dev, standin.url, topic="com.apple.mgmt.External.someone-else") as apns:
        [outcome] = apns.push([PushTarget(TOKEN, "magic")])

    assert (outcome.ok, outcome.status, outcome.reason) == (False, 400, "TopicDisallowed")
    assert outcome.apns_id
    assert standin.pushes == []


def test_unregistered_token_gets_410(standin, client):
    standin.tokens_unregistered.add(TOKEN.upper())

    gone, alive = client.push([PushTarget(TOKEN, "m"), PushTarget(token(7), "m")])

    assert (gone.ok, gone.status, gone.reason) == (False, 410, "Unregistered")
    assert gone.token_dead and not gone.retryable
    assert alive.ok
    assert [p.token_hex for p in standin.pushes] == [token(7)]


def test_invalid_tokens_never_hit_the_wire(standin, client):
    bad = ["", "xyz1", "abc", "ab" * 101, "a1 b2", "0x" + TOKEN]

    outcomes = client.push([PushTarget(t, "magic") for t in bad])

    assert [(o.token_hex, o.ok, o.reason) for o in outcomes] == [(t, False, "BadDeviceToken") for t in bad]
    assert standin.connections == []


def test_connection_refused_gives_status_zero_outcomes(dev, standin):
    url = standin.url
    standin.stop()
    with make_client(dev, url) as apns:
        started = time.monotonic()
        outcomes = apns.push([PushTarget(token(n), "m") for n in range(3)])

    assert time.monotonic() - started < 5
    assert len(outcomes) == 3
    for outcome in outcomes:
        assert (outcome.ok, outcome.status, outcome.apns_id) == (False, 0, "")
        assert outcome.reason.startswith("connection failed: ")


def test_standin_stops_cleanly(dev):
    server = ApnsStandIn.from_dev_dir(dev[1]).start()
    thread, port = server._thread, server.port
    assert thread is not None and thread.is_alive()

    server.stop()
    server.stop()  # idempotent

    assert not thread.is_alive()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_client_close_stops_its_thread(standin, dev):
    apns = make_client(dev, standin.url)
    assert apns.push([PushTarget(TOKEN, "m")])[0].ok
    runner = apns._runner
    apns.close()
    assert runner is not None and not runner.thread.is_alive()
    with pytest.raises(RuntimeError):
        apns.push([PushTarget(TOKEN, "m")])


def test_standin_checks_requests_like_apns(dev, standin):
    """Requests the client never makes, sent by hand, get APNs' answers."""
    bundle, directory = dev
    context = client_context(bundle.push_cert_pem, bundle.push_key_pem, str(directory / "ca.pem"))
    headers = {"apns-topic": bundle.topic, "apns-push-type": "mdm"}
    with httpx.Client(http2=True, verify=context, trust_env=False) as http:
        url = f"{standin.url}/3/device/{TOKEN}"
        assert http.get(url, headers=headers).json()["reason"] == "MethodNotAllowed"
        assert http.post(f"{standin.url}/3/other", headers=headers).status_code == 404
        assert http.post(url, headers=headers).json()["reason"] == "PayloadEmpty"
        assert http.post(url, headers=headers, content=b"{}").json()["reason"] == "BadPayload"
        assert http.post(url, content=b'{"mdm":"x"}').json()["reason"] == "MissingTopic"
        response = http.post(url, headers=headers, content=b'{"mdm":"x"}')
        assert response.http_version == "HTTP/2" and response.status_code == 200
    assert [p.push_magic for p in standin.pushes] == ["x"]


def test_logs_hold_neither_full_tokens_nor_push_magic(standin, client, caplog):
    caplog.set_level(logging.DEBUG)
    client.push([PushTarget(TOKEN, "secret-magic"), PushTarget("zz", "secret-magic")])
    assert standin.wait_for(timeout=2) is not None
    assert TOKEN not in caplog.text and TOKEN.encode().hex() not in caplog.text
    assert "secret-magic" not in caplog.text
    assert TOKEN[:8] in caplog.text


def test_on_push_and_wait_for_across_threads(dev):
    seen = []
    with (
        ApnsStandIn.from_dev_dir(dev[1], on_push=seen.append) as server,
        make_client(dev, server.url) as apns,
    ):
        later = threading.Timer(0.2, apns.push, args=([PushTarget(token(9), "late")],))
        later.start()
        push = server.wait_for(lambda p: p.push_magic == "late", timeout=5)
        later.join(5)
        assert server.wait_for(lambda p: p.push_magic == "never", timeout=0.1) is None
    assert push is not None and seen == [push]


def test_mismatched_certificate_and_key_are_refused_at_construction(dev, other_bundle):
    with pytest.raises(PushCertificateError):
        make_client(dev, "https://127.0.0.1:1", key_pem=other_bundle.push_key_pem)


# --- certificate helpers --------------------------------------------------------------------------


def test_topic_of(dev):
    bundle = dev[0]
    push_cert = x509.load_pem_x509_certificate(bundle.push_cert_pem)
    assert topic_of(push_cert) == bundle.topic
    assert bundle.topic.startswith("com.apple.mgmt.External.")
    ident = bundle.topic.removeprefix("com.apple.mgmt.External.")
    assert push_cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == f"APSP:{ident}"
    with pytest.raises(PushCertificateError, match="no push topic"):
        topic_of(x509.load_pem_x509_certificate(bundle.server_cert_pem))


def test_make_csr():
    key_pem, csr_pem = make_csr(email="admin@example.com", organization="Acme")

    csr = x509.load_pem_x509_csr(csr_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert csr.is_signature_valid
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert csr.public_key().public_numbers() == key.public_key().public_numbers()
    assert csr.subject.get_attributes_for_oid(x509.NameOID.EMAIL_ADDRESS)[0].value == "admin@example.com"
    assert csr.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)[0].value == "Acme"
    with pytest.raises(PushCertificateError):
        make_csr(email="not an email")


def test_check_pair(dev, other_bundle):
    cert = x509.load_pem_x509_certificate(dev[0].push_cert_pem)
    check_pair(cert, dev[0].push_key_pem)
    with pytest.raises(PushCertificateError, match="not made from this server's CSR"):
        check_pair(cert, other_bundle.push_key_pem)
    with pytest.raises(PushCertificateError):
        check_pair(cert, b"garbage")


def test_check_renewal(dev, other_bundle):
    cert = x509.load_pem_x509_certificate(dev[0].push_cert_pem)
    check_renewal(None, cert)
    check_renewal(dev[0].topic, cert)
    with pytest.raises(PushCertificateError, match="re-enroll"):
        check_renewal(other_bundle.topic, cert)


def test_load_certificate_pem_der_and_garbage(dev):
    pem = dev[0].push_cert_pem
    cert = x509.load_pem_x509_certificate(pem)
    der = cert.public_bytes(serialization.Encoding.DER)

    assert load_certificate(pem) == cert
    assert load_certificate(b"\n  " + pem + b"\n") == cert
    assert load_certificate(der) == cert
    for garbage in (b"", b"hello", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"):
        with pytest.raises(PushCertificateError, match="not an X.509 certificate"):
            load_certificate(garbage)
    with pytest.raises(PushCertificateError, match="no certificate"):
        load_certificate(dev[0].push_key_pem)
    with pytest.raises(PushCertificateError, match="too large"):
        load_certificate(pem * 100)


def _der_ending_in_whitespace() -> tuple[x509.Certificate, bytes]:
    """A certificate whose DER form ends in a whitespace byte, as about one in forty does.

    ECDSA signs with a fresh nonce each time, so re-signing the same certificate gives new last
    bytes; the loop stops at the first that ``bytes.strip`` would eat.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "whitespace-tail")])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
    )
    for _ in range(5000):
        cert = builder.sign(key, hashes.SHA256())
        der = cert.public_bytes(serialization.Encoding.DER)
        if der[-1:].isspace():
            return cert, der
    raise AssertionError("no signature ended in a whitespace byte in 5,000 tries")


def test_load_certificate_keeps_der_bytes_that_look_like_whitespace():
    """A DER upload is binary: stripping it as text cut the signature of one certificate in forty."""
    cert, der = _der_ending_in_whitespace()
    assert der.strip() != der
    assert load_certificate(der) == cert


def test_describe(dev):
    cert = x509.load_pem_x509_certificate(dev[0].push_cert_pem)
    info = describe(cert)
    assert info.topic == dev[0].topic
    assert info.not_before < dt.datetime.now(dt.UTC) < info.not_after
    assert int(info.serial_hex, 16) == cert.serial_number
    assert len(info.sha256_hex) == 64


def test_expiry_warning():
    now = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
    assert expiry_warning(now + dt.timedelta(days=90), now=now) is None
    soon = expiry_warning(now + dt.timedelta(days=10), now=now)
    assert soon is not None and "expires in 10 days on 2025-03-11" in soon
    assert "expires in 1 day on" in expiry_warning(now + dt.timedelta(hours=3), now=now)
    past = expiry_warning(now - dt.timedelta(days=1), now=now)
    assert past is not None and "expired on 2025-02-28" in past
    assert expiry_warning(now + dt.timedelta(days=10), now=now, days=7) is None


def test_dev_bundle_files(dev, tmp_path):
    bundle, directory = dev
    assert stat.S_IMODE((directory / "server.key").stat().st_mode) == 0o600
    material = load_dev_bundle(directory)
    assert material.server_key_pem == bundle.server_key_pem
    assert material.ca_file == directory / "ca.pem"
    assert not (directory / "push.key").exists()
    server_cert = x509.load_pem_x509_certificate(bundle.server_cert_pem)
    san = server_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    with pytest.raises(PushCertificateError, match="mdm setup --dev"):
        load_dev_bundle(tmp_path / "missing")


def test_server_certificate_verifies_against_the_dev_ca(dev):
    bundle, directory = dev
    context = ssl.create_default_context(cafile=str(directory / "ca.pem"))
    with ApnsStandIn.from_dev_dir(directory) as server:
        for host in ("127.0.0.1", "localhost"):
            with (
                socket.create_connection(("127.0.0.1", server.port), timeout=2) as raw,
                context.wrap_socket(raw, server_hostname=host) as tls,
            ):
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
