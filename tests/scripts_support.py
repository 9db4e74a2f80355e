"""Shared pieces of the scripts tests (``tests/test_scripts_*.py``): hosts with orbit, and orbit's
side of the protocol through the real endpoints, so a test plays the host exactly as fleetd would."""

from __future__ import annotations

import json
import secrets
import threading
import time
from typing import Any

from django.db import connection
from django.test import Client

from hosts.models import FleetSettings, Host, Team
from hosts.nodekeys import hash_node_key
from hostscripts import services
from hostscripts.models import ScriptRun
from tests.factories import make_host

RUN = "/api/v1/scripts/run/"
SYNC = "/api/v1/scripts/run/sync/"
BATCH = "/api/v1/scripts/run/batch/"
SCRIPTS = "/api/v1/scripts/"
ORBIT_CONFIG = "/api/fleet/orbit/config"
ORBIT_REQUEST = "/api/fleet/orbit/scripts/request"
ORBIT_RESULT = "/api/fleet/orbit/scripts/result"

_keys: dict[int, str] = {}


def orbit_host(name: str, platform: str = "ubuntu", team: Team | None = None, **fields: Any) -> Host:
    """A host with orbit enrolled (its key kept for :func:`key_of`), as ``/api/fleet/orbit/enroll``
    leaves it; ``platform`` as osquery reports it (ubuntu, darwin, windows)."""
    key = secrets.token_hex(16)
    host = make_host(name, team=team, platform=platform, orbit_node_key_hash=hash_node_key(key), **fields)
    _keys[host.pk] = key
    return host


def key_of(host: Host) -> str:
    return _keys[host.pk]


def results(path: str) -> str:
    return f"/api/v1/scripts/results/{path}"


def _post(client: Client, url: str, body: dict[str, Any]):
    return client.post(url, data=json.dumps(body), content_type="application/json")


def pending_ids(client: Client, host: Host) -> list[str]:
    """What orbit's config tells the host to run, in order."""
    response = _post(client, ORBIT_CONFIG, {"orbit_node_key": key_of(host)})
    assert response.status_code == 200, response.content
    return response.json()["notifications"].get("pending_script_execution_ids", [])


def fetch_script(client: Client, host: Host, execution_id: str):
    return _post(client, ORBIT_REQUEST, {"orbit_node_key": key_of(host), "execution_id": execution_id})


def post_result(
    client: Client, host: Host, execution_id: str, output: str = "ok\n", exit_code: int = 0, runtime: int = 1
):
    """orbit reporting a run: fetch the script (as orbit does first), then post its result."""
    fetched = fetch_script(client, host, execution_id)
    assert fetched.status_code == 200, fetched.content
    body = {
        "orbit_node_key": key_of(host),
        "execution_id": execution_id,
        "output": output,
        "runtime": runtime,
        "exit_code": exit_code,
        "timeout": 300,
    }
    response = _post(client, ORBIT_RESULT, body)
    assert response.status_code == 200, response.content
    return response


def answer_when_queued(
    host: Host, output: str = "done\n", exit_code: int = 0, within: float = 5.0
) -> threading.Thread:
    """A thread playing the host: once a run is queued for it, post its result through orbit's
    endpoints. For a request that waits for the result (sync runs, ``run_script --wait``); the
    test database must be shared between threads (``transactional_db``)."""

    def answer() -> None:
        try:
            deadline = time.monotonic() + within
            client = Client()
            while time.monotonic() < deadline:
                run = ScriptRun.objects.filter(host=host, exit_code__isnull=True, cancelled=False).first()
                if run is not None:
                    post_result(client, host, run.execution_id, output=output, exit_code=exit_code)
                    return
                time.sleep(0.02)
        finally:
            connection.close()

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return thread


def switch_scripts(disabled: bool) -> None:
    """Fleet settings' ``scripts_disabled``, taking effect at once (as the console's save does)."""
    FleetSettings.load()
    FleetSettings.objects.filter(pk=1).update(scripts_disabled=disabled)
    services.forget_switch()
