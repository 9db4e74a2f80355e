"""Building MDM commands: the ``{CommandUUID, Command: {RequestType, ...}}`` plists Apple defines
(apple/device-management ``mdm/commands``), and checking an admin's raw command before it is sent."""

from __future__ import annotations

import plistlib
import secrets
from typing import Any

# DeviceInformation queries asked at enrollment and on request (a subset every macOS answers).
DEVICE_INFORMATION_QUERIES = [
    "DeviceName",
    "OSVersion",
    "BuildVersion",
    "ModelName",
    "Model",
    "ProductName",
    "SerialNumber",
    "UDID",
    "DeviceCapacity",
    "AvailableDeviceCapacity",
    "WiFiMAC",
    "EthernetMAC",
    "IsSupervised",
    "IsActivationLockEnabled",
]

# The commands the console and REST offer by name; anything else goes through a raw command.
NAMED = (
    "InstallProfile",
    "RemoveProfile",
    "DeviceInformation",
    "InstalledApplicationList",
    "DeviceLock",
    "EraseDevice",
    "RestartDevice",
    "ProfileList",
)
MAX_RAW_COMMAND = 1024 * 1024


class CommandError(ValueError):
    """A command that cannot be sent (a malformed raw command, a bad argument)."""


def encode(command_uuid: str, request_type: str, fields: dict[str, Any] | None = None) -> bytes:
    """The XML plist sent to the device."""
    body = {"CommandUUID": command_uuid, "Command": {"RequestType": request_type, **(fields or {})}}
    return plistlib.dumps(body, fmt=plistlib.FMT_XML, sort_keys=True)


def new_pin() -> str:
    """A 6-digit PIN for DeviceLock and EraseDevice (Find My-style Macs ask for it to unlock)."""
    return f"{secrets.randbelow(10**6):06d}"


def install_profile(mobileconfig: bytes) -> dict[str, Any]:
    return {"Payload": mobileconfig}


def remove_profile(identifier: str) -> dict[str, Any]:
    return {"Identifier": identifier}


def device_information() -> dict[str, Any]:
    return {"Queries": list(DEVICE_INFORMATION_QUERIES)}


def installed_application_list() -> dict[str, Any]:
    return {"ManagedAppsOnly": False}


def device_lock(pin: str, message: str = "", phone: str = "") -> dict[str, Any]:
    fields: dict[str, Any] = {"PIN": pin}
    if message:
        fields["Message"] = message[:512]
    if phone:
        fields["PhoneNumber"] = phone[:64]
    return fields


def erase_device(pin: str) -> dict[str, Any]:
    return {"PIN": pin, "ObliterationBehavior": "Default"}


def fields_for(request_type: str, **kwargs: Any) -> dict[str, Any]:
    """The fields of a named command without arguments (DeviceInformation, RestartDevice, ...)."""
    builders = {
        "DeviceInformation": device_information,
        "InstalledApplicationList": installed_application_list,
        "RestartDevice": dict,
        "ProfileList": dict,
    }
    if request_type not in builders:
        raise CommandError(f"{request_type} needs arguments; use its own endpoint or a raw command.")
    return builders[request_type](**kwargs)


def parse_raw(data: bytes | str) -> tuple[str, dict[str, Any], str | None]:
    """An admin's raw command: ``(request_type, fields, command_uuid or None)``.

    Accepts a full command plist (``CommandUUID`` optional, ``Command`` with ``RequestType``) or
    just the ``Command`` dictionary. Checked, never trusted: size, shape, and types.
    """
    raw = data.encode() if isinstance(data, str) else data
    if not raw.strip():
        raise CommandError("The command is empty.")
    if len(raw) > MAX_RAW_COMMAND:
        raise CommandError(f"The command is larger than {MAX_RAW_COMMAND} bytes.")
    try:
        body = plistlib.loads(raw)
    except Exception as exc:  # plistlib raises many types on garbage: all mean "not a plist"
        raise CommandError(f"The command is not a valid plist: {exc}") from None
    if not isinstance(body, dict):
        raise CommandError("The command must be a dictionary.")
    command = body.get("Command", body)
    if not isinstance(command, dict):
        raise CommandError("Command must be a dictionary.")
    request_type = command.get("RequestType")
    if not isinstance(request_type, str) or not request_type.strip() or len(request_type) > 64:
        raise CommandError("Command.RequestType must be a non-empty string.")
    command_uuid = body.get("CommandUUID") if "Command" in body else None
    if command_uuid is not None and (not isinstance(command_uuid, str) or not 0 < len(command_uuid) <= 64):
        raise CommandError("CommandUUID must be a string of at most 64 characters.")
    fields = {key: value for key, value in command.items() if key != "RequestType"}
    return request_type.strip(), fields, command_uuid
