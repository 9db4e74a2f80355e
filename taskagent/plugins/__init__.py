"""Task plugins: one module per plugin in this package, found at import, no runner change needed.

A plugin module defines ``NAME`` (the task's ``plugin`` value), ``SETTINGS_SCHEMA`` (see
``_schema``) and ``async def run(settings, context) -> list[Metric]``. ``run`` gets settings
already checked (defaults filled in), returns the metrics it measured, and raises
``PluginError(kind)`` when it measured nothing (``taskagent.metrics`` explains why a failure is
never a zero). Modules whose name starts with ``_`` are helpers, not plugins.

Plugin modules import their third-party libraries inside ``run``: importing this package (as the
server does, for ``validate_settings``) needs the standard library only.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from taskagent.metrics import Metric, PluginError
from taskagent.plugins._schema import SettingsError, secret_fields, validate

__all__ = [
    "Plugin", "PluginError", "RunContext", "SettingsError", "all_plugins", "get", "secret_fields_of",
    "validate_settings",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plugin:
    name: str
    schema: dict[str, Any]
    run: Callable[[dict[str, Any], RunContext], Awaitable[list[Metric]]]


@dataclass(frozen=True)
class RunContext:
    """What a run knows besides its settings; ``metric`` names metrics ``<plugin>.<name>``."""

    task_id: int | str
    task_name: str
    agent: str
    plugin: str
    timestamp: float  # the run's scheduled time: every metric of the run carries it
    timeout: float  # seconds; the runner cancels the run after it

    def metric(self, name: str, value: float, unit: str = "", type: str = "gauge", **tags: str) -> Metric:
        return Metric(f"{self.plugin}.{name}", value, unit, type, dict(tags), self.timestamp)


def _load(module: ModuleType) -> Plugin:
    name, schema, run = module.NAME, module.SETTINGS_SCHEMA, module.run
    if not isinstance(name, str) or not isinstance(schema, dict) or not callable(run):
        raise TypeError("NAME must be a string, SETTINGS_SCHEMA a dict and run a function")
    return Plugin(name, schema, run)


def _discover() -> dict[str, Plugin]:
    found: dict[str, Plugin] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        try:
            plugin = _load(importlib.import_module(f"{__name__}.{info.name}"))
        except Exception:  # one broken plugin must not stop the others (or the server) loading
            log.exception("task plugin module %s could not be loaded", info.name)
            continue
        if plugin.name in found:
            log.error("task plugin %s is defined twice; keeping the first", plugin.name)
            continue
        found[plugin.name] = plugin
    return found


_REGISTRY = _discover()


def all_plugins() -> dict[str, Plugin]:
    return dict(_REGISTRY)


def get(name: str) -> Plugin | None:
    return _REGISTRY.get(name)


def validate_settings(plugin: str, settings: Any) -> dict[str, Any]:
    """``settings`` checked against the plugin's schema, defaults filled in; else ``SettingsError``."""
    found = _REGISTRY.get(plugin)
    if found is None:
        raise SettingsError({"plugin": f"unknown plugin {plugin!r}"})
    return validate(found.schema, settings)


def secret_fields_of(plugin: str) -> list[str]:
    found = _REGISTRY.get(plugin)
    return secret_fields(found.schema) if found else []
