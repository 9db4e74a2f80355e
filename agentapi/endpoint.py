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
from django.db import DatabaseError, DataError, IntegrityError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from agentapi import errorlog
from agentapi.wire import (
    AgentError,
    check_structure,
    drain_body,
    error_response,
    header_node_key,
    json_response,
    node_key_from,
    parse_object,
    peek_string_field,
    read_body,
)
from hosts import nodekeys
from hosts.enrollment import EnrollmentError, find_secret
from hosts.models import Host
from hosts.nodekeys import HostState

logger = logging.getLogger(__name__)
Handler = Callable[[HttpRequest, dict[str, Any]], "dict[str, Any] | HttpResponse"]
# Bodies up to this size are parsed before their credential is checked (it costs less than the
# check); larger ones must show a valid credential first, found in the raw bytes.
PREAUTH_BODY_SIZE = 64 * 1024
# Bench mode only (settings.BENCH_MODE): "hit" or "miss", whether the node-key lookup needed the
# database, so scripts/bench.py measures the miss rate the server really had.
NODE_KEY_CACHE_HEADER = "X-Fleet-Node-Key-Cache"


class Credential:
    """What an endpoint's caller must present; checked before a large body is parsed."""

    NODE_KEY = "node_key"  # osquery: body field or Authorization: NodeKey header
    ENROLL_SECRET = "enroll_secret"  # osquery and orbit enrolment
    ORBIT_NODE_KEY = "orbit_node_key"


def orbit_key_digest(body: dict[str, Any]) -> str:
    """The digest of the body's ``orbit_node_key`` (hosts are found by it), or a ``node_invalid``
    error when the key is missing: every orbit endpoint authenticates this way."""
    key = body.get(Credential.ORBIT_NODE_KEY)
    if not isinstance(key, str) or not key:
        raise AgentError("missing orbit node key", status=401, node_invalid=True)
    return nodekeys.hash_node_key(key)


def invalid_orbit_key() -> AgentError:
    """What orbit gets for a key no host holds: it re-enrolls."""
    return AgentError("invalid orbit node key", status=401, node_invalid=True)


def _preauthenticate(request: HttpRequest, credential: str, raw: bytes | None) -> None:
    """Refuse, before parsing, a request whose credential is missing or wrong.

    With ``raw`` None the body is still unread, and only a NodeKey header can be checked.
    A host found here is kept on the request, so ``authenticate`` does not look it up twice.
    """
    if credential == Credential.NODE_KEY:
        key = header_node_key(request) if raw is None else peek_string_field(raw, "node_key")
        if key is None:
            if raw is not None:
                raise AgentError("missing node key", status=401, node_invalid=True)
            return
        state = nodekeys.lookup(key)
        if state is None:
            # An unread body is drained so the client, still sending, gets the reply (a close with
            # a body unread resets the connection; osquery would never learn to re-enroll).
            unread = raw is None and not drain_body(request)
            raise AgentError("invalid node key", status=401, node_invalid=True, close=unread)
        request._agent_host = (key, state)  # type: ignore[attr-defined]
        return
    if raw is None:
        return
    value = peek_string_field(raw, credential)
    if credential == Credential.ENROLL_SECRET:
        try:
            find_secret(value)  # by digest, compared in constant time
        except EnrollmentError as exc:
            raise AgentError(str(exc), status=401, node_invalid=True) from None
    elif value is None or not Host.objects.filter(orbit_node_key_hash=nodekeys.hash_node_key(value)).exists():
        raise invalid_orbit_key()


def agent_endpoint(
    limit_setting: str, credential: str = Credential.NODE_KEY
) -> Callable[[Handler], Callable[[HttpRequest], HttpResponse]]:
    """Wrap a handler ``(request, body) -> dict | HttpResponse`` with the agent API's rules.

    The cost of a request is bounded before it is authenticated: a NodeKey header is checked
    before the body is read, a large body's credential before it is parsed, and every body's
    size (after gzip) and number of objects and arrays before it is parsed.
    """

    def decorate(handler: Handler) -> Callable[[HttpRequest], HttpResponse]:
        @csrf_exempt
        @functools.wraps(handler)
        def view(request: HttpRequest) -> HttpResponse:
            if request.method != "POST":
                response = error_response(AgentError("the agent API only accepts POST", status=405))
                response["Allow"] = "POST"
                return response
            misses = nodekeys.MISSES
            try:
                _preauthenticate(request, credential, None)
                raw = read_body(request, settings.OSQUERY[limit_setting])
                if len(raw) > PREAUTH_BODY_SIZE and not hasattr(request, "_agent_host"):
                    _preauthenticate(request, credential, raw)
                check_structure(raw, settings.OSQUERY["MAX_JSON_CONTAINERS"])
                body = parse_object(raw)
                del raw
                result = handler(request, body)
            except AgentError as exc:
                errorlog.record(request.path, exc.status, exc.message)
                return error_response(exc)
            except RecursionError:
                # A body just shallow enough to parse can still be too deep to store or re-encode.
                errorlog.record(request.path, 400, "nested too deeply")
                return error_response(AgentError("request body is nested too deeply"))
            except (DataError, IntegrityError) as exc:
                # A value the checks let through but the database refuses: the same request would
                # fail again, so it is the agent's error, not a reason to retry forever.
                errorlog.record(request.path, 400, f"database refused a value ({exc.__class__.__name__})")
                return error_response(AgentError("a value in the request is invalid or out of range"))
            except DatabaseError as exc:
                # Not node_invalid: an outage must not make every agent re-enroll at once.
                logger.error("database error on %s: %s", request.path, exc.__class__.__name__)
                return error_response(AgentError("database unavailable, retry later", status=503))
            except Exception:
                logger.exception("unexpected error on %s", request.path)
                return error_response(AgentError("internal server error", status=500))
            response = result if isinstance(result, HttpResponse) else json_response(result)
            if settings.BENCH_MODE:
                response[NODE_KEY_CACHE_HEADER] = "miss" if misses != nodekeys.MISSES else "hit"
            return response

        return view

    return decorate


def authenticate(request: HttpRequest, body: dict[str, Any]) -> HostState:
    """The host behind the request's node key, or a ``node_invalid`` error for osquery."""
    key = node_key_from(request, body)
    checked = getattr(request, "_agent_host", None)
    state = checked[1] if checked is not None and checked[0] == key else nodekeys.lookup(key)
    if state is None:
        raise AgentError("invalid node key", status=401, node_invalid=True)
    return state
