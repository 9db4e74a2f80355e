"""Publishing (taskagent/publish, taskagent/buffer.py): Graphite, remote write, the disk buffer."""

from __future__ import annotations

import asyncio
import contextlib
import json

import cramjam
import pytest
from aiohttp import web
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from taskagent.backoff import Backoff
from taskagent.buffer import DiskBuffer
from taskagent.metrics import Metric
from taskagent.protocol import ProtocolError
from taskagent.publish import Pipeline, RejectedError, SendError, decode_batch, encode_batch
from taskagent.publish.graphite import GraphiteSender, line
from taskagent.publish.remote_write import RemoteWriteSender
from taskagent.publish.server import ServerSender

TAGS = {"task": "7", "agent": "a1", "plugin": "http"}


def metric(name="http.latency_ms", value=1.5, ts=1_700_000_000.25, **tags):
    return Metric(name, value, "ms", "gauge", {**TAGS, **tags}, ts)


@contextlib.asynccontextmanager
async def serve(app: web.Application):
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class GraphiteServer:
    """A plaintext Graphite listener on 127.0.0.1 that keeps the lines it receives."""

    def __init__(self):
        self.lines: list[str] = []
        self.server = None

    async def _client(self, reader, writer):
        while raw := await reader.readline():
            self.lines.append(raw.decode().rstrip("\n"))
        writer.close()

    async def start(self, port=0):
        self.server = await asyncio.start_server(self._client, "127.0.0.1", port)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self):
        self.server.close()
        await self.server.wait_closed()


# --- Graphite ------------------------------------------------------------------------------------------


def test_graphite_line_format_and_sanitising():
    assert line(metric()) == "http.latency_ms;agent=a1;plugin=http;task=7 1.5 1700000000\n"
    odd = Metric("a b;c", 2, tags={"k;x": "v w", "empty": "", "t": "~x"}, timestamp=5)
    assert line(odd) == "a_b_c;k_x=v_w;t=x 2.0 5\n"


async def test_graphite_sender_delivers_parseable_lines():
    server = GraphiteServer()
    port = await server.start()
    try:
        sender = GraphiteSender.from_url(f"tcp://127.0.0.1:{port}")
        await sender.send([metric(value=1.0), metric("http.status_code", 200.0)])
        async with asyncio.timeout(2):
            while len(server.lines) < 2:
                await asyncio.sleep(0.01)
    finally:
        await server.stop()
    parsed = []
    for text in server.lines:
        path, value, ts = text.split(" ")
        name, *tags = path.split(";")
        parsed.append((name, dict(t.split("=", 1) for t in tags), float(value), int(ts)))
    assert parsed == [
        ("http.latency_ms", TAGS, 1.0, 1_700_000_000),
        ("http.status_code", TAGS, 200.0, 1_700_000_000),
    ]


async def test_graphite_down_is_a_send_error():
    server = GraphiteServer()
    port = await server.start()
    await server.stop()
    with pytest.raises(SendError):
        await GraphiteSender("127.0.0.1", port).send([metric()])


# --- remote write ------------------------------------------------------------------------------------


def _test_decoder():
    """WriteRequest built here from the remote-write 1.0 spec, independently of the encoder's."""
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="test_rw.proto", package="rwtest", syntax="proto3")
    label = fdp.message_type.add(name="L")
    label.field.add(name="name", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    label.field.add(name="value", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    sample = fdp.message_type.add(name="S")
    sample.field.add(name="value", number=1, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    sample.field.add(name="timestamp", number=2, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    series = fdp.message_type.add(name="TS")
    many = F.LABEL_REPEATED
    series.field.add(name="labels", number=1, type=F.TYPE_MESSAGE, label=many, type_name=".rwtest.L")
    series.field.add(name="samples", number=2, type=F.TYPE_MESSAGE, label=many, type_name=".rwtest.S")
    request = fdp.message_type.add(name="WR")
    request.field.add(name="timeseries", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                      type_name=".rwtest.TS")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("rwtest.WR"))


async def test_remote_write_to_a_local_receiver():
    WR = _test_decoder()
    received = []

    async def write(request):
        assert request.headers["Content-Encoding"] == "snappy"
        assert request.headers["Content-Type"] == "application/x-protobuf"
        assert request.headers["X-Prometheus-Remote-Write-Version"] == "0.1.0"
        assert request.headers["Authorization"] == "Bearer t"
        body = bytes(cramjam.snappy.decompress_raw(await request.read()))
        message = WR()
        message.ParseFromString(body)
        received.append(message)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/api/v1/write", write)
    async with serve(app) as base:
        sender = RemoteWriteSender(base + "/api/v1/write", {"Authorization": "Bearer t"})
        await sender.send([
            metric(value=2.0, ts=20.0), metric(value=1.0, ts=10.0),  # same series, out of order
            metric("ns1.qps", 3.0, ts=10.0, zone="example.com", **{"__name__": "evil", "9bad-key": "v"}),
        ])
        await sender.close()
    (request,) = received
    series = {
        tuple((lb.name, lb.value) for lb in ts.labels): [(s.timestamp, s.value) for s in ts.samples]
        for ts in request.timeseries
    }
    assert series == {
        (("__name__", "http_latency_ms"), ("agent", "a1"), ("plugin", "http"), ("task", "7")):
            [(10_000, 1.0), (20_000, 2.0)],
        (("_9bad_key", "v"), ("__name__", "ns1_qps"), ("agent", "a1"), ("plugin", "http"), ("task", "7"),
         ("zone", "example.com")): [(10_000, 3.0)],
    }
    for labels in series:  # sorted by name, as the spec requires
        assert [name for name, _ in labels] == sorted(name for name, _ in labels)


@pytest.mark.parametrize("status,error", [(500, SendError), (503, SendError), (429, SendError),
                                          (400, RejectedError), (401, RejectedError)])
async def test_remote_write_status_handling(status, error):
    async def write(request):
        return web.Response(status=status, text="no")

    app = web.Application()
    app.router.add_post("/w", write)
    async with serve(app) as base:
        sender = RemoteWriteSender(base + "/w")
        with pytest.raises(error):
            await sender.send([metric()])
        await sender.close()


# --- server destination ---------------------------------------------------------------------------------


async def test_server_sender_splits_what_does_not_fit_in_a_frame():
    sent = []

    async def send(part):
        if len(part) > 2:
            raise ProtocolError("too large")
        sent.append(part)

    await ServerSender(send).send([metric(value=float(i)) for i in range(5)])
    assert [m["value"] for part in sent for m in part] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert all(len(part) <= 2 for part in sent)


# --- the disk buffer ------------------------------------------------------------------------------------


def test_buffer_keeps_order_and_survives_a_restart(tmp_path):
    buf = DiskBuffer(tmp_path, max_bytes=1 << 20, segment_bytes=4096)
    for i in range(50):
        buf.append(json.dumps([i]).encode(), 1)
    for i in range(10):
        token, payload = buf.peek()
        assert json.loads(payload) == [i]
        assert buf.ack(token)
    buf.close()
    again = DiskBuffer(tmp_path, max_bytes=1 << 20, segment_bytes=4096)
    assert len(again) == 40
    again.append(b"[50]", 1)  # appended after the old records, in a segment of its own
    out = []
    while (head := again.peek()) is not None:
        out.append(json.loads(head[1])[0])
        again.ack(head[0])
    assert out == list(range(10, 51))
    assert again.bytes == 0 and len(again) == 0


def test_buffer_drops_the_oldest_and_counts_them(tmp_path):
    buf = DiskBuffer(tmp_path, max_bytes=8192, segment_bytes=1024)
    payload = b"x" * 200
    for _ in range(100):
        buf.append(payload, 3)
    assert buf.bytes <= 8192
    assert buf.dropped_batches > 0 and buf.dropped_metrics == 3 * buf.dropped_batches
    assert len(buf) + buf.dropped_batches == 100


def test_a_dropped_segment_is_not_acknowledged_by_a_late_ack(tmp_path):
    buf = DiskBuffer(tmp_path, max_bytes=4096, segment_bytes=1024)
    buf.append(b"first", 1)
    token, _ = buf.peek()
    for _ in range(60):  # the first segment is dropped while "first" is being sent
        buf.append(b"y" * 100, 1)
    before = len(buf)
    assert not buf.ack(token)
    assert len(buf) == before


def test_a_torn_record_is_skipped_after_a_crash(tmp_path):
    buf = DiskBuffer(tmp_path)
    buf.append(b"[1]", 1)
    buf.append(b"[2]", 1)
    buf.close()
    (segment,) = tmp_path.glob("*.seg")
    segment.write_bytes(segment.read_bytes()[:-2])  # the second record is cut short
    again = DiskBuffer(tmp_path)
    token, payload = again.peek()
    assert payload == b"[1]"
    again.ack(token)
    again.append(b"[3]", 1)
    token, payload = again.peek()
    assert payload == b"[3]"
    assert again.dropped_batches == 1


async def test_destination_down_then_up_loses_nothing_and_keeps_order(tmp_path):
    server = GraphiteServer()
    port = await server.start()
    await server.stop()  # the port is known, nothing listens on it yet
    stats_pipeline = Pipeline(
        "g", GraphiteSender("127.0.0.1", port), tmp_path / "g", flush_interval=0.05, batch_size=7,
        backoff=Backoff(0.02, 0.1),
    )
    stats_pipeline.start()
    sent = [metric(value=float(i), ts=1000 + i) for i in range(40)]
    for i in range(0, 40, 5):
        stats_pipeline.submit(sent[i:i + 5])
        await asyncio.sleep(0.02)
    async with asyncio.timeout(3):
        while stats_pipeline.stats.get("publish.failure") < 3:
            await asyncio.sleep(0.01)
    assert len(stats_pipeline.buffer) > 0  # waiting on disk

    # A restart of the agent while the destination is down: the buffer is reopened from disk.
    await stats_pipeline.close()
    pipeline = Pipeline("g", GraphiteSender("127.0.0.1", port), tmp_path / "g", flush_interval=0.05,
                        batch_size=7, backoff=Backoff(0.02, 0.1))
    pipeline.start()
    await server.start(port)
    try:
        async with asyncio.timeout(5):
            while len(server.lines) < 40:
                await asyncio.sleep(0.02)
    finally:
        await pipeline.close()
        await server.stop()
    values = [float(text.split(" ")[1]) for text in server.lines]
    assert values == [float(i) for i in range(40)]
    assert len(pipeline.buffer) == 0
    assert pipeline.stats.get("publish.metrics") == 40


async def test_a_refused_batch_is_dropped_and_counted(tmp_path):
    class Refusing:
        async def send(self, metrics):
            raise RejectedError("400")

    pipeline = Pipeline("r", Refusing(), tmp_path / "r", flush_interval=0.02)
    pipeline.start()
    pipeline.submit([metric()])
    async with asyncio.timeout(2):
        while pipeline.stats.get("publish.rejected") < 1:
            await asyncio.sleep(0.01)
    assert len(pipeline.buffer) == 0
    await pipeline.close()


def test_batches_round_trip():
    batch = [metric(), metric("x", 2.0, zone="z")]
    assert decode_batch(encode_batch(batch)) == batch
