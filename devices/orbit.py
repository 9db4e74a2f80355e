"""``POST /api/fleet/orbit/device_token``: orbit sets (or rotates) its host's Fleet Desktop token.

An orbit endpoint like the others (``agentapi.endpoint``: POST only, bounded JSON, errors as
``{"error": ...}``), authenticated by the orbit node key in the body. The answer is ``{}``, as
Fleet's; a token held by another host is a 409, an unusable one a 400.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from agentapi.endpoint import Credential, agent_endpoint, invalid_orbit_key, orbit_key_digest
from agentapi.wire import AgentError
from devices import tokens
from hosts.models import Host


def _orbit_host_id(body: dict[str, Any]) -> int:
    # The database, not the cache: a re-enrolled or deleted host's old key must stop at once.
    digest = orbit_key_digest(body)
    host_id = Host.objects.filter(orbit_node_key_hash=digest).values_list("id", flat=True).first()
    if host_id is None:
        raise invalid_orbit_key()
    return host_id


@agent_endpoint("MAX_REQUEST_SIZE", Credential.ORBIT_NODE_KEY)
def device_token(request: HttpRequest, body: dict[str, Any]) -> dict[str, Any]:
    host_id = _orbit_host_id(body)
    try:
        tokens.set_token(host_id, body.get("device_auth_token"))
    except tokens.TokenRefused as exc:
        raise AgentError(str(exc)) from None
    except tokens.TokenConflict as exc:
        raise AgentError(str(exc), status=409) from None
    return {}
