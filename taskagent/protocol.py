"""Agent protocol v1: the messages between the server and a task agent, for both ends.

Every WebSocket frame is a JSON *text* frame ``{"v": 1, "type": T, "data": {...}}``
(docs/task-agent-protocol.md). The original raintank agent used a home-made binary framing and
died with a nil dereference on a text or malformed frame (task-server.md §3, §6); here every
frame goes through ``parse``, which checks the envelope and each field's type and raises
``ProtocolError`` for anything else, so a bad frame costs a log line, never the process.

Rules that both ends rely on:

* ``v`` must be exactly 1; a later version gets a new number, never a silent change.
* Unknown *types* raise ``UnknownTypeError`` (a ``ProtocolError``), which callers log and
  ignore: a newer server may send types an older agent does not know.
* Unknown *fields* inside ``data`` are ignored, for the same reason; missing or mistyped known
  fields are errors.
* A frame above ``MAX_FRAME_BYTES`` (1 MiB, UTF-8) is refused before it is decoded.
* JSON's non-standard ``NaN``/``Infinity`` are refused; booleans are never taken for numbers.
* Ids (agent, task, destination) are a non-empty string or an integer, whichever the server
  uses; the agent only compares them.

This module uses the standard library only, so the server can import it as is.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

VERSION = 1
MAX_FRAME_BYTES = 1024 * 1024
MIN_INTERVAL = 10
MAX_INTERVAL = 86400
DESTINATION_KINDS = ("graphite", "prometheus_remote_write", "server")
METRIC_TYPES = ("gauge", "counter", "rate")

# Server -> agent.
WELCOME = "welcome"
TASK_LIST = "task_list"
TASK_ADD = "task_add"
TASK_UPDATE = "task_update"
TASK_REMOVE = "task_remove"
DESTINATIONS = "destinations"
HEARTBEAT = "heartbeat"  # both directions
# Agent -> server.
STATUS = "status"
METRICS = "metrics"


class ProtocolError(ValueError):
    """A frame that is not a valid v1 message; the message says what is wrong with it."""


class UnknownTypeError(ProtocolError):
    """A well-formed frame of a type this version does not know: log it and go on."""

    def __init__(self, type_: str) -> None:
        super().__init__(f"unknown message type {type_!r}")
        self.type = type_


Id = int | str


@dataclass(frozen=True)
class Task:
    id: Id
    name: str
    plugin: str
    settings: dict[str, Any]
    interval: int
    enabled: bool
    created_at: float
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Destination:
    id: Id
    kind: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Message:
    type: str
    data: dict[str, Any]

    def encode(self) -> str:
        return encode(self.type, self.data)


# --- field checks -------------------------------------------------------------------------------


def _get(data: dict[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise ProtocolError(f"{where}: missing field {key!r}")
    return data[key]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number(data: dict[str, Any], key: str, where: str, *, minimum: float | None = None) -> float:
    value = _get(data, key, where)
    if not _is_number(value):
        raise ProtocolError(f"{where}: {key!r} must be a number")
    if minimum is not None and value < minimum:
        raise ProtocolError(f"{where}: {key!r} must be at least {minimum}")
    return value


def _string(data: dict[str, Any], key: str, where: str, *, empty: bool = False) -> str:
    value = _get(data, key, where)
    if not isinstance(value, str) or (not empty and not value):
        raise ProtocolError(f"{where}: {key!r} must be a {'' if empty else 'non-empty '}string")
    return value


def _bool(data: dict[str, Any], key: str, where: str) -> bool:
    value = _get(data, key, where)
    if not isinstance(value, bool):
        raise ProtocolError(f"{where}: {key!r} must be true or false")
    return value


def _dict(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = _get(data, key, where)
    if not isinstance(value, dict):
        raise ProtocolError(f"{where}: {key!r} must be an object")
    return value


def _list(data: dict[str, Any], key: str, where: str) -> list[Any]:
    value = _get(data, key, where)
    if not isinstance(value, list):
        raise ProtocolError(f"{where}: {key!r} must be an array")
    return value


def _id(data: dict[str, Any], key: str, where: str) -> Id:
    value = _get(data, key, where)
    if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
        raise ProtocolError(f"{where}: {key!r} must be a non-empty string or an integer")
    return value


def _string_map(data: dict[str, Any], key: str, where: str) -> dict[str, str]:
    value = _dict(data, key, where)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ProtocolError(f"{where}: {key!r} must map strings to strings")
    return value


def parse_task(raw: Any, where: str = "task") -> Task:
    if not isinstance(raw, dict):
        raise ProtocolError(f"{where}: must be an object")
    interval = _get(raw, "interval", where)
    if isinstance(interval, bool) or not isinstance(interval, int):
        raise ProtocolError(f"{where}: 'interval' must be an integer number of seconds")
    if not MIN_INTERVAL <= interval <= MAX_INTERVAL:
        raise ProtocolError(f"{where}: 'interval' must be between {MIN_INTERVAL} and {MAX_INTERVAL}")
    return Task(
        id=_id(raw, "id", where),
        name=_string(raw, "name", where),
        plugin=_string(raw, "plugin", where),
        settings=_dict(raw, "settings", where),
        interval=interval,
        enabled=_bool(raw, "enabled", where),
        created_at=_number(raw, "created_at", where, minimum=0),
        updated_at=_number(raw, "updated_at", where, minimum=0),
    )


def parse_destination(raw: Any, where: str = "destination") -> Destination:
    if not isinstance(raw, dict):
        raise ProtocolError(f"{where}: must be an object")
    kind = _string(raw, "kind", where)
    if kind not in DESTINATION_KINDS:
        raise ProtocolError(f"{where}: 'kind' must be one of {', '.join(DESTINATION_KINDS)}")
    url = _string(raw, "url", where, empty=kind == "server")
    headers = _string_map(raw, "headers", where) if "headers" in raw else {}
    return Destination(id=_id(raw, "id", where), kind=kind, url=url, headers=headers)


def parse_metric(raw: Any, where: str = "metric") -> dict[str, Any]:
    """Check one metric of a ``metrics`` message; returns it as a plain dict."""
    if not isinstance(raw, dict):
        raise ProtocolError(f"{where}: must be an object")
    type_ = _string(raw, "type", where)
    if type_ not in METRIC_TYPES:
        raise ProtocolError(f"{where}: 'type' must be one of {', '.join(METRIC_TYPES)}")
    return {
        "name": _string(raw, "name", where),
        "value": _number(raw, "value", where),
        "unit": _string(raw, "unit", where, empty=True),
        "type": type_,
        "tags": _string_map(raw, "tags", where),
        "timestamp": _number(raw, "timestamp", where, minimum=0),
    }


# --- per-type checks: each returns the data the caller uses (tasks as Task, etc.) -----------------


def _welcome(data: dict[str, Any]) -> dict[str, Any]:
    where = WELCOME
    interval = _number(data, "heartbeat_interval", where)
    if interval <= 0:
        raise ProtocolError(f"{where}: 'heartbeat_interval' must be positive")
    return {
        "agent_id": _id(data, "agent_id", where),
        "name": _string(data, "name", where),
        "session_id": _string(data, "session_id", where),
        "heartbeat_interval": interval,
    }


def _task_list(data: dict[str, Any]) -> dict[str, Any]:
    tasks = [parse_task(t, f"task_list.tasks[{i}]") for i, t in enumerate(_list(data, "tasks", TASK_LIST))]
    if len({t.id for t in tasks}) != len(tasks):
        raise ProtocolError("task_list: duplicate task ids")
    return {"tasks": tasks}


def _one_task(type_: str):
    def check(data: dict[str, Any]) -> dict[str, Any]:
        return {"task": parse_task(_get(data, "task", type_), f"{type_}.task")}

    return check


def _task_remove(data: dict[str, Any]) -> dict[str, Any]:
    return {"id": _id(data, "id", TASK_REMOVE)}


def _destinations(data: dict[str, Any]) -> dict[str, Any]:
    raw = _list(data, "destinations", DESTINATIONS)
    dests = [parse_destination(d, f"destinations[{i}]") for i, d in enumerate(raw)]
    if len({d.id for d in dests}) != len(dests):
        raise ProtocolError("destinations: duplicate destination ids")
    return {"destinations": dests}


def _heartbeat(data: dict[str, Any]) -> dict[str, Any]:
    return {"time": _number(data, "time", HEARTBEAT, minimum=0)}


def _status(data: dict[str, Any]) -> dict[str, Any]:
    running = _list(data, "running", STATUS)
    for value in running:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ProtocolError("status: 'running' must list task ids")
    counters = _dict(data, "counters", STATUS)
    if not all(_is_number(v) for v in counters.values()):
        raise ProtocolError("status: 'counters' values must be numbers")
    return {"running": running, "counters": counters}


def _metrics(data: dict[str, Any]) -> dict[str, Any]:
    raw = _list(data, "metrics", METRICS)
    return {"metrics": [parse_metric(m, f"metrics[{i}]") for i, m in enumerate(raw)]}


_CHECKS = {
    WELCOME: _welcome,
    TASK_LIST: _task_list,
    TASK_ADD: _one_task(TASK_ADD),
    TASK_UPDATE: _one_task(TASK_UPDATE),
    TASK_REMOVE: _task_remove,
    DESTINATIONS: _destinations,
    HEARTBEAT: _heartbeat,
    STATUS: _status,
    METRICS: _metrics,
}
TYPES = frozenset(_CHECKS)


def _refuse_constant(name: str) -> Any:
    raise ProtocolError(f"{name} is not JSON")


def parse(text: str | bytes) -> Message:
    """Decode and check one frame. ``data`` holds checked values (``Task``/``Destination`` objects)."""
    if isinstance(text, bytes | bytearray):
        if len(text) > MAX_FRAME_BYTES:
            raise ProtocolError(f"frame larger than {MAX_FRAME_BYTES} bytes")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("frame is not UTF-8") from exc
    elif not isinstance(text, str):
        raise ProtocolError("frame must be text")
    # A character is at most 4 bytes in UTF-8: only long frames pay for an exact count.
    if len(text) * 4 > MAX_FRAME_BYTES and len(text.encode("utf-8", "surrogatepass")) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame larger than {MAX_FRAME_BYTES} bytes")
    try:
        raw = json.loads(text, parse_constant=_refuse_constant)
    except ProtocolError:
        raise
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ProtocolError("frame must be a JSON object")
    version = raw.get("v")
    if isinstance(version, bool) or version != VERSION:
        raise ProtocolError(f"unsupported protocol version {version!r} (expected {VERSION})")
    type_ = raw.get("type")
    if not isinstance(type_, str) or not type_:
        raise ProtocolError("'type' must be a non-empty string")
    data = raw.get("data")
    if not isinstance(data, dict):
        raise ProtocolError("'data' must be an object")
    check = _CHECKS.get(type_)
    if check is None:
        raise UnknownTypeError(type_)
    return Message(type_, check(data))


def _plain(value: Any) -> Any:
    if isinstance(value, Task | Destination):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def encode(type_: str, data: dict[str, Any]) -> str:
    """One frame's text. ``Task``/``Destination`` objects in ``data`` are written as objects."""
    text = json.dumps({"v": VERSION, "type": type_, "data": _plain(data)}, allow_nan=False,
                      separators=(",", ":"))
    if len(text.encode("utf-8")) > MAX_FRAME_BYTES:
        raise ProtocolError(f"{type_} message larger than {MAX_FRAME_BYTES} bytes")
    return text


# --- builders for the agent's messages ------------------------------------------------------------


def heartbeat(now: float) -> str:
    return encode(HEARTBEAT, {"time": now})


def status(running: list[Id], counters: dict[str, float]) -> str:
    return encode(STATUS, {"running": list(running), "counters": dict(counters)})


def metrics_message(metrics: list[dict[str, Any]]) -> str:
    return encode(METRICS, {"metrics": metrics})
