"""Prometheus remote-write 1.0: a snappy (block format) compressed protobuf ``WriteRequest``.

The messages (``prometheus.WriteRequest``, ``TimeSeries``, ``Label``, ``Sample``; task-server.md
§7) are declared here with ``descriptor_pb2`` and built by ``protobuf`` at import, so no
generated code or ``protoc`` is needed. Metrics become series as Prometheus expects:

* ``__name__``: the metric name with every character outside ``[a-zA-Z0-9_:]`` turned into
  ``_`` (dots included), and a leading ``_`` if it would start with a digit;
* every tag as a label (names sanitised to ``[a-zA-Z_][a-zA-Z0-9_]*``; tags that would clash
  with reserved ``__`` names are dropped; empty values are dropped, Prometheus ignores them);
* labels sorted by name, one series per label set, its samples in time order (milliseconds).

Status handling follows the spec: 2xx accepted; 5xx and 429 retried (``SendError``); any other
status refused for good (``RejectedError``).
"""

from __future__ import annotations

import re
from collections import defaultdict

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from taskagent.metrics import Metric
from taskagent.publish import RejectedError, SendError

HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}


def _build_messages():
    f = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="taskagent_remote_write.proto", package="prometheus",
                                               syntax="proto3")

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        msg = proto.message_type.add(name=name)
        for field_name, number, type_, label, type_name in fields:
            field = msg.field.add(name=field_name, number=number, type=type_, label=label)
            if type_name:
                field.type_name = type_name

    one, many = f.LABEL_OPTIONAL, f.LABEL_REPEATED
    message("Label", ("name", 1, f.TYPE_STRING, one, ""), ("value", 2, f.TYPE_STRING, one, ""))
    message("Sample", ("value", 1, f.TYPE_DOUBLE, one, ""), ("timestamp", 2, f.TYPE_INT64, one, ""))
    message("TimeSeries", ("labels", 1, f.TYPE_MESSAGE, many, ".prometheus.Label"),
            ("samples", 2, f.TYPE_MESSAGE, many, ".prometheus.Sample"))
    message("WriteRequest", ("timeseries", 1, f.TYPE_MESSAGE, many, ".prometheus.TimeSeries"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("prometheus.WriteRequest"))


WriteRequest = _build_messages()

_BAD_NAME = re.compile(r"[^a-zA-Z0-9_:]")
_BAD_LABEL = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(name: str) -> str:
    clean = _BAD_NAME.sub("_", name) or "_"
    return f"_{clean}" if clean[0].isdigit() else clean


def label_name(name: str) -> str:
    clean = _BAD_LABEL.sub("_", name) or "_"
    return f"_{clean}" if clean[0].isdigit() else clean


def labels_of(metric: Metric) -> tuple[tuple[str, str], ...]:
    labels = {"__name__": metric_name(metric.name)}
    for key, value in metric.tags.items():
        name = label_name(key)
        if name.startswith("__") or not value:
            continue
        labels[name] = value
    return tuple(sorted(labels.items()))


def encode(metrics: list[Metric]) -> bytes:
    """The uncompressed ``WriteRequest`` for ``metrics``."""
    series: dict[tuple[tuple[str, str], ...], list[tuple[int, float]]] = defaultdict(list)
    for metric in metrics:
        series[labels_of(metric)].append((int(round(metric.timestamp * 1000)), metric.value))
    request = WriteRequest()
    for labels, samples in series.items():
        ts = request.timeseries.add()
        for name, value in labels:
            ts.labels.add(name=name, value=value)
        for timestamp, value in sorted(samples):
            ts.samples.add(value=value, timestamp=timestamp)
    return request.SerializeToString()


def compress(data: bytes) -> bytes:
    import cramjam

    return bytes(cramjam.snappy.compress_raw(data))


class RemoteWriteSender:
    def __init__(
        self, url: str, headers: dict[str, str] | None = None, timeout: float = 10.0, ssl=None
    ) -> None:
        self.url = url
        self.headers = {**(headers or {}), **HEADERS}
        self.timeout = timeout
        self.ssl = True if ssl is None else ssl
        self._session = None

    async def send(self, metrics: list[Metric]) -> None:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        body = compress(encode(metrics))
        try:
            request = self._session.post(self.url, data=body, headers=self.headers, ssl=self.ssl)
            async with request as response:
                status = response.status
                text = (await response.text(errors="replace"))[:200] if status >= 300 else ""
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise SendError(f"remote write {self.url}: {exc or type(exc).__name__}") from exc
        if 200 <= status < 300:
            return
        if status >= 500 or status == 429:
            raise SendError(f"remote write {self.url}: HTTP {status} {text}")
        raise RejectedError(f"remote write {self.url}: HTTP {status} {text}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
