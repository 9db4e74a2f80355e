"""``ns1``: queries per second of an NS1 zone (``GET {base_url}/v1/stats/qps/{zone}``).

The original published an API error as QPS = 0 (task-server.md §6); here any error (refused,
timeout, a non-2xx status, a body without a numeric ``qps``) is a failure and no ``qps`` is
published. 401/403 are ``auth`` failures, so a revoked key is visible as such.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from taskagent.metrics import Metric, PluginError

NAME = "ns1"
SETTINGS_SCHEMA: dict[str, Any] = {
    "properties": {
        "zone": {"type": "string", "required": True, "format": "host"},
        "api_key": {"type": "string", "required": True, "secret": True, "min_length": 1},
        "base_url": {"type": "string", "format": "url", "default": "https://api.nsone.net"},
        "timeout": {"type": "number", "min": 0.1, "max": 60, "default": 10},
    },
}


async def run(settings: dict[str, Any], context) -> list[Metric]:
    import aiohttp

    url = f"{settings['base_url'].rstrip('/')}/v1/stats/qps/{quote(settings['zone'], safe='')}"
    timeout = aiohttp.ClientTimeout(total=min(settings["timeout"], context.timeout))
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, headers={"X-NSONE-KEY": settings["api_key"]}) as response,
        ):
            status = response.status
            body = await response.json(content_type=None) if 200 <= status < 300 else None
    except TimeoutError as exc:
        raise PluginError("timeout", "NS1 API did not answer in time") from exc
    except ValueError as exc:
        raise PluginError("bad_response", "NS1 API sent a body that is not JSON") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise PluginError("connect", f"{type(exc).__name__}: {exc}") from exc
    if status in (401, 403):
        raise PluginError("auth", f"NS1 API refused the key (HTTP {status})")
    if not 200 <= status < 300:
        raise PluginError("http_status", f"NS1 API answered HTTP {status}")
    qps = body.get("qps") if isinstance(body, dict) else None
    if isinstance(qps, bool) or not isinstance(qps, int | float):
        raise PluginError("bad_response", "NS1 API answer has no numeric qps")
    return [context.metric("qps", float(qps), "qps", zone=settings["zone"])]
