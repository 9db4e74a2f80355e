"""``tcp``: open (and close) a TCP connection; connect time. Refused or timed out is a failure."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from taskagent.metrics import Metric, PluginError
from taskagent.plugins._util import elapsed_ms

NAME = "tcp"
SETTINGS_SCHEMA: dict[str, Any] = {
    "properties": {
        "host": {"type": "string", "required": True, "format": "host"},
        "port": {"type": "integer", "required": True, "min": 1, "max": 65535},
        "timeout": {"type": "number", "min": 0.1, "max": 60, "default": 10},
    },
}


async def run(settings: dict[str, Any], context) -> list[Metric]:
    timeout = min(settings["timeout"], context.timeout)
    started = time.perf_counter()
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(settings["host"], settings["port"]), timeout
        )
    except TimeoutError as exc:
        raise PluginError("timeout", f"no connection within {timeout} s") from exc
    except ConnectionRefusedError as exc:
        raise PluginError("refused", str(exc)) from exc
    except OSError as exc:  # unreachable, no route, name not resolved...
        raise PluginError("connect", str(exc)) from exc
    connect_ms = elapsed_ms(started)
    writer.close()
    # The measurement is done; a slow or failed close does not change it.
    with contextlib.suppress(TimeoutError, OSError):
        await asyncio.wait_for(writer.wait_closed(), 1.0)
    return [context.metric("connect_ms", connect_ms, "ms", port=str(settings["port"]))]
