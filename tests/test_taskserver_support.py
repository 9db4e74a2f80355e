"""Shared pieces of the task server tests: a stand-in for ``taskagent.plugins`` and fixtures.

The agent's plugin package is written separately; the server reads it only through
``taskserver.plugins`` (``validate_settings`` and each plugin's ``SETTINGS_SCHEMA``), so the tests
plug in this small module with the same interface.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from hosts.models import Team
from taskserver import events
from taskserver.models import TaskAgent

STANDIN = "tests_taskserver_plugins_standin"


class Ns1:
    SETTINGS_SCHEMA = {
        "type": "object",
        "properties": {
            "zone": {"type": "string"},
            "api_key": {"type": "string", "secret": True},
        },
        "required": ["zone", "api_key"],
        "additionalProperties": False,
    }


class Ping:
    SETTINGS_SCHEMA = {
        "type": "object",
        "properties": {"host": {"type": "string"}, "count": {"type": "integer"}},
        "required": ["host"],
        "additionalProperties": False,
    }


def _validate_settings(plugin: str, settings: dict[str, Any]) -> None:
    schema = {"ns1": Ns1, "ping": Ping}[plugin].SETTINGS_SCHEMA
    for name in schema["required"]:
        if name not in settings:
            raise ValueError(f"{name}: required")
    for name, value in settings.items():
        spec = schema["properties"].get(name)
        if spec is None:
            raise ValueError(f"{name}: unknown setting")
        kind = {"string": str, "integer": int}[spec["type"]]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"{name}: must be a {spec['type']}")


def _module() -> types.ModuleType:
    module = types.ModuleType(STANDIN)
    module.PLUGINS = {"ns1": Ns1, "ping": Ping}
    module.validate_settings = _validate_settings
    return module


@pytest.fixture(autouse=True)
def plugin_standin(settings, monkeypatch):
    monkeypatch.setitem(sys.modules, STANDIN, _module())
    settings.TASKSERVER_PLUGINS_MODULE = STANDIN


def record_hooks(monkeypatch) -> list[tuple]:
    """Replace the WebSocket hooks with a recorder: what they were told, in order."""
    calls: list[tuple] = []
    monkeypatch.setattr(
        events, "task_changed", lambda task, old: calls.append(("changed", task.pk, list(old)))
    )
    monkeypatch.setattr(
        events, "task_removed", lambda task_id, ids: calls.append(("removed", task_id, list(ids)))
    )
    monkeypatch.setattr(events, "agent_removed", lambda agent_id: calls.append(("agent_removed", agent_id)))
    return calls


def make_agent(name: str, team: Team | None = None, *, online: bool = True, **fields: Any) -> TaskAgent:
    return TaskAgent.objects.create(name=name, team=team, online=online, **fields)


NS1 = {"zone": "example.com", "api_key": "s3cr3t-ns1-key"}


def task_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "name": "ns1 qps",
        "plugin": "ns1",
        "settings": dict(NS1),
        "interval": 60,
        "route": {"type": "byTags", "config": {"tags": ["dc1"]}},
    }
    body.update(overrides)
    return body


def test_the_standin_is_what_the_server_reads() -> None:
    from taskserver import plugins

    assert plugins.available() == ["ns1", "ping"]
    assert plugins.secret_fields("ns1") == {"api_key"}
    with pytest.raises(plugins.PluginError, match="zone: required"):
        plugins.validate("ns1", {"api_key": "x"})


def test_without_the_plugin_package_nothing_validates(settings) -> None:
    from taskserver import plugins

    settings.TASKSERVER_PLUGINS_MODULE = "no_such_module_here"
    assert plugins.available() == []
    with pytest.raises(plugins.PluginError, match="No task plugins"):
        plugins.validate("ns1", {})


def test_the_real_plugin_package_fits_the_adapter(settings) -> None:
    """When the agent's package is there, the server reads its plugins, secrets and errors."""
    pytest.importorskip("taskagent.plugins")
    from taskserver import plugins

    settings.TASKSERVER_PLUGINS_MODULE = "taskagent.plugins"
    names = plugins.available()
    assert names, "the agent package lists no plugin"
    with pytest.raises(plugins.PluginError):
        plugins.validate(names[0], {"no such setting": 1})
    assert all(isinstance(plugins.secret_fields(name), frozenset) for name in names)
