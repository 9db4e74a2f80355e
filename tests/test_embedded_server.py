"""The embedded default's server (``make run``): HTTP through Django's WSGI handler behind an ASGI
server (``fleet.wsgi_bridge``), WebSockets through Channels, one process (``fleet.embedded_asgi``),
and the real ``python -m fleet.embedded_server`` on HTTP and HTTPS."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from channels.testing import HttpCommunicator, WebsocketCommunicator
from django.contrib.auth import get_user_model

from campaigns import services
from fleet.embedded_asgi import application
from fleet.wsgi_bridge import MAX_BODY, WSGIBridge, environ_for
from hosts.models import EnrollSecret
from tests.factories import token_for
from tests.live_processes import ROOT, free_port, server_env, stop, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_environ_is_pep_3333():
    scope = {
        "type": "http", "method": "POST", "path": "/api/ünïcode path", "query_string": b"a=1&b=%20",
        "root_path": "", "scheme": "https", "server": ("127.0.0.1", 8443), "client": ("10.0.0.7", 5555),
        "http_version": "1.1",
        "headers": [
            (b"content-type", b"application/json"), (b"content-length", b"999"),
            (b"x-forwarded-for", b"1.1.1.1"), (b"x-forwarded-for", b"2.2.2.2"), (b"user-agent", b"osquery"),
        ],
    }  # fmt: skip
    environ = environ_for(scope, b'{"a": 1}')
    assert environ["PATH_INFO"].encode("latin-1").decode("utf-8") == "/api/ünïcode path"
    assert environ["QUERY_STRING"] == "a=1&b=%20" and environ["REQUEST_METHOD"] == "POST"
    assert environ["CONTENT_TYPE"] == "application/json"
    assert environ["CONTENT_LENGTH"] == "8"  # what was read, not what the client claimed
    assert environ["HTTP_X_FORWARDED_FOR"] == "1.1.1.1,2.2.2.2"
    assert environ["REMOTE_ADDR"] == "10.0.0.7" and environ["wsgi.url_scheme"] == "https"
    assert environ["SERVER_PORT"] == "8443" and environ["wsgi.input"].read() == b'{"a": 1}'


async def test_a_body_over_the_limit_is_413_before_the_application_runs():
    called = []

    def wsgi(environ, start_response):
        called.append(environ)
        start_response("200 OK", [])
        return [b"ok"]

    bridge = WSGIBridge(wsgi, threads=2)
    communicator = HttpCommunicator(bridge, "POST", "/", body=b"x" * (MAX_BODY + 1))
    response = await communicator.get_response(timeout=10)
    assert response["status"] == 413 and json.loads(response["body"])["message"]
    assert not called


async def test_a_streamed_response_arrives_whole_and_is_closed():
    closed = []

    class Streamed:
        streaming = True

        def __iter__(self):
            return (f"line {i}\n".encode() for i in range(100))

        def close(self):
            closed.append(True)

    def wsgi(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/csv")])
        return Streamed()

    response = await HttpCommunicator(WSGIBridge(wsgi, threads=2), "GET", "/").get_response(timeout=10)
    assert response["status"] == 200 and (b"content-type", b"text/csv") in response["headers"]
    assert response["body"] == b"".join(f"line {i}\n".encode() for i in range(100))
    assert closed == [True]


async def test_agent_requests_that_waited_too_long_are_shed_and_people_are_not_queued_behind_them():
    """An agent request that waited ``shed_after`` for an agent thread is answered 503 unrun (work
    for a client that has given up only makes the next wait longer); the console's pool is apart."""
    release, ran, shed = threading.Event(), [], []

    def wsgi(environ, start_response):
        ran.append(environ["PATH_INFO"])
        if environ["PATH_INFO"] == "/agent/slow":
            release.wait(10)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]

    bridge = WSGIBridge(
        wsgi, threads=2, agent_threads=1, agent_prefixes=("/agent/",), shed_after=0.3, on_shed=shed.append
    )
    slow = asyncio.ensure_future(HttpCommunicator(bridge, "POST", "/agent/slow").get_response(timeout=10))
    while "/agent/slow" not in ran:
        await asyncio.sleep(0.01)
    queued = asyncio.ensure_future(HttpCommunicator(bridge, "POST", "/agent/next").get_response(timeout=10))
    console = await HttpCommunicator(bridge, "GET", "/console/").get_response(timeout=5)
    assert console["status"] == 200  # served while the agent thread is still busy
    await asyncio.sleep(0.5)
    release.set()
    assert (await slow)["status"] == 200
    busy = await queued
    assert busy["status"] == 503 and json.loads(busy["body"])["error"]
    assert (b"retry-after", b"10") in busy["headers"]
    assert shed == ["/agent/next"] and "/agent/next" not in ran
    fresh = await HttpCommunicator(bridge, "POST", "/agent/next").get_response(timeout=5)
    assert fresh["status"] == 200 and ran[-1] == "/agent/next"


async def test_inline_requests_run_on_the_loop_thread_unseen_and_the_rest_on_pools():
    """osquery's requests run on the event loop's thread with the loop hidden from them (Django's
    guard against blocking calls in async code must not trip); other agents and the console keep
    their thread pools, and a streamed inline answer is joined and closed on the loop's thread."""
    seen: dict[str, tuple[int, bool]] = {}
    closed: list[int] = []

    class Streamed:
        streaming = True

        def __iter__(self):
            return iter([b"a", b"b"])

        def close(self):
            closed.append(threading.get_ident())

    def wsgi(environ, start_response):
        try:
            asyncio.get_running_loop()
            loop_visible = True
        except RuntimeError:
            loop_visible = False
        seen[environ["PATH_INFO"]] = (threading.get_ident(), loop_visible)
        start_response("200 OK", [("Content-Type", "application/json")])
        return Streamed() if environ["PATH_INFO"].endswith("stream") else [b"{}"]

    bridge = WSGIBridge(
        wsgi, threads=2, agent_threads=1, agent_prefixes=("/agent/",),
        inline=lambda path: path.startswith("/agent/osquery/"),
    )  # fmt: skip
    loop_thread = threading.get_ident()
    for path in ("/agent/osquery/read", "/agent/osquery/stream", "/agent/orbit/config", "/console/"):
        response = await HttpCommunicator(bridge, "POST", path).get_response(timeout=5)
        assert response["status"] == 200
    assert seen["/agent/osquery/read"] == (loop_thread, False)
    assert seen["/agent/osquery/stream"] == (loop_thread, False) and closed == [loop_thread]
    assert seen["/agent/orbit/config"][0] != loop_thread and seen["/console/"][0] != loop_thread
    assert asyncio.get_running_loop().is_running()  # and the loop is back


def test_the_inline_rule_keeps_network_bound_logs_and_other_agents_off_the_loop(settings):
    from fleet.embedded_asgi import inline_rule

    rule = inline_rule()
    assert rule is not None
    for path in ("/api/osquery/distributed/read", "/api/v1/osquery/config", "/api/osquery/log"):
        assert rule(path), path
    others = ("/api/fleet/orbit/config", "/mdm/apple/mdm", "/api/latest/fleet/device/x/desktop", "/healthz")
    for path in others:
        assert not rule(path), path
    settings.OSQUERY_LOGGING = {**settings.OSQUERY_LOGGING, "STATUS_PLUGINS": ["filesystem", "webhook"]}
    rule = inline_rule()
    assert rule is not None and not rule("/api/osquery/log") and not rule("/api/v1/osquery/log")
    assert rule("/api/osquery/distributed/write")
    settings.EMBEDDED_INLINE_AGENT_REQUESTS = False
    assert inline_rule() is None


async def test_django_answers_through_the_bridge():
    response = await HttpCommunicator(application, "GET", "/healthz").get_response(timeout=10)
    assert response["status"] == 200
    response = await HttpCommunicator(
        application, "POST", "/api/osquery/distributed/read", body=b'{"node_key": "nope"}',
        headers=[(b"content-type", b"application/json")],
    ).get_response(timeout=10)  # fmt: skip
    assert response["status"] == 401 and json.loads(response["body"])["node_invalid"] is True


def _admin_with_token() -> tuple[object, str]:
    EnrollSecret.objects.create(secret="s3cret")
    admin = get_user_model().objects.create_superuser("admin", "a@example.com", "pw")
    return admin, token_for(admin)


async def _post(path: str, body: dict) -> dict:
    response = await HttpCommunicator(
        application,
        "POST",
        path,
        body=json.dumps(body).encode(),
        headers=[(b"content-type", b"application/json")],
    ).get_response(timeout=10)
    assert response["status"] == 200, response
    return json.loads(response["body"])


async def test_an_answer_posted_over_http_reaches_a_websocket_of_the_same_process():
    """The point of one process: a request thread publishes to the in-process channel layer,
    and the consumer on the server's loop gets it (the bridge's threads come from sync_to_async)."""
    admin, token = await sync_to_async(_admin_with_token)()
    node_key = (await _post("/api/osquery/enroll", {"enroll_secret": "s3cret", "host_identifier": "h-1"}))[
        "node_key"
    ]
    await _post("/api/osquery/distributed/read", {"node_key": node_key})
    campaign = await sync_to_async(services.create_campaign)(admin, "SELECT 1 AS one", {"all": True})
    ws = WebsocketCommunicator(
        application, f"/ws/campaigns/{campaign.id}/", headers=[(b"authorization", f"Token {token}".encode())]
    )
    assert (await ws.connect())[0]
    while (await ws.receive_json_from(timeout=5))["type"] != "status":
        pass
    read = await _post("/api/osquery/distributed/read", {"node_key": node_key})
    name = f"fleet_distributed_query_{campaign.id}"
    assert name in read["queries"]
    await _post(
        "/api/osquery/distributed/write",
        {"node_key": node_key, "queries": {name: [{"one": "1"}]}, "statuses": {name: 0}},
    )
    message = await ws.receive_json_from(timeout=5)
    assert message["type"] == "result" and message["data"]["rows"] == [{"one": "1"}]
    await ws.disconnect()


@pytest.mark.slow
def test_the_real_server_answers_on_http_and_https_and_stops_on_sigterm(tmp_path):
    from fleet.selfsigned import ensure_certificate

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    ensure_certificate(cert, key)
    port, tls_port = free_port(), free_port()
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - the child holds it
    server = subprocess.Popen(
        [sys.executable, "-m", "fleet.embedded_server", "--port", str(port), "--tls-port", str(tls_port),
         "--cert", str(cert), "--key", str(key)],
        cwd=ROOT, env=server_env(tmp_path / "var"), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False

    def healthy(url: str, **kwargs) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2, **kwargs) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for(lambda: healthy(f"http://127.0.0.1:{port}/healthz"), 60, "the HTTP port")
        assert healthy(f"https://127.0.0.1:{tls_port}/healthz", context=context)
        server.terminate()
        assert server.wait(timeout=20) == 0
    finally:
        stop(server)
        output = Path(tmp_path / "server.log").read_text(errors="replace")
    assert "Traceback" not in output, output
