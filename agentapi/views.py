"""osquery's remote TLS API, as Fleet serves it (fleet-reference §1, osquery-protocol.md).

Views stay thin: they authenticate the node and hand the work to the domain apps (``hosts``
for enrolment and vitals, ``packs`` for config and logs).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from django.http import HttpRequest, HttpResponse

from agentapi.endpoint import Credential, agent_endpoint, authenticate
from agentapi.wire import AgentError, client_ip
from campaigns import services as campaigns
from campaigns.handout import paced
from campaigns.store import get_store
from fleet.numbers import parse_id
from hosts import details, intervals, labels, seen
from hosts.enrollment import EnrollmentError, InvalidEnrollment, enroll_osquery
from hosts.ingest import ingest_details
from packs import config as osquery_config
from packs import destinations, logs

logger = logging.getLogger(__name__)
# Fleet's value while a host's hostname or platform is unknown (a new host). Not for a pending live
# query, as in Fleet: the query is in that very answer, and accelerating every targeted host made
# each live query cost two more check-ins per host (the load report's mix ran at twice the reads).
ACCELERATE_SECONDS = 10


def _string_map_of_maps(value: Any, field: str) -> dict[str, dict[str, str]]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise AgentError(f"{field} must be an object of objects")
    return {
        table: {str(k): v if isinstance(v, str) else str(v) for k, v in row.items()}
        for table, row in value.items()
    }


@agent_endpoint("MAX_ENROLL_SIZE", Credential.ENROLL_SECRET)
def enroll(request: HttpRequest, body: dict[str, Any]) -> dict[str, Any]:
    identifier = body.get("host_identifier", "")
    if not isinstance(identifier, str):
        raise AgentError("host_identifier must be a string")
    host_details = _string_map_of_maps(body.get("host_details"), "host_details")
    try:
        enrolled = enroll_osquery(
            body.get("enroll_secret"), identifier.strip(), host_details, client_ip(request)
        )
    except EnrollmentError as exc:
        raise AgentError(str(exc), status=401, node_invalid=True) from None
    except InvalidEnrollment as exc:
        raise AgentError(f"enroll failed: {exc}") from None
    return {"node_key": enrolled.node_key}


@agent_endpoint("MAX_REQUEST_SIZE")
def config(request: HttpRequest, body: dict[str, Any]) -> HttpResponse:
    state = authenticate(request, body)
    seen.mark_seen(state.id, state.online_interval)
    rendered = osquery_config.rendered_for(state)
    intervals.record_served(state, rendered.intervals)  # Fleet keeps the intervals it serves
    return HttpResponse(rendered.body, content_type="application/json")


@agent_endpoint("MAX_REQUEST_SIZE")
def distributed_read(request: HttpRequest, body: dict[str, Any]) -> dict[str, Any]:
    state = authenticate(request, body)
    seen.mark_seen(state.id, state.online_interval)
    queries: dict[str, str] = {}
    discovery: dict[str, str] = {}
    if state.refetch_requested or state.details_due_at <= time.time():
        for name, query in details.queries_for(state.platform, state.platform_like).items():
            queries[name] = query.sql
            discovery[name] = query.discovery
    labels.add_due_queries(state, queries, discovery)  # fleet_label_query_<id>, from the cache
    live = paced(get_store().queries_for_host(state.id))  # at most LIVE_QUERY_HANDOUT_RATE a second
    for campaign_id, sql in live.items():
        name = f"{campaigns.QUERY_PREFIX}{campaign_id}"
        queries[name] = sql
        discovery[name] = details.ALWAYS_TRUE
    response: dict[str, Any] = {"queries": queries, "discovery": discovery}
    if state.needs_identity:
        response["accelerate"] = ACCELERATE_SECONDS
    return response


def _cell(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def flat_row(row: dict[str, Any]) -> dict[str, str]:
    """A result row as osquery sends it: column names to strings.

    Fleet reads rows as string maps; an agent that sends numbers or nested objects gets them
    as their JSON text, so no row reaching a label, a vital or a campaign's JSON column is
    nested (MariaDB refuses JSON more than 32 levels deep).
    """
    return {str(k): _cell(v) for k, v in row.items()}


def _normalise_results(body: dict[str, Any]) -> tuple[dict[str, list], dict[str, int], dict[str, str]]:
    """Fleet's shim: ``""`` or malformed rows become ``[]``; string statuses become numbers."""
    queries, statuses, messages = (
        body.get("queries") or {},
        body.get("statuses") or {},
        body.get("messages") or {},
    )
    if not isinstance(queries, dict) or not isinstance(statuses, dict) or not isinstance(messages, dict):
        raise AgentError("queries, statuses and messages must be JSON objects")
    rows = {
        str(name): [flat_row(r) for r in value if isinstance(r, dict)] if isinstance(value, list) else []
        for name, value in queries.items()
    }
    codes: dict[str, int] = {}
    for name, status in statuses.items():
        try:
            codes[str(name)] = int(status)
        except (TypeError, ValueError):
            codes[str(name)] = 1
    texts = {str(k): v if isinstance(v, str) else str(v) for k, v in messages.items()}
    return rows, codes, texts


def _record_live_answers(
    state: Any, rows: dict[str, list], statuses: dict[str, int], messages: dict[str, str]
) -> None:
    """Hand live-query answers to their campaigns (a failed query may come in ``statuses`` only)."""
    for name in rows.keys() | statuses.keys():
        campaign_id = name.removeprefix(campaigns.QUERY_PREFIX)
        if name.startswith(campaigns.QUERY_PREFIX) and parse_id(campaign_id) is not None:
            campaigns.record_answer(
                int(campaign_id), state.id, state.hostname, rows.get(name, []),
                statuses.get(name, 0), messages.get(name, ""),
            )  # fmt: skip


@agent_endpoint("MAX_WRITE_SIZE")
def distributed_write(request: HttpRequest, body: dict[str, Any]) -> dict[str, Any]:
    state = authenticate(request, body)
    seen.mark_seen(state.id, state.online_interval)
    rows, statuses, messages = _normalise_results(body)
    _record_live_answers(state, rows, statuses, messages)
    detail_rows: dict[str, list] = {}
    for name, result in rows.items():
        if name.startswith(details.DETAIL_PREFIX):
            if statuses.get(name, 0) == 0:  # failed detail queries are skipped, as in Fleet
                detail_rows[name.removeprefix(details.DETAIL_PREFIX)] = result
            elif "no such table" not in messages.get(name, ""):
                logger.info("host %s: detail query %s failed: %s", state.id, name, messages.get(name, ""))
        # Unknown or late names (old campaigns, other servers' queries) are accepted and ignored.
    labels_changed = labels.ingest_results(state, rows, statuses, messages)
    if detail_rows:
        ingest_details(state.id, detail_rows, client_ip(request))  # re-caches the state, labels included
    elif labels_changed:
        labels.refresh_state(state.id)
    return {}


@agent_endpoint("MAX_LOG_SIZE")
def log(request: HttpRequest, body: dict[str, Any]) -> dict[str, Any]:
    state = authenticate(request, body)
    seen.mark_seen(state.id, state.online_interval)
    log_type = body.get("log_type")
    if log_type not in ("result", "status"):
        raise AgentError(f"unknown log_type {log_type!r}; expected 'result' or 'status'")
    data = body.get("data")
    if data is None:
        data = []
    if not isinstance(data, list):
        raise AgentError("data must be a JSON array of log lines")
    lines = [line for line in data if isinstance(line, dict)]
    if len(lines) != len(data):
        # Refusing would make osquery re-send the same batch forever; keep what is usable.
        logger.warning("host %s sent %d log lines that are not objects", state.id, len(data) - len(lines))
    if log_type == "result":
        lines = logs.ingest_results(state, lines)  # query reports; drops lines with automations off
    try:
        destinations.deliver(log_type, lines)
    except destinations.DeliveryError as exc:
        # An `error` makes osquery keep its buffer and retry (Fleet answers 413 here).
        raise AgentError(f"{exc}; logs will be retried", status=413) from None
    return {}
