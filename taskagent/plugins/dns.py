"""``dns``: one DNS query (dnspython); resolve time and number of answers.

An empty answer (the name exists, not with that record type) is data: ``answers`` = 0. A name
that does not exist (NXDOMAIN), no answer from any server, or a timeout are failures.
"""

from __future__ import annotations

import time
from typing import Any

from taskagent.metrics import Metric, PluginError
from taskagent.plugins._util import elapsed_ms

NAME = "dns"
RECORD_TYPES = ["A", "AAAA", "CNAME", "MX", "NS", "TXT", "SOA", "SRV", "PTR", "CAA"]
SETTINGS_SCHEMA: dict[str, Any] = {
    "properties": {
        "name": {"type": "string", "required": True, "format": "host"},
        "record_type": {"type": "string", "enum": RECORD_TYPES, "default": "A"},
        "server": {"type": "string", "format": "host",
                   "description": "an IP address; the system's resolvers when absent"},
        "port": {"type": "integer", "min": 1, "max": 65535, "default": 53},
        "timeout": {"type": "number", "min": 0.1, "max": 30, "default": 5},
    },
}


async def run(settings: dict[str, Any], context) -> list[Metric]:
    import dns.asyncresolver
    import dns.exception
    import dns.resolver

    server = settings.get("server")
    resolver = dns.asyncresolver.Resolver(configure=server is None)
    if server is not None:
        resolver.nameservers = [server]
    resolver.port = settings["port"]
    timeout = min(settings["timeout"], context.timeout)
    resolver.lifetime = timeout
    started = time.perf_counter()
    try:
        answer = await resolver.resolve(settings["name"], settings["record_type"], raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN as exc:
        raise PluginError("nxdomain", str(exc)) from exc
    except dns.exception.Timeout as exc:
        raise PluginError("timeout", str(exc)) from exc
    except dns.resolver.NoNameservers as exc:
        raise PluginError("servfail", str(exc)) from exc
    except (dns.exception.DNSException, OSError, ValueError) as exc:
        raise PluginError("dns", f"{type(exc).__name__}: {exc}") from exc
    resolve_ms = elapsed_ms(started)
    count = len(answer.rrset) if answer.rrset is not None else 0
    tags = {"record_type": settings["record_type"]}
    return [context.metric("resolve_ms", resolve_ms, "ms", **tags), context.metric("answers", count, **tags)]
