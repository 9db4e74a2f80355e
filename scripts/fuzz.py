"""Fuzz the agent API as osquery sees it: every reply must be a JSON object osquery can act on.

What it answers: can anything an agent (or something pretending to be one) sends make the
osquery/orbit endpoints answer in a way osquery misreads, fail a well-behaved host afterwards,
forge lines in the server's log, or make the server's memory grow? osquery decides from the JSON
body alone (osquery-protocol.md §1, §10): success is an object without ``error``, ``"node_invalid":
true`` makes it re-enroll, and an empty or non-JSON reply to a failure reads as success (log lines
are then lost), so those are the defects counted here.

Steps: start the server under test (``--shape production``: granian with 2 worker processes, one
request thread each, on MariaDB + Redis; ``--shape embedded``: the ``make run`` server process on
SQLite with in-memory cache and channel layer, as ``make run``; or ``--url`` for a server already
running), enroll ``--hosts`` simulated agents (the simulator's code) and let each answer its detail
queries once, then send ``--requests`` requests from a plan fixed by ``--seed``, ``--concurrency``
at a time: valid check-ins of those hosts mixed with hostile requests of every kind (see
``MUTATIONS``). A hostile detail answer is followed by a valid config and distributed/read of the
same host. Meanwhile the server's memory (RSS of its process tree) is sampled; afterwards its log
is scanned for forged lines, and a live query checks that accepted answers were stored. Everything
it starts is stopped by PID in ``finally``. Exit status 1 when any defect was seen. docs/fuzzing.md
has the details.

Adding a mutation: write a generator ``(rng, ctx) -> list[Req]`` and register it with ``@mutation``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import gzip
import json
import plistlib
import random
import re
import shutil
import string
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fuzzrecord  # noqa: E402  (scripts/fuzzrecord.py, beside this file)
from servers import (  # noqa: E402  (scripts/servers.py, beside this file)
    PY,
    EmbeddedServer,
    Server,
    children_of,
    mariadb_available,
    redis_available,
    rss_bytes,
)

from agentapi.simulator import logs as simlogs  # noqa: E402
from agentapi.simulator.agent import AgentSettings, SimulatedAgent  # noqa: E402
from agentapi.simulator.detail import answer  # noqa: E402
from agentapi.simulator.runner import SimulationConfig, build_agents, enroll_all  # noqa: E402
from agentapi.simulator.stats import Stats  # noqa: E402
from agentapi.simulator.transport import HttpTransport  # noqa: E402

SECRET = "fuzz-enroll-secret"
OSQUERY_TIMEOUT = 16.0  # seconds: osquery gives up on a request after this (tls.cpp)
MiB = 1 << 20
# The server's default body limits (README: OSQUERY_MAX_*_SIZE), per endpoint.
LIMITS = {
    "enroll": MiB,
    "config": MiB,
    "distributed/read": MiB,
    "distributed/write": 5 * MiB,
    "log": 10 * MiB,
    "orbit/enroll": MiB,
    "orbit/config": MiB,
    "orbit/scripts/request": MiB,
    "orbit/scripts/result": MiB,
    "orbit/device_token": MiB,
}
OSQUERY_ENDPOINTS = ("enroll", "config", "distributed/read", "distributed/write", "log")
AUTHENTICATED = ("config", "distributed/read", "distributed/write", "log")
DETAIL = "fleet_detail_query_"
LIVE = "fleet_distributed_query_"
CLASSES = (
    "ok",
    "expected-error",
    "5xx",
    "non-JSON",
    "failure-without-error",
    "node_invalid-outside-401",
    "valid-refused",
    "connection-error",
    "timeout",
    "mdm-accepted-unsigned",  # an MDM or SCEP endpoint took a message nobody could have signed
)
REPLY_DEFECTS = CLASSES[2:]
# A line the server's logging formatter wrote: "%(asctime)s %(levelname)s %(name)s %(message)s".
LOG_LINE = re.compile(rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+ ")
# granian's own lines ("[WARNING] message"), and gunicorn's for a server given with --url.
GRANIAN_LINE = re.compile(rb"^\[(DEBUG|INFO|WARNING|ERROR|CRITICAL)\] ")
GUNICORN_LINE = re.compile(rb"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[[A-Z]+\] ")
EXCEPTION_LINE = re.compile(rb"^[A-Za-z_][\w.]*(: .*)?$")
WARNING_LINE = re.compile(rb"^/\S+:\d+: \w*Warning: ")  # warnings.warn(), then the source line
CHAINED = (
    b"During handling of the above exception, another exception occurred:",
    b"The above exception was the direct cause of the following exception:",
)
# What a forged line carries, so a forged line is recognisable in the log.
FORGED = "2020-01-01 00:00:00,000 CRITICAL fuzz.forged this line was written by an agent"


def _log(message: str) -> None:
    print(f"[fuzz {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- requests and the hosts behind them -------------------------------------------------------


@dataclass
class Req:
    """One HTTP request of the plan, and what it is for."""

    mutation: str
    endpoint: str  # "config", "orbit/enroll", ... (the limit and the per-endpoint table use it)
    body: bytes = b""
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    valid: bool = False  # a valid check-in of a valid host: anything but success is a defect
    chunked: bool = False  # send without Content-Length (Transfer-Encoding: chunked)
    probe_keepalive: bool = False  # raw socket: after the reply, reuse the connection if it says so
    v1: bool = False  # /api/v1/osquery/... instead of /api/osquery/...
    note: str = ""

    @property
    def path(self) -> str:
        if self.endpoint.startswith("/"):  # Apple MDM's paths, given whole
            return self.endpoint
        if self.endpoint.startswith("orbit/"):
            return "/api/fleet/" + self.endpoint
        return ("/api/v1/osquery/" if self.v1 else "/api/osquery/") + self.endpoint

    def summary(self) -> str:
        excerpt = self.body[:160]
        more = f"... ({len(self.body):,} bytes)" if len(self.body) > 160 else ""
        headers = {k: v[:60] for k, v in self.headers.items()}
        extra = " chunked" if self.chunked else ""
        return f"{self.method} {self.path}{extra} {headers} {excerpt!r}{more}" + (
            f" [{self.note}]" if self.note else ""
        )


@dataclass
class FuzzHost:
    agent: SimulatedAgent
    detail_work: list[tuple[str, str]]  # the detail queries (name, sql) the server asked for

    @property
    def key(self) -> str:
        return self.agent.node_key or ""


@dataclass
class Context:
    hosts: list[FuzzHost]
    secret: str
    seed: int


def dumps(value: Any, raw: dict[str, str] | None = None, ensure_ascii: bool = True) -> bytes:
    """JSON, with ``"@@name@@"`` strings replaced by raw JSON text (numbers JSON cannot carry, ...)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=ensure_ascii)
    for name, fragment in (raw or {}).items():
        text = text.replace(json.dumps(f"@@{name}@@"), fragment)
    return text.encode("utf-8", "surrogatepass")


def deep(levels: int, leaf: str = '"x"') -> str:
    """JSON text nested ``levels`` deep, alternating arrays and objects."""
    opening = "".join('{"d":' if i % 2 else "[" for i in range(levels))
    closing = "".join("}" if i % 2 else "]" for i in reversed(range(levels)))
    return opening + leaf + closing


def pick(rng: random.Random, values: Any) -> Any:
    return values[rng.randrange(len(values))]


def fresh_id(rng: random.Random) -> str:
    return "fuzz-" + "".join(rng.choices(string.hexdigits.lower(), k=16))


def host_of(rng: random.Random, ctx: Context) -> FuzzHost:
    return pick(rng, ctx.hosts)


def valid_req(mutation: str, endpoint: str, host: FuzzHost, body: dict[str, Any], **kw: Any) -> Req:
    headers = {"Content-Type": "application/json", "Authorization": f"NodeKey {host.key}"}
    return Req(mutation, endpoint, dumps({**body, "node_key": host.key}), headers=headers, valid=True, **kw)


def followups(host: FuzzHost, after: str) -> list[Req]:
    """A valid config and distributed/read of ``host``: the hostile request must not break them."""
    return [
        valid_req("followup-config", "config", host, {}, note=f"after {after}"),
        valid_req("followup-read", "distributed/read", host, {}, note=f"after {after}"),
    ]


def detail_results(host: FuzzHost) -> dict[str, Any]:
    """The host's answers to its detail queries, as the simulator (osquery) computes them."""
    queries: dict[str, Any] = {}
    statuses: dict[str, int] = {}
    messages: dict[str, str] = {}
    for name, sql in host.detail_work:
        result = answer(name, sql, host.agent.tables)
        queries[name], statuses[name], messages[name] = result.rows, result.status, result.message
    return {"queries": queries, "statuses": statuses, "messages": messages, "stats": {}}


def result_lines(rng: random.Random, host: FuzzHost, count: int) -> list[dict[str, Any]]:
    now = 1_700_000_000 + rng.randrange(10**7)
    rows = [{"path": f"/usr/bin/tool{i}", "size": str(rng.randrange(10**6))} for i in range(count)]
    return simlogs.event_lines("pack/fuzz/files", host.agent.identity.host_identifier, now, 1, rows, [], {})


def status_lines(rng: random.Random, host: FuzzHost, count: int, message: str = "") -> list[dict[str, Any]]:
    identity = host.agent.identity
    return [
        simlogs.status_line(
            identity.host_identifier,
            rng.randrange(3),
            "scheduler.cpp",
            128,
            message or f"Executing scheduled query fuzz{i}",
            identity.osquery_version,
            {},
            1_700_000_000 + i,
        )
        for i in range(count)
    ]


def enroll_body(ctx: Context, rng: random.Random, host: FuzzHost | None = None) -> dict[str, Any]:
    """A well-formed enroll body for a new host (never a fuzzed host's identifier: that re-keys it)."""
    agent = (host or host_of(rng, ctx)).agent
    details = agent.host_details()
    ident = fresh_id(rng)
    details = {**details, "osquery_info": {**details.get("osquery_info", {}), "uuid": ident}}
    details["system_info"] = {**details.get("system_info", {}), "uuid": ident}
    return {
        "enroll_secret": ctx.secret,
        "host_identifier": ident,
        "platform_type": agent.identity.template.platform_mask,
        "host_details": details,
    }


def good_body(rng: random.Random, ctx: Context, endpoint: str, host: FuzzHost) -> dict[str, Any]:
    """A well-formed body for ``endpoint`` from ``host`` (the base many mutations damage)."""
    if endpoint == "enroll":
        return enroll_body(ctx, rng, host)
    if endpoint == "orbit/enroll":
        ident = fresh_id(rng)
        return {
            "enroll_secret": ctx.secret,
            "hardware_uuid": ident,
            "hardware_serial": ident[-8:],
            "hostname": f"{ident}.local",
            "platform": "darwin",
            "osquery_identifier": ident,
        }
    if endpoint == "orbit/config":
        return {"orbit_node_key": "".join(rng.choices(string.ascii_letters, k=32))}
    if endpoint in ORBIT_WORK:
        body = {
            "orbit_node_key": "".join(rng.choices(string.ascii_letters, k=32)),
            "execution_id": fresh_id(rng),
        }
        if endpoint == "orbit/scripts/result":
            body.update(output="hello\n", runtime=1, exit_code=0, timeout=300)
        elif endpoint == "orbit/device_token":
            body = {"orbit_node_key": body["orbit_node_key"], "device_auth_token": fresh_id(rng)}
        return body
    body: dict[str, Any] = {"node_key": host.key}
    if endpoint == "distributed/write":
        body.update(detail_results(host))
    elif endpoint == "log":
        body.update(log_type="result", data=result_lines(rng, host, 3))
    return body


# --- mutations ---------------------------------------------------------------------------------

Generator = Callable[[random.Random, Context], list[Req]]
MUTATIONS: dict[str, tuple[int, Generator]] = {}


def mutation(name: str, weight: int) -> Callable[[Generator], Generator]:
    def register(generate: Generator) -> Generator:
        MUTATIONS[name] = (weight, generate)
        return generate

    return register


# Valid check-ins (about a third of the plan).


@mutation("valid-config", 7)
def _valid_config(rng: random.Random, ctx: Context) -> list[Req]:
    return [valid_req("valid-config", "config", host_of(rng, ctx), {}, v1=rng.random() < 0.3)]


@mutation("valid-read", 7)
def _valid_read(rng: random.Random, ctx: Context) -> list[Req]:
    return [valid_req("valid-read", "distributed/read", host_of(rng, ctx), {}, v1=rng.random() < 0.3)]


@mutation("valid-write-details", 5)
def _valid_write(rng: random.Random, ctx: Context) -> list[Req]:
    host = host_of(rng, ctx)
    return [valid_req("valid-write-details", "distributed/write", host, detail_results(host))]


@mutation("valid-write-empty", 2)
def _valid_write_empty(rng: random.Random, ctx: Context) -> list[Req]:
    body = {"queries": {}, "statuses": {}, "messages": {}, "stats": {}}
    return [valid_req("valid-write-empty", "distributed/write", host_of(rng, ctx), body)]


@mutation("valid-log-result", 4)
def _valid_log_result(rng: random.Random, ctx: Context) -> list[Req]:
    host = host_of(rng, ctx)
    body = {"log_type": "result", "data": result_lines(rng, host, rng.randrange(1, 20))}
    return [valid_req("valid-log-result", "log", host, body)]


@mutation("valid-log-status", 3)
def _valid_log_status(rng: random.Random, ctx: Context) -> list[Req]:
    host = host_of(rng, ctx)
    body = {"log_type": "status", "data": status_lines(rng, host, rng.randrange(1, 20))}
    return [valid_req("valid-log-status", "log", host, body)]


@mutation("valid-log-gzip", 2)
def _valid_log_gzip(rng: random.Random, ctx: Context) -> list[Req]:
    """osquery's --logger_tls_compress: gzip level 9 with Content-Encoding: gzip."""
    host = host_of(rng, ctx)
    req = valid_req(
        "valid-log-gzip", "log", host, {"log_type": "result", "data": result_lines(rng, host, 50)}
    )
    req.body = gzip.compress(req.body, compresslevel=9)
    req.headers["Content-Encoding"] = "gzip"
    return [req]


@mutation("valid-header-key-only", 2)
def _valid_header_only(rng: random.Random, ctx: Context) -> list[Req]:
    """The node key only in ``Authorization: NodeKey`` (osquery 5.23+ sends both; the header suffices)."""
    host = host_of(rng, ctx)
    endpoint = pick(rng, ("config", "distributed/read"))
    headers = {"Content-Type": "application/json", "Authorization": f"NodeKey {host.key}"}
    return [Req("valid-header-key-only", endpoint, b"{}", headers=headers, valid=True)]


# Hostile requests.

ORBIT_WORK = ("orbit/scripts/request", "orbit/scripts/result", "orbit/device_token")
ANY_ENDPOINT = (*OSQUERY_ENDPOINTS, "orbit/enroll", "orbit/config", *ORBIT_WORK)
WRONG_TYPES: tuple[Any, ...] = (123, -1, 1.5, 0, True, False, None, [], [1, "a"], {}, {"a": 1}, "", "x" * 40)
HUGE_NUMBERS = (
    "1e400",
    "-1e400",
    "2e308",
    "18446744073709551616",
    "-9223372036854775809",
    "9" * 4000,
    "9" * 5000,
    "1" + "0" * 300,
    "-0",
    "1e-400",
)
HUGE_STRINGS = (
    "inf",
    "-inf",
    "Infinity",
    "NaN",
    "nan",
    "1e400",
    "-1",
    "-99999999999999999999",
    str(2**63),
    str(2**64),
    "9" * 400,
    "9" * 5000,
    "0x7fffffff",
    "1e10",
    "12.5",
    " 7 ",
    "",
    "١٢٣",
    "²",
)
CONTROL = ("\x00", "\r", "\n", "\r\n", "\x1b[31m", "\u2028", "\x85")


def _hostile(
    rng: random.Random,
    ctx: Context,
    name: str,
    endpoint: str,
    body: bytes,
    host: FuzzHost | None = None,
    headers: dict[str, str] | None = None,
    after: bool = False,
    add_key: bool = True,
    **kw: Any,
) -> list[Req]:
    """A hostile request (sometimes with the host's key in the header too), then follow-ups if ``after``."""
    req = Req(
        name,
        endpoint,
        body,
        headers={"Content-Type": "application/json"} if headers is None else headers,
        **kw,
    )
    if add_key and host is not None and "Authorization" not in req.headers and rng.random() < 0.5:
        req.headers["Authorization"] = f"NodeKey {host.key}"
    req.v1 = rng.random() < 0.3
    return [req, *followups(host, name)] if after and host is not None else [req]


@mutation("garbage-bytes", 2)
def _garbage(rng: random.Random, ctx: Context) -> list[Req]:
    endpoint = pick(rng, ANY_ENDPOINT)
    if rng.random() < 0.5:
        body = rng.randbytes(rng.randrange(1, 300))
    else:
        body = "".join(rng.choices(string.printable, k=rng.randrange(1, 300))).encode()
    return _hostile(rng, ctx, "garbage-bytes", endpoint, body)


@mutation("truncated-json", 3)
def _truncated(rng: random.Random, ctx: Context) -> list[Req]:
    host = host_of(rng, ctx)
    endpoint = pick(rng, ANY_ENDPOINT)
    body = dumps(good_body(rng, ctx, endpoint, host))
    return _hostile(rng, ctx, "truncated-json", endpoint, body[: rng.randrange(1, len(body))], host)


@mutation("invalid-json", 2)
def _invalid_json(rng: random.Random, ctx: Context) -> list[Req]:
    host = host_of(rng, ctx)
    key = host.key
    texts = (
        f'{{"node_key": "{key}",}}',
        f"{{'node_key': '{key}'}}",
        f'{{node_key: "{key}"}}',
        f'{{"node_key": "{key}" /* c */}}',
        f'{{"node_key": "{key}"}} trailing',
        f'{{"node_key": "{key}"}}{{}}',
        '{"a": 01}',
        '{"a": .5}',
        '{"a": "\\x41"}',
        '{"a": "\\u12"}',
        '{"a": "tab\there"}',
        "{",
        "}",
        "",
        "   ",
        "\ufeff",
        '{"a": tru}',
        f'{{"node_key": "{key}", "node_key": 5}}',
    )
    endpoint = pick(rng, ANY_ENDPOINT)
    return _hostile(rng, ctx, "invalid-json", endpoint, pick(rng, texts).encode(), host)


@mutation("not-an-object", 2)
def _not_object(rng: random.Random, ctx: Context) -> list[Req]:
    host = host_of(rng, ctx)
    values = ("[]", '"node_key"', "1", "-1.5", "null", "true", f'[{{"node_key": "{host.key}"}}]', "1e400")
    return _hostile(rng, ctx, "not-an-object", pick(rng, ANY_ENDPOINT), pick(rng, values).encode(), host)


@mutation("non-finite", 2)
def _non_finite(rng: random.Random, ctx: Context) -> list[Req]:
    host = host_of(rng, ctx)
    constant = pick(rng, ("NaN", "Infinity", "-Infinity", "1e400", "-1e999"))
    endpoint = pick(rng, ANY_ENDPOINT)
    body = good_body(rng, ctx, endpoint, host)
    if endpoint == "log":
        body["data"][0]["unixTime"] = "@@n@@"
    elif endpoint == "distributed/write" and body["statuses"]:
        body["statuses"][next(iter(body["statuses"]))] = "@@n@@"
    elif endpoint == "enroll":
        body["host_details"]["system_info"]["physical_memory"] = "@@n@@"
    else:
        body["extra"] = "@@n@@"
    return _hostile(rng, ctx, "non-finite", endpoint, dumps(body, {"n": constant}), host)


def _deep(levels: int) -> Generator:
    name = f"deep-{levels}"

    def generate(rng: random.Random, ctx: Context) -> list[Req]:
        host = host_of(rng, ctx)
        where = pick(rng, ("top", "log-line", "live-rows", "detail-rows", "host-details", "statuses"))
        nested = deep(levels)
        if where == "log-line":
            body = {
                "node_key": host.key,
                "log_type": pick(rng, ("result", "status")),
                "data": [{**result_lines(rng, host, 1)[0], "columns": {"value": "@@d@@"}}],
            }
            endpoint = "log"
        elif where == "live-rows":
            name_ = f"{LIVE}{rng.randrange(1, 10**6)}"
            body = {"node_key": host.key, "queries": {name_: [{"col": "@@d@@"}]}, "statuses": {name_: 0}}
            endpoint = "distributed/write"
        elif where == "detail-rows":
            body = {
                "node_key": host.key,
                "queries": {f"{DETAIL}system_info": [{"hostname": "@@d@@"}]},
                "statuses": {f"{DETAIL}system_info": 0},
            }
            endpoint = "distributed/write"
        elif where == "host-details":
            body = enroll_body(ctx, rng, host)
            body["host_details"]["os_version"] = {"name": "@@d@@"}
            endpoint = "enroll"
        elif where == "statuses":
            body = {
                "node_key": host.key,
                "queries": {},
                "statuses": {"q": "@@d@@"},
                "messages": {"q": "@@d@@"},
            }
            endpoint = "distributed/write"
        else:
            endpoint = pick(rng, ANY_ENDPOINT)
            body = {**good_body(rng, ctx, endpoint, host), "nested": "@@d@@"}
        after = endpoint == "distributed/write" and where == "detail-rows"
        return _hostile(rng, ctx, name, endpoint, dumps(body, {"d": nested}), host, after=after, note=where)

    return generate


mutation("deep-40", 3)(_deep(40))
mutation("deep-5000", 2)(_deep(5000))


@mutation("lone-surrogate", 2)
def _surrogate(rng: random.Random, ctx: Context) -> list[Req]:
    host = host_of(rng, ctx)
    text = pick(rng, ("\ud800", "a\udfffb", "\udbff\udbff", "\ud83d"))
    where = pick(rng, ("node_key", "host_identifier", "detail", "log-line", "orbit"))
    ascii_ = rng.random() < 0.5  # escaped (\ud800) or raw (CESU-8 bytes: invalid UTF-8)
    after = False
    if where == "node_key":
        endpoint, body = pick(rng, AUTHENTICATED), {"node_key": host.key[:8] + text}
    elif where == "host_identifier":
        endpoint, body = "enroll", enroll_body(ctx, rng, host)
        body["host_identifier"] += text
    elif where == "detail":
        endpoint, after = "distributed/write", True
        body = {
            "node_key": host.key,
            "queries": {f"{DETAIL}system_info": [{"hostname": "h" + text}]},
            "statuses": {f"{DETAIL}system_info": 0},
        }
    elif where == "log-line":
        endpoint = "log"
        body = {"node_key": host.key, "log_type": "status", "data": status_lines(rng, host, 1, "m" + text)}
    else:
        endpoint, body = "orbit/enroll", good_body(rng, ctx, "orbit/enroll", host)
        body["hostname"] = text
    raw = dumps(body, ensure_ascii=ascii_)
    return _hostile(rng, ctx, "lone-surrogate", endpoint, raw, host, after=after, note=where)


@mutation("invalid-utf8", 2)
def _invalid_utf8(rng: random.Random, ctx: Context) -> list[Req]:
    host = host_of(rng, ctx)
    bad = pick(rng, (b"\xff\xfe", b"\xc0\x80", b"\xed\xa0\x80", b"\x80", b"\xf4\x90\x80\x80", b"caf\xe9"))
    endpoint = pick(rng, ANY_ENDPOINT)
    body = good_body(rng, ctx, endpoint, host)
    body["fuzz"] = "@@bad@@"
    if endpoint == "log":
        body["data"][0]["columns"]["path"] = "@@bad@@"
    raw = dumps(body).replace(b'"@@bad@@"', b'"x' + bad + b'y"')
    return _hostile(rng, ctx, "invalid-utf8", endpoint, raw, host, after=endpoint == "distributed/write")


@mutation("control-chars", 4)
def _control(rng: random.Random, ctx: Context) -> list[Req]:
    """NUL, CR, LF (and friends) wherever agent text may reach the database or the server's log."""
    host = host_of(rng, ctx)
    ctrl = pick(rng, CONTROL)
    text = f"fuzz{ctrl}{FORGED}" if ctrl in ("\r", "\n", "\r\n") else f"fuzz{ctrl}text"
    where = pick(
        rng,
        (
            "host_identifier",
            "hostname",
            "detail-message",
            "detail-name",
            "label-message",
            "log-status",
            "log-result",
            "orbit-hostname",
            "node_key",
        ),
    )
    after = False
    if where == "host_identifier":
        endpoint, body = "enroll", enroll_body(ctx, rng, host)
        body["host_identifier"] = fresh_id(rng) + text
        body["host_details"]["system_info"]["hostname"] = text
    elif where == "hostname":
        endpoint, after = "distributed/write", True
        row = {**detail_results(host)["queries"].get(f"{DETAIL}system_info", [{}])[0], "hostname": text}
        body = {
            "node_key": host.key,
            "queries": {f"{DETAIL}system_info": [row]},
            "statuses": {f"{DETAIL}system_info": 0},
        }
    elif where in ("detail-message", "detail-name", "label-message"):
        endpoint, after = "distributed/write", True
        name = {
            "detail-message": f"{DETAIL}uptime",
            "detail-name": f"{DETAIL}uptime{text}",
            "label-message": "fleet_label_query_1",
        }[where]
        body = {"node_key": host.key, "queries": {name: []}, "statuses": {name: 1}, "messages": {name: text}}
    elif where == "log-status":
        endpoint = "log"
        body = {"node_key": host.key, "log_type": "status", "data": status_lines(rng, host, 2, text)}
    elif where == "log-result":
        endpoint = "log"
        lines = result_lines(rng, host, 2)
        lines[0]["name"] = text
        lines[1]["hostIdentifier"] = text
        body = {"node_key": host.key, "log_type": "result", "data": lines}
    elif where == "orbit-hostname":
        endpoint, body = "orbit/enroll", good_body(rng, ctx, "orbit/enroll", host)
        body["hostname"] = body["computer_name"] = text
    else:
        endpoint, body = pick(rng, AUTHENTICATED), {"node_key": host.key + ctrl}
    return _hostile(rng, ctx, "control-chars", endpoint, dumps(body), host, after=after, note=where)


@mutation("wrong-types", 6)
def _wrong_types(rng: random.Random, ctx: Context) -> list[Req]:
    host = host_of(rng, ctx)
    endpoint = pick(rng, ANY_ENDPOINT)
    body = good_body(rng, ctx, endpoint, host)
    value = pick(rng, WRONG_TYPES)
    fields_by_endpoint = {
        "enroll": (
            "enroll_secret",
            "host_identifier",
            "platform_type",
            "host_details",
            "host_details.os_version",
            "host_details.system_info.hostname",
            "host_details.system_info.physical_memory",
        ),
        "config": ("node_key",),
        "distributed/read": ("node_key",),
        "distributed/write": (
            "node_key",
            "queries",
            "statuses",
            "messages",
            "stats",
            "queries.*",
            "statuses.*",
            "messages.*",
            "rows.*",
        ),
        "log": (
            "node_key",
            "log_type",
            "data",
            "data.0",
            "data.0.name",
            "data.0.unixTime",
            "data.0.columns",
            "data.0.decorations",
            "data.0.calendarTime",
            "data.0.counter",
            "data.0.action",
        ),
        "orbit/enroll": (
            "enroll_secret",
            "hardware_uuid",
            "hardware_serial",
            "hostname",
            "platform",
            "osquery_identifier",
            "computer_name",
            "hardware_model",
        ),
        "orbit/config": ("orbit_node_key",),
        "orbit/scripts/request": ("orbit_node_key", "execution_id"),
        "orbit/scripts/result": (
            "orbit_node_key",
            "execution_id",
            "output",
            "runtime",
            "exit_code",
            "timeout",
        ),
        "orbit/device_token": ("orbit_node_key", "device_auth_token"),
    }
    where = pick(rng, fields_by_endpoint[endpoint])
    parts = where.split(".")
    if parts[-1] == "*":
        target = body[parts[0]] if parts[0] != "rows" else body["queries"]
        for name in list(target)[:2]:
            target[name] = value if parts[0] != "rows" else [value, {"col": value}]
    else:
        target = body
        for part in parts[:-1]:
            target = target[int(part)] if isinstance(target, list) else target.setdefault(part, {})
        if isinstance(target, list):
            target[int(parts[-1])] = value
        else:
            target[parts[-1]] = value
    after = endpoint == "distributed/write"
    return _hostile(
        rng,
        ctx,
        "wrong-types",
        endpoint,
        dumps(body),
        host,
        after=after,
        note=f"{where}={json.dumps(value)[:20]}",
    )


@mutation("non-string-details", 4)
def _non_string_details(rng: random.Random, ctx: Context) -> list[Req]:
    """Detail answers whose values are not strings (osquery never sends them; a proxy or bug might)."""
    host = host_of(rng, ctx)
    table, column = pick(
        rng,
        (
            ("os_version", "platform"),
            ("os_version", "name"),
            ("os_version", "version"),
            ("os_version", "platform_like"),
            ("osquery_info", "version"),
            ("system_info", "hostname"),
            ("system_info", "physical_memory"),
            ("system_info", "cpu_logical_cores"),
            ("uptime", "total_seconds"),
            ("osquery_flags", "value"),
            ("network_interface_unix", "address"),
            ("orbit_info", "version"),
        ),
    )
    value = pick(rng, (123, 17179869184, -1, 1.5, None, True, ["darwin"], {"a": "b"}, 2**64))
    results = detail_results(host)
    name = DETAIL + table
    rows = results["queries"].get(name) or [{}]
    if table == "osquery_flags":
        rows = [{"name": "distributed_interval", "value": value}]
    else:
        rows = [{**rows[0], column: value}]
    body = {"node_key": host.key, "queries": {name: rows}, "statuses": {name: 0}}
    return _hostile(
        rng,
        ctx,
        "non-string-details",
        "distributed/write",
        dumps(body),
        host,
        after=True,
        note=f"{table}.{column}={json.dumps(value)}",
    )


@mutation("out-of-range", 5)
def _out_of_range(rng: random.Random, ctx: Context) -> list[Req]:
    """Memory, cores, uptime, intervals, unixTime, statuses: as strings and as raw JSON numbers."""
    host = host_of(rng, ctx)
    as_raw = rng.random() < 0.4
    value = pick(rng, HUGE_NUMBERS) if as_raw else pick(rng, HUGE_STRINGS)
    where = pick(rng, ("memory", "cores", "uptime", "interval", "unixTime", "status", "enroll", "counter"))
    slot = "@@v@@" if as_raw else value
    after = where in ("memory", "cores", "uptime", "interval")
    endpoint = "distributed/write"
    if where in ("memory", "cores"):
        row = dict(detail_results(host)["queries"].get(f"{DETAIL}system_info", [{}])[0])
        row[
            "physical_memory" if where == "memory" else pick(rng, ("cpu_physical_cores", "cpu_logical_cores"))
        ] = slot
        body: dict[str, Any] = {
            "node_key": host.key,
            "queries": {f"{DETAIL}system_info": [row]},
            "statuses": {f"{DETAIL}system_info": 0},
        }
    elif where == "uptime":
        body = {
            "node_key": host.key,
            "queries": {f"{DETAIL}uptime": [{"total_seconds": slot, "days": slot}]},
            "statuses": {f"{DETAIL}uptime": 0},
        }
    elif where == "interval":
        flag = pick(
            rng, ("distributed_interval", "config_tls_refresh", "config_refresh", "logger_tls_period")
        )
        body = {
            "node_key": host.key,
            "queries": {f"{DETAIL}osquery_flags": [{"name": flag, "value": slot}]},
            "statuses": {f"{DETAIL}osquery_flags": 0},
        }
    elif where in ("unixTime", "counter"):
        endpoint = "log"
        lines = result_lines(rng, host, 1) if rng.random() < 0.6 else status_lines(rng, host, 1)
        lines[0][where] = slot
        body = {
            "node_key": host.key,
            "log_type": "result" if "columns" in lines[0] else "status",
            "data": lines,
        }
    elif where == "status":
        name = pick(rng, (f"{DETAIL}uptime", f"{LIVE}1", "some_query"))
        body = {"node_key": host.key, "queries": {name: []}, "statuses": {name: slot}, "messages": {name: ""}}
    else:
        endpoint = "enroll"
        body = enroll_body(ctx, rng, host)
        body["host_details"]["system_info"]["physical_memory"] = slot
        body["host_details"]["system_info"]["cpu_logical_cores"] = slot
    raw = dumps(body, {"v": value} if as_raw else None)
    return _hostile(
        rng,
        ctx,
        "out-of-range",
        endpoint,
        raw,
        host,
        after=after and endpoint != "enroll",
        note=f"{where}={'raw ' if as_raw else ''}{value[:24]}",
    )


@mutation("huge-strings", 3)
def _huge_strings(rng: random.Random, ctx: Context) -> list[Req]:
    host = host_of(rng, ctx)
    size = pick(rng, (256, 300, 1000, 70_000))
    text = "h" * size
    where = pick(
        rng, ("host_identifier", "hostname", "node_key", "log-message", "orbit", "platform", "secret")
    )
    after = False
    if where == "host_identifier":
        endpoint, body = "enroll", enroll_body(ctx, rng, host)
        body["host_identifier"] = fresh_id(rng) + text
    elif where in ("hostname", "platform"):
        endpoint, after = "distributed/write", True
        table, column = ("system_info", "hostname") if where == "hostname" else ("os_version", "platform")
        row = {**(detail_results(host)["queries"].get(DETAIL + table) or [{}])[0], column: text}
        body = {"node_key": host.key, "queries": {DETAIL + table: [row]}, "statuses": {DETAIL + table: 0}}
    elif where == "node_key":
        endpoint, body = pick(rng, AUTHENTICATED), {"node_key": text}
    elif where == "log-message":
        endpoint = "log"
        body = {"node_key": host.key, "log_type": "status", "data": status_lines(rng, host, 1, text)}
    elif where == "orbit":
        endpoint, body = "orbit/enroll", good_body(rng, ctx, "orbit/enroll", host)
        body[pick(rng, ("hardware_uuid", "hostname", "hardware_serial", "platform"))] = fresh_id(rng) + text
    else:
        endpoint, body = "enroll", enroll_body(ctx, rng, host)
        body["enroll_secret"] = text
    return _hostile(
        rng, ctx, "huge-strings", endpoint, dumps(body), host, after=after, note=f"{where} {size}"
    )


@mutation("live-query-odd-ids", 2)
def _live_ids(rng: random.Random, ctx: Context) -> list[Req]:
    """Answers to campaigns that do not exist, with ids str.isdigit() accepts but int() may not."""
    host = host_of(rng, ctx)
    ident = pick(rng, ("0", "999999", str(2**63), str(2**64), "9" * 50, "9" * 5000, "١٢٣", "²", "00001"))
    name = LIVE + ident
    rows = pick(rng, ([], [{"a": "b"}], "", None))
    body = {
        "node_key": host.key,
        "queries": {name: rows},
        "statuses": {name: rng.randrange(2)},
        "messages": {name: ""},
    }
    return _hostile(
        rng,
        ctx,
        "live-query-odd-ids",
        "distributed/write",
        dumps(body),
        host,
        note=f"id {ident[:12]}... ({len(ident)} chars)" if len(ident) > 12 else f"id {ident}",
    )


@mutation("odd-results", 3)
def _odd_results(rng: random.Random, ctx: Context) -> list[Req]:
    """Shapes a proxy or an older osquery may send: "" rows, statuses as strings, odd names."""
    host = host_of(rng, ctx)
    name = pick(
        rng,
        (
            "",
            "x" * 10_000,
            "q",
            f"{DETAIL}",
            f"{DETAIL}nonexistent",
            "fleet_label_query_x",
            "fleet_label_query_99999999999999999999",
        ),
    )
    body = {
        "node_key": host.key,
        "queries": {name: pick(rng, ("", None, 5, [1, 2], [{"a": 1}], [{"a": {"b": "c"}}], [[]]))},
        "statuses": {name: pick(rng, ("0", "1", "abc", 1.5, None, [], -1))},
        "messages": {name: pick(rng, ("", None, 5, ["x"], {"a": 1}))},
        "stats": {name: pick(rng, ({}, None, "x", {"wall_time_ms": "x"}))},
    }
    return _hostile(rng, ctx, "odd-results", "distributed/write", dumps(body), host, after=True)


@mutation("odd-log-lines", 3)
def _odd_log_lines(rng: random.Random, ctx: Context) -> list[Req]:
    host = host_of(rng, ctx)
    lines: list[Any] = result_lines(rng, host, 3)
    damage = pick(
        rng, ("non-objects", "decorations", "snapshot", "diffResults", "many", "big-line", "action")
    )
    if damage == "non-objects":
        lines += ["a string", 5, None, [1]]
    elif damage == "decorations":
        lines[0]["decorations"] = pick(rng, (["x"], "x", 5, {"a": {"b": 1}}))
    elif damage == "snapshot":
        lines[0]["snapshot"] = pick(rng, ({"a": 1}, "x", [1, "2"], [{"a": {"b": "c"}}]))
        lines[0]["action"] = "snapshot"
    elif damage == "diffResults":
        lines[0]["diffResults"] = pick(rng, ("x", {"added": "x", "removed": 5}, {"added": [1]}))
    elif damage == "many":
        lines = result_lines(rng, host, 1024)
    elif damage == "big-line":
        lines[0]["columns"]["blob"] = "b" * (1024 * 1024)
    else:
        lines[0]["action"] = pick(rng, (5, None, "exploded", ["added"]))
    body = {"node_key": host.key, "log_type": pick(rng, ("result", "status")), "data": lines}
    return _hostile(rng, ctx, "odd-log-lines", "log", dumps(body), host, note=damage)


_BOMBS: dict[int, bytes] = {}


def bomb(size: int) -> bytes:
    """A gzip body inflating to ``size`` bytes of a JSON object (cached: building one takes time)."""
    if size not in _BOMBS:
        prefix, suffix = b'{"node_key": "x", "pad": "', b'"}'
        _BOMBS[size] = gzip.compress(prefix + b" " * (size - len(prefix) - len(suffix)) + suffix, 9)
    return _BOMBS[size]


@mutation("gzip-bomb", 2)
def _gzip_bomb(rng: random.Random, ctx: Context) -> list[Req]:
    endpoint = pick(rng, ANY_ENDPOINT)
    size = pick(rng, (LIMITS[endpoint] + 1024, 64 * MiB))
    headers = {"Content-Type": "application/json"}
    if rng.random() < 0.7:
        headers["Content-Encoding"] = pick(rng, ("gzip", "x-gzip", "GZIP"))
    return _hostile(
        rng,
        ctx,
        "gzip-bomb",
        endpoint,
        bomb(size),
        headers=headers,
        note=f"inflates to {size:,} bytes; header {headers.get('Content-Encoding', 'none')}",
    )


@mutation("gzip-mismatch", 2)
def _gzip_mismatch(rng: random.Random, ctx: Context) -> list[Req]:
    host = host_of(rng, ctx)
    endpoint = pick(rng, ANY_ENDPOINT)
    plain = dumps(good_body(rng, ctx, endpoint, host))
    packed = gzip.compress(plain)
    kind = pick(
        rng,
        (
            "gzip-no-header",
            "header-plain-body",
            "deflate",
            "br",
            "truncated",
            "trailing",
            "double",
            "identity-gzip",
            "gzip-of-array",
        ),
    )
    headers = {"Content-Type": "application/json"}
    body = packed
    if kind == "gzip-no-header":
        pass
    elif kind == "header-plain-body":
        headers["Content-Encoding"], body = "gzip", plain
    elif kind in ("deflate", "br"):
        headers["Content-Encoding"] = kind
    elif kind == "truncated":
        headers["Content-Encoding"], body = "gzip", packed[: len(packed) // 2]
    elif kind == "trailing":
        headers["Content-Encoding"], body = "gzip", packed + b"garbage"
    elif kind == "double":
        headers["Content-Encoding"], body = "gzip, gzip", gzip.compress(packed)
    elif kind == "identity-gzip":
        headers["Content-Encoding"] = "identity"
    else:
        headers["Content-Encoding"], body = "gzip", gzip.compress(b"[1, 2, 3]")
    return _hostile(rng, ctx, "gzip-mismatch", endpoint, body, host, headers=headers, note=kind)


@mutation("over-limit", 1)
def _over_limit(rng: random.Random, ctx: Context) -> list[Req]:
    """Just over the endpoint's limit, declared (Content-Length) or chunked; then reuse the connection."""
    host = host_of(rng, ctx)
    endpoint = pick(rng, ("config", "distributed/read", "enroll", "orbit/config", "distributed/write"))
    if rng.random() < 0.15:
        endpoint = "log"
    limit = LIMITS[endpoint]
    body = dumps(
        {"node_key": host.key, "pad": "@@p@@"}, {"p": '"' + "p" * (limit + rng.randrange(1, 5000)) + '"'}
    )
    chunked = rng.random() < 0.4
    return _hostile(
        rng,
        ctx,
        "over-limit",
        endpoint,
        body,
        host,
        chunked=chunked,
        probe_keepalive=True,
        note=f"{len(body):,} bytes, {'chunked' if chunked else 'Content-Length'}",
    )


@mutation("content-type", 2)
def _content_type(rng: random.Random, ctx: Context) -> list[Req]:
    host = host_of(rng, ctx)
    endpoint = pick(rng, ANY_ENDPOINT)
    kind = pick(
        rng,
        (
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/xml",
            "none",
            "application/json; charset=latin-1",
            "application/json; charset=utf-16",
            "*/*",
        ),
    )
    headers = {} if kind == "none" else {"Content-Type": kind}
    return _hostile(
        rng,
        ctx,
        "content-type",
        endpoint,
        dumps(good_body(rng, ctx, endpoint, host)),
        host,
        headers=headers,
        note=kind,
    )


@mutation("multipart", 2)
def _multipart(rng: random.Random, ctx: Context) -> list[Req]:
    host = host_of(rng, ctx)
    endpoint = pick(rng, ANY_ENDPOINT)
    payload = dumps(good_body(rng, ctx, endpoint, host))
    boundary = "fuzzBoundary" + str(rng.randrange(10**6))
    part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="json"\r\n\r\n'.encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )
    kind = pick(
        rng,
        (
            "well-formed",
            "no-boundary",
            "wrong-boundary",
            "unterminated",
            "empty-boundary",
            "huge-boundary",
            "no-body",
            "garbage",
        ),
    )
    content_type = f"multipart/form-data; boundary={boundary}"
    body = part
    if kind == "no-boundary":
        content_type = "multipart/form-data"
    elif kind == "wrong-boundary":
        content_type = "multipart/form-data; boundary=other"
    elif kind == "unterminated":
        body = part[: len(part) - len(boundary) - 8]
    elif kind == "empty-boundary":
        content_type = "multipart/form-data; boundary="
    elif kind == "huge-boundary":
        content_type = "multipart/form-data; boundary=" + "b" * 5000
    elif kind == "no-body":
        body = b""
    elif kind == "garbage":
        body = b"--" + rng.randbytes(200)
    return _hostile(
        rng, ctx, "multipart", endpoint, body, host, headers={"Content-Type": content_type}, note=kind
    )


@mutation("wrong-method", 2)
def _wrong_method(rng: random.Random, ctx: Context) -> list[Req]:
    host = host_of(rng, ctx)
    endpoint = pick(rng, ANY_ENDPOINT)
    method = pick(rng, ("GET", "PUT", "PATCH", "DELETE", "OPTIONS"))
    body = dumps(good_body(rng, ctx, endpoint, host)) if method != "GET" or rng.random() < 0.3 else b""
    return _hostile(rng, ctx, "wrong-method", endpoint, body, host, method=method, note=method)


@mutation("node-keys", 5)
def _node_keys(rng: random.Random, ctx: Context) -> list[Req]:
    """Missing, empty, unknown and malformed keys, in the body and in ``Authorization: NodeKey``."""
    host = host_of(rng, ctx)
    endpoint = pick(rng, AUTHENTICATED)
    body = good_body(rng, ctx, endpoint, host)
    headers = {"Content-Type": "application/json"}
    kind = pick(
        rng,
        (
            "missing",
            "empty",
            "spaces",
            "unknown",
            "upper",
            "header-unknown",
            "header-empty",
            "bearer-valid",
            "valid-body-garbage-header",
            "header-twice",
            "header-valid-body-unknown",
            "unknown-with-valid-header",
        ),
    )
    unknown = "".join(rng.choices(string.ascii_letters + string.digits, k=32))
    if kind == "missing":
        body.pop("node_key")
    elif kind == "empty":
        body["node_key"] = ""
    elif kind == "spaces":
        body["node_key"] = "   "
    elif kind == "unknown":
        body["node_key"] = unknown
    elif kind == "upper":
        body["node_key"] = host.key.swapcase()
    elif kind == "header-unknown":
        body.pop("node_key")
        headers["Authorization"] = f"NodeKey {unknown}"
    elif kind == "header-empty":
        body.pop("node_key")
        headers["Authorization"] = "NodeKey "
    elif kind == "bearer-valid":
        body.pop("node_key")
        headers["Authorization"] = f"Bearer {host.key}"
    elif kind == "valid-body-garbage-header":
        headers["Authorization"] = pick(rng, ("NodeKey", "garbage", "NodeKey a b c", "Basic Zm9vOmJhcg=="))
    elif kind == "header-twice":
        body.pop("node_key")
        headers["Authorization"] = f"NodeKey {host.key}, NodeKey {unknown}"
    elif kind == "header-valid-body-unknown":
        body["node_key"] = unknown
        headers["Authorization"] = f"NodeKey {host.key}"
    else:
        body["node_key"] = unknown
        headers["Authorization"] = f"NodeKey {host.key}"
    return _hostile(
        rng, ctx, "node-keys", endpoint, dumps(body), host, headers=headers, add_key=False, note=kind
    )


@mutation("enroll-bad-secret", 3)
def _enroll_bad_secret(rng: random.Random, ctx: Context) -> list[Req]:
    body = enroll_body(ctx, rng)
    secret = pick(
        rng,
        (
            "wrong",
            "",
            "   ",
            None,
            123,
            [],
            {},
            [ctx.secret],
            ctx.secret + "\x00",
            "s" * 100_000,
            ctx.secret.upper(),
            f"  {ctx.secret}\n",
            "MISSING",
        ),
    )
    if secret == "MISSING":
        body.pop("enroll_secret")
    else:
        body["enroll_secret"] = secret
    return _hostile(rng, ctx, "enroll-bad-secret", "enroll", dumps(body), note=repr(secret)[:30])


@mutation("enroll-hostile-details", 3)
def _enroll_hostile_details(rng: random.Random, ctx: Context) -> list[Req]:
    body = enroll_body(ctx, rng)
    kind = pick(
        rng,
        (
            "list",
            "string",
            "table-string",
            "non-string",
            "many-tables",
            "huge-values",
            "platform_type",
            "identifier-empty",
            "identifier-spaces",
            "no-details",
            "unicode",
        ),
    )
    details = body["host_details"]
    if kind == "list":
        body["host_details"] = [details]
    elif kind == "string":
        body["host_details"] = "os_version"
    elif kind == "table-string":
        details["os_version"] = "darwin"
    elif kind == "non-string":
        details["system_info"].update(hostname=123, physical_memory=1e300, cpu_logical_cores=[1], uuid=None)
        details["os_version"].update(platform=123, major={"a": 1})
    elif kind == "many-tables":
        body["host_details"] = {f"t{i}": {"c": "v"} for i in range(5000)}
    elif kind == "huge-values":
        details["system_info"]["hostname"] = "h" * 5000
        details["os_version"]["platform"] = "p" * 5000
    elif kind == "platform_type":
        body["platform_type"] = pick(rng, (9, [9], None, "x" * 1000, -1))
    elif kind == "identifier-empty":
        body["host_identifier"] = ""
    elif kind == "identifier-spaces":
        body["host_identifier"] = "   "
    elif kind == "no-details":
        body.pop("host_details")
    else:
        body["host_identifier"] += "-ümlaut-漢字-🦆"
        details["system_info"]["hostname"] = "🦆" * 100
    return _hostile(rng, ctx, "enroll-hostile-details", "enroll", dumps(body), note=kind)


@mutation("orbit-hostile", 3)
def _orbit(rng: random.Random, ctx: Context) -> list[Req]:
    host = host_of(rng, ctx)
    if rng.random() < 0.5:
        body = good_body(rng, ctx, "orbit/enroll", host)
        kind = pick(rng, ("bad-secret", "no-secret", "no-uuid", "wrong-type", "extra"))
        if kind == "bad-secret":
            body["enroll_secret"] = pick(rng, ("wrong", 5, None))
        elif kind == "no-secret":
            body.pop("enroll_secret")
        elif kind == "no-uuid":
            body.pop("hardware_uuid")
            body.pop("osquery_identifier")
        elif kind == "wrong-type":
            body[pick(rng, ("hardware_uuid", "hostname", "platform"))] = pick(rng, WRONG_TYPES)
        else:
            body["orbit_node_key"] = pick(rng, WRONG_TYPES)
        endpoint = "orbit/enroll"
    else:
        kind = pick(rng, ("missing", "empty", "unknown", "number", "list", "huge", "nul", "osquery-key"))
        value = {
            "empty": "",
            "unknown": "abc",
            "number": 5,
            "list": ["a"],
            "huge": "k" * 100_000,
            "nul": "a\x00b",
            "osquery-key": host.key,
        }.get(kind)
        body = {} if kind == "missing" else {"orbit_node_key": value}
        endpoint = "orbit/config"
    return _hostile(rng, ctx, "orbit-hostile", endpoint, dumps(body), note=kind)


@functools.cache
def _stranger() -> tuple[Any, Any]:
    """A self-signed identity no MDM CA issued: what a forger signs with."""
    from mdm.pki.ca import new_rsa_key, self_signed

    key = new_rsa_key(2048)
    return self_signed(key, "fuzz stranger"), key


def _mdm_message(rng: random.Random) -> bytes:
    kind = pick(rng, ("Authenticate", "TokenUpdate", "CheckOut", "Idle", "Acknowledged", "Error"))
    if kind in ("Idle", "Acknowledged", "Error"):
        body: dict[str, Any] = {"Status": kind, "UDID": fresh_id(rng), "CommandUUID": fresh_id(rng)}
    else:
        body = {"MessageType": kind, "UDID": fresh_id(rng), "Topic": "com.apple.mgmt.External.x"}
        if kind == "TokenUpdate":
            body.update(Token=rng.randbytes(32), PushMagic=fresh_id(rng))
    return plistlib.dumps(body)


@mutation("mdm-hostile", 3)
def _mdm(rng: random.Random, ctx: Context) -> list[Req]:
    """Apple MDM's endpoints, from a device nobody enrolled: none of it may be accepted or be a 5xx."""
    from mdm.pki.cms import sign_detached

    kind = pick(rng, ("unsigned", "garbage-sig", "random-sig", "stranger", "other-body", "garbage-body",
                      "scep-garbage", "scep-get", "scep-op", "enroll-secret"))  # fmt: skip
    body = _mdm_message(rng)
    headers = {"Content-Type": "application/x-apple-aspen-mdm-checkin"}
    endpoint, method = "/mdm/apple/mdm", "PUT"
    if kind == "garbage-sig":
        headers["Mdm-Signature"] = pick(rng, ("%%%", "", "a" * 12_000, "AAAA!!"))
    elif kind == "random-sig":
        headers["Mdm-Signature"] = base64.b64encode(rng.randbytes(rng.randrange(1, 4000))).decode()
    elif kind in ("stranger", "other-body", "garbage-body"):
        cert, key = _stranger()
        signed = body if kind != "other-body" else _mdm_message(rng)
        if kind == "garbage-body":
            body = signed = rng.randbytes(rng.randrange(0, 3000))
        headers["Mdm-Signature"] = base64.b64encode(sign_detached(signed, cert, key)).decode()
    elif kind == "scep-garbage":
        endpoint, method, body = "/mdm/apple/scep?operation=PKIOperation", "POST", rng.randbytes(2000)
        headers = {"Content-Type": "application/x-pki-message"}
    elif kind == "scep-get":
        message = base64.b64encode(rng.randbytes(500)).decode().replace("+", "%2B")
        endpoint, method, body = f"/mdm/apple/scep?operation=PKIOperation&message={message}", "GET", b""
    elif kind == "scep-op":
        endpoint, method, body = f"/mdm/apple/scep?operation={fresh_id(rng)}", "GET", b""
    elif kind == "enroll-secret":
        endpoint, method, body = f"/api/mdm/apple/enroll?enroll_secret={fresh_id(rng)}", "GET", b""
    return [Req("mdm-hostile", endpoint, body, method=method, headers=headers, note=kind)]


# --- sending and classifying -------------------------------------------------------------------


@dataclass
class Reply:
    status: int | None  # None: no HTTP reply (connection error or timeout)
    body: bytes = b""
    error: str = ""  # "connection-error: ..." or "timeout"


def classify(req: Req, reply: Reply) -> str:
    """One reply's class, by osquery's reading of it (osquery-protocol.md §1)."""
    if reply.status is None:
        return "timeout" if reply.error == "timeout" else "connection-error"
    if req.endpoint.startswith("/"):  # Apple MDM: plists and text, not osquery's JSON
        if reply.status >= 500:
            return "5xx"
        return "mdm-accepted-unsigned" if reply.status < 300 else "expected-error"
    try:
        body = json.loads(reply.body) if reply.body.strip() else None
    except (ValueError, UnicodeDecodeError):
        body = ...
    good = isinstance(body, dict) and "error" not in body and body.get("node_invalid") is not True
    if req.valid:
        return "ok" if reply.status == 200 and good else "valid-refused"
    if reply.status >= 500:
        return "5xx"
    if body is None:
        return "failure-without-error"  # an empty body: osquery reads it as success
    if not isinstance(body, dict):
        return "non-JSON"
    if body.get("node_invalid") is True and reply.status != 401:
        return "node_invalid-outside-401"
    if not 200 <= reply.status < 300 and "error" not in body:
        return "failure-without-error"
    if "error" in body:
        return "expected-error"
    return "ok"


async def send(session: aiohttp.ClientSession, url: str, req: Req) -> Reply:
    if req.probe_keepalive:
        return await send_raw(url, req)
    skip = () if "Content-Type" in req.headers else ("Content-Type",)
    try:
        async with session.request(
            req.method,
            url + req.path,
            data=req.body if req.body or req.method != "GET" else None,
            headers=req.headers,
            skip_auto_headers=skip,
        ) as response:
            return Reply(response.status, await response.read())
    except TimeoutError:
        return Reply(None, error="timeout")
    except (aiohttp.ClientError, OSError) as exc:
        return Reply(None, error=f"connection-error: {type(exc).__name__}: {exc}"[:200])


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
    }
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = await reader.read()
    return status, headers, body


async def send_raw(url: str, req: Req) -> Reply:
    """HTTP/1.1 over a raw socket, writing and reading at once (the server may answer before the
    body is in); if the reply keeps the connection alive, send a config request on the same
    connection, as osquery's per-thread session would. A reply that promised keep-alive on a
    connection then dropped is a connection error."""
    parsed = urllib.parse.urlsplit(url)
    head = f"{req.method} {req.path} HTTP/1.1\r\nHost: {parsed.netloc}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in req.headers.items())
    head += "Transfer-Encoding: chunked\r\n" if req.chunked else f"Content-Length: {len(req.body)}\r\n"
    body = (f"{len(req.body):x}\r\n".encode() + req.body + b"\r\n0\r\n\r\n") if req.chunked else req.body
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(parsed.hostname, parsed.port), OSQUERY_TIMEOUT
        )
    except (OSError, TimeoutError) as exc:
        return Reply(None, error=f"connection-error: connect: {exc}")

    async def write() -> None:
        with contextlib.suppress(OSError):
            writer.write(head.encode() + b"\r\n")
            for start in range(0, len(body), 256 * 1024):
                writer.write(body[start : start + 256 * 1024])
                await writer.drain()

    writing = asyncio.create_task(write())
    try:
        status, headers, raw = await asyncio.wait_for(_read_response(reader), OSQUERY_TIMEOUT)
    except TimeoutError:
        writing.cancel()
        writer.close()
        return Reply(None, error="timeout")
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
        writing.cancel()
        writer.close()
        return Reply(None, error=f"connection-error: no reply: {type(exc).__name__}: {exc}"[:200])
    reply = Reply(status, raw)
    try:
        await asyncio.wait_for(writing, 5)
        if headers.get("connection", "").lower() != "close":
            probe = b'{"node_key": "fuzz-keepalive-probe"}'
            writer.write(
                f"POST /api/osquery/config HTTP/1.1\r\nHost: {parsed.netloc}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(probe)}\r\n\r\n".encode()
                + probe
            )
            await writer.drain()
            again, _, _ = await asyncio.wait_for(_read_response(reader), OSQUERY_TIMEOUT)
            if again != 401:
                reply = Reply(
                    None,
                    error=f"connection-error: keep-alive reuse answered {again} not 401 "
                    f"(after {status} {raw[:80]!r})",
                )
    except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError, IndexError) as exc:
        reply = Reply(
            None,
            error=f"connection-error: {status} said keep-alive, then the connection "
            f"dropped ({type(exc).__name__}); reply was {raw[:80]!r}",
        )
    finally:
        writing.cancel()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return reply


@dataclass
class Tally:
    examples_per_class: int
    classes: Counter[str] = field(default_factory=Counter)
    by_endpoint: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    by_mutation: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    done: int = 0

    def add(self, index: int, req: Req, reply: Reply) -> None:
        cls = classify(req, reply)
        self.done += 1
        self.classes[cls] += 1
        self.by_endpoint[req.endpoint][cls] += 1
        self.by_mutation[req.mutation][cls] += 1
        kept = self.examples.get(cls, [])
        # The first few of each class, and the first of each mutation that caused it.
        first_of_mutation = all(e["mutation"] != req.mutation for e in kept)
        if cls in REPLY_DEFECTS and (len(kept) < self.examples_per_class or first_of_mutation):
            self.examples.setdefault(cls, []).append(
                {
                    "plan_item": index,
                    "mutation": req.mutation,
                    "request": req.summary(),
                    "status": reply.status,
                    "reply": reply.error or repr(reply.body[:300]),
                }
            )


def plan_item(seed: int, index: int, ctx: Context) -> list[Req]:
    """Plan item ``index`` of ``seed``: the same requests for the same seed, whatever the timing."""
    rng = random.Random(f"fleet-fuzz:{seed}:{index}")
    names = list(MUTATIONS)
    weights = [MUTATIONS[n][0] for n in names]
    name = rng.choices(names, weights)[0]
    return MUTATIONS[name][1](rng, ctx)


@dataclass
class Memory:
    pids: Callable[[], list[int]]
    samples: list[tuple[int, float, int]] = field(default_factory=list)  # (requests done, t, rss)

    def sample(self, done: int) -> None:
        pids = self.pids()
        if pids:
            self.samples.append((done, time.monotonic(), rss_bytes(pids)))


async def fuzz(args: argparse.Namespace, url: str, ctx: Context, tally: Tally, memory: Memory) -> float:
    """Send the plan; returns the seconds it took. Bounded by ``--requests`` and ``--max-seconds``."""
    planned = 0
    index = 0
    deadline = time.monotonic() + args.max_seconds
    connector = aiohttp.TCPConnector(limit=args.concurrency, force_close=True)
    timeout = aiohttp.ClientTimeout(total=OSQUERY_TIMEOUT)
    started = time.monotonic()

    def next_item() -> tuple[int, list[Req]] | None:
        nonlocal planned, index
        if planned >= args.requests or time.monotonic() > deadline:
            return None
        reqs = plan_item(args.seed, index, ctx)[: args.requests - planned]
        planned += len(reqs)
        index += 1
        return index - 1, reqs

    async def worker(session: aiohttp.ClientSession) -> None:
        while (item := next_item()) is not None:
            number, reqs = item
            for req in reqs:
                tally.add(number, req, await send(session, url, req))

    async def sampler() -> None:
        while True:
            memory.sample(tally.done)
            await asyncio.sleep(0.25)

    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers={"User-Agent": "osquery/5.23.1"}
    ) as session:
        sampling = asyncio.create_task(sampler())
        last = time.monotonic()
        workers = [asyncio.create_task(worker(session)) for _ in range(args.concurrency)]
        pending = set(workers)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=10)
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                _log(
                    f"  {tally.done}/{args.requests} requests, "
                    f"{sum(tally.classes[c] for c in REPLY_DEFECTS)} defective replies so far"
                )
        await asyncio.gather(*workers)
        sampling.cancel()
    memory.sample(tally.done)
    if planned < args.requests:
        _log(f"stopped at {planned} requests: --max-seconds {args.max_seconds:g} reached")
    return time.monotonic() - started


# --- set-up: hosts, and the live-query check --------------------------------------------------


async def enroll_hosts(url: str, secret: str, count: int, seed: int, concurrency: int) -> list[FuzzHost]:
    """Enroll ``count`` simulated agents and let each answer its detail queries once."""
    config = SimulationConfig(
        url=url,
        enroll_secret=secret,
        count=count,
        seed=seed,
        agent=AgentSettings(retry_scale=0.05),
        connections=concurrency,
    )
    stats = Stats()
    hosts: list[FuzzHost] = []
    async with HttpTransport(url, connections=concurrency) as transport:
        agents = build_agents(transport, config, stats, asyncio.Event())
        enrolled = await enroll_all(agents, concurrency)
        if enrolled < count:
            raise RuntimeError(f"only {enrolled}/{count} hosts enrolled; last errors: {stats.last_errors}")
        for agent in agents:
            outcome = await agent.request("distributed/read", {}, 3)
            if not outcome.ok:
                raise RuntimeError(f"set-up check-in failed: {outcome.reason}")
            work = [(n, s) for n, s in agent.accept_work(outcome.body) if n.startswith(DETAIL)]
            agent.run_queries(work)
            written = await agent.request("distributed/write", dict(agent.pending), 3)
            if not written.ok:
                raise RuntimeError(f"set-up detail answers refused: {written.reason}")
            agent.pending = {"queries": {}, "statuses": {}, "messages": {}, "stats": {}}
            hosts.append(FuzzHost(agent, work))
    return hosts


def admin_token(env: dict[str, str]) -> str:
    """A REST token of a new superuser (django-rest-knox, or DRF's authtoken on older trees)."""
    code = (
        "from django.contrib.auth import get_user_model\n"
        "u, _ = get_user_model().objects.get_or_create(username='fuzz-admin', "
        "defaults={'is_superuser': True, 'is_staff': True})\n"
        "try:\n"
        "    from knox.models import AuthToken\n"
        "    print(AuthToken.objects.create(user=u)[1])\n"
        "except (ImportError, RuntimeError):  # knox not installed, or not in INSTALLED_APPS\n"
        "    from rest_framework.authtoken.models import Token\n"
        "    print(Token.objects.get_or_create(user=u)[0].key)\n"
    )
    out = subprocess.run(
        [PY, str(ROOT / "manage.py"), "shell", "-v0", "-c", code],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0 or not out.stdout.strip():
        raise RuntimeError(f"could not create an API token: {out.stderr.strip()[-500:]}")
    return out.stdout.strip().splitlines()[-1]


LIVE_PROBES: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "flat row (control)": lambda: [{"name": "macOS", "version": "14.5"}],
    "row nested 20 levels": lambda: [{"name": json.loads(deep(20))}],
    "row nested 40 levels": lambda: [{"name": json.loads(deep(40))}],
    "row with NUL, CR, LF": lambda: [{"name": "a\x00b\r\nc"}],
    "row of 300-char value": lambda: [{"name": "v" * 300}],
}


async def live_rows_check(url: str, secret: str, token: str, seed: int) -> dict[str, Any]:
    """A live query over fresh hosts; each answers with one kind of row. An answer the server
    accepted (200, no error) must be stored with its rows: anything else is silently lost."""
    hosts = await enroll_hosts(url, secret, len(LIVE_PROBES), seed + 7919, 4)
    auth = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    findings: dict[str, Any] = {"dropped": [], "checked": []}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        targets = {"hosts": [h.agent.identity.uuid for h in hosts]}
        async with session.post(
            f"{url}/api/v1/campaigns/",
            headers=auth,
            json={"sql": "SELECT * FROM os_version", "targets": targets},
        ) as r:
            created = await r.json()
            if r.status != 201:
                return {"error": f"could not start a campaign: {r.status} {created}"}
        name = f"{LIVE}{created['id']}"
        sent: dict[str, tuple[str, int, bytes]] = {}
        for (what, rows), host in zip(LIVE_PROBES.items(), hosts, strict=True):
            body = {
                "node_key": host.key,
                "queries": {name: rows()},
                "statuses": {name: 0},
                "messages": {name: ""},
            }
            async with session.post(f"{url}/api/osquery/distributed/write", json=body) as r:
                sent[what] = (host.agent.identity.hostname, r.status, await r.read())
        await asyncio.sleep(0.5)
        async with session.get(
            f"{url}/api/v1/campaigns/{created['id']}/results/?limit=100", headers=auth
        ) as r:
            listing = await r.json()
    entries = listing.get("results", listing) if isinstance(listing, dict) else listing
    by_host = {e.get("hostname"): e for e in entries if isinstance(e, dict)}
    for what, (hostname, status, raw) in sent.items():
        accepted = status == 200 and raw.strip() in (b"{}", b"")
        entry = by_host.get(hostname) or {}
        stored = entry.get("rows")
        line = {
            "probe": what,
            "write": f"{status} {raw[:120]!r}",
            "stored_state": entry.get("state"),
            "stored_rows": len(stored) if isinstance(stored, list) else None,
            "row_count": entry.get("row_count"),
        }
        findings["checked"].append(line)
        if accepted and not (isinstance(stored, list) and len(stored) == 1):
            findings["dropped"].append(line)
    return findings


# --- the server's log ---------------------------------------------------------------------------


def scan_log(path: Path, start: int) -> dict[str, Any]:
    """Forged lines in the server's output (anything not written by its formatter, granian or
    gunicorn, or a traceback), and the bytes written since ``start``."""
    try:
        data = path.read_bytes()
    except OSError:
        return {"error": f"cannot read {path}"}
    forged: list[str] = []
    count = 0
    in_record = in_traceback = after_exception = after_warning = False
    for number, line in enumerate(data.split(b"\n"), 1):
        ok = bool(LOG_LINE.match(line) or GRANIAN_LINE.match(line) or GUNICORN_LINE.match(line))
        if b"\r" in line or b"\x00" in line or line.startswith(FORGED.encode()):
            ok = False  # raw agent control characters, or the record an agent wrote itself
        elif ok:
            in_traceback = after_exception = after_warning = False
            in_record = True
        elif in_record and line.startswith(b"    | "):
            ok = True  # fleet.logformat indents a record's traceback this way
        elif WARNING_LINE.match(line):
            after_warning, ok = True, True
        elif after_warning and line.startswith(b" "):
            after_warning, ok = False, True
        elif line.startswith(b"Traceback (most recent call last):"):
            in_traceback, ok = True, True
        elif in_traceback and line.startswith(b" "):
            ok = True
        elif in_traceback and EXCEPTION_LINE.match(line):
            in_traceback, after_exception, ok = False, True, True
        elif after_exception and (not line.strip() or line in CHAINED):
            ok = True
        elif not line and number == data.count(b"\n") + 1:
            ok = True  # the file's final newline
        if not ok:
            in_record = False
            count += 1
            if len(forged) < 5:
                forged.append(f"line {number}: {line[:200]!r}")
    return {"bytes": len(data) - start, "forged_lines": count, "forged_examples": forged}


# --- report ---------------------------------------------------------------------------------------


def memory_report(memory: Memory, total: int, pct: float, mb: float) -> dict[str, Any]:
    samples = memory.samples
    if not samples:
        return {"note": "not sampled (no server process to read)"}
    warm_at = max(1, total // 10)
    warm = next((s for s in samples if s[0] >= warm_at), samples[-1])
    end = samples[-1]
    marks = {}
    for tenth in range(1, 11):
        point = next((s for s in samples if s[0] >= total * tenth // 10), None)
        if point:
            marks[f"{tenth * 10}%"] = round(point[2] / MiB, 1)
    growth = end[2] - warm[2]
    limit = min(warm[2] * pct / 100, mb * MiB)
    return {
        "warmup_end_requests": warm[0],
        "rss_mib_at_warmup_end": round(warm[2] / MiB, 1),
        "rss_mib_at_end": round(end[2] / MiB, 1),
        "rss_mib_peak": round(max(s[2] for s in samples) / MiB, 1),
        "rss_mib_by_progress": marks,
        "growth_mib": round(growth / MiB, 1),
        "growth_pct": round(growth / warm[2] * 100, 1) if warm[2] else 0.0,
        "threshold": f"{pct:g} % or {mb:g} MiB, whichever is smaller ({limit / MiB:.1f} MiB)",
        "defect": growth > limit,
    }


def print_summary(summary: dict[str, Any]) -> None:
    print()
    print(
        f"Fuzzed {summary['target']} ({summary['shape']}): {summary['requests_sent']} requests, seed "
        f"{summary['seed']}, {summary['seconds']:.0f} s, {summary['hosts']} hosts"
    )
    cols = [c for c in CLASSES if c in ("ok", "expected-error") or summary["classes"].get(c)]
    width = max((len(m) for m in summary["by_mutation"]), default=10) + 2
    print()
    print("by class: " + ", ".join(f"{c} {summary['classes'].get(c, 0)}" for c in CLASSES))
    for title, table in (("endpoint", summary["by_endpoint"]), ("mutation", summary["by_mutation"])):
        print()
        print(f"{title:<{width}}" + "".join(f"{c:>{max(len(c), 5) + 2}}" for c in cols))
        for name in sorted(table):
            print(
                f"{name:<{width}}" + "".join(f"{table[name].get(c, 0):>{max(len(c), 5) + 2}}" for c in cols)
            )
    mem = summary["memory"]
    print()
    if "rss_mib_at_warmup_end" in mem:
        print(
            f"memory (RSS of the server's processes): {mem['rss_mib_at_warmup_end']} MiB after warm-up "
            f"({mem['warmup_end_requests']} requests) -> {mem['rss_mib_at_end']} MiB at the end "
            f"({mem['growth_mib']:+} MiB, {mem['growth_pct']:+}%), peak {mem['rss_mib_peak']} MiB; "
            f"threshold {mem['threshold']}"
        )
        print("  by progress: " + ", ".join(f"{k} {v}" for k, v in mem["rss_mib_by_progress"].items()))
    else:
        print(f"memory: {mem.get('note')}")
    log = summary["log"]
    if "bytes" in log:
        print(
            f"server log: {log['bytes']:,} bytes during the run ({log['bytes_per_1000_requests']:,.0f} per "
            f"1000 requests), {log['forged_lines']} forged lines"
        )
        for example in log["forged_examples"]:
            print(f"  {example}")
    else:
        print(f"server log: {log.get('note') or log.get('error')}")
    live = summary["live_rows"]
    if live.get("checked"):
        print("live-query answers (accepted -> stored):")
        for line in live["checked"]:
            print(
                f"  {line['probe']}: write {line['write'][:40]} -> state {line['stored_state']}, "
                f"{line['stored_rows']} rows stored of {line['row_count']}"
            )
    elif live:
        print(f"live-query check: {live.get('error') or live.get('note')}")
    print()
    if summary["defects"]:
        print("DEFECTS: " + ", ".join(f"{k} {v}" for k, v in summary["defects"].items()))
        for cls, examples in summary["examples"].items():
            print(f"\n{cls}:")
            for e in examples:
                print(f"  #{e['plan_item']} {e['mutation']}: {e['request'][:400]}")
                print(f"     -> {e['status']} {e['reply'][:300]}")
    else:
        print("no defects")


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--shape",
        choices=("auto", "production", "embedded"),
        default="auto",
        help="production: granian (2 worker processes) + MariaDB + Redis; embedded: make run's server, "
        "SQLite, in-memory cache and channel layer (make run); auto: production when MariaDB and "
        "Redis answer, else embedded",
    )
    parser.add_argument("--url", help="fuzz a server already running here instead (needs --enroll-secret)")
    parser.add_argument("--enroll-secret", help="with --url: a valid enroll secret of that server")
    parser.add_argument("--server-log", help="with --url: the server's output file, to scan")
    parser.add_argument("--server-pid", type=int, help="with --url: its main PID, to sample memory")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--hosts", type=int, default=20, help="valid simulated hosts to enroll")
    parser.add_argument("--workers", type=int, default=2, help="granian workers (production shape)")
    parser.add_argument("--max-seconds", type=float, default=900, help="stop sending after this long")
    parser.add_argument("--memory-growth-pct", type=float, default=15.0)
    parser.add_argument("--memory-growth-mb", type=float, default=50.0)
    parser.add_argument("--examples", type=int, default=3, help="examples kept per defect class")
    parser.add_argument("--mysql-db", default="fleet_fuzz", help="throwaway MariaDB database (dropped)")
    parser.add_argument("--redis-db", type=int, default=6, help="Redis database index (flushed)")
    parser.add_argument("--tmp-dir", help="where the server's files go (default: a new temporary directory)")
    parser.add_argument("--json", help="write the summary to this file as JSON")
    parser.add_argument(
        "--record", action="store_true", help="keep the figures in docs/fuzz-results.json (benchmarks.md)"
    )
    parser.add_argument("--no-live-check", action="store_true", help="skip the live-query storage check")
    args = parser.parse_args(argv)
    if args.url and not args.enroll_secret:
        parser.error("--url needs --enroll-secret")
    if not 1 <= args.requests <= 1_000_000 or not 1 <= args.concurrency <= 256 or not 1 <= args.hosts <= 5000:
        parser.error("--requests 1..1,000,000, --concurrency 1..256, --hosts 1..5000")
    if not 0 <= args.redis_db <= 15 or not re.fullmatch(r"\w+", args.mysql_db):
        parser.error("--redis-db 0..15; --mysql-db letters, digits and _")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    own_tmp = not args.tmp_dir
    tmp = Path(args.tmp_dir or tempfile.mkdtemp(prefix="fleet-fuzz-"))
    tmp.mkdir(parents=True, exist_ok=True)
    server: Server | None = None
    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    if args.url:
        url, secret, shape = args.url.rstrip("/"), args.enroll_secret, "external"
        log_path = Path(args.server_log) if args.server_log else None
        pid = args.server_pid
        memory = Memory(lambda: [pid, *children_of(pid)] if pid else [])
    else:
        secret, shape = SECRET, args.shape
        if shape == "auto":
            production = mariadb_available() and redis_available(redis_url)
            shape = "production" if production else "embedded"
        options = {"mysql_db": args.mysql_db, "redis_url": redis_url, "secret": secret, "log_level": "INFO"}
        if shape == "production":
            if not mariadb_available() or not redis_available(redis_url):
                _log("the production shape needs MariaDB (make setup-mysql) and Redis on 127.0.0.1:6379")
                return 2
            server = Server(args.workers, "mariadb", "redis", tmp / "server", **options)
        else:
            server = EmbeddedServer("sqlite", "none", tmp / "server", **options)
        url, log_path = server.url, server.log_path
        memory = Memory(server.pids)
    summary: dict[str, Any] = {"target": url, "shape": shape, "seed": args.seed, "hosts": args.hosts}
    if server is not None:
        summary["web_server"] = server.name  # granian or embedded (fuzzrecord names it)
    tally = Tally(args.examples)
    try:
        if server is not None:
            _log(f"starting {server.name} ({shape}) at {url}; files in {tmp}")
            server.prepare()
            server.start()
        hosts = asyncio.run(enroll_hosts(url, secret, args.hosts, args.seed, min(args.concurrency, 16)))
        _log(f"enrolled {len(hosts)} hosts; sending {args.requests} requests, {args.concurrency} at a time")
        log_start = log_path.stat().st_size if log_path and log_path.exists() else 0
        ctx = Context(hosts, secret, args.seed)
        seconds = asyncio.run(fuzz(args, url, ctx, tally, memory))
        time.sleep(1)  # let the server flush its log
        log = scan_log(log_path, log_start) if log_path else {"note": "not scanned (pass --server-log)"}
        if "bytes" in log:
            log["bytes_per_1000_requests"] = round(log["bytes"] / max(tally.done, 1) * 1000)
        live: dict[str, Any] = {"note": "skipped"}
        if server is not None and not args.no_live_check:
            try:
                live = asyncio.run(live_rows_check(url, secret, admin_token(server.env), args.seed))
            except Exception as exc:  # the check is extra: report it, keep the rest of the summary
                live = {"error": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:
        _log(f"failed: {type(exc).__name__}: {exc}")
        if server is not None and server.log_tail():
            _log(f"server log:\n{server.log_tail()}")
        return 2
    finally:
        if server is not None:
            server.stop()
            server.cleanup()
        if own_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    defects = {c: tally.classes[c] for c in REPLY_DEFECTS if tally.classes[c]}
    mem = memory_report(memory, tally.done, args.memory_growth_pct, args.memory_growth_mb)
    if mem.get("defect"):
        defects["memory-growth"] = 1
    if log.get("forged_lines"):
        defects["forged-log-lines"] = log["forged_lines"]
    if live.get("dropped"):
        defects["live-rows-dropped"] = len(live["dropped"])
    summary.update(
        requests_sent=tally.done,
        seconds=seconds,
        classes=dict(tally.classes),
        by_endpoint={k: dict(v) for k, v in tally.by_endpoint.items()},
        by_mutation={k: dict(v) for k, v in tally.by_mutation.items()},
        defects=defects,
        examples=dict(tally.examples),
        memory=mem,
        log=log,
        live_rows=live,
    )
    print_summary(summary)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1, default=str))
        _log(f"wrote {args.json}")
    if args.record:
        fuzzrecord.record(summary)
        _log(f"recorded the run in {fuzzrecord.RESULTS} (rendered into docs/benchmarks.md by make bench)")
    return 1 if defects else 0


if __name__ == "__main__":
    sys.exit(main())
