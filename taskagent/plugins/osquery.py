"""``osquery``: run one SQL query against a running osqueryd through its extension socket.

Uses ``osqueryi --json --connect <socket> <query>``; reports the number of rows and the time
taken. No socket, or no ``osqueryi`` binary, is a failure (``socket_missing``/``unsupported``).
Kept deliberately simple: rows' values are not turned into metrics yet.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from typing import Any

from taskagent.metrics import Metric, PluginError
from taskagent.plugins._util import elapsed_ms

NAME = "osquery"
SETTINGS_SCHEMA: dict[str, Any] = {
    "properties": {
        "query": {"type": "string", "required": True, "min_length": 1, "max_length": 10000},
        "socket": {"type": "string", "default": "/var/osquery/osquery.em", "min_length": 1},
    },
}


async def run(settings: dict[str, Any], context) -> list[Metric]:
    socket = settings["socket"]
    if not os.path.exists(socket):
        raise PluginError("socket_missing", f"no osquery extension socket at {socket}")
    binary = shutil.which("osqueryi")
    if binary is None:
        raise PluginError("unsupported", "no osqueryi binary on this agent")
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        binary, "--json", "--connect", socket, settings["query"],
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await process.communicate()
    except asyncio.CancelledError:
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        raise PluginError("query", err.decode("utf-8", "replace")[:500])
    try:
        rows = json.loads(out)
    except ValueError as exc:
        raise PluginError("bad_response", "osqueryi did not print JSON") from exc
    if not isinstance(rows, list):
        raise PluginError("bad_response", "osqueryi did not print a list of rows")
    return [context.metric("rows", len(rows)), context.metric("duration_ms", elapsed_ms(started), "ms")]
