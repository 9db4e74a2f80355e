"""orbit's side of scripts, as Fleet serves it: ``/api/fleet/orbit/scripts/request`` and ``/result``.

orbit learns the pending execution ids from its config (``notifications.pending_script_execution_ids``),
asks for each script in turn, runs it, and posts the result. Both calls carry the orbit node key;
an execution id that is not the caller's host's is "not found", so ids do not leak between hosts.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils import timezone

from agentapi.endpoint import Credential, agent_endpoint, invalid_orbit_key, orbit_key_digest
from agentapi.wire import AgentError
from hosts.models import Host
from hostscripts import services
from hostscripts.models import ScriptKind, ScriptRun

_INT_BOUND = 2**31 - 1


def _run_for(body: dict[str, Any]) -> ScriptRun:
    digest = orbit_key_digest(body)
    execution_id = body.get("execution_id")
    if not isinstance(execution_id, str) or not execution_id or len(execution_id) > 36:
        raise AgentError("execution_id must be a non-empty string")
    run = ScriptRun.objects.filter(execution_id=execution_id, host__orbit_node_key_hash=digest).first()
    if run is None:
        if not Host.objects.filter(orbit_node_key_hash=digest).exists():
            raise invalid_orbit_key()
        raise AgentError("script execution not found", status=404)
    return run


def _int(body: dict[str, Any], name: str, default: int = 0) -> int:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not -_INT_BOUND <= value <= _INT_BOUND:
        raise AgentError(f"{name} must be an integer")
    return value


@agent_endpoint("MAX_REQUEST_SIZE", Credential.ORBIT_NODE_KEY)
def script_request(request: HttpRequest, body: dict[str, Any]) -> dict[str, Any]:
    """The script to run, in Fleet's host script result shape (``exit_code`` null while pending)."""
    run = _run_for(body)
    if run.cancelled:
        raise AgentError("script execution was cancelled", status=404)
    if run.kind == ScriptKind.SCRIPT and run.exit_code is None and services.scripts_disabled():
        raise AgentError("scripts are disabled on this server", status=403)
    if run.sent_at is None and run.exit_code is None:
        ScriptRun.objects.filter(pk=run.pk, sent_at__isnull=True).update(sent_at=timezone.now())
    return {
        "host_id": run.host_id,
        "execution_id": run.execution_id,
        "script_contents": run.contents,
        "script_id": run.script_id,
        "output": run.output,
        "runtime": run.runtime,
        "exit_code": run.exit_code,
        "timeout": run.timeout,
    }


@agent_endpoint("MAX_REQUEST_SIZE", Credential.ORBIT_NODE_KEY)
def script_result(request: HttpRequest, body: dict[str, Any]) -> dict[str, Any]:
    """Store output (its last 10,000 characters), runtime and exit code; a repeat is a no-op."""
    run = _run_for(body)
    output = body.get("output", "")
    if output is None:
        output = ""
    if not isinstance(output, str):
        raise AgentError("output must be a string")
    if "exit_code" not in body:
        raise AgentError("exit_code is required")
    exit_code = _int(body, "exit_code")
    runtime = _int(body, "runtime")
    _int(body, "timeout")  # sent by orbit; checked, not stored (the run keeps the timeout it was sent)
    services.store_result(run, output=output.replace("\x00", ""), runtime=runtime, exit_code=exit_code)
    return {}
