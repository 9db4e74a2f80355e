"""``ping``: ICMP echo through the system ``ping`` binary; round-trip times and loss.

No ``ping`` binary is a failure with ``error=unsupported``, not a silent skip. A host that
answered no echo at all is a failure (``unreachable``): there is no round-trip time to report.
The host is checked by the schema (``format: host``, so it cannot start with ``-``) and passed
as one argument, never through a shell.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from typing import Any

from taskagent.metrics import Metric, PluginError

NAME = "ping"
SETTINGS_SCHEMA: dict[str, Any] = {
    "properties": {
        "host": {"type": "string", "required": True, "format": "host"},
        "count": {"type": "integer", "min": 1, "max": 20, "default": 3},
    },
}
_LOSS = re.compile(r"([\d.]+)% packet loss")
_RTT = re.compile(r"= *([\d.]+)/([\d.]+)/([\d.]+)")


def parse_output(text: str) -> tuple[float, tuple[float, float, float] | None]:
    """(loss ratio, (min, avg, max) ms or None) from iputils' or busybox's summary lines."""
    loss = _LOSS.search(text)
    if loss is None:
        raise PluginError("ping", "no packet-loss line in ping's output")
    rtt = _RTT.search(text)
    times = (float(rtt.group(1)), float(rtt.group(2)), float(rtt.group(3))) if rtt else None
    return float(loss.group(1)) / 100.0, times


async def run(settings: dict[str, Any], context) -> list[Metric]:
    binary = shutil.which("ping")
    if binary is None:
        raise PluginError("unsupported", "no ping binary on this agent")
    count = settings["count"]
    process = await asyncio.create_subprocess_exec(
        binary, "-n", "-c", str(count), "-W", str(max(1, int(context.timeout / count))), settings["host"],
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await process.communicate()
    except asyncio.CancelledError:  # the run timed out: do not leave the process behind
        process.kill()
        await process.wait()
        raise
    loss, times = parse_output(out.decode("utf-8", "replace"))
    if times is None:
        raise PluginError("unreachable", f"no reply from {settings['host']}")
    return [
        context.metric("loss_ratio", loss),
        context.metric("rtt_min_ms", times[0], "ms"),
        context.metric("rtt_avg_ms", times[1], "ms"),
        context.metric("rtt_max_ms", times[2], "ms"),
    ]
