"""Log destinations: filesystem with rotation, stdout, webhook, NATS, several at once, and
at-least-once delivery when one is down (fleet-reference §6, osquery-protocol.md §7 and §10).

The outage tests run a real receiver (a stdlib HTTP server on 127.0.0.1, the NATS server at
127.0.0.1:4222) and an agent that buffers like osquery: a batch leaves the buffer only when the
server answers without an ``error``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from packs import destinations
from tests.agent import Agent

pytestmark = pytest.mark.django_db

NATS_URL = "nats://127.0.0.1:4222"


@pytest.fixture(autouse=True)
def _fresh_destinations(settings):
    """Short timeouts, and no breaker or connection carried over from another test."""
    settings.OSQUERY_LOGGING = {
        **settings.OSQUERY_LOGGING,
        "DELIVERY_BUDGET": 3.0,
        "CIRCUIT_OPEN_SECONDS": 0.3,
        "WEBHOOK_TIMEOUT": 0.5,
        "WEBHOOK_RETRY_BUDGET": 1.0,
        "NATS_TIMEOUT": 1.0,
    }
    destinations.reset()
    yield
    destinations.reset()


def use(settings, **values) -> None:
    settings.OSQUERY_LOGGING = {**settings.OSQUERY_LOGGING, **values}


def lines_of(n: int, start: int = 0) -> list[dict]:
    return [{"name": "pack/Global/q", "snapshot": [{"i": str(i)}], "action": "snapshot", "seq": i} for i in
            range(start, start + n)]  # fmt: skip


def read_lines(path: str | Path) -> list[dict]:
    file = Path(path)
    return [json.loads(line) for line in file.read_text().splitlines()] if file.exists() else []


# --- a webhook receiver ------------------------------------------------------------------------


class Receiver:
    """An HTTP server on a free local port that can refuse (503), reject (400), hang, or vanish."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.batches: list[list[dict]] = []
        self.headers: list[dict[str, str]] = []
        self.attempts = 0
        self.fail_next = 0
        self._server: ThreadingHTTPServer | None = None
        self.port = 0
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/logs"

    @property
    def received(self) -> list[dict]:
        return [line for batch in self.batches for line in batch]

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.attempts += 1
                if receiver.mode == "hang":
                    time.sleep(2)
                if receiver.fail_next > 0 or receiver.mode in ("503", "hang"):
                    receiver.fail_next -= 1
                    self.send_response(503)
                elif receiver.mode == "400":
                    self.send_response(400)
                else:
                    receiver.batches.append(json.loads(body))
                    receiver.headers.append(dict(self.headers))
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Stop listening: connections are refused until :meth:`start`."""
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


class BufferedAgent:
    """osquery's logger: lines wait in a buffer; a batch (up to 1024) leaves it on success only."""

    def __init__(self, agent: Agent, log_type: str = "result") -> None:
        self.agent = agent
        self.log_type = log_type
        self.buffer: list[dict] = []
        self.errors: list[str] = []

    def flush(self) -> bool:
        batch = self.buffer[:1024]
        if not batch:
            return True
        body = self.agent.authed("log", {"log_type": self.log_type, "data": batch}).json()
        if "error" in body:
            self.errors.append(body["error"])
            return False
        del self.buffer[: len(batch)]
        return True


# --- filesystem ----------------------------------------------------------------------------------


def test_filesystem_rotates_by_size_and_keeps_n_backups(agent, settings, tmp_path):
    path = tmp_path / "results.log"
    settings.OSQUERY = {**settings.OSQUERY, "RESULT_LOG_FILE": str(path)}
    use(settings, FILESYSTEM_MAX_BYTES=2000, FILESYSTEM_MAX_BACKUPS=2)
    sent = []
    for start in range(0, 200, 10):
        batch = lines_of(10, start)
        sent += batch
        assert agent.authed("log", {"log_type": "result", "data": batch}).json() == {}
    files = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("results.log"))
    assert files == ["results.log", "results.log.1", "results.log.2"]
    for name in files:
        assert (tmp_path / name).stat().st_size <= 2000
    kept = read_lines(f"{path}.2") + read_lines(f"{path}.1") + read_lines(path)
    assert kept == sent[-len(kept) :]  # the newest lines, in order, whole batches per file
    assert len(kept) % 10 == 0


def test_filesystem_without_backups_starts_over(settings, tmp_path):
    path = tmp_path / "r.log"
    dest = destinations.FileDestination(str(path), max_bytes=100, backups=0)
    encoded = destinations.encode(lines_of(1))
    for _ in range(5):
        dest.write(encoded, time.monotonic() + 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.log"]
    assert read_lines(path) == lines_of(1)


def test_filesystem_rotation_is_safe_across_writers(tmp_path):
    """Threads stand in for gunicorn workers: every line lands once, none torn."""
    path = tmp_path / "shared.log"
    writers = [destinations.FileDestination(str(path), max_bytes=5000, backups=50) for _ in range(4)]

    def run(n: int) -> None:
        for k in range(50):
            writers[n].write(destinations.encode([{"w": n, "k": k, "pad": "x" * 40}]), time.monotonic() + 5)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = [line for p in tmp_path.iterdir() for line in read_lines(p)]
    assert sorted((x["w"], x["k"]) for x in lines) == [(n, k) for n in range(4) for k in range(50)]


# --- stdout --------------------------------------------------------------------------------------


def test_stdout_destination(agent, settings, capfd):
    use(settings, RESULT_PLUGINS=["stdout"], STATUS_PLUGINS=["stdout"])
    batch = lines_of(3)
    assert agent.authed("log", {"log_type": "result", "data": batch}).json() == {}
    status = {"message": "hi", "severity": 0}
    assert agent.authed("log", {"log_type": "status", "data": [status]}).json() == {}
    out = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    assert out == [*batch, status]
    assert not Path(settings.OSQUERY["RESULT_LOG_FILE"]).exists()


# --- webhook -------------------------------------------------------------------------------------


def test_webhook_posts_batches_with_a_token(agent, settings, receiver):
    use(settings, RESULT_PLUGINS=["webhook"], WEBHOOK_RESULT_URL=receiver.url, WEBHOOK_BATCH_LINES=4,
        WEBHOOK_TOKEN="s3cret")  # fmt: skip
    batch = lines_of(10)
    assert agent.authed("log", {"log_type": "result", "data": batch}).json() == {}
    assert [len(b) for b in receiver.batches] == [4, 4, 2]
    assert receiver.received == batch
    assert receiver.headers[0]["Authorization"] == "Bearer s3cret"
    assert receiver.headers[0]["Content-Type"] == "application/json"


def test_webhook_basic_auth(agent, settings, receiver):
    use(settings, RESULT_PLUGINS=["webhook"], WEBHOOK_RESULT_URL=receiver.url, WEBHOOK_TOKEN="basic:fleet:pw")
    assert agent.authed("log", {"log_type": "result", "data": lines_of(1)}).json() == {}
    assert receiver.headers[0]["Authorization"] == "Basic ZmxlZXQ6cHc="  # base64("fleet:pw")


def test_webhook_retries_with_backoff_within_one_request(agent, settings, receiver):
    use(settings, RESULT_PLUGINS=["webhook"], WEBHOOK_RESULT_URL=receiver.url)
    receiver.fail_next = 2
    started = time.monotonic()
    assert agent.authed("log", {"log_type": "result", "data": lines_of(2)}).json() == {}
    assert receiver.attempts == 3 and receiver.received == lines_of(2)
    assert time.monotonic() - started >= 0.3  # waited 0.1 s, then 0.2 s


def test_webhook_refusal_is_not_retried_and_osquery_keeps_the_lines(agent, settings, receiver):
    use(settings, RESULT_PLUGINS=["webhook"], WEBHOOK_RESULT_URL=receiver.url)
    receiver.mode = "400"
    response = agent.authed("log", {"log_type": "result", "data": lines_of(2)})
    assert response.status_code == 413 and "HTTP 400" in response.json()["error"]
    assert receiver.attempts == 1


def test_a_hanging_webhook_costs_one_budget_then_fails_fast(agent, settings, receiver):
    use(settings, RESULT_PLUGINS=["webhook"], WEBHOOK_RESULT_URL=receiver.url, CIRCUIT_OPEN_SECONDS=30)
    receiver.mode = "hang"
    started = time.monotonic()
    assert "error" in agent.authed("log", {"log_type": "result", "data": lines_of(1)}).json()
    first = time.monotonic() - started
    assert first < 1.0 + 0.5  # the retry budget, well under osquery's 16 s request timeout
    started = time.monotonic()
    body = agent.authed("log", {"log_type": "result", "data": lines_of(1)}).json()
    assert "not retried yet" in body["error"] and time.monotonic() - started < 0.2  # breaker open


def test_webhook_down_then_back_loses_no_line(agent, settings, receiver):
    """The outage: refused (503), then not listening at all, then back. Every line arrives."""
    use(settings, RESULT_PLUGINS=["filesystem", "webhook"], WEBHOOK_RESULT_URL=receiver.url)
    osquery = BufferedAgent(agent)
    produced = 0

    def tick(n: int = 7) -> bool:
        nonlocal produced
        osquery.buffer += lines_of(n, produced)
        produced += n
        ok = osquery.flush()
        time.sleep(0.35)  # one logger_tls_period (shortened); lets the breaker half-open
        return ok

    assert tick() and tick()
    receiver.mode = "503"
    assert not any(tick() for _ in range(3))
    receiver.stop()
    assert not any(tick() for _ in range(3))
    receiver.mode = "ok"
    receiver.start()
    for _ in range(5):
        if tick(0) and not osquery.buffer:
            break
    assert not osquery.buffer and len(osquery.errors) == 6
    seqs = [line["seq"] for line in receiver.received]
    assert sorted(set(seqs)) == list(range(produced)) and len(seqs) == produced  # all, once each
    # The file took the batches the webhook refused, again on every retry: duplicates, no loss.
    in_file = [line["seq"] for line in read_lines(settings.OSQUERY["RESULT_LOG_FILE"])]
    assert set(in_file) == set(range(produced)) and len(in_file) > produced


def test_results_and_status_are_configured_separately(agent, settings, receiver):
    use(settings, RESULT_PLUGINS=["webhook"], STATUS_PLUGINS=["filesystem"], WEBHOOK_RESULT_URL=receiver.url)
    assert agent.authed("log", {"log_type": "result", "data": lines_of(2)}).json() == {}
    assert agent.authed("log", {"log_type": "status", "data": [{"message": "m"}]}).json() == {}
    assert receiver.received == lines_of(2)
    assert read_lines(settings.OSQUERY["STATUS_LOG_FILE"]) == [{"message": "m"}]
    assert not Path(settings.OSQUERY["RESULT_LOG_FILE"]).exists()


def test_a_misconfigured_destination_is_an_error_not_a_loss(agent, settings):
    use(settings, RESULT_PLUGINS=["kafka"])
    body = agent.authed("log", {"log_type": "result", "data": lines_of(1)}).json()
    assert body["error"]  # osquery keeps the lines until the configuration is fixed
    use(settings, RESULT_PLUGINS=["webhook"], WEBHOOK_RESULT_URL="ftp://nope")
    assert agent.authed("log", {"log_type": "result", "data": lines_of(1)}).json()["error"]


# --- NATS ----------------------------------------------------------------------------------------


def _nats_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 4222), timeout=0.5).close()
        return True
    except OSError:
        return False


needs_nats = pytest.mark.skipif(not _nats_up(), reason="no NATS server at 127.0.0.1:4222")


class NatsCollector:
    """A nats-py subscriber on its own event loop thread, collecting message payloads."""

    def __init__(self, subject: str) -> None:
        import nats

        self.messages: list[dict] = []
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

        async def subscribe():
            client = await nats.connect(NATS_URL)

            async def on_message(msg):
                self.messages.append(json.loads(msg.data))

            await client.subscribe(subject, cb=on_message)
            await client.flush()
            return client

        self.client = asyncio.run_coroutine_threadsafe(subscribe(), self.loop).result(5)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.messages

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.client.close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture
def subject() -> str:
    return f"test.osquery.{uuid.uuid4().hex}"


@pytest.fixture
def collector(subject) -> Iterator[NatsCollector]:
    sub = NatsCollector(f"{subject}.>")
    yield sub
    sub.close()


@needs_nats
def test_nats_publishes_each_line(agent, settings, subject, collector):
    use(settings, RESULT_PLUGINS=["nats"], STATUS_PLUGINS=["nats"], NATS_SERVERS=[NATS_URL],
        NATS_RESULT_SUBJECT=f"{subject}.result", NATS_STATUS_SUBJECT=f"{subject}.status")  # fmt: skip
    batch = lines_of(50)
    assert agent.authed("log", {"log_type": "result", "data": batch}).json() == {}
    assert agent.authed("log", {"log_type": "status", "data": [{"message": "s"}]}).json() == {}
    assert collector.wait_for(51) == [*batch, {"message": "s"}]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


@needs_nats
def test_nats_down_then_back_loses_no_line(agent, settings, subject, collector):
    down = f"nats://127.0.0.1:{_closed_port()}"
    use(settings, RESULT_PLUGINS=["nats"], NATS_SERVERS=[down], NATS_RESULT_SUBJECT=f"{subject}.result")
    osquery = BufferedAgent(agent)
    for start in range(0, 30, 10):
        osquery.buffer += lines_of(10, start)
        assert not osquery.flush()
        time.sleep(0.35)
    assert len(osquery.buffer) == 30 and all("nats" in e for e in osquery.errors)

    use(settings, NATS_SERVERS=[NATS_URL])  # the server is reachable again
    osquery.buffer += lines_of(5, 30)
    assert osquery.flush() and not osquery.buffer
    assert [m["seq"] for m in collector.wait_for(35)] == list(range(35))


@needs_nats
def test_nats_jetstream_waits_for_the_streams_acks(agent, settings, subject):
    import nats

    stream = f"TEST_{uuid.uuid4().hex[:12]}"

    async def make_stream():
        client = await nats.connect(NATS_URL)
        await client.jetstream().add_stream(name=stream, subjects=[f"{subject}.>"])
        return client

    async def stored(client) -> list[dict]:
        js = client.jetstream()
        sub = await js.pull_subscribe(f"{subject}.>", durable=None, stream=stream)
        messages = await sub.fetch(20, timeout=2)
        return [json.loads(m.data) for m in messages]

    loop = asyncio.new_event_loop()
    client = loop.run_until_complete(make_stream())
    try:
        use(settings, RESULT_PLUGINS=["nats"], NATS_SERVERS=[NATS_URL], NATS_JETSTREAM=True,
            NATS_RESULT_SUBJECT=f"{subject}.result")  # fmt: skip
        assert agent.authed("log", {"log_type": "result", "data": lines_of(20)}).json() == {}
        assert sorted(m["seq"] for m in loop.run_until_complete(stored(client))) == list(range(20))
        # No stream for a subject: nobody acks, the agent keeps its lines.
        use(settings, NATS_RESULT_SUBJECT=f"nostream.{uuid.uuid4().hex}")
        destinations.reset()
        assert "error" in agent.authed("log", {"log_type": "result", "data": lines_of(1)}).json()
    finally:
        loop.run_until_complete(client.jetstream().delete_stream(stream))
        loop.run_until_complete(client.close())
        loop.close()


# --- several at once -----------------------------------------------------------------------------


@needs_nats
def test_file_webhook_and_nats_at_once(agent, settings, receiver, subject, collector):
    use(settings, RESULT_PLUGINS=["filesystem", "webhook", "nats"], WEBHOOK_RESULT_URL=receiver.url,
        NATS_SERVERS=[NATS_URL], NATS_RESULT_SUBJECT=f"{subject}.result")  # fmt: skip
    batch = lines_of(25)
    assert agent.authed("log", {"log_type": "result", "data": batch}).json() == {}
    assert read_lines(settings.OSQUERY["RESULT_LOG_FILE"]) == batch
    assert receiver.received == batch
    assert collector.wait_for(25) == batch


@needs_nats
def test_one_destination_down_does_not_hold_back_the_others(agent, settings, receiver, subject, collector):
    use(settings, RESULT_PLUGINS=["webhook", "nats"], WEBHOOK_RESULT_URL=receiver.url,
        NATS_SERVERS=[NATS_URL], NATS_RESULT_SUBJECT=f"{subject}.result")  # fmt: skip
    receiver.mode = "503"
    response = agent.authed("log", {"log_type": "result", "data": lines_of(3)})
    assert response.status_code == 413 and "webhook" in response.json()["error"]
    assert [m["seq"] for m in collector.wait_for(3)] == [0, 1, 2]  # NATS got it anyway
