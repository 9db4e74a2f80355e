"""How the simulated Mac answers MDM commands: the report fields macOS sends for each one.

Why apart from :mod:`agentapi.simulator.apple`: the device's session (enrollment, signing, the
poll loop) and the content of its answers change for different reasons; the answers are plain
functions of the command and the Mac's state, easy to read against Apple's documentation
(apple/device-management ``mdm/commands``). Every refusal uses Apple's report shapes: ``Error`` with
an ``ErrorChain`` of ErrorCode/ErrorDomain/LocalizedDescription/USEnglishDescription, and
``CommandFormatError`` for a command the Mac cannot read.
"""

from __future__ import annotations

import plistlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mdm.pki import cms

if TYPE_CHECKING:
    from agentapi.simulator.apple import InstalledProfile, SimulatedMac

# Apple acts on these at once; a Mac never answers NotNow to them.
NEVER_DEFERRED = frozenset({"DeviceLock", "EraseDevice"})
MDM_ERROR_DOMAIN = "MCMDMErrorDomain"
UNKNOWN_REQUEST_TYPE = 12021  # Apple: "Unknown command" / unsupported RequestType
PROFILE_INSTALL_FAILED = ("MCInstallationErrorDomain", 4001)
PROFILE_MALFORMED = ("MCProfileErrorDomain", 1000)
PROFILE_NOT_FOUND = ("MDMClientError", 89)  # what macOS answers (Fleet matches "MDMClientError (89)")
PROFILE_NOT_REMOVABLE = (MDM_ERROR_DOMAIN, 12005)
_PIN = re.compile(r"\d{6}")


@dataclass(frozen=True)
class Answer:
    """The report to PUT, and what the Mac does once it is sent (``lock``, ``erase``, ``restart``,
    ``stop`` — the session ends — or ``None``)."""

    request_type: str
    report: dict[str, Any]
    then: str | None = None


class FormatError(Exception):
    """The command lacks a field it needs, or has one of the wrong type (CommandFormatError)."""


class Refused(Exception):
    """The Mac understood the command and cannot do it (Error, with this ErrorChain)."""

    def __init__(self, chain: list[dict[str, Any]]) -> None:
        super().__init__(chain[0]["USEnglishDescription"] if chain else "refused")
        self.chain = chain


def error(domain: str, code: int, text: str) -> dict[str, Any]:
    """One ErrorChain entry."""
    return {
        "ErrorCode": code,
        "ErrorDomain": domain,
        "LocalizedDescription": text,
        "USEnglishDescription": text,
    }


# --- the dispatcher ---------------------------------------------------------------------------------


def answer(mac: SimulatedMac, body: bytes) -> Answer:
    """Read one command plist and answer it as macOS does."""
    base = {"UDID": mac.udid}
    try:
        plist = plistlib.loads(body)
    except Exception:  # plistlib raises many types on garbage
        return Answer("", {**base, "Status": "CommandFormatError", "CommandUUID": ""}, then="stop")
    command_uuid = plist.get("CommandUUID") if isinstance(plist, dict) else None
    command = plist.get("Command") if isinstance(plist, dict) else None
    if not isinstance(command_uuid, str) or not command_uuid:
        return Answer("", {**base, "Status": "CommandFormatError", "CommandUUID": ""}, then="stop")
    base["CommandUUID"] = command_uuid
    request_type = command.get("RequestType") if isinstance(command, dict) else None
    if not isinstance(request_type, str) or not request_type:
        return Answer("", {**base, "Status": "CommandFormatError"})
    if mac.wants_not_now(request_type):
        return Answer(request_type, {**base, "Status": "NotNow"})
    handler = HANDLERS.get(request_type)
    if handler is None:
        chain = [error(MDM_ERROR_DOMAIN, UNKNOWN_REQUEST_TYPE, f"Unknown command: {request_type[:64]}")]
        return Answer(request_type, {**base, "Status": "Error", "ErrorChain": chain})
    try:
        fields, then = handler(mac, command)
    except FormatError:
        return Answer(request_type, {**base, "Status": "CommandFormatError"})
    except Refused as exc:
        return Answer(request_type, {**base, "Status": "Error", "ErrorChain": exc.chain})
    return Answer(request_type, {**base, "Status": "Acknowledged", **fields}, then)


# --- profiles -----------------------------------------------------------------------------------------


def read_profile(payload: bytes, mac: SimulatedMac) -> InstalledProfile:
    """A .mobileconfig as the profile installer reads it (signed ones are unwrapped and checked)."""
    from agentapi.simulator.apple import InstalledProfile

    def malformed(reason: str, name: str = "") -> Refused:
        outer_domain, outer_code = PROFILE_INSTALL_FAILED
        domain, code = PROFILE_MALFORMED
        title = (
            f"The profile “{name}” could not be installed." if name else "The profile could not be installed."
        )
        return Refused([error(outer_domain, outer_code, title), error(domain, code, reason)])

    content, signed = payload, False
    if not payload.lstrip()[:6].startswith((b"<", b"bplist")):
        try:
            content, _signer = cms.verify_attached(payload)
        except cms.SignatureError as exc:
            raise malformed(f"The profile is neither a plist nor a valid signed profile: {exc}") from None
        signed = True
    try:
        profile = plistlib.loads(content)
    except Exception:
        raise malformed("The profile is not a valid property list.") from None
    if not isinstance(profile, dict):
        raise malformed("The profile is not a dictionary.")
    identifier = profile.get("PayloadIdentifier")
    name = str(profile.get("PayloadDisplayName") or identifier or "")
    if profile.get("PayloadType") != "Configuration":
        raise malformed("The profile's PayloadType must be Configuration.", name)
    if not isinstance(identifier, str) or not identifier.strip():
        raise malformed("The profile has no PayloadIdentifier.", name)
    if not isinstance(profile.get("PayloadUUID"), str) or not profile["PayloadUUID"]:
        raise malformed("The profile has no PayloadUUID.", name)
    if profile.get("PayloadVersion", 1) != 1:
        raise malformed("The profile's PayloadVersion must be 1.", name)
    contents = profile.get("PayloadContent", [])
    if not isinstance(contents, list):
        raise malformed("PayloadContent must be an array of payloads.", name)
    payloads = []
    for item in contents:
        if not isinstance(item, dict) or not all(
            isinstance(item.get(key), str) and item[key]
            for key in ("PayloadType", "PayloadIdentifier", "PayloadUUID")
        ):
            raise malformed("A payload lacks PayloadType, PayloadIdentifier or PayloadUUID.", name)
        if item["PayloadType"] == "com.apple.mdm":
            raise malformed("A Mac can be enrolled in only one MDM.", name)
        payloads.append(
            {
                "PayloadType": item["PayloadType"],
                "PayloadIdentifier": item["PayloadIdentifier"],
                "PayloadUUID": item["PayloadUUID"],
                "PayloadVersion": item.get("PayloadVersion", 1),
                **(
                    {"PayloadDisplayName": item["PayloadDisplayName"]}
                    if item.get("PayloadDisplayName")
                    else {}
                ),
            }
        )
    return InstalledProfile(
        identifier=identifier.strip(),
        uuid=profile["PayloadUUID"],
        display_name=name,
        organization=str(profile.get("PayloadOrganization") or ""),
        description=str(profile.get("PayloadDescription") or ""),
        install_date=mac.now(),
        payloads=tuple(payloads),
        signed=signed,
        managed=True,
        removal_disallowed=profile.get("PayloadRemovalDisallowed") is True,
    )


def _install_profile(mac: SimulatedMac, command: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    payload = command.get("Payload")
    if not isinstance(payload, bytes) or not payload:
        raise FormatError("Payload must be data")
    mac.install_profile(read_profile(payload, mac))
    return {}, None


def _remove_profile(mac: SimulatedMac, command: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    identifier = command.get("Identifier")
    if not isinstance(identifier, str) or not identifier:
        raise FormatError("Identifier must be a string")
    installed = mac.profile_named(identifier)
    if installed is None:
        domain, code = PROFILE_NOT_FOUND
        raise Refused([error(domain, code, f"Profile with identifier '{identifier}' not found.")])
    if not installed.managed:
        domain, code = PROFILE_NOT_REMOVABLE
        raise Refused([error(domain, code, "The MDM enrollment profile cannot be removed by a command.")])
    mac.remove_profile(identifier)
    return {}, None


def _profile_list(mac: SimulatedMac, command: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    managed_only = command.get("ManagedOnly") is True
    profiles = [p for p in mac.installed_profiles() if p.managed or not managed_only]
    return {"ProfileList": [p.as_profile_list_item() for p in profiles]}, None


# --- device facts -----------------------------------------------------------------------------------


def device_facts(mac: SimulatedMac) -> dict[str, Any]:
    """Everything this Mac can tell in DeviceInformation."""
    info = mac.info
    facts: dict[str, Any] = {
        "UDID": info.udid,
        "DeviceName": info.device_name,
        "OSVersion": info.os_version,
        "BuildVersion": info.build_version,
        "ModelName": info.model_name,
        "Model": info.model,
        "ProductName": info.product_name,
        "SerialNumber": info.serial,
        "DeviceCapacity": info.capacity_gb,
        "AvailableDeviceCapacity": info.available_gb,
        "WiFiMAC": info.wifi_mac,
        "IsSupervised": False,
        "IsActivationLockEnabled": False,
        "IsDeviceLocatorServiceEnabled": False,
        "IsDoNotDisturbInEffect": False,
        "IsMDMLostModeEnabled": False,
        "IsCloudBackupEnabled": False,
        "SystemIntegrityProtectionEnabled": True,
        "HostName": info.hostname,
        "LocalHostName": info.device_name,
        "IsAppleSilicon": info.model.startswith("Mac1") or info.model.startswith("MacBookPro18"),
    }
    if info.ethernet_mac:
        facts["EthernetMAC"] = info.ethernet_mac
    return facts


def _device_information(mac: SimulatedMac, command: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    queries = command.get("Queries")
    facts = device_facts(mac)
    if queries is None:
        return {"QueryResponses": facts}, None
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        raise FormatError("Queries must be an array of strings")
    # A query the Mac does not know is left out of the answer, as macOS does.
    return {"QueryResponses": {q: facts[q] for q in queries if q in facts}}, None


def _installed_application_list(
    mac: SimulatedMac, command: dict[str, Any]
) -> tuple[dict[str, Any], str | None]:
    identifiers = command.get("Identifiers")
    if identifiers is not None and (
        not isinstance(identifiers, list) or not all(isinstance(i, str) for i in identifiers)
    ):
        raise FormatError("Identifiers must be an array of strings")
    if command.get("ManagedAppsOnly") is True:
        return {"InstalledApplicationList": []}, None  # nothing here was installed through MDM
    wanted = set(identifiers) if identifiers else None
    apps = [
        {
            "Identifier": app.identifier,
            "Name": app.name,
            "ShortVersion": app.short_version,
            "Version": app.short_version,
            "BundleSize": app.bundle_size,
            "Installing": False,
        }
        for app in mac.info.apps
        if wanted is None or app.identifier in wanted
    ]
    return {"InstalledApplicationList": apps}, None


# --- lock, erase, restart -----------------------------------------------------------------------------


def _device_lock(mac: SimulatedMac, command: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    pin = command.get("PIN")
    if not isinstance(pin, str) or not _PIN.fullmatch(pin):
        raise FormatError("a Mac needs a 6-digit PIN to lock")  # macOS refuses a lock it could not undo
    mac.pending_lock_pin = pin  # the Mac locks once its acknowledgement is sent
    return {}, "lock"


def _erase_device(mac: SimulatedMac, command: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    pin = command.get("PIN")
    if pin is not None and (not isinstance(pin, str) or not _PIN.fullmatch(pin)):
        raise FormatError("PIN must be 6 digits")
    mac.erase_pin = pin
    return {}, "erase"


def _restart_device(mac: SimulatedMac, command: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    return {}, "restart"


Handler = Callable[["SimulatedMac", dict[str, Any]], tuple[dict[str, Any], "str | None"]]
HANDLERS: dict[str, Handler] = {
    "InstallProfile": _install_profile,
    "RemoveProfile": _remove_profile,
    "ProfileList": _profile_list,
    "DeviceInformation": _device_information,
    "InstalledApplicationList": _installed_application_list,
    "DeviceLock": _device_lock,
    "EraseDevice": _erase_device,
    "RestartDevice": _restart_device,
}
