"""Reading agent requests and writing agent responses, as osquery expects them.

osquery ignores HTTP status codes and decides from the JSON body alone
(osquery-protocol.md §1, §10): success is a JSON object without an ``error`` key, and
``"node_invalid": true`` (a JSON boolean) makes it drop its key and re-enroll. Every error here
therefore carries an ``error`` message, and only authentication failures carry ``node_invalid``.
Bodies are bounded before they are read, and gzip bodies are bounded after inflation too.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from typing import Any

from django.http import HttpRequest, HttpResponse

_CHUNK = 64 * 1024
# A ``\uD800``-``\uDFFF`` escape: the only way a decoded body can hold a lone surrogate.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class AgentError(Exception):
    """An error to report to the agent as ``{"error": message[, "node_invalid": true]}``.

    ``close`` asks for the connection to be closed after the reply: the request's body was not
    read to its end, so what is left of it must not be taken for the next request.
    """

    def __init__(
        self, message: str, status: int = 400, node_invalid: bool = False, close: bool = False
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.node_invalid = node_invalid
        self.close = close


def json_response(body: dict[str, Any], status: int = 200) -> HttpResponse:
    return HttpResponse(
        json.dumps(body, separators=(",", ":")), status=status, content_type="application/json"
    )


def error_response(error: AgentError) -> HttpResponse:
    body: dict[str, Any] = {"error": error.message}
    if error.node_invalid:
        body["node_invalid"] = True
    response = json_response(body, status=error.status)
    if error.close:
        # granian, gunicorn and daphne turn this into a closed connection after the reply, so a client
        # told "keep-alive" is never cut off mid-way through sending the rest of its body.
        response["Connection"] = "close"
    return response


# What is left of a refused body is read and dropped up to this much, so the client, still
# sending, gets the reply: a server that closes with a body unread resets the connection, and the
# client loses the reply. Past it, the connection is closed instead.
DRAIN_LIMIT = 16 * 1024 * 1024


def _too_large(limit: int, unread: bool = False) -> AgentError:
    return AgentError(f"request body exceeds the limit of {limit} bytes", status=413, close=unread)


def _drain(stream: Any, budget: int) -> int:
    """Read and drop the rest of the body, at most ``budget`` bytes; how many were read."""
    read = 0
    while read < budget:
        chunk = stream.read(min(_CHUNK, budget - read))
        if not chunk:
            break
        read += len(chunk)
    return read


def _chunked(meta: dict[str, Any]) -> bool:
    """A body without ``Content-Length`` that the server ends (``wsgi.input_terminated``)."""
    return not meta.get("CONTENT_LENGTH") and bool(meta.get("wsgi.input_terminated"))


def drain_body(request: HttpRequest) -> bool:
    """Read and drop a body refused before it was read, up to ``DRAIN_LIMIT``; whether it ended
    (if not, the reply must close the connection)."""
    meta = request.META
    if _chunked(meta):
        return _drain(meta["wsgi.input"], DRAIN_LIMIT) < DRAIN_LIMIT
    try:
        declared = int(meta.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return False
    return declared <= DRAIN_LIMIT and _drain(request, declared) == declared


def read_body(request: HttpRequest, limit: int) -> bytes:
    """The raw (inflated) body, refusing more than ``limit`` bytes before or after gzip.

    A chunked body (no ``Content-Length``) is read from the server's stream when the server
    ends it at the body's end (``wsgi.input_terminated``, as granian and gunicorn do): Django
    would read it as empty.
    """
    meta = request.META
    try:
        declared = int(meta.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise AgentError("invalid Content-Length") from None
    if declared > limit:
        raise _too_large(limit, unread=not drain_body(request))
    raw = (meta["wsgi.input"] if _chunked(meta) else request).read(limit + 1)
    if len(raw) > limit:  # chunked only: a declared length was checked above
        raise _too_large(limit, unread=not drain_body(request))
    encoding = meta.get("HTTP_CONTENT_ENCODING", "").strip().lower()
    if encoding in ("gzip", "x-gzip") or raw[:2] == b"\x1f\x8b":
        return _gunzip(raw, limit)
    if encoding not in ("", "identity"):
        raise AgentError(f"unsupported Content-Encoding {encoding!r}", status=415)
    return raw


def _gunzip(raw: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(raw, limit + 1)
    except zlib.error:
        raise AgentError("body is not valid gzip") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise _too_large(limit)
    if not inflater.eof:
        raise AgentError("gzip body is truncated")
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:32]} is out of range")
    return value


def _replace_lone_surrogates(value: Any) -> Any:
    """Lone ``\\uD800``-style escapes become U+FFFD, as Go's encoding/json (Fleet) does."""
    if isinstance(value, str):
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    if isinstance(value, list):
        return [_replace_lone_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_replace_lone_surrogates(k): _replace_lone_surrogates(v) for k, v in value.items()}
    return value


def parse_object(raw: bytes) -> dict[str, Any]:
    """Parse a JSON object; anything else is a clear 400.

    Invalid UTF-8 (osquery can report raw bytes from the system) becomes U+FFFD instead of
    failing the whole batch, which osquery would then resend forever; Go's encoding/json,
    which Fleet uses, accepts such bodies too.
    """
    if not raw.strip():
        raise AgentError("empty request body; expected a JSON object")
    try:
        body = json.loads(
            raw.decode("utf-8-sig", errors="replace"),
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
        if _SURROGATE_ESCAPE.search(raw):
            body = _replace_lone_surrogates(body)
    except ValueError as exc:
        raise AgentError(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise AgentError("request body is not valid JSON: nested too deeply") from None
    if not isinstance(body, dict):
        raise AgentError("request body must be a JSON object")
    return body


def count_containers(raw: bytes) -> int:
    """An upper bound on the objects and arrays a JSON body holds, without parsing it.

    Brackets inside strings count too, so the bound is safe; it costs two passes in C.
    """
    return raw.count(b"{") + raw.count(b"[")


def check_structure(raw: bytes, max_containers: int) -> None:
    """Refuse a body whose parsed form would be out of proportion to its size.

    A few bytes of ``[{},{},...]`` become a hundred bytes of Python objects each, so a body
    within the size limit could still cost hundreds of megabytes; osquery's own bodies hold a
    few objects per row.
    """
    if count_containers(raw) > max_containers:
        raise AgentError(f"request body holds more than {max_containers} JSON objects and arrays", status=413)


def _string_field(name: bytes) -> re.Pattern[bytes]:
    return re.compile(rb'(?<!\\)"' + name + rb'"\s*:\s*"((?:[^"\\]|\\.){0,1024})"')


_BODY_FIELDS = {
    name: _string_field(name.encode()) for name in ("node_key", "enroll_secret", "orbit_node_key")
}


def peek_string_field(raw: bytes, name: str) -> str | None:
    """The first ``"name": "value"`` pair's value in a raw JSON body, found without parsing it.

    Used to check a credential before paying for a large body's parse; the parsed body's own
    field is checked again afterwards, so a pair found somewhere else only decides the gate.
    """
    match = _BODY_FIELDS[name].search(raw)
    if match is None:
        return None
    try:
        value = json.loads(b'"' + match.group(1) + b'"')
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def header_node_key(request: HttpRequest) -> str | None:
    """The key of ``Authorization: NodeKey <key>`` (osquery 5.23+), if the request has one."""
    scheme, _, value = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() == "nodekey" and value.strip():
        return value.strip()
    return None


def node_key_from(request: HttpRequest, body: dict[str, Any]) -> str:
    """The node key from the body, or from ``Authorization: NodeKey`` (osquery 5.23+)."""
    key = body.get("node_key")
    if isinstance(key, str) and key:
        return key
    header = header_node_key(request)
    if header:
        return header
    if key is not None and not isinstance(key, str):
        raise AgentError("node_key must be a string", status=401, node_invalid=True)
    raise AgentError("missing node key", status=401, node_invalid=True)


def client_ip(request: HttpRequest) -> str:
    """The host's public address, by the headers Fleet trusts, in Fleet's order."""
    meta = request.META
    for header in ("HTTP_TRUE_CLIENT_IP", "HTTP_X_REAL_IP"):
        value = meta.get(header, "").strip()
        if value:
            return value[:45]
    forwarded = meta.get("HTTP_X_FORWARDED_FOR", "")
    if forwarded:
        return forwarded.split(",")[0].strip()[:45]
    return meta.get("REMOTE_ADDR", "")[:45]
