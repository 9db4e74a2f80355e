"""Turning loosely typed YAML values into model values, with one clear message when they are wrong.

YAML is generous: ``interval: "3600"`` is a string, ``name: 2021`` a number, ``version: 2.9`` a
float. These helpers accept what a person plausibly meant and refuse the rest with
:class:`Invalid`, whose message names the key.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from django.core.exceptions import ValidationError

from queries.models import LoggingMode
from queries.services import QUERY_PLATFORMS

MAX_INT = 2**31 - 1
T = TypeVar("T")

# Fleet's spec files use osquery names (``darwin``) and, in older files, display names (``macOS``).
PLATFORM_NAMES = {
    "darwin": "darwin",
    "macos": "darwin",
    "mac": "darwin",
    "osx": "darwin",
    "linux": "linux",
    "windows": "windows",
    "win10": "windows",
    "chrome": "chrome",
    "chromeos": "chrome",
    "freebsd": "freebsd",
}
LOGGING_MODES = tuple(LoggingMode.values)


class Invalid(ValueError):
    """A spec value that cannot be used; the message is shown to the user as is."""


def text(spec: Mapping[str, Any], key: str, *, required: bool = False, max_length: int | None = None) -> str:
    """A string field (numbers are taken as their text); ``None``/absent is ``""`` unless required."""
    value = spec.get(key)
    if value is None or value == "":
        if required:
            raise Invalid(f"{key} is required")
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise Invalid(f"{key} must be a string, not {type(value).__name__}")
    result = str(value).strip()
    if required and not result:
        raise Invalid(f"{key} is required")
    if max_length is not None and len(result) > max_length:
        raise Invalid(f"{key} is longer than {max_length} characters")
    return result


def boolean(spec: Mapping[str, Any], key: str, default: bool | None = False) -> bool | None:
    value = spec.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise Invalid(f"{key} must be true or false, not {value!r}")


def integer(
    spec: Mapping[str, Any],
    key: str,
    *,
    default: int | None = 0,
    minimum: int = 0,
    maximum: int = MAX_INT,
    required: bool = False,
) -> int | None:
    """A whole number; osquery packs often write them as strings (``"interval": "3600"``)."""
    value = spec.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise Invalid(f"{key} is required")
        return default
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif (isinstance(value, float) and value.is_integer()) or (
        isinstance(value, str) and re.fullmatch(r"\s*\+?\d+\s*", value)
    ):
        number = int(value)
    if number is None:
        raise Invalid(f"{key} must be a whole number, not {value!r}")
    if not minimum <= number <= maximum:
        raise Invalid(f"{key} must be between {minimum} and {maximum}, not {number}")
    return number


def choice(spec: Mapping[str, Any], key: str, choices: Iterable[str], default: str) -> str:
    value = text(spec, key)
    if not value:
        return default
    allowed = tuple(choices)
    if value.lower() not in allowed:
        raise Invalid(f"{key} must be one of {', '.join(allowed)}, not {value!r}")
    return value.lower()


def _platform_items(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [part.strip() for item in value for part in item.split(",") if part.strip()]
    raise Invalid(f"{key} must be a comma-separated string or a list of platform names")


def platforms(spec: Mapping[str, Any], allowed: Iterable[str] = QUERY_PLATFORMS) -> str:
    """The osquery platform list as stored (``"darwin,linux"``); ``""`` means every platform.

    ``platform`` (osquery names) wins over ``platforms`` (display names such as ``macOS``), which
    Fleet's query library files carry side by side.
    """
    key = "platform" if spec.get("platform") not in (None, "", []) else "platforms"
    allowed = tuple(allowed)
    result: list[str] = []
    for item in _platform_items(spec.get(key), key):
        name = PLATFORM_NAMES.get(item.lower(), item.lower())
        if name not in allowed:
            raise Invalid(f"{key}: unknown platform {item!r} (use {', '.join(allowed)})")
        if name not in result:
            result.append(name)
    joined = ",".join(result)
    if len(joined) > 255:
        raise Invalid(f"{key} is longer than 255 characters")
    return joined


def label_platform(spec: Mapping[str, Any]) -> str:
    """A label's platforms as a comma list (display names mapped); ``hosts.labels`` checks them."""
    key = "platform" if spec.get("platform") not in (None, "", []) else "platforms"
    items = _platform_items(spec.get(key), key)
    return ",".join(PLATFORM_NAMES.get(item.lower(), item.lower()) for item in items)


def checked(call: Callable[[], T], key: str) -> T:
    """Run one of the shared validators (``queries.services``...), its error named after ``key``."""
    try:
        return call()
    except ValidationError as exc:
        raise Invalid(f"{key}: {' '.join(exc.messages)}") from None


def identifiers(spec: Mapping[str, Any], key: str) -> list[str]:
    """A list of names or host identifiers (numbers taken as text), without duplicates."""
    value = spec.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise Invalid(f"{key} must be a list")
    result: list[str] = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise Invalid(f"{key} must be a list of names, found {item!r}")
        name = str(item).strip()
        if name and name not in result:
            result.append(name)
    return result


def json_problem(value: Any, path: str = "") -> str | None:
    """Why ``value`` would not survive a JSON round trip unchanged (None when it would).

    YAML can produce dates, sets and non-string keys; stored as JSON they would come back
    different, so a second apply would never be "unchanged".
    """
    if value is None or isinstance(value, str | bool | int):
        return None
    if isinstance(value, float):
        finite = value == value and value not in (float("inf"), float("-inf"))
        return None if finite else f"{path}: {value} is not a JSON number"
    if isinstance(value, list):
        for index, item in enumerate(value):
            problem = json_problem(item, f"{path}[{index}]")
            if problem:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path}: key {key!r} must be a string"
            problem = json_problem(item, f"{path}.{key}" if path else key)
            if problem:
                return problem
        return None
    return f"{path}: {type(value).__name__} values are not allowed (quote it)"
