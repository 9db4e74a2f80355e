"""The task plugins the server knows, read from the agent's own package (``taskagent.plugins``).

The agent and the server share one definition of each plugin's settings: its ``SETTINGS_SCHEMA``
(a JSON Schema object whose properties may carry ``secret: true``) and
``validate_settings(plugin, settings)``. The server imports no agent code beyond that module,
which does not need Django. ``settings.TASKSERVER_PLUGINS_MODULE`` names another module with the
same interface (the tests use a small stand-in).

What the module offers, and how its answers are read:

- ``validate_settings(plugin, settings)``: raises when the settings do not fit or the plugin is
  unknown (``SettingsError``, whose ``errors`` maps fields to messages; any other exception's
  text is the message). It returns the settings with defaults filled in; the server stores what
  was sent (the agent fills defaults itself, so a changed default applies to saved tasks);
- ``all_plugins()`` (name -> plugin) and ``get(name)`` (an object with ``schema``), and
  ``secret_fields_of(name)``. A mapping ``PLUGINS`` of objects with ``SETTINGS_SCHEMA`` is
  read too (the tests' stand-in).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from django.conf import settings

DEFAULT_MODULE = "taskagent.plugins"


class PluginError(ValueError):
    """The plugin is unknown or its settings do not fit its schema; ``messages`` says why."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("; ".join(messages))
        self.messages = messages


def _module() -> ModuleType | None:
    name = getattr(settings, "TASKSERVER_PLUGINS_MODULE", DEFAULT_MODULE)
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def available() -> list[str]:
    """The plugin names, sorted (empty when the plugins module is not installed)."""
    module = _module()
    if module is None:
        return []
    listing = getattr(module, "all_plugins", None)
    if callable(listing):
        return sorted(str(name) for name in listing())
    registry = getattr(module, "PLUGINS", None)
    return sorted(registry) if isinstance(registry, Mapping) else []


def schema(plugin: str) -> dict[str, Any]:
    """The plugin's ``SETTINGS_SCHEMA`` (``{}`` for an unknown plugin)."""
    module = _module()
    if module is None:
        return {}
    found: Any = None
    getter = getattr(module, "get", None)
    if callable(getter):
        try:
            found = getter(plugin)
        except Exception:  # an unknown plugin: the plugin module decides how it says so
            found = None
    if found is None:
        registry = getattr(module, "PLUGINS", None)
        if isinstance(registry, Mapping):
            found = registry.get(plugin)
    if found is None:
        return {}
    value = getattr(found, "schema", None) or getattr(found, "SETTINGS_SCHEMA", None)
    return value if isinstance(value, dict) else {}


def secret_fields(plugin: str) -> frozenset[str]:
    """The names of the plugin's settings marked ``secret: true``."""
    module = _module()
    listing = getattr(module, "secret_fields_of", None) if module is not None else None
    if callable(listing):
        return frozenset(listing(plugin))
    properties = schema(plugin).get("properties") or {}
    return frozenset(
        name for name, spec in properties.items() if isinstance(spec, dict) and spec.get("secret") is True
    )


def validate(plugin: str, values: dict[str, Any]) -> None:
    """Raise :class:`PluginError` unless ``plugin`` exists and ``values`` fit its schema."""
    module = _module()
    if module is None:
        raise PluginError(["No task plugins are installed on this server (the taskagent package)."])
    if plugin not in available():
        known = ", ".join(available()) or "none"
        raise PluginError([f"Unknown plugin {plugin!r} (known: {known})."])
    try:
        module.validate_settings(plugin, values)
    except Exception as exc:  # SettingsError, or whatever a plugin's own check raises
        errors = getattr(exc, "errors", None)
        if isinstance(errors, dict) and errors:
            raise PluginError([f"{field}: {message}" for field, message in errors.items()]) from None
        raise PluginError([str(exc) or type(exc).__name__]) from None
