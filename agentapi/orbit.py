"""Orbit (fleetd) endpoints: enrolment and the orbit config (fleet-reference §10)."""

from __future__ import annotations

from typing import Any

from django.db.models import Subquery
from django.http import HttpRequest

from agentapi.endpoint import Credential, agent_endpoint, invalid_orbit_key, orbit_key_digest
from agentapi.wire import AgentError
from hosts.agent_options import default_agent_options
from hosts.enrollment import EnrollmentError, InvalidEnrollment, enroll_orbit
from hosts.models import FleetSettings, Host
from hostscripts import services as scripts


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
    digest = orbit_key_digest(body)
    # Looked up in the database, not the cache: a re-enrolled or deleted host's old key must stop
    # working at once. One query brings the host, its team's options, and the global row's
    # options and script switch; a second lists the host's pending scripts.
    global_row = FleetSettings.objects.filter(pk=1)
    host = (
        Host.objects.filter(orbit_node_key_hash=digest)
        .annotate(
            global_options=Subquery(global_row.values("agent_options")[:1]),
            scripts_off=Subquery(global_row.values("scripts_disabled")[:1]),
        )
        .values("id", "team__agent_options", "global_options", "scripts_off")
        .first()
    )
    if host is None:
        raise invalid_orbit_key()
    options = host["team__agent_options"] or host["global_options"] or default_agent_options()
    notifications: dict[str, Any] = {}
    pending = scripts.pending_execution_ids(host["id"], include_scripts=not host["scripts_off"])
    if pending:
        notifications["pending_script_execution_ids"] = pending
    return {
        "script_execution_timeout": scripts.timeout_for(options),
        "command_line_startup_flags": options.get("command_line_flags") or {},
        "extensions": options.get("extensions") or {},
        "nudge_config": None,
        "notifications": notifications,
        "update_channels": options.get("update_channels") or {},
    }
