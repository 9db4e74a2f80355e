"""Checking a task's settings against its plugin's ``SETTINGS_SCHEMA``; the standard library only.

The server imports this same code (through ``taskagent.plugins.validate_settings``) to refuse a
bad task when it is saved, and the agent runs it again before each task starts, so both ends
agree on what a valid task is. The original had no schema at all (task-server.md §1).

A schema is a small JSON-schema-like dict::

    {"properties": {
        "url": {"type": "string", "required": True, "format": "url"},
        "timeout": {"type": "number", "min": 0.1, "max": 60, "default": 10},
        "api_key": {"type": "string", "required": True, "secret": True},
    }}

Property keys: ``type`` (string, integer, number, boolean, object: a string-to-string map),
``required``, ``default``, ``secret`` (never shown back in the UI or logs), ``min``/``max``
(numbers), ``min_length``/``max_length`` (strings), ``enum``, ``pattern`` (a full-match regular
expression), ``format`` (``url``: http or https with a host; ``host``: a name or address that
cannot be taken for a command-line option) and ``description``. Settings not in the schema are
errors, so a typo is not silently ignored.
"""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import urlsplit

HOST_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,252}")


class SettingsError(ValueError):
    """Invalid settings; ``errors`` maps each bad field (or ``plugin``) to a message."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def _check(name: str, spec: dict[str, Any], value: Any) -> tuple[Any, str | None]:
    kind = spec.get("type", "string")
    if kind == "string":
        if not isinstance(value, str):
            return None, "must be a string"
        if len(value) < spec.get("min_length", 0):
            return None, "must not be empty" if spec.get("min_length") == 1 else (
                f"must be at least {spec['min_length']} characters")
        if "max_length" in spec and len(value) > spec["max_length"]:
            return None, f"must be at most {spec['max_length']} characters"
        if "pattern" in spec and not re.fullmatch(spec["pattern"], value):
            return None, spec.get("pattern_message", "has an invalid format")
        fmt = spec.get("format")
        if fmt == "url":
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                return None, "must be an http:// or https:// URL with a host"
        elif fmt == "host" and not HOST_RE.fullmatch(value):
            return None, "must be a host name or an IP address"
    elif kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            return None, "must be an integer"
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return None, "must be a number"
    elif kind == "boolean":
        if not isinstance(value, bool):
            return None, "must be true or false"
    elif kind == "object":
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            return None, "must be an object of strings"
        return dict(value), None
    else:  # a schema bug, not a user error
        raise TypeError(f"{name}: unknown schema type {kind!r}")
    if kind in ("integer", "number"):
        if "min" in spec and value < spec["min"]:
            return None, f"must be at least {spec['min']}"
        if "max" in spec and value > spec["max"]:
            return None, f"must be at most {spec['max']}"
    if "enum" in spec and value not in spec["enum"]:
        return None, "must be one of " + ", ".join(str(v) for v in spec["enum"])
    return value, None


def validate(schema: dict[str, Any], settings: Any) -> dict[str, Any]:
    """The settings with defaults filled in, or ``SettingsError`` listing every bad field."""
    if not isinstance(settings, dict):
        raise SettingsError({"settings": "must be an object"})
    properties: dict[str, dict[str, Any]] = schema.get("properties", {})
    errors: dict[str, str] = {}
    clean: dict[str, Any] = {}
    for key in settings:
        if key not in properties:
            errors[str(key)] = "unknown setting"
    for name, spec in properties.items():
        if name not in settings or settings[name] is None:
            if spec.get("required"):
                errors[name] = "is required"
            elif "default" in spec:
                default = spec["default"]
                clean[name] = dict(default) if isinstance(default, dict) else default
            continue
        value, error = _check(name, spec, settings[name])
        if error:
            errors[name] = error
        else:
            clean[name] = value
    if errors:
        raise SettingsError(errors)
    return clean


def secret_fields(schema: dict[str, Any]) -> list[str]:
    return [name for name, spec in schema.get("properties", {}).items() if spec.get("secret")]
