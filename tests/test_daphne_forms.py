"""Under daphne (``make run``), a malformed form body reaches Django and gets a JSON error.

Twisted used to answer it with an empty 400 before the application ran, which osquery takes
for success. This runs a real daphne process on 127.0.0.1 (the agent endpoint refuses such a
body before any database work, so the process needs no migrated database).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture
def daphne_url(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"FLEET_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "fleet.settings"})
    log = (tmp_path / "daphne.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "fleet.asgi:application"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (tmp_path / "daphne.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "daphne did not start"
                time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()


@pytest.mark.parametrize(
    "content_type, body",
    [
        ("multipart/form-data", b"no boundary at all"),
        ("multipart/form-data; boundary=", b"--\r\n\r\n"),
        ("multipart/form-data; boundary=" + "b" * 5000, b"x"),
        ("multipart/form-data; boundary=abc", b"--abc\r\nbroken"),
    ],
    ids=["no-boundary", "empty-boundary", "huge-boundary", "truncated"],
)
def test_malformed_multipart_gets_a_json_error_from_daphne(daphne_url, content_type, body):
    connection = http.client.HTTPConnection("127.0.0.1", daphne_url, timeout=10)
    connection.request("POST", "/api/osquery/log", body=body, headers={"Content-Type": content_type})
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    assert response.status == 400, payload
    assert json.loads(payload)["error"]
