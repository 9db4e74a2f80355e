"""Write-only values: secret task settings and destination headers, sealed at rest.

A secret value is stored as ``{"sealed": "v1:..."}`` (``fleet.sealing``, AES-GCM, the purpose
naming the field, so a sealed value cannot be moved to another field). It leaves the server
only towards an agent (:func:`open_settings`); REST and the console show :data:`MARKER` in its
place, and a write that sends the marker back, or leaves the field out, keeps what is stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from fleet.sealing import seal, unseal

MARKER = "<secret>"
_SEALED = "sealed"


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {_SEALED} and isinstance(value[_SEALED], str)


def seal_value(value: Any, purpose: str) -> dict[str, str]:
    return {_SEALED: seal(json.dumps(value).encode(), purpose)}


def unseal_value(value: Any, purpose: str) -> Any:
    """The clear value of a sealed one (a value that is not sealed is returned as is)."""
    if not is_sealed(value):
        return value
    return json.loads(unseal(value[_SEALED], purpose))


def _purpose(kind: str, name: str) -> str:
    return f"taskserver.{kind}:{name}"


def setting_purpose(name: str) -> str:
    return _purpose("setting", name)


def header_purpose(name: str) -> str:
    return _purpose("header", name.lower())


def merge(
    incoming: dict[str, Any] | None, stored: dict[str, Any], secret_names: Iterable[str]
) -> dict[str, Any]:
    """The clear values to validate and save: ``incoming`` (``None``: unchanged), with the stored
    secret where it sends the marker or leaves a secret out. ``stored`` is in clear."""
    if incoming is None:
        return dict(stored)
    merged = dict(incoming)
    for name in set(secret_names):
        if name in stored and merged.get(name, MARKER) == MARKER:
            merged[name] = stored[name]
        elif merged.get(name) == MARKER:
            merged.pop(name)  # a marker with nothing behind it is no value at all
    return merged


def seal_settings(values: dict[str, Any], secret_names: Iterable[str]) -> dict[str, Any]:
    names = set(secret_names)
    return {k: seal_value(v, setting_purpose(k)) if k in names else v for k, v in values.items()}


def open_settings(stored: dict[str, Any]) -> dict[str, Any]:
    """Every value in clear (for an agent, never for REST or the console)."""
    return {k: unseal_value(v, setting_purpose(k)) for k, v in (stored or {}).items()}


def masked(stored: dict[str, Any]) -> dict[str, Any]:
    """What people see: sealed values replaced by the marker."""
    return {k: MARKER if is_sealed(v) else v for k, v in (stored or {}).items()}
