"""The production web process's agent gate: a few agent requests at a time, the rest shed after a wait
(fleet/agent_admission.py), in front of the real Django application."""

from __future__ import annotations

import io
import json
import sys
import threading
import time
from typing import Any

import pytest
from django.core.wsgi import get_wsgi_application
from django.test import override_settings
from prometheus_client import REGISTRY

from fleet.agent_admission import AgentAdmission, admit_agents
from tests.agent import Agent

# Django's real handler closes a connection whose autocommit is off at each request's start and
# end, as it would a test's open transaction: these tests commit instead.
pytestmark = pytest.mark.django_db(transaction=True)

CHECKIN = "/api/osquery/distributed/read"
HOLD = "/api/osquery/hold"  # an agent path the test's application holds until told to go on


def environ(path: str, body: bytes = b"", method: str = "POST") -> dict[str, Any]:
    return {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "HTTP_HOST": "testserver",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def call(app: Any, env: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    """One request through a WSGI application, as a server makes it."""
    started: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        started["status"], started["headers"] = status, dict(headers)

    result = app(env, start_response)
    try:
        body = b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()
    return int(started["status"].split()[0]), started["headers"], body


class Held:
    """The real Django application, except that requests to ``HOLD`` wait until ``release``."""

    def __init__(self) -> None:
        self.django = get_wsgi_application()
        self.release = threading.Event()
        self.inside = 0
        self.most_inside = 0
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, env: dict[str, Any], start_response: Any) -> Any:
        with self._lock:
            self.calls += 1
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            if env["PATH_INFO"] == HOLD:
                assert self.release.wait(10)
                start_response("200 OK", [("Content-Type", "application/json")])
                return [b"{}"]
            return self.django(env, start_response)
        finally:
            with self._lock:
                self.inside -= 1


def hold_in_thread(app: Any) -> threading.Thread:
    thread = threading.Thread(target=call, args=(app, environ(HOLD)), daemon=True)
    thread.start()
    return thread


def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def shed_count() -> float:
    return REGISTRY.get_sample_value("fleet_agent_requests_shed_total") or 0.0


@pytest.fixture
def agent(client, global_secret) -> Agent:
    enrolled = Agent(client)
    enrolled.enroll(global_secret)
    return enrolled


def checkin(agent: Agent) -> dict[str, Any]:
    return environ(CHECKIN, json.dumps({"node_key": agent.node_key}).encode())


def test_an_agent_request_that_waited_too_long_for_a_slot_is_shed_unrun(agent):
    inner = Held()
    gate = AgentAdmission(inner, limit=1, shed_after=0.2)
    holder = hold_in_thread(gate)
    wait_until(lambda: inner.inside == 1)
    before, calls = shed_count(), inner.calls

    started = time.monotonic()
    status, headers, body = call(gate, checkin(agent))
    waited = time.monotonic() - started

    assert status == 503 and 0.2 <= waited < 2
    assert json.loads(body) == {"error": "the server is busy; retry later"}  # osquery keeps its data
    assert headers["Content-Type"] == "application/json" and headers["Retry-After"] == "10"
    assert headers["Content-Length"] == str(len(body))
    assert inner.calls == calls  # Django never saw it
    assert shed_count() == before + 1

    inner.release.set()
    holder.join(5)
    status, _, body = call(gate, checkin(agent))
    assert status == 200 and "queries" in json.loads(body)  # the slot is free again: served


def test_a_request_that_gets_a_slot_within_the_limit_is_served(agent):
    inner = Held()
    gate = AgentAdmission(inner, limit=1, shed_after=5.0)
    holder = hold_in_thread(gate)
    wait_until(lambda: inner.inside == 1)
    threading.Timer(0.3, inner.release.set).start()

    started = time.monotonic()
    status, _, body = call(gate, checkin(agent))
    assert status == 200 and "queries" in json.loads(body)
    assert time.monotonic() - started >= 0.25  # it waited for the holder to finish
    holder.join(5)


def test_people_and_metrics_are_not_queued_behind_agents():
    inner = Held()
    gate = AgentAdmission(inner, limit=1, shed_after=5.0)
    holder = hold_in_thread(gate)
    wait_until(lambda: inner.inside == 1)
    try:
        started = time.monotonic()
        assert call(gate, environ("/healthz", method="GET"))[0] == 200
        assert call(gate, environ("/admin/login/", method="GET"))[0] == 200
        assert time.monotonic() - started < 2
    finally:
        inner.release.set()
        holder.join(5)


def test_no_more_than_the_limit_run_at_once():
    inner = Held()
    gate = AgentAdmission(inner, limit=2, shed_after=5.0)
    holders = [hold_in_thread(gate) for _ in range(6)]
    wait_until(lambda: inner.inside == 2)
    time.sleep(0.1)  # the other four are waiting, not inside
    assert inner.inside == 2 and inner.calls == 2
    inner.release.set()
    for thread in holders:
        thread.join(5)
    assert inner.calls == 6 and inner.most_inside == 2


def test_the_slot_is_given_back_when_the_application_raises(agent):
    calls = []

    def failing(env: dict[str, Any], start_response: Any) -> Any:
        calls.append(env["PATH_INFO"])
        raise RuntimeError("boom")

    gate = AgentAdmission(failing, limit=1, shed_after=0.1)
    for _ in range(3):  # each would be shed if the first had kept the slot
        with pytest.raises(RuntimeError):
            call(gate, checkin(agent))
    assert len(calls) == 3


def test_the_production_entry_point_is_gated_as_the_settings_say():
    import fleet.wsgi

    assert isinstance(fleet.wsgi.application, AgentAdmission)
    assert fleet.wsgi.application.limit == 2 and fleet.wsgi.application.shed_after == 8.0
    django_app = get_wsgi_application()
    with override_settings(AGENT_CONCURRENCY=0):
        assert admit_agents(django_app) is django_app
    with override_settings(AGENT_CONCURRENCY=4, AGENT_SHED_AFTER=3.0):
        gated = admit_agents(django_app)
        assert isinstance(gated, AgentAdmission) and (gated.limit, gated.shed_after) == (4, 3.0)
    with pytest.raises(ValueError):
        AgentAdmission(django_app, limit=0, shed_after=1.0)


def test_a_worker_with_no_more_threads_than_slots_runs_without_the_gate():
    """Production's two threads: the gate could never make a request wait, so it is left out."""
    django_app = get_wsgi_application()
    assert admit_agents(django_app, threads=2) is django_app
    assert admit_agents(django_app, threads=1) is django_app
    gated = admit_agents(django_app, threads=3)
    assert isinstance(gated, AgentAdmission) and gated.limit == 2
