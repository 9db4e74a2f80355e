"""Orbit (fleetd) endpoints: enrolment and the orbit config (fleet-reference §10)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from agentapi.endpoint import Credential, agent_endpoint
from agentapi.wire import AgentError
from hosts import nodekeys
from hosts.enrollment import EnrollmentError, InvalidEnrollment, enroll_orbit
from hosts.models import FleetSettings, Host

DEFAULT_SCRIPT_TIMEOUT = 300


def _str(body: dict[str, Any], field: str) -> str:
    value = body.get(field, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise AgentError(f"{field} must be a string")
    return value.strip()


@agent_endpoint("MAX_ENROLL_SIZE", Credential.ENROLL_SECRET)
def orbit_enroll(request: HttpRequest, body: dict[str, Any]) -> dict[str, Any]:
    fields = (
        "hardware_uuid",
        "hardware_serial",
        "hostname",
        "platform",
        "osquery_identifier",
        "computer_name",
        "hardware_model",
    )
    values = {f: _str(body, f) for f in fields}
    try:
        _, orbit_key = enroll_orbit(body.get("enroll_secret"), **values)
    except EnrollmentError as exc:
        raise AgentError(str(exc), status=401, node_invalid=True) from None
    except InvalidEnrollment as exc:
        raise AgentError(f"orbit enroll failed: {exc}") from None
    return {"orbit_node_key": orbit_key}


@agent_endpoint("MAX_REQUEST_SIZE", Credential.ORBIT_NODE_KEY)
def orbit_config(request: HttpRequest, body: dict[str, Any]) -> dict[str, Any]:
    key = body.get("orbit_node_key")
    if not isinstance(key, str) or not key:
        raise AgentError("missing orbit node key", status=401, node_invalid=True)
    # Looked up in the database, not the cache: a re-enrolled or deleted host's old key must stop
    # working at once (the config needs this row anyway, so it costs no extra query).
    host = (
        Host.objects.filter(orbit_node_key_hash=nodekeys.hash_node_key(key))
        .values("team__agent_options")
        .first()
    )
    if host is None:
        raise AgentError("invalid orbit node key", status=401, node_invalid=True)
    options = host["team__agent_options"] or FleetSettings.load().agent_options
    return {
        "script_execution_timeout": options.get("script_execution_timeout", DEFAULT_SCRIPT_TIMEOUT),
        "command_line_startup_flags": options.get("command_line_flags") or {},
        "extensions": options.get("extensions") or {},
        "nudge_config": None,
        "notifications": {},
        "update_channels": options.get("update_channels") or {},
    }
