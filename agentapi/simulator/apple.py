"""A simulated Mac that speaks Apple's MDM protocol byte for byte, with no Apple hardware.

Why: the MDM server is only worth as much as its answers to what a real Mac sends, and Macs are
not available in CI or in ``make run``. This device does what macOS does (Apple's
device-management documentation and Fleet's ``pkg/mdm/mdmtest``): it downloads the signed
enrollment profile, checks its CMS signature, gets an identity certificate through SCEP (real RSA
keys, a real PKCSReq, the CA's CertRep verified and decrypted), then checks in (``Authenticate``,
``TokenUpdate``) and polls the command channel, every body an XML plist signed into
``Mdm-Signature``. It answers commands as a Mac does (:mod:`agentapi.simulator.apple_commands`)
and keeps the profiles it installed, which its osquery reports in ``macos_profiles``.

The protocol logic is synchronous and knows nothing about HTTP clients: it calls
``send(method, url, body, headers) -> (status, headers, body)``. Tests pass Django's test client,
the simulator an HTTP transport (:mod:`agentapi.simulator.apple_sim`), so both exercise the same
code. One Mac is driven by one caller at a time; only :meth:`SimulatedMac.installed_profiles` may
be read from another thread (osquery's tables).
"""

from __future__ import annotations

import base64
import datetime as dt
import plistlib
import random
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from agentapi.simulator import apple_commands
from agentapi.simulator.identity import HostIdentity
from mdm.pki import cms, scep_client
from mdm.pki.ca import new_rsa_key

# (method, absolute URL, body, request headers) -> (status, response headers, body)
Send = Callable[[str, str, bytes, dict[str, str]], tuple[int, dict[str, str], bytes]]
# (what was sent: "mdm/enroll", "mdm/scep", "mdm/checkin" or "mdm/command", HTTP status or 0 when
# the request failed, seconds taken, error text)
RequestObserver = Callable[[str, int, float, str], None]

CHECKIN_CONTENT_TYPE = "application/x-apple-aspen-mdm-checkin"
COMMAND_CONTENT_TYPE = "application/x-apple-aspen-mdm"
ENROLL_PATH = "/api/mdm/apple/enroll"
# A misbehaving server could answer every report with another command; a Mac's session ends
# somewhere, and so does ours.
MAX_COMMANDS_PER_POLL = 200
MAX_HISTORY = 500

# Model identifier -> marketing name, as DeviceInformation's ModelName reports it.
MODEL_NAMES = {
    "Mac14,2": "MacBook Air",
    "Mac15,6": "MacBook Pro",
    "MacBookPro16,1": "MacBook Pro",
    "MacBookPro18,3": "MacBook Pro",
}


class DeviceError(Exception):
    """The server refused a step, or answered something a Mac cannot use."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


# --- Who the Mac is ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class App:
    """One application, as InstalledApplicationList reports it."""

    identifier: str
    name: str
    short_version: str
    bundle_size: int


@dataclass(frozen=True)
class MacInfo:
    """The hardware and OS facts a Mac reports in Authenticate and DeviceInformation."""

    udid: str
    serial: str
    model: str = "MacBookPro18,3"
    model_name: str = "MacBook Pro"
    os_version: str = "14.5"
    build_version: str = "23F79"
    device_name: str = "Simulated Mac"
    hostname: str = "simulated-mac.local"
    wifi_mac: str = "3c:22:fb:00:00:01"
    ethernet_mac: str = "3c:22:fb:00:00:02"
    capacity_gb: float = 494.38
    available_gb: float = 212.03
    apps: tuple[App, ...] = ()

    @property
    def product_name(self) -> str:
        """On a Mac, ProductName is the model identifier (``MacBookPro18,3``)."""
        return self.model

    @classmethod
    def example(cls, udid: str | None = None, serial: str | None = None, **overrides: Any) -> MacInfo:
        """A Mac with random identifiers (tests)."""
        udid = udid or str(uuid.uuid4()).upper()
        serial = serial or "C02" + "".join(
            secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(7)
        )
        return cls(udid=udid, serial=serial, **overrides)

    @classmethod
    def from_identity(cls, identity: HostIdentity) -> MacInfo:
        """The Mac behind a simulated osquery host: the same hardware UUID (the MDM UDID), serial,
        names and applications, so the server sees one machine through both channels."""
        from agentapi.simulator import software

        rng = random.Random(f"fleet-sim-mac:{identity.seed}:{identity.index}")
        capacity = rng.choice((245.11, 494.38, 994.66, 1995.29))
        items = software.installed(identity.seed, identity.index, identity.template.key, identity.username)
        apps = tuple(
            App(
                identifier=item.package.ident,
                name=item.package.name,
                short_version=item.version,
                bundle_size=random.Random(f"{item.package.ident}:{item.version}").randint(2, 900) * 1_048_576,
            )
            for item in items
            if item.package.source == "apps" and item.package.ident
        )
        hw = identity.hardware.model
        return cls(
            udid=identity.uuid,
            serial=identity.serial,
            model=hw,
            model_name=MODEL_NAMES.get(hw, "Mac"),
            os_version=identity.os.version,
            build_version=identity.os.build,
            device_name=identity.computer_name,
            hostname=identity.hostname,
            wifi_mac=identity.mac,
            ethernet_mac="",
            capacity_gb=capacity,
            available_gb=round(capacity * rng.uniform(0.15, 0.8), 2),
            apps=apps,
        )


# --- The enrollment profile ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EnrollmentProfile:
    """What a Mac takes from the enrollment profile's SCEP and MDM payloads."""

    identifier: str
    uuid: str
    display_name: str
    organization: str
    scep_url: str
    challenge: str
    keysize: int
    common_name: str
    server_url: str
    checkin_url: str
    topic: str
    signer: x509.Certificate
    content: bytes = field(repr=False)


def _payload(payloads: list[Any], payload_type: str) -> dict[str, Any]:
    found = [p for p in payloads if isinstance(p, dict) and p.get("PayloadType") == payload_type]
    if len(found) != 1:
        raise DeviceError(f"the enrollment profile must hold exactly one {payload_type} payload")
    return found[0]


def _string(container: dict[str, Any], key: str) -> str:
    value = container.get(key)
    if not isinstance(value, str) or not value:
        raise DeviceError(f"the enrollment profile has no {key}")
    return value


def _subject_common_name(subject: Any) -> str:
    """The CN of a SCEP payload's ``Subject`` (``[[["O", "Org"]], [["CN", "Name"]]]``)."""
    if isinstance(subject, list):
        for rdn in subject:
            for pair in rdn if isinstance(rdn, list) else ():
                if isinstance(pair, list) and len(pair) == 2 and pair[0] == "CN" and isinstance(pair[1], str):
                    return pair[1]
    return "MDM Identity"


def parse_enrollment_profile(data: bytes) -> EnrollmentProfile:
    """Check the profile's CMS signature and read it as macOS's profile installer does."""
    try:
        content, signer = cms.verify_attached(data)
    except cms.SignatureError as exc:
        raise DeviceError(f"the enrollment profile's signature does not verify: {exc}") from None
    try:
        profile = plistlib.loads(content)
    except Exception:  # plistlib raises many types on garbage
        raise DeviceError("the enrollment profile is not a plist") from None
    if not isinstance(profile, dict) or profile.get("PayloadType") != "Configuration":
        raise DeviceError("the enrollment profile is not a Configuration profile")
    payloads = profile.get("PayloadContent")
    if not isinstance(payloads, list):
        raise DeviceError("the enrollment profile has no payloads")
    scep = _payload(payloads, "com.apple.security.scep")
    mdm = _payload(payloads, "com.apple.mdm")
    scep_content = scep.get("PayloadContent")
    if not isinstance(scep_content, dict):
        raise DeviceError("the SCEP payload has no content")
    if mdm.get("SignMessage") is not True:
        raise DeviceError("the MDM payload must set SignMessage: this Mac signs every message")
    if mdm.get("IdentityCertificateUUID") != scep.get("PayloadUUID"):
        raise DeviceError("the MDM payload's identity is not the SCEP payload")
    keysize = scep_content.get("Keysize", 2048)
    server_url = _string(mdm, "ServerURL")
    return EnrollmentProfile(
        identifier=_string(profile, "PayloadIdentifier"),
        uuid=_string(profile, "PayloadUUID"),
        display_name=str(profile.get("PayloadDisplayName") or profile["PayloadIdentifier"]),
        organization=str(profile.get("PayloadOrganization") or ""),
        scep_url=_string(scep_content, "URL"),
        challenge=_string(scep_content, "Challenge"),
        keysize=keysize if isinstance(keysize, int) and keysize in (2048, 3072, 4096) else 2048,
        common_name=_subject_common_name(scep_content.get("Subject")),
        server_url=server_url,
        checkin_url=str(mdm.get("CheckInURL") or server_url),
        topic=_string(mdm, "Topic"),
        signer=signer,
        content=content,
    )


# --- Installed profiles ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstalledProfile:
    """A configuration profile on the Mac (``profiles -C`` / the ``macos_profiles`` table)."""

    identifier: str
    uuid: str
    display_name: str
    organization: str
    description: str
    install_date: dt.datetime
    payloads: tuple[dict[str, Any], ...]
    signed: bool
    managed: bool  # installed through MDM (the enrollment profile itself is not "managed")
    removal_disallowed: bool = False

    @property
    def install_date_text(self) -> str:
        """As ``profiles`` and the macos_profiles table print it (Fleet parses this layout)."""
        return self.install_date.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S +0000")

    def as_table_row(self) -> dict[str, str]:
        """One ``macos_profiles`` row (the Mac Admins osquery extension's columns)."""
        return {
            "description": self.description,
            "display_name": self.display_name,
            "identifier": self.identifier,
            "install_date": self.install_date_text,
            "organization": self.organization,
            "type": "Configuration",
            "uuid": self.uuid,
            "verification_state": "verified" if self.signed else "unsigned",
        }

    def as_profile_list_item(self) -> dict[str, Any]:
        """One entry of a ProfileList answer."""
        item: dict[str, Any] = {
            "PayloadIdentifier": self.identifier,
            "PayloadUUID": self.uuid,
            "PayloadDisplayName": self.display_name,
            "PayloadVersion": 1,
            "PayloadRemovalDisallowed": self.removal_disallowed,
            "IsEncrypted": False,
            "IsManaged": self.managed,
            "HasRemovalPasscode": False,
            "PayloadContent": [dict(p) for p in self.payloads],
        }
        if self.organization:
            item["PayloadOrganization"] = self.organization
        if self.description:
            item["PayloadDescription"] = self.description
        if self.signed:
            item["SignerCertificates"] = []
        return item


# --- The Mac ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HandledCommand:
    """One command the Mac answered, for tests and the simulator's counters."""

    request_type: str
    command_uuid: str
    status: str


class SimulatedMac:
    """One Mac: its enrollment, identity, push token, lock state and installed profiles."""

    def __init__(
        self,
        info: MacInfo,
        send: Send,
        *,
        base_url: str,
        enroll_secret: str = "",
        not_now_rate: float = 0.0,
        reenroll_after_erase: bool = False,
        rng: random.Random | None = None,
        on_request: RequestObserver | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.info = info
        self.send = send
        self.base_url = base_url.rstrip("/")
        self.enroll_secret = enroll_secret
        self.not_now_rate = not_now_rate
        self.reenroll_after_erase = reenroll_after_erase
        self.rng = rng or random.Random(f"fleet-sim-mac:{info.udid}")
        self.on_request = on_request
        self.clock = clock
        self.profile: EnrollmentProfile | None = None
        self.ca_cert: x509.Certificate | None = None
        self.identity_key: rsa.RSAPrivateKey | None = None
        self.identity_cert: x509.Certificate | None = None
        self.push_token = b""
        self.push_magic = ""
        self.enrolled = False
        self.wiped = False
        self.lock_pin: str | None = None  # set while the Mac shows the lock screen
        self.locked_at: float | None = None
        self.pending_lock_pin: str | None = None  # a DeviceLock whose acknowledgement is being sent
        self.erase_pin: str | None = None
        self.history: deque[HandledCommand] = deque(maxlen=MAX_HISTORY)
        self.enrollments = 0
        self.answered = 0  # commands answered since start (``history`` keeps the last few)
        self._profiles: dict[str, InstalledProfile] = {}
        self._profiles_lock = threading.Lock()

    @property
    def udid(self) -> str:
        return self.info.udid

    @property
    def serial(self) -> str:
        return self.info.serial

    @property
    def locked(self) -> bool:
        return self.lock_pin is not None

    @property
    def topic(self) -> str:
        return self.profile.topic if self.profile else ""

    def __repr__(self) -> str:
        return f"SimulatedMac({self.udid}, enrolled={self.enrolled}, locked={self.locked})"

    # --- requests -------------------------------------------------------------------------------------

    def request(
        self, label: str, method: str, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        """One HTTP exchange through ``send``, reported to ``on_request``; transport errors propagate."""
        started = time.monotonic()
        try:
            status, _headers, reply = self.send(method, url, body, headers)
        except Exception as exc:
            self._observe(label, 0, time.monotonic() - started, f"{type(exc).__name__}: {exc}")
            raise
        error = "" if status < 400 else f"HTTP {status}: {reply[:200].decode(errors='replace').strip()}"
        self._observe(label, status, time.monotonic() - started, error)
        return status, reply

    def _observe(self, label: str, status: int, elapsed: float, error: str) -> None:
        if self.on_request is not None:
            self.on_request(label, status, elapsed, error)

    def sign(self, body: bytes) -> str:
        """The ``Mdm-Signature`` header for ``body``: base64 of a detached CMS signature."""
        if self.identity_cert is None or self.identity_key is None:
            raise DeviceError("this Mac has no identity yet: enroll first")
        return base64.b64encode(cms.sign_detached(body, self.identity_cert, self.identity_key)).decode()

    def put(
        self, url: str, body: bytes, *, content_type: str, signature: str | None = None
    ) -> tuple[int, bytes]:
        """A signed PUT to the check-in or command URL (``signature`` overrides, for tests)."""
        headers = {
            "Content-Type": content_type,
            "Mdm-Signature": signature if signature is not None else self.sign(body),
            "User-Agent": f"MDM/1.0 (macOS {self.info.os_version})",
        }
        label = "mdm/checkin" if content_type == CHECKIN_CONTENT_TYPE else "mdm/command"
        return self.request(label, "PUT", url, body, headers)

    def _require_profile(self) -> EnrollmentProfile:
        if self.profile is None:
            raise DeviceError("this Mac has no enrollment profile")
        return self.profile

    # --- enrollment -----------------------------------------------------------------------------------

    def enroll(self) -> SimulatedMac:
        """The whole enrollment: profile, SCEP, Authenticate, TokenUpdate."""
        self.fetch_enrollment_profile()
        self.scep_enroll()
        self.authenticate()
        self.token_update()
        return self

    def fetch_enrollment_profile(self, method: str = "GET") -> EnrollmentProfile:
        """Download the profile with the enroll secret, check its signature, and read it."""
        url = f"{self.base_url}{ENROLL_PATH}?{urlencode({'enroll_secret': self.enroll_secret})}"
        status, body = self.request(
            "mdm/enroll", method, url, b"", {"Accept": "application/x-apple-aspen-config"}
        )
        if status != 200:
            raise DeviceError(f"the enrollment profile download failed: HTTP {status}", status)
        self.profile = parse_enrollment_profile(body)
        return self.profile

    def _scep(self, operation: str, *, method: str = "GET", body: bytes = b"", **params: str) -> bytes:
        profile = self._require_profile()
        separator = "&" if "?" in profile.scep_url else "?"
        url = f"{profile.scep_url}{separator}{urlencode({'operation': operation, **params})}"
        headers = {"Content-Type": "application/x-pki-message"} if body else {}
        status, reply = self.request("mdm/scep", method, url, body, headers)
        if status != 200:
            raise DeviceError(f"SCEP {operation} failed: HTTP {status}", status)
        return reply

    def scep_enroll(self) -> x509.Certificate:
        """GetCACaps, GetCACert, then a PKCSReq with the profile's challenge: the Mac's identity."""
        profile = self._require_profile()
        caps = {line.strip() for line in self._scep("GetCACaps").decode(errors="replace").splitlines()}
        ca_der = self._scep("GetCACert")
        self.ca_cert = _ca_certificate(ca_der)
        cipher = "aes" if "AES" in caps else "des3"

        def post(message: bytes) -> bytes:
            if "POSTPKIOperation" in caps:
                return self._scep("PKIOperation", method="POST", body=message)
            return self._scep("PKIOperation", message=base64.b64encode(message).decode())

        try:
            key, certificate = scep_client.enroll(
                self.ca_cert,
                profile.challenge,
                profile.common_name,
                post,
                key=new_rsa_key(profile.keysize),
                cipher=cipher,
            )
        except scep_client.ScepClientError as exc:
            raise DeviceError(f"SCEP enrollment failed: {exc}") from None
        self.identity_key, self.identity_cert = key, certificate
        return certificate

    def checkin(self, message: dict[str, Any]) -> bytes:
        """PUT a check-in message to the check-in URL; its reply body (DeviceError unless 200)."""
        profile = self._require_profile()
        body = plistlib.dumps(message, fmt=plistlib.FMT_XML)
        status, reply = self.put(profile.checkin_url, body, content_type=CHECKIN_CONTENT_TYPE)
        if status != 200:
            raise DeviceError(f"{message.get('MessageType')} refused: HTTP {status}", status)
        return reply

    def authenticate(self) -> None:
        profile = self._require_profile()
        self.checkin(
            {
                "MessageType": "Authenticate",
                "UDID": self.udid,
                "SerialNumber": self.serial,
                "Model": self.info.model,
                "ModelName": self.info.model_name,
                "ProductName": self.info.product_name,
                "OSVersion": self.info.os_version,
                "BuildVersion": self.info.build_version,
                "DeviceName": self.info.device_name,
                "Topic": profile.topic,
            }
        )
        # The enrollment profile is now installed on the Mac (it is what `profiles` lists first).
        self._install(
            InstalledProfile(
                identifier=profile.identifier,
                uuid=profile.uuid,
                display_name=profile.display_name,
                organization=profile.organization,
                description="",
                install_date=self.now(),
                payloads=(
                    {"PayloadType": "com.apple.security.scep", "PayloadVersion": 1},
                    {"PayloadType": "com.apple.mdm", "PayloadVersion": 1},
                ),
                signed=True,
                managed=False,
            )
        )

    def token_update(self) -> None:
        """A new push token and PushMagic: from now on the server may wake the Mac."""
        profile = self._require_profile()
        self.push_token = secrets.token_bytes(32)
        self.push_magic = str(uuid.uuid4()).upper()
        self.checkin(
            {
                "MessageType": "TokenUpdate",
                "UDID": self.udid,
                "Topic": profile.topic,
                "Token": self.push_token,
                "PushMagic": self.push_magic,
                "AwaitingConfiguration": False,
            }
        )
        self.enrolled = True
        self.wiped = False
        self.enrollments += 1

    def check_out(self) -> None:
        """The MDM profile is removed: say so, and every profile it installed goes with it."""
        profile = self._require_profile()
        self.checkin({"MessageType": "CheckOut", "UDID": self.udid, "Topic": profile.topic})
        self.enrolled = False
        with self._profiles_lock:
            self._profiles.clear()

    # --- the command channel --------------------------------------------------------------------------

    def poll(self) -> int:
        """Idle, then answer each command the server hands back until it has none; the number of
        commands answered. A locked or wiped Mac says nothing."""
        if not self.enrolled or self.locked or self.wiped:
            return 0
        reply = self._report({"Status": "Idle", "UDID": self.udid})
        answered = 0
        while reply.strip() and answered < MAX_COMMANDS_PER_POLL:
            report, then = self.answer(reply)
            answered += 1
            reply = self._report(report)
            if then is not None:
                self._after(then)
                break  # the Mac restarts, locks or erases: the rest of this session is lost
        if self.wiped and self.reenroll_after_erase:
            self.reenroll()
        return answered

    def _report(self, report: dict[str, Any]) -> bytes:
        profile = self._require_profile()
        body = plistlib.dumps(report, fmt=plistlib.FMT_XML)
        status, reply = self.put(profile.server_url, body, content_type=COMMAND_CONTENT_TYPE)
        if status != 200:
            raise DeviceError(f"the {report.get('Status')} report was refused: HTTP {status}", status)
        return reply

    def answer(self, body: bytes) -> tuple[dict[str, Any], str | None]:
        """The report for one command plist, and what the Mac does once it was sent
        (``lock``, ``erase``, ``restart`` or ``None``)."""
        result = apple_commands.answer(self, body)
        self.answered += 1
        self.history.append(
            HandledCommand(
                result.request_type, str(result.report.get("CommandUUID", "")), result.report["Status"]
            )
        )
        return result.report, result.then

    def wants_not_now(self, request_type: str) -> bool:
        """Whether the Mac is busy for this command now (Apple: it then asks again at the next Idle)."""
        return (
            self.not_now_rate > 0
            and request_type not in apple_commands.NEVER_DEFERRED
            and self.rng.random() < self.not_now_rate
        )

    def _after(self, then: str) -> None:
        """What happens once a command's acknowledgement was sent."""
        if then == "lock" and self.pending_lock_pin is not None:
            self.lock(self.pending_lock_pin)
        elif then == "erase":
            self.wipe()

    # --- lock and erase ---------------------------------------------------------------------------------

    def lock(self, pin: str) -> None:
        """The Mac shows the lock screen until ``pin`` is typed (DeviceLock, once acknowledged)."""
        self.lock_pin, self.pending_lock_pin = pin, None
        self.locked_at = self.clock()

    def unlock(self, pin: str) -> bool:
        """Someone types ``pin`` on the lock screen; True when it was the right one."""
        if self.lock_pin is None or not secrets.compare_digest(pin, self.lock_pin):
            return False
        self.lock_pin = None
        self.locked_at = None
        return True

    def wipe(self) -> None:
        """EraseDevice: everything on the Mac is gone, its MDM identity and profiles too."""
        self.wiped = True
        self.enrolled = False
        self.lock_pin = None
        self.identity_key = self.identity_cert = None
        self.push_token, self.push_magic = b"", ""
        with self._profiles_lock:
            self._profiles.clear()

    def reenroll(self) -> None:
        """After an erase, a Mac set up again enrolls from scratch (a new identity and token)."""
        self.enroll()

    # --- profiles -------------------------------------------------------------------------------------

    def now(self) -> dt.datetime:
        """The Mac's clock, to the second (profile install dates)."""
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC).replace(microsecond=0)

    def _install(self, profile: InstalledProfile) -> None:
        with self._profiles_lock:
            self._profiles.pop(profile.identifier, None)  # a replaced profile is the newest one
            self._profiles[profile.identifier] = profile

    def install_profile(self, profile: InstalledProfile) -> None:
        """Install (or replace, same identifier) a profile."""
        self._install(profile)

    def remove_profile(self, identifier: str) -> InstalledProfile | None:
        with self._profiles_lock:
            return self._profiles.pop(identifier, None)

    def profile_named(self, identifier: str) -> InstalledProfile | None:
        with self._profiles_lock:
            return self._profiles.get(identifier)

    def installed_profiles(self) -> list[InstalledProfile]:
        """A snapshot of the installed profiles, in install order (safe from any thread)."""
        with self._profiles_lock:
            return list(self._profiles.values())


def _ca_certificate(data: bytes) -> x509.Certificate:
    """GetCACert's answer: one DER certificate, or a certs-only PKCS#7 (CA and RA) whose CA is
    the one that signs others."""
    try:
        return x509.load_der_x509_certificate(data)
    except ValueError:
        pass
    try:
        certificates = pkcs7.load_der_pkcs7_certificates(data)
    except ValueError:
        raise DeviceError("GetCACert returned neither a certificate nor a PKCS#7 bundle") from None
    for certificate in certificates:
        try:
            if certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                return certificate
        except x509.ExtensionNotFound:
            continue
    if not certificates:
        raise DeviceError("GetCACert returned an empty bundle")
    return certificates[0]
