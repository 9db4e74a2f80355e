"""Graphite plaintext over TCP: ``name;tag=value;... value timestamp\\n`` per metric.

Tags use Graphite's tagged-series syntax (Graphite ≥ 1.1); ``task``, ``agent`` and ``plugin``
are always among them. A batch is sent on its own connection, closed cleanly: the batch counts
as accepted when the write has drained and the connection closed without error (what plaintext
Graphite can tell us; it has no acknowledgement).
"""

from __future__ import annotations

import asyncio
import re
from urllib.parse import urlsplit

from taskagent.metrics import Metric
from taskagent.publish import SendError

# Graphite refuses these in a tagged name or a tag: ';' separates tags, '=' tag from value,
# whitespace ends the path, '~' may not start a value; '!' and '^' are query operators.
_BAD_PATH = re.compile(r"[\s;=~!^]")
_BAD_TAG = re.compile(r"[\s;=!^]")


def line(metric: Metric) -> str:
    path = _BAD_PATH.sub("_", metric.name) or "_"
    parts = [path]
    for key in sorted(metric.tags):
        value = _BAD_TAG.sub("_", metric.tags[key]).lstrip("~")
        name = _BAD_PATH.sub("_", key)
        if name and value:  # Graphite has no empty tag values
            parts.append(f"{name}={value}")
    return f"{';'.join(parts)} {metric.value!r} {int(metric.timestamp)}\n"


class GraphiteSender:
    def __init__(self, host: str, port: int = 2003, timeout: float = 10.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout

    @classmethod
    def from_url(cls, url: str) -> GraphiteSender:
        parts = urlsplit(url if "://" in url else f"tcp://{url}")
        if not parts.hostname:
            raise ValueError(f"graphite destination {url!r} has no host")
        return cls(parts.hostname, parts.port or 2003)

    async def send(self, metrics: list[Metric]) -> None:
        payload = "".join(line(m) for m in metrics).encode("utf-8")
        try:
            async with asyncio.timeout(self.timeout):
                _reader, writer = await asyncio.open_connection(self.host, self.port)
                try:
                    writer.write(payload)
                    await writer.drain()
                    if writer.can_write_eof():
                        writer.write_eof()
                finally:
                    writer.close()
                    await writer.wait_closed()
        except (OSError, TimeoutError) as exc:
            raise SendError(f"graphite {self.host}:{self.port}: {exc or type(exc).__name__}") from exc
