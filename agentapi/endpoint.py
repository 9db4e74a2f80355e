"""The wrapper every agent endpoint shares: POST only, bounded JSON in, osquery-shaped errors out.

Whatever goes wrong, the agent gets a JSON body with an ``error`` key: an empty 500 would count
as *success* to osquery, which then deletes the log lines it sent (osquery-protocol.md §10).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from agentapi.wire import AgentError, error_response, json_response, node_key_from, parse_object, read_body
from hosts import nodekeys
from hosts.nodekeys import HostState

logger = logging.getLogger(__name__)
Handler = Callable[[HttpRequest, dict[str, Any]], "dict[str, Any] | HttpResponse"]


def agent_endpoint(limit_setting: str) -> Callable[[Handler], Callable[[HttpRequest], HttpResponse]]:
    """Wrap a handler ``(request, body) -> dict | HttpResponse`` with the agent API's rules."""

    def decorate(handler: Handler) -> Callable[[HttpRequest], HttpResponse]:
        @csrf_exempt
        @functools.wraps(handler)
        def view(request: HttpRequest) -> HttpResponse:
            if request.method != "POST":
                response = error_response(AgentError("the agent API only accepts POST", status=405))
                response["Allow"] = "POST"
                return response
            try:
                body = parse_object(read_body(request, settings.OSQUERY[limit_setting]))
                result = handler(request, body)
            except AgentError as exc:
                return error_response(exc)
            except RecursionError:
                # A body just shallow enough to parse can still be too deep to store or re-encode.
                return error_response(AgentError("request body is nested too deeply"))
            except DatabaseError:
                # Not node_invalid: an outage must not make every agent re-enroll at once.
                logger.exception("database error on %s", request.path)
                return error_response(AgentError("database unavailable, retry later", status=500))
            except Exception:
                logger.exception("unexpected error on %s", request.path)
                return error_response(AgentError("internal server error", status=500))
            return result if isinstance(result, HttpResponse) else json_response(result)

        return view

    return decorate


def authenticate(request: HttpRequest, body: dict[str, Any]) -> HostState:
    """The host behind the request's node key, or a ``node_invalid`` error for osquery."""
    state = nodekeys.lookup(node_key_from(request, body))
    if state is None:
        raise AgentError("invalid node key", status=401, node_invalid=True)
    return state
