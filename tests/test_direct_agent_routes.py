"""osquery's endpoints served past Django's handler (agentapi/direct.py): the same replies as
Django's whole path, the same upkeep, and Django's path for anything unusual."""

from __future__ import annotations

import json
import re
import weakref
from typing import Any

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import connection
from django.test import override_settings
from prometheus_client import REGISTRY

import usage.tasks
from agentapi import direct
from agentapi.direct import DirectAgentRoutes
from campaigns.models import CampaignResult
from tests.test_agent_admission import call, environ

# Django's real handler, which these replies are compared with, closes a connection whose
# autocommit is off at each request's start and end, as it would a test's open transaction.
pytestmark = pytest.mark.django_db(transaction=True)

# What is connected to Django's request signals, and what the direct path does instead of each.
KNOWN_RECEIVERS = {
    ("django.db", "reset_queries"),  # done by hand when DEBUG keeps a query log
    ("django.db", "close_old_connections"),  # done by hand before and after
    ("django.core.cache", "close_caches"),  # nothing to do: Redis and local memory keep no socket per request
    ("django.core.handlers.base", "reset_urlconf"),  # no urlconf is ever set on these paths
    ("usage.tasks", "on_request_finished"),  # called by hand
}
VOLATILE_HEADERS = {"Date"}


@pytest.fixture
def apps() -> tuple[WSGIHandler, DirectAgentRoutes]:
    django_app = WSGIHandler()
    return django_app, DirectAgentRoutes(django_app)


class Spy:
    """Wraps Django's application to see which requests reached it."""

    def __init__(self, app: WSGIHandler) -> None:
        self.app, self.paths = app, []

    def __call__(self, env: dict[str, Any], start_response: Any) -> Any:
        self.paths.append(env["PATH_INFO"])
        return self.app(env, start_response)


Reply = tuple[int, dict[str, str], bytes]


def post(app: Any, path: str, body: dict[str, Any] | bytes, **extra: Any) -> Reply:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    env = environ(path, raw)
    env.update(extra)
    return call(app, env)


def same(a: Reply, b: Reply) -> None:
    strip = lambda headers: {k: v for k, v in headers.items() if k not in VOLATILE_HEADERS}  # noqa: E731
    assert (a[0], strip(a[1]), a[2]) == (b[0], strip(b[1]), b[2])


def receivers(signal: Any) -> set[tuple[str, str]]:
    found = set()
    for entry in signal.receivers:
        func = entry[1]() if isinstance(entry[1], weakref.ReferenceType) else entry[1]
        found.add((func.__module__, func.__qualname__))
    return found


def test_every_request_signal_receiver_is_known_to_the_direct_path():
    """A receiver added to request_started or request_finished would be skipped by the direct path:
    decide what it needs there (agentapi/direct.py), then add it here."""
    assert receivers(request_started) | receivers(request_finished) == KNOWN_RECEIVERS


@pytest.mark.parametrize("prefix", ["/api/osquery/", "/api/v1/osquery/"])
def test_the_replies_are_those_of_djangos_whole_path(apps, global_secret, prefix):
    django_app, fast = apps
    spy = Spy(django_app)
    fast.django_app = spy
    enrolled = post(fast, prefix + "enroll", {"enroll_secret": global_secret, "host_identifier": "direct-1"})
    assert enrolled[0] == 200 and spy.paths == []
    node_key = json.loads(enrolled[2])["node_key"]
    requests = [
        ("config", {"node_key": node_key}),
        ("distributed/read", {"node_key": node_key}),
        ("distributed/write", {"node_key": node_key, "queries": {}, "statuses": {}}),
        ("log", {"node_key": node_key, "log_type": "status", "data": [{"line": 1, "message": "hi"}]}),
        ("distributed/read", {"node_key": "not-a-key"}),  # 401 node_invalid
        ("log", {"node_key": node_key, "log_type": "nonsense"}),  # 400
        ("config", b"{not json"),  # 400
        ("enroll", {"enroll_secret": "wrong", "host_identifier": "x"}),  # 401
    ]
    for route, body in requests:
        direct_reply = post(fast, prefix + route, body)
        same(direct_reply, post(django_app, prefix + route, body))
        assert json.loads(direct_reply[2]) is not None
    assert spy.paths == []  # none of them went through Django's handler
    headers = post(fast, prefix + "distributed/read", {"node_key": node_key})[1]
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY"
    assert headers["Content-Type"] == "application/json" and "Content-Security-Policy" in headers


def test_a_live_answer_is_stored_through_the_direct_path(apps, global_secret, django_user_model):
    from campaigns.services import create_campaign

    _, fast = apps
    node_key = json.loads(
        post(fast, "/api/osquery/enroll", {"enroll_secret": global_secret, "host_identifier": "live-1"})[2]
    )["node_key"]
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-123456789")
    campaign = create_campaign(admin, "SELECT 1 AS one", {"all": True})
    read = json.loads(post(fast, "/api/osquery/distributed/read", {"node_key": node_key})[2])
    name = f"fleet_distributed_query_{campaign.pk}"
    assert read["queries"][name] == "SELECT 1 AS one"
    body = {"node_key": node_key, "queries": {name: [{"one": "1"}]}, "statuses": {name: 0}}
    assert post(fast, "/api/osquery/distributed/write", body)[0] == 200
    assert CampaignResult.objects.get(campaign=campaign).rows == [{"one": "1"}]


def test_unusual_requests_take_djangos_whole_path(apps, global_secret):
    django_app, fast = apps
    spy = Spy(django_app)
    fast.django_app = spy
    body = {"enroll_secret": global_secret, "host_identifier": "u-1"}
    status, headers, reply = call(fast, environ("/api/osquery/config", method="GET"))
    assert status == 405 and headers["Allow"] == "POST" and "error" in json.loads(reply)
    status, _, reply = post(fast, "/api/osquery/enroll", body, HTTP_HOST="evil.example")
    assert status == 400 and "error" in json.loads(reply)  # Host outside ALLOWED_HOSTS, as JSON
    with override_settings(DISALLOWED_USER_AGENTS=[re.compile("badbot")]):
        status, _, reply = post(fast, "/api/osquery/enroll", body, HTTP_USER_AGENT="badbot/1")
        assert status == 403 and "error" in json.loads(reply)
    with override_settings(SECURE_SSL_REDIRECT=True):  # read when the middleware is built
        redirecting = DirectAgentRoutes(spy)
        spy.app = WSGIHandler()
        status, headers, _ = post(redirecting, "/api/osquery/enroll", body)
        assert status == 301 and headers["Location"].startswith("https://")
    status, _, _ = post(fast, "/api/osquery/enroll", body, SCRIPT_NAME="/fleet")
    assert spy.paths == ["/api/osquery/config"] + ["/api/osquery/enroll"] * 4
    assert call(fast, environ("/healthz", method="GET"))[0] == 200  # not an agent route at all
    assert spy.paths[-1] == "/healthz"


def test_requests_are_counted_and_check_ins_timed(apps, agent_key):
    _, fast = apps
    labels = {"endpoint": "osquery-distributed-read", "status": "200"}
    before = REGISTRY.get_sample_value("fleet_agent_requests_total", labels) or 0.0
    timed = REGISTRY.get_sample_value("fleet_checkin_duration_seconds_count") or 0.0
    for _ in range(3):
        assert post(fast, "/api/v1/osquery/distributed/read", {"node_key": agent_key})[0] == 200
    assert REGISTRY.get_sample_value("fleet_agent_requests_total", labels) == before + 3
    assert REGISTRY.get_sample_value("fleet_checkin_duration_seconds_count") == timed + 3
    refused = {"endpoint": "osquery-config", "status": "401"}
    before = REGISTRY.get_sample_value("fleet_agent_requests_total", refused) or 0.0
    post(fast, "/api/osquery/config", {"node_key": "nope"})
    assert REGISTRY.get_sample_value("fleet_agent_requests_total", refused) == before + 1


def test_the_connection_upkeep_and_usage_hook_run_around_each_request(apps, agent_key, monkeypatch):
    _, fast = apps
    post(fast, "/api/osquery/distributed/read", {"node_key": agent_key})  # the connection is open
    connection.ensure_connection()
    connection.close_at = 0.0  # past its CONN_MAX_AGE: Django's upkeep closes it
    hooks = []
    monkeypatch.setattr(direct, "on_request_finished", lambda: hooks.append(1))
    monkeypatch.setattr(usage.tasks, "on_request_finished", lambda **kw: hooks.append(2))
    old = connection.connection
    assert post(fast, "/api/osquery/distributed/read", {"node_key": agent_key})[0] == 200
    assert connection.connection is not old  # closed before the request, reopened by it
    assert hooks == [1]


def test_an_unexpected_error_is_osquerys_json_500(apps, agent_key, monkeypatch):
    _, fast = apps

    def broken(request: Any) -> Any:
        raise RuntimeError("boom")

    match = fast.routes()["/api/osquery/log"]
    monkeypatch.setattr(match, "func", broken)
    status, headers, body = post(fast, "/api/osquery/log", {"node_key": agent_key})
    assert status == 500 and json.loads(body) == {"error": "internal server error"}
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert post(fast, "/api/osquery/distributed/read", {"node_key": agent_key})[0] == 200


@pytest.fixture
def agent_key(apps, global_secret) -> str:
    reply = post(apps[1], "/api/osquery/enroll", {"enroll_secret": global_secret, "host_identifier": "k-1"})
    return json.loads(reply[2])["node_key"]
