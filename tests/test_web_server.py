"""The production web server (``fleet.web_server``: granian serving ``fleet.wsgi``): the options it
fixes, and a real one serving agents over kept-alive connections, emptying the metrics directory
at start and stopping on SIGTERM."""

from __future__ import annotations

import http.client
import json

import pytest
from granian.constants import HTTPModes, Interfaces

from fleet import web_server
from fleet.metrics_dir import empty_multiproc_dir
from hosts.models import EnrollSecret
from tests.live_processes import server_env, start_web, stop_group, wait_healthy


def test_the_options_production_relies_on():
    server = web_server.build(web_server.parse_args(["--port", "8123", "--workers", "3", "--threads", "5"]))
    assert (server.bind_addr, server.bind_port) == ("0.0.0.0", 8123)
    assert server.interface == Interfaces.WSGI and server.http == HTTPModes.http1
    assert (server.workers, server.blocking_threads) == (3, 5)
    assert not server.websockets  # daphne serves /ws/
    assert server.respawn_failed_workers and server.workers_kill_timeout == web_server.KILL_TIMEOUT
    assert server.target == "fleet.wsgi:application"
    assert empty_multiproc_dir in server.hooks_startup


def test_workers_and_threads_come_from_the_environment_and_must_be_positive(monkeypatch):
    monkeypatch.setenv("FLEET_WEB_WORKERS", "6")
    monkeypatch.setenv("FLEET_WEB_THREADS", "not a number")
    args = web_server.parse_args([])
    assert (args.workers, args.threads, args.port) == (6, 2, 8000)
    with pytest.raises(SystemExit):
        web_server.parse_args(["--threads", "0"])


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_server_answers_agents_on_one_connection_and_stops_on_sigterm(tmp_path):
    EnrollSecret.objects.create(secret="web-server-secret")
    metrics = tmp_path / "prometheus"
    metrics.mkdir()
    (metrics / "counter_999999.db").write_bytes(b"left by a previous run")
    env = server_env(tmp_path / "var", PROMETHEUS_MULTIPROC_DIR=str(metrics))
    process, url = start_web(env, tmp_path / "web.log", workers=2, threads=2)
    try:
        wait_healthy(process, url)
        assert not (metrics / "counter_999999.db").exists()
        connection = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=10)
        enroll = {"enroll_secret": "web-server-secret", "host_identifier": "granian-host", "host_details": {}}
        answers, sockets = [], set()
        for path, body in (("enroll", enroll), ("config", None), ("distributed/read", None)):
            if body is None:
                body = {"node_key": answers[0]["node_key"]}
            headers = {"Content-Type": "application/json"}
            connection.request("POST", f"/api/osquery/{path}", json.dumps(body), headers)
            response = connection.getresponse()
            answers.append(json.loads(response.read()))
            assert response.status == 200, answers[-1]
            assert connection.sock is not None  # the server kept the connection open
            sockets.add(connection.sock)
        assert len(sockets) == 1  # one connection for the three requests
        assert "options" in answers[1] and "queries" in answers[2]
        connection.close()
        assert any(path.name.startswith("counter_") for path in metrics.iterdir())  # workers count
    finally:
        stop_group(process, timeout=web_server.KILL_TIMEOUT)
    assert process.returncode is not None
    assert "Traceback" not in (tmp_path / "web.log").read_text()


def _raw_exchange(port: int, head: str, body: bytes) -> list[tuple[int, bytes]]:
    """Send one request (whole), then a config request on the same connection; both replies."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        probe = b'{"node_key": "no-such-key"}'
        sock.sendall(head.encode() + body)
        sock.sendall(
            b"POST /api/osquery/config HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(probe)}\r\n\r\n".encode()
            + probe
        )
        replies, buffer = [], b""
        while len(replies) < 2:
            data = sock.recv(65536)
            assert data, f"connection closed after {replies}"
            buffer += data
            while b"\r\n\r\n" in buffer:
                header, _, rest = buffer.partition(b"\r\n\r\n")
                length = int(
                    next(
                        line.split(b":")[1]
                        for line in header.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    )
                )
                if len(rest) < length:
                    break
                replies.append((int(header.split()[1]), rest[:length]))
                buffer = rest[length:]
        return replies


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_oversized_and_chunked_bodies_get_their_reply_and_keep_the_connection(tmp_path):
    """Found by the fuzzer against granian: a refused body left unread made the server reset the
    connection, and the client lost the 413; a chunked body read as empty (Django reads
    ``Content-Length`` only)."""
    env = server_env(tmp_path / "var", OSQUERY_MAX_REQUEST_SIZE="1000")
    process, url = start_web(env, tmp_path / "web.log", workers=1, threads=2)
    port = int(url.rsplit(":", 1)[1])
    try:
        wait_healthy(process, url)
        big = b'{"node_key": "x", "pad": "' + b"p" * 3_000_000 + b'"}'
        head = "POST /api/osquery/config HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        (status, body), (again, _) = _raw_exchange(port, head + f"Content-Length: {len(big)}\r\n\r\n", big)
        assert status == 413 and b"limit" in body and again == 401

        chunked = f"{len(big):x}\r\n".encode() + big + b"\r\n0\r\n\r\n"
        (status, body), (again, _) = _raw_exchange(port, head + "Transfer-Encoding: chunked\r\n\r\n", chunked)
        assert status == 413 and b"limit" in body and again == 401

        small = b'{"node_key": "no-such-key"}'
        chunked = f"{len(small):x}\r\n".encode() + small + b"\r\n0\r\n\r\n"
        (status, body), (again, _) = _raw_exchange(port, head + "Transfer-Encoding: chunked\r\n\r\n", chunked)
        assert (status, json.loads(body)["node_invalid"], again) == (401, True, 401)  # read, not empty
    finally:
        stop_group(process, timeout=web_server.KILL_TIMEOUT)
