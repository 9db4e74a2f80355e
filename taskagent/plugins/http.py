"""``http``: one HTTP request; status code, latency, body size and, optionally, a text check.

Any response counts as a measurement (its status code is the data); no response (refused,
DNS failure, TLS error, timeout) is a failure. Latency runs from sending the request to the end
of the body. The body is streamed: only its first ``_SEARCH_LIMIT`` bytes are kept for the
``expected_text`` search, so a huge page cannot exhaust memory.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from taskagent.metrics import Metric, PluginError
from taskagent.plugins._util import elapsed_ms

NAME = "http"
SETTINGS_SCHEMA: dict[str, Any] = {
    "properties": {
        "url": {"type": "string", "required": True, "format": "url", "max_length": 2048},
        "method": {"type": "string", "enum": ["GET", "HEAD", "POST", "PUT", "OPTIONS"], "default": "GET"},
        "timeout": {"type": "number", "min": 0.1, "max": 60, "default": 10,
                    "description": "seconds for the whole request, body included"},
        "expected_text": {"type": "string", "min_length": 1, "max_length": 1024,
                          "description": "text the body must contain (expected_text_found 1/0)"},
        "headers": {"type": "object", "default": {}, "secret": True,
                    "description": "request headers; secret because they often carry tokens"},
        "verify_tls": {"type": "boolean", "default": True},
    },
}
_SEARCH_LIMIT = 1024 * 1024


async def run(settings: dict[str, Any], context) -> list[Metric]:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=min(settings["timeout"], context.timeout))
    connector = aiohttp.TCPConnector(ssl=None if settings["verify_tls"] else False)
    expected = settings.get("expected_text")
    kept = bytearray()
    size = 0
    try:
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            started = time.perf_counter()
            async with session.request(
                settings["method"], settings["url"], headers=settings["headers"], allow_redirects=False
            ) as response:
                async for chunk in response.content.iter_any():
                    size += len(chunk)
                    if expected is not None and len(kept) < _SEARCH_LIMIT:
                        kept += chunk[: _SEARCH_LIMIT - len(kept)]
                latency = elapsed_ms(started)
                status = response.status
    except TimeoutError as exc:
        raise PluginError("timeout", f"no complete response within {timeout.total} s") from exc
    except aiohttp.ClientConnectorError as exc:
        raise PluginError("connect", str(exc)) from exc
    except (aiohttp.ClientError, asyncio.IncompleteReadError, OSError) as exc:
        raise PluginError("http", f"{type(exc).__name__}: {exc}") from exc
    metrics = [
        context.metric("status_code", status),
        context.metric("latency_ms", latency, "ms"),
        context.metric("body_bytes", size, "bytes"),
    ]
    if expected is not None:
        found = expected.encode("utf-8") in kept
        metrics.append(context.metric("expected_text_found", 1.0 if found else 0.0))
    return metrics
