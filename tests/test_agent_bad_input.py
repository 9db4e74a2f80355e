"""Malformed, oversized and wrongly-encoded requests to the osquery agent API (osquery-protocol.md §10).

osquery ignores HTTP status codes and reads only the JSON body, so whatever a request gets wrong
the answer must be a JSON object with an ``error`` key (never an empty 500, which osquery takes
for success and then drops its buffered logs), and ``node_invalid: true`` only when the agent
has to re-enroll. A refused request must leave everything stored as it was.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from hosts.models import EnrollSecret, Host, HostSeenTime
from tests.agent import Agent

pytestmark = pytest.mark.django_db

ENDPOINTS = ["enroll", "config", "distributed/read", "distributed/write", "log"]
AUTHED = ["config", "distributed/read", "distributed/write", "log"]
LIMIT_SETTING = {
    "enroll": "MAX_ENROLL_SIZE",
    "config": "MAX_REQUEST_SIZE",
    "distributed/read": "MAX_REQUEST_SIZE",
    "distributed/write": "MAX_WRITE_SIZE",
    "log": "MAX_LOG_SIZE",
}

DETAIL_WRITE = {
    "queries": {
        "fleet_detail_query_system_info": [
            {"hostname": "renamed-by-write", "uuid": "uuid-0001", "cpu_brand": "Intel Xeon"}
        ],
        "fleet_detail_query_uptime": [{"total_seconds": "4242"}],
    },
    "statuses": {"fleet_detail_query_system_info": 0, "fleet_detail_query_uptime": 0},
    "messages": {},
}


def raw_post(client, endpoint: str, data: bytes, **extra: Any):
    return client.post(f"/api/osquery/{endpoint}", data=data, content_type="application/json", **extra)


def assert_error(response, status: int, *, node_invalid: bool = False) -> dict[str, Any]:
    """A JSON object with a non-empty ``error``; ``node_invalid`` is the boolean true or absent."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = json.loads(response.content)
    assert isinstance(body, dict)
    assert isinstance(body.get("error"), str) and body["error"]
    if node_invalid:
        assert body["node_invalid"] is True
    else:
        assert "node_invalid" not in body
    return body


def good_body(endpoint: str, agent: Agent, secret: str = "global-secret-123") -> dict[str, Any]:
    """A valid request body for ``endpoint`` (enroll uses the agent's own identity)."""
    if endpoint == "enroll":
        return {
            "enroll_secret": secret,
            "host_identifier": agent.identifier,
            "platform_type": "21",
            "host_details": agent.details,
        }
    body: dict[str, Any] = {"node_key": agent.node_key}
    if endpoint == "distributed/write":
        body.update(DETAIL_WRITE)
    if endpoint == "log":
        body.update({"log_type": "status", "data": [{"severity": "0", "message": "hello"}]})
    return body


@pytest.fixture
def stored(settings):
    """A snapshot of everything an agent request can change, to compare before and after."""

    def read(path: str) -> str | None:
        p = Path(path)
        return p.read_text() if p.exists() else None

    def snapshot() -> dict[str, Any]:
        return {
            "hosts": list(Host.objects.order_by("id").values()),
            "seen": list(HostSeenTime.objects.order_by("host_id").values()),
            "secrets": list(EnrollSecret.objects.order_by("id").values()),
            "result_log": read(settings.OSQUERY["RESULT_LOG_FILE"]),
            "status_log": read(settings.OSQUERY["STATUS_LOG_FILE"]),
        }

    return snapshot


# --- Bodies that are not a JSON object --------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   \n",
        b"not json",
        b"{",
        b'{"node_key": "abc",}',
        b"node_key=abc&log_type=result",
        b"\xff\xfe\x00\x00garbage",
        b'{"node_key": "abc"} {"node_key": "abc"}',
        b'{"node_key": NaN}',
    ],
    ids=["empty", "blank", "text", "truncated", "trailing-comma", "form", "binary", "two-objects", "nan"],
)
def test_non_json_body_is_400(agent, stored, endpoint, data):
    before = stored()
    body = assert_error(raw_post(agent.client, endpoint, data), 400)
    assert "JSON" in body["error"]
    assert stored() == before


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    "value",
    [[], [{"node_key": "k"}], "node_key", "", 42, 1.5, True, None],
    ids=["empty-list", "list-of-object", "string", "empty-string", "int", "float", "bool", "null"],
)
def test_json_that_is_not_an_object_is_400(agent, stored, endpoint, value):
    before = stored()
    if isinstance(value, list) and value:
        value = [good_body(endpoint, agent)]  # the right body, wrapped in a list, is still refused
    body = assert_error(raw_post(agent.client, endpoint, json.dumps(value).encode()), 400)
    assert "object" in body["error"]
    assert stored() == before


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_deeply_nested_json_is_400_not_500(agent, stored, endpoint, settings):
    before = stored()
    # Without a credential a body this large is refused before it is parsed at all.
    data = b"[" * 200_000 + b"]" * 200_000
    assert_error(raw_post(agent.client, endpoint, data), 401, node_invalid=True)
    field, value = ("enroll_secret", b"global-secret-123") if endpoint == "enroll" else ("node_key", None)
    credential = b'"%s": "%s"' % (field.encode(), value or agent.node_key.encode())
    nested = b"{" + credential + b', "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert_error(raw_post(agent.client, endpoint, nested), 400)
    assert stored() == before


@pytest.mark.parametrize("endpoint", ["distributed/write", "log"])
@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"])
def test_non_finite_numbers_are_400_not_500(agent, stored, endpoint, constant):
    """Python's json reads NaN/Infinity (not JSON) and 1e999 as inf; neither may crash a handler
    or end up in a log file that is no longer JSON."""
    before = stored()
    key = agent.node_key.encode()
    if endpoint == "log":
        data = b'{"node_key": "%s", "log_type": "status", "data": [{"n": %s}]}' % (key, constant)
    else:
        data = b'{"node_key": "%s", "queries": {"q": []}, "statuses": {"q": %s}}' % (key, constant)
    assert "JSON" in assert_error(raw_post(agent.client, endpoint, data), 400)["error"]
    assert stored() == before


def test_ordinary_floats_are_still_accepted(agent, settings):
    data = b'{"node_key": "%s", "log_type": "status", "data": [{"n": 1.5e300, "m": -0.25}]}' % (
        agent.node_key.encode()
    )
    assert raw_post(agent.client, "log", data).json() == {}
    line = json.loads(Path(settings.OSQUERY["STATUS_LOG_FILE"]).read_text())
    assert line == {"n": 1.5e300, "m": -0.25}


def test_invalid_utf8_in_a_log_line_is_replaced_not_refused(agent, settings):
    """Refusing would make osquery resend the batch forever; Go's json (Fleet) accepts it too."""
    data = (
        b'{"node_key": "%s", "log_type": "result", "data": [{"path": "/tmp/caf\xe9", "ok": "\xc3\xa9"}]}'
        % (agent.node_key.encode())
    )
    assert raw_post(agent.client, "log", data).json() == {}
    line = json.loads(Path(settings.OSQUERY["RESULT_LOG_FILE"]).read_text())
    assert line == {"path": "/tmp/caf\ufffd", "ok": "\u00e9"}


def test_lone_surrogate_escapes_are_replaced_everywhere(client, global_secret, settings):
    agent = Agent(client, "uuid-surrogate")
    body = json.dumps(good_body("enroll", agent)).replace("mac-1.local", "mac-\\ud800.local").encode()
    response = raw_post(client, "enroll", body)
    assert response.status_code == 200, response.content
    agent.node_key = response.json()["node_key"]
    assert Host.objects.get().hostname == "mac-\ufffd.local"

    write = json.dumps({"node_key": agent.node_key, **DETAIL_WRITE}).replace("renamed-by-write", "\\udc00x")
    assert raw_post(client, "distributed/write", write.encode()).json() == {}
    assert Host.objects.get().hostname == "\ufffdx"

    pair = b'{"node_key": "%s", "log_type": "status", "data": [{"m": "\\ud83d\\ude00 \\ud83d"}]}' % (
        agent.node_key.encode()
    )
    assert raw_post(client, "log", pair).json() == {}
    line = json.loads(Path(settings.OSQUERY["STATUS_LOG_FILE"]).read_text())
    assert line == {"m": "\U0001f600 \ufffd"}


@pytest.mark.parametrize("endpoint", AUTHED)
def test_node_key_with_lone_surrogate_is_node_invalid_not_500(agent, stored, endpoint):
    """``"\\ud800"`` is valid JSON text but not valid Unicode; it is just an unknown key."""
    before = stored()
    data = b'{"node_key": "\\ud800abc", "log_type": "status", "data": []}'
    assert_error(raw_post(agent.client, endpoint, data), 401, node_invalid=True)
    assert stored() == before


def test_deep_but_parsable_bodies_never_500(agent):
    """Around Python's recursion limit a body may parse yet be too deep to re-encode: 400, not 500."""
    key = agent.node_key.encode()
    statuses = set()
    for depth in range(850, 1050):
        nested = b"[" * depth + b"]" * depth
        log = b'{"node_key": "%s", "log_type": "status", "data": [{"x": %s}]}' % (key, nested)
        write = b'{"node_key": "%s", "queries": {"fleet_detail_query_uptime": [{"a": %s}]}}' % (key, nested)
        for endpoint, data in (("log", log), ("distributed/write", write)):
            response = raw_post(agent.client, endpoint, data)
            assert response.status_code in (200, 400), (endpoint, depth)
            assert response.json() == {} if response.status_code == 200 else response.json()["error"]
            statuses.add(response.status_code)
    assert statuses == {200, 400}


# --- Wrong field types and missing fields ---------------------------------------------------------


@pytest.mark.parametrize(
    "secret", [None, 123, ["global-secret-123"], {"secret": "global-secret-123"}, True, ""]
)
def test_enroll_secret_of_wrong_type_is_node_invalid(client, global_secret, stored, secret):
    agent = Agent(client)
    before = stored()
    body = good_body("enroll", agent)
    body["enroll_secret"] = secret
    assert_error(agent.post("enroll", body), 401, node_invalid=True)
    assert stored() == before
    assert Host.objects.count() == 0


def test_enroll_without_secret_is_node_invalid(client, global_secret):
    agent = Agent(client)
    body = good_body("enroll", agent)
    del body["enroll_secret"]
    assert_error(agent.post("enroll", body), 401, node_invalid=True)
    assert_error(agent.post("enroll", {}), 401, node_invalid=True)
    assert Host.objects.count() == 0


@pytest.mark.parametrize("identifier", [42, ["uuid-0001"], {"id": "uuid-0001"}, True])
def test_enroll_host_identifier_of_wrong_type_is_400(client, global_secret, stored, identifier):
    agent = Agent(client)
    before = stored()
    body = good_body("enroll", agent)
    body["host_identifier"] = identifier
    assert "host_identifier" in assert_error(agent.post("enroll", body), 400)["error"]
    assert stored() == before


@pytest.mark.parametrize(
    "host_details",
    [[], "details", 7, {"system_info": "mac-1"}, {"system_info": ["hostname", "mac-1"]}],
    ids=["list", "string", "number", "table-is-string", "table-is-list"],
)
def test_enroll_host_details_of_wrong_shape_is_400(client, global_secret, stored, host_details):
    agent = Agent(client)
    before = stored()
    body = good_body("enroll", agent)
    body["host_details"] = host_details
    assert "host_details" in assert_error(agent.post("enroll", body), 400)["error"]
    assert stored() == before


def test_enroll_without_any_identity_is_refused_and_creates_nothing(client, global_secret):
    response = Agent(client).post("enroll", {"enroll_secret": global_secret})
    assert_error(response, 401, node_invalid=True)
    assert Host.objects.count() == 0


def test_enroll_with_non_string_detail_values_still_enrolls(client, global_secret):
    """osquery sends strings, but a number where a string is expected must not crash enrolment."""
    agent = Agent(client, "uuid-num")
    body = good_body("enroll", agent)
    body["host_details"]["system_info"]["cpu_physical_cores"] = 8
    body["host_details"]["system_info"]["physical_memory"] = 17179869184
    response = agent.post("enroll", body)
    assert response.status_code == 200 and set(response.json()) == {"node_key"}
    host = Host.objects.get(osquery_host_id="uuid-num")
    assert (host.cpu_physical_cores, host.memory) == (8, 17179869184)


@pytest.mark.parametrize("endpoint", AUTHED)
@pytest.mark.parametrize(
    "node_key", [12345, 0, ["k"], {"key": "k"}, True, None, ""], ids=lambda v: type(v).__name__ + repr(v)
)
def test_node_key_of_wrong_type_or_missing_is_node_invalid(agent, stored, endpoint, node_key):
    before = stored()
    body = good_body(endpoint, agent)
    body["node_key"] = node_key
    assert_error(agent.post(endpoint, body), 401, node_invalid=True)
    del body["node_key"]
    assert_error(agent.post(endpoint, body), 401, node_invalid=True)
    assert stored() == before


@pytest.mark.parametrize("endpoint", AUTHED)
def test_unknown_node_key_is_401_with_boolean_node_invalid(agent, stored, endpoint):
    before = stored()
    body = good_body(endpoint, agent)
    body["node_key"] = "not-a-key-this-server-issued"
    response = agent.post(endpoint, body)
    assert_error(response, 401, node_invalid=True)
    assert b'"node_invalid":true' in response.content  # a JSON boolean, not "true" or 1
    assert stored() == before


@pytest.mark.parametrize("endpoint", AUTHED)
def test_unknown_node_key_in_authorization_header_is_node_invalid(agent, stored, endpoint):
    before = stored()
    body = good_body(endpoint, agent)
    del body["node_key"]
    for header in ("NodeKey not-a-key", "nodekey not-a-key", "Bearer " + agent.node_key, "NodeKey "):
        assert_error(agent.post(endpoint, body, HTTP_AUTHORIZATION=header), 401, node_invalid=True)
    assert stored() == before


@pytest.mark.parametrize(
    "field, value",
    [
        ("queries", ["fleet_detail_query_uptime"]),
        ("queries", "fleet_detail_query_uptime"),
        ("queries", 5),
        ("statuses", [0, 0]),
        ("statuses", "0"),
        ("messages", ["boom"]),
        ("messages", "boom"),
    ],
)
def test_write_with_wrong_container_types_is_400_and_stores_nothing(agent, stored, field, value):
    before = stored()
    body = good_body("distributed/write", agent)
    body[field] = value
    error = assert_error(agent.post("distributed/write", body), 400)["error"]
    assert "queries" in error
    after = stored()
    assert after["hosts"] == before["hosts"]  # the detail rows in the same body were not ingested
    assert Host.objects.get().hostname == "mac-1.local"
    assert after == before


def test_write_with_odd_values_inside_the_objects_is_accepted(agent):
    """Fleet's shim: malformed rows become [] and unparsable statuses count as failures."""
    body = {
        "queries": {"fleet_detail_query_uptime": "", "other": [1, "x", None], "x": None},
        "statuses": {"fleet_detail_query_uptime": "not-a-number", "other": None, "x": [1]},
        "messages": {"other": 3, "x": None},
    }
    response = agent.authed("distributed/write", body)
    assert response.status_code == 200 and response.json() == {}


@pytest.mark.parametrize("data", [{"name": "q"}, "line", 3, True], ids=["object", "string", "number", "bool"])
def test_log_data_that_is_not_a_list_is_400_and_writes_nothing(agent, stored, data):
    before = stored()
    response = agent.authed("log", {"log_type": "result", "data": data})
    assert "data" in assert_error(response, 400)["error"]
    assert stored() == before


@pytest.mark.parametrize("log_type", [None, "", "RESULT", 1, ["result"], {"t": "status"}])
def test_log_with_missing_or_wrong_log_type_is_400_and_writes_nothing(agent, stored, log_type):
    before = stored()
    body = {"data": [{"name": "q", "snapshot": []}]}
    if log_type is not None:
        body["log_type"] = log_type
    assert "log_type" in assert_error(agent.authed("log", body), 400)["error"]
    assert stored() == before


def test_log_without_data_is_an_empty_batch(agent, settings):
    assert agent.authed("log", {"log_type": "status"}).json() == {}
    assert agent.authed("log", {"log_type": "status", "data": None}).json() == {}
    status_log = Path(settings.OSQUERY["STATUS_LOG_FILE"])
    assert not status_log.exists() or status_log.read_text() == ""


# --- Methods ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/api/osquery", "/api/v1/osquery"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_other_methods_are_405_json(client, global_secret, stored, prefix, endpoint, method):
    before = stored()
    response = getattr(client, method)(f"{prefix}/{endpoint}")
    assert_error(response, 405)
    assert response["Allow"] == "POST"
    assert stored() == before


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_agent_endpoints_need_no_csrf_token(global_secret, endpoint):
    from django.test import Client

    agent = Agent(Client(enforce_csrf_checks=True))
    agent.enroll(global_secret)
    response = agent.post(endpoint, good_body(endpoint, agent))
    assert response.status_code == 200 and "error" not in response.json()


# --- Size limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_body_over_the_limit_is_413_json(agent, stored, settings, endpoint):
    settings.OSQUERY = {**settings.OSQUERY, LIMIT_SETTING[endpoint]: 512}
    before = stored()
    body = good_body(endpoint, agent)
    body["padding"] = "x" * 1024
    response = agent.post(endpoint, body)
    assert "limit" in assert_error(response, 413)["error"]
    assert stored() == before


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_gzip_body_over_the_limit_once_inflated_is_413(agent, stored, settings, endpoint):
    settings.OSQUERY = {**settings.OSQUERY, LIMIT_SETTING[endpoint]: 4096}
    before = stored()
    body = good_body(endpoint, agent)
    body["padding"] = "x" * 100_000  # compresses to a few hundred bytes
    data = gzip.compress(json.dumps(body).encode())
    assert len(data) < 4096
    response = raw_post(agent.client, endpoint, data, HTTP_CONTENT_ENCODING="gzip")
    assert "limit" in assert_error(response, 413)["error"]
    assert stored() == before


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_limits_are_per_endpoint(agent, settings, endpoint):
    """Only the endpoint's own limit applies: shrinking the others changes nothing."""
    others = {name: 64 for name in set(LIMIT_SETTING.values()) - {LIMIT_SETTING[endpoint]}}
    settings.OSQUERY = {**settings.OSQUERY, **others}
    response = agent.post(endpoint, good_body(endpoint, agent))
    assert response.status_code == 200 and "error" not in response.json()


def test_body_exactly_at_the_limit_is_accepted(agent, settings):
    data = json.dumps({"node_key": agent.node_key}).encode()
    settings.OSQUERY = {**settings.OSQUERY, "MAX_REQUEST_SIZE": len(data)}
    assert raw_post(agent.client, "distributed/read", data).status_code == 200
    settings.OSQUERY = {**settings.OSQUERY, "MAX_REQUEST_SIZE": len(data) - 1}
    assert_error(raw_post(agent.client, "distributed/read", data), 413)


def test_default_limits_fit_osquerys_largest_batches(agent, settings):
    """osquery-protocol.md §10.10: logs of many lines and large results must fit by default."""
    lines = [{"name": "q", "action": "snapshot", "snapshot": [{"v": "x" * 1000}]} for _ in range(1024)]
    response = agent.authed("log", {"log_type": "result", "data": lines})
    assert response.status_code == 200 and response.json() == {}
    rows = [{"k": str(i), "v": "y" * 200} for i in range(10_000)]
    response = agent.authed("distributed/write", {"queries": {"big": rows}, "statuses": {"big": 0}})
    assert response.status_code == 200 and response.json() == {}


# --- Content-Encoding ------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_gzip_body_is_accepted_everywhere(client, global_secret, settings, endpoint):
    agent = Agent(client)
    agent.enroll(global_secret)
    response = agent.post(endpoint, good_body(endpoint, agent), gzip_body=True)
    assert response.status_code == 200
    answer = response.json()
    assert "error" not in answer
    if endpoint == "enroll":
        assert set(answer) == {"node_key"} and answer["node_key"] != agent.node_key
    elif endpoint == "config":
        assert "options" in answer
    elif endpoint == "distributed/read":
        assert answer["queries"]  # a new host is asked for its details
    elif endpoint == "distributed/write":
        host = Host.objects.get()
        assert (host.hostname, host.uptime) == ("renamed-by-write", 4242)
    else:
        lines = Path(settings.OSQUERY["STATUS_LOG_FILE"]).read_text().splitlines()
        assert [json.loads(line) for line in lines] == [{"severity": "0", "message": "hello"}]


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "GZIP", " gzip ", None])
def test_gzip_is_recognised_by_header_or_magic_bytes(agent, encoding):
    data = gzip.compress(json.dumps({"node_key": agent.node_key}).encode())
    extra = {} if encoding is None else {"HTTP_CONTENT_ENCODING": encoding}
    response = raw_post(agent.client, "distributed/read", data, **extra)
    assert response.status_code == 200 and "queries" in response.json()


def test_identity_encoding_is_plain(agent):
    data = json.dumps({"node_key": agent.node_key}).encode()
    response = raw_post(agent.client, "distributed/read", data, HTTP_CONTENT_ENCODING="identity")
    assert response.status_code == 200 and "queries" in response.json()


def _corrupt(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 8]) + data[middle + 8 :]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("damage", ["not-gzip", "truncated", "flipped-bytes", "bad-crc", "header-only"])
def test_corrupt_gzip_is_400_json(agent, stored, endpoint, damage):
    before = stored()
    plain = json.dumps(good_body(endpoint, agent)).encode()
    packed = gzip.compress(plain)
    data = {
        "not-gzip": plain,
        "truncated": packed[: len(packed) // 2],
        "flipped-bytes": _corrupt(packed),
        "bad-crc": packed[:-8] + bytes(b ^ 0xFF for b in packed[-8:-4]) + packed[-4:],
        "header-only": packed[:10],
    }[damage]
    response = raw_post(agent.client, endpoint, data, HTTP_CONTENT_ENCODING="gzip")
    assert "gzip" in assert_error(response, 400)["error"]
    assert stored() == before


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_gzip_of_something_that_is_not_a_json_object_is_400(agent, stored, endpoint):
    before = stored()
    for plain in (b"not json at all", b"[1, 2, 3]", b""):
        data = gzip.compress(plain)
        assert_error(raw_post(agent.client, endpoint, data, HTTP_CONTENT_ENCODING="gzip"), 400)
    assert stored() == before


@pytest.mark.parametrize("encoding", ["br", "deflate", "compress", "zstd"])
def test_unsupported_content_encoding_is_415_json(agent, stored, encoding):
    before = stored()
    data = json.dumps({"node_key": agent.node_key}).encode()
    response = raw_post(agent.client, "distributed/read", data, HTTP_CONTENT_ENCODING=encoding)
    assert encoding in assert_error(response, 415)["error"]
    assert stored() == before


# --- After bad requests, the agent still works ------------------------------------------------------


def test_a_storm_of_bad_requests_leaves_the_agent_working(agent, settings):
    for endpoint in ENDPOINTS:
        for data in (b"", b"[]", b"{", gzip.compress(b"{")[:5], b'{"node_key": 1}'):
            response = raw_post(agent.client, endpoint, data)
            assert 400 <= response.status_code < 500 and response.json()["error"]
    assert Host.objects.count() == 1
    assert agent.authed("distributed/read").status_code == 200
    assert agent.authed("distributed/write", DETAIL_WRITE).json() == {}
    assert Host.objects.get().hostname == "renamed-by-write"
    assert agent.authed("log", {"log_type": "status", "data": [{"message": "m"}]}).json() == {}
