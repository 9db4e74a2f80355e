"""Agent protocol v1 (taskagent/protocol.py): what parses, and every way a frame is refused."""

from __future__ import annotations

import json

import pytest

from taskagent import protocol
from taskagent.protocol import Destination, ProtocolError, Task, UnknownTypeError, parse

TASK = {
    "id": 7, "name": "ping example", "plugin": "http", "settings": {"url": "https://example.com"},
    "interval": 60, "enabled": True, "created_at": 1700000000, "updated_at": 1700000100,
}


def frame(type_, data, v=1):
    return json.dumps({"v": v, "type": type_, "data": data})


def test_each_server_message_parses():
    welcome = parse(frame("welcome", {"agent_id": 3, "name": "a1", "session_id": "s",
                                      "heartbeat_interval": 10}))
    assert welcome.data["heartbeat_interval"] == 10
    tasks = parse(frame("task_list", {"tasks": [TASK, {**TASK, "id": "uuid-2"}]})).data["tasks"]
    assert tasks[0] == Task(**TASK) and tasks[1].id == "uuid-2"
    assert parse(frame("task_add", {"task": TASK})).data["task"].interval == 60
    assert parse(frame("task_update", {"task": TASK})).data["task"].name == "ping example"
    assert parse(frame("task_remove", {"id": 7})).data == {"id": 7}
    dests = parse(frame("destinations", {"destinations": [
        {"id": 1, "kind": "graphite", "url": "tcp://g:2003", "headers": {}},
        {"id": 2, "kind": "prometheus_remote_write", "url": "https://p/api/v1/write", "headers": {"A": "b"}},
        {"id": 3, "kind": "server", "url": ""},
    ]})).data["destinations"]
    assert dests[1] == Destination(2, "prometheus_remote_write", "https://p/api/v1/write", {"A": "b"})
    assert dests[2].headers == {}
    assert parse(frame("heartbeat", {"time": 1.5})).data == {"time": 1.5}


def test_agent_messages_round_trip():
    assert parse(protocol.heartbeat(12.0)).data == {"time": 12.0}
    status = parse(protocol.status([1, "b"], {"runs.failed": 2}))
    assert status.data == {"running": [1, "b"], "counters": {"runs.failed": 2}}
    metric = {"name": "http.latency_ms", "value": 1.5, "unit": "ms", "type": "gauge",
              "tags": {"task": "1"}, "timestamp": 10.0}
    assert parse(protocol.metrics_message([metric])).data["metrics"] == [metric]
    # Task objects are written as objects.
    assert json.loads(protocol.encode("task_add", {"task": Task(**TASK)}))["data"]["task"] == TASK


def test_unknown_fields_are_ignored():
    message = parse(json.dumps({"v": 1, "type": "task_remove", "data": {"id": 1, "later": True}, "x": 1}))
    assert message.data == {"id": 1}


def test_unknown_type_is_its_own_error():
    with pytest.raises(UnknownTypeError) as info:
        parse(frame("reboot", {}))
    assert info.value.type == "reboot"
    assert isinstance(info.value, ProtocolError)


@pytest.mark.parametrize("text", [
    "", "not json", "[1, 2]", '"string"', "null", "{",
    json.dumps({"type": "heartbeat", "data": {"time": 1}}),  # no version
    frame("heartbeat", {"time": 1}, v=2),
    frame("heartbeat", {"time": 1}, v=0),
    frame("heartbeat", {"time": 1}, v="1"),
    frame("heartbeat", {"time": 1}, v=True),
    frame("heartbeat", {"time": 1}, v=1.5),
    json.dumps({"v": 1, "data": {}}),
    json.dumps({"v": 1, "type": "", "data": {}}),
    json.dumps({"v": 1, "type": 5, "data": {}}),
    json.dumps({"v": 1, "type": "heartbeat"}),
    json.dumps({"v": 1, "type": "heartbeat", "data": []}),
    json.dumps({"v": 1, "type": "heartbeat", "data": None}),
    '{"v": 1, "type": "heartbeat", "data": {"time": NaN}}',
    '{"v": 1, "type": "heartbeat", "data": {"time": Infinity}}',
    frame("heartbeat", {}),
    frame("heartbeat", {"time": "now"}),
    frame("heartbeat", {"time": True}),
    frame("heartbeat", {"time": -1}),
    frame("welcome", {"agent_id": 1, "name": "a", "session_id": "s"}),
    frame("welcome", {"agent_id": 1, "name": "a", "session_id": "s", "heartbeat_interval": 0}),
    frame("welcome", {"agent_id": True, "name": "a", "session_id": "s", "heartbeat_interval": 5}),
    frame("welcome", {"agent_id": "", "name": "a", "session_id": "s", "heartbeat_interval": 5}),
    frame("welcome", {"agent_id": 1, "name": "", "session_id": "s", "heartbeat_interval": 5}),
    frame("welcome", {"agent_id": 1.5, "name": "a", "session_id": "s", "heartbeat_interval": 5}),
    frame("task_list", {}),
    frame("task_list", {"tasks": {}}),
    frame("task_list", {"tasks": [TASK, TASK]}),  # duplicate ids
    frame("task_list", {"tasks": [5]}),
    frame("task_add", {}),
    frame("task_add", {"task": None}),
    frame("task_remove", {}),
    frame("task_remove", {"id": None}),
    frame("task_remove", {"id": [1]}),
    frame("destinations", {"destinations": [{"id": 1, "kind": "kafka", "url": "x"}]}),
    frame("destinations", {"destinations": [{"id": 1, "kind": "graphite", "url": ""}]}),
    frame("destinations", {"destinations": [{"id": 1, "kind": "graphite", "url": "x", "headers": {"a": 1}}]}),
    frame("destinations", {"destinations": [{"id": 1, "kind": "graphite", "url": "x", "headers": []}]}),
    frame("destinations", {"destinations": [{"kind": "graphite", "url": "x"}]}),
    frame("destinations", {"destinations": [{"id": 1, "kind": "server", "url": ""}] * 2}),
    frame("status", {"running": "1", "counters": {}}),
    frame("status", {"running": [None], "counters": {}}),
    frame("status", {"running": [], "counters": {"a": "1"}}),
    frame("metrics", {"metrics": [{"name": "x", "value": 1, "unit": "", "type": "histogram", "tags": {},
                                   "timestamp": 1}]}),
    frame("metrics", {"metrics": [{"name": "x", "value": "1", "unit": "", "type": "gauge", "tags": {},
                                   "timestamp": 1}]}),
    frame("metrics", {"metrics": [{"name": "x", "value": 1, "unit": "", "type": "gauge", "tags": {"a": 1},
                                   "timestamp": 1}]}),
])
def test_malformed_frames_are_refused(text):
    with pytest.raises(ProtocolError):
        parse(text)


@pytest.mark.parametrize("change", [
    {"interval": 9}, {"interval": 86401}, {"interval": 60.0}, {"interval": True}, {"interval": "60"},
    {"settings": []}, {"settings": "url=x"}, {"enabled": 1}, {"enabled": "yes"}, {"created_at": True},
    {"created_at": -5}, {"updated_at": "2024-01-01"}, {"name": ""}, {"name": 3}, {"plugin": None},
    {"id": False}, {"id": ""}, {"id": 1.0},
])
def test_bad_task_fields_are_refused(change):
    with pytest.raises(ProtocolError):
        parse(frame("task_add", {"task": {**TASK, **change}}))


@pytest.mark.parametrize("missing", sorted(TASK))
def test_every_task_field_is_required(missing):
    task = {k: v for k, v in TASK.items() if k != missing}
    with pytest.raises(ProtocolError, match=missing):
        parse(frame("task_add", {"task": task}))


def test_interval_bounds_are_inclusive():
    assert parse(frame("task_add", {"task": {**TASK, "interval": 10}})).data["task"].interval == 10
    assert parse(frame("task_add", {"task": {**TASK, "interval": 86400}})).data["task"].interval == 86400


def test_oversized_frames_are_refused_before_decoding():
    big = frame("task_add", {"task": {**TASK, "settings": {"x": "a" * protocol.MAX_FRAME_BYTES}}})
    with pytest.raises(ProtocolError, match="larger"):
        parse(big)
    with pytest.raises(ProtocolError, match="larger"):
        parse(big.encode())
    # Multi-byte characters count as bytes, not characters.
    pad = "é" * (protocol.MAX_FRAME_BYTES // 2)
    wide = json.dumps({"v": 1, "type": "heartbeat", "data": {"time": 1, "pad": pad}}, ensure_ascii=False)
    assert len(wide) < protocol.MAX_FRAME_BYTES
    with pytest.raises(ProtocolError, match="larger"):
        parse(wide)


def test_bytes_frames():
    assert parse(frame("heartbeat", {"time": 1}).encode()).data == {"time": 1}
    with pytest.raises(ProtocolError, match="UTF-8"):
        parse(b"\xff\xfe")
    with pytest.raises(ProtocolError):
        parse(None)


def test_deep_nesting_is_an_error_not_a_crash():
    with pytest.raises(ProtocolError):
        parse("[" * 100000 + "]" * 100000)


def test_encode_refuses_oversized_and_nan():
    with pytest.raises(ProtocolError):
        protocol.encode("metrics", {"metrics": [{"pad": "a" * protocol.MAX_FRAME_BYTES}]})
    with pytest.raises(ValueError):
        protocol.heartbeat(float("nan"))
