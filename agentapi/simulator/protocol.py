"""How osquery reads a server's response, and its retry arithmetic (osquery-protocol.md §1, §3-§7).

Why a separate module: this is the part a server implementer gets wrong most often, so the
simulator must reproduce it literally and tests pin it down. The HTTP status is ignored; an
empty body is success; a body that is not a JSON object is failure; ``"node_invalid": true``
(the JSON boolean only) drops the node key; *any* ``error`` key, even ``null``, is failure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

REQUEST_TIMEOUT = 16.0  # seconds per request (tls.cpp)
ENROLL_MAX_ATTEMPTS = 12  # --tls_enroll_max_attempts
ENROLL_MAX_WAIT = 600.0  # --tls_enroll_max_interval
REQUEST_ATTEMPTS = 3  # config, distributed read/write: --*_tls_max_attempts
ACCELERATED_INTERVAL = 5.0  # distributed poll while ``accelerate`` is in effect
CONFIG_ACCELERATED_REFRESH = 300.0  # config refresh after a failed fetch
LOG_BACKOFF_MAX = 3600.0  # --logger_tls_backoff_max
MAX_CONFIG_SIZE = 1 << 20  # a larger config is rejected and the schedule wiped


@dataclass(frozen=True)
class Outcome:
    """osquery's verdict on one response."""

    ok: bool
    body: dict[str, Any] = field(default_factory=dict)
    node_invalid: bool = False
    reason: str = ""


def read_response(raw: bytes) -> Outcome:
    """Classify a config/read/write/log response body exactly as osquery does."""
    if not raw.strip():
        return Outcome(ok=True)
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return Outcome(ok=False, reason="response is not JSON")
    if not isinstance(body, dict):
        return Outcome(ok=False, reason="response is not a JSON object")
    if body.get("node_invalid") is True:
        error = body.get("error")
        return Outcome(
            ok=False,
            body=body,
            node_invalid=True,
            reason=f"Invalid node key: {error}" if error else "Invalid node key",
        )
    if "error" in body:
        return Outcome(ok=False, body=body, reason=f"server error: {body['error']!r}")
    return Outcome(ok=True, body=body)


def read_enroll_response(raw: bytes) -> tuple[str | None, str]:
    """The node key from an enroll response (``node_key``, else ``id``), or None and why not.

    ``error`` and ``node_invalid`` are ignored at enrollment: only a non-empty string key counts.
    """
    try:
        body = json.loads(raw) if raw.strip() else {}
    except (UnicodeDecodeError, ValueError):
        return None, "enroll response is not JSON"
    if not isinstance(body, dict):
        return None, "enroll response is not a JSON object"
    key = body.get("node_key", body.get("id"))
    if isinstance(key, str) and key:
        return key, ""
    error = body.get("error")
    return None, str(error) if error else "enroll response has no node_key"


def enroll_wait(attempt: int) -> float:
    """Seconds osquery waits after failed enroll attempt ``attempt`` (1-based): n², at most 600."""
    return min(float(attempt * attempt), ENROLL_MAX_WAIT)


def request_wait(attempt: int) -> float:
    """Seconds between attempts of config/read/write: 1 s, then 4 s."""
    return float(attempt * attempt)


def log_backoff(period: float, failures: int) -> float:
    """Seconds before the next log send after ``failures`` failures in a row: period × n², capped."""
    return min(period * failures * failures, LOG_BACKOFF_MAX)


def as_int(value: Any) -> int | None:
    """A flag value from the config's ``options``: a number or numeric string (bools excluded)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None
