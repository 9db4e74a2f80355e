"""The osquery intervals a host was told to use, recorded when it fetches its config.

Fleet's ``GetClientConfig`` reads ``options.distributed_interval``, ``options.config_refresh``
(stored as the host's ``config_tls_refresh``: osquery only takes ``config_tls_refresh`` as a
flag, so Fleet ignores it in options) and ``options.logger_tls_period`` from the config it
serves, and updates the host's row when one differs (``TestUpdateHostIntervals``). The online
status depends on them, so a host is judged by the intervals it was just given rather than by
those it reported an hour ago.

Cost: the config endpoint is the agent's hot path. The intervals are parsed once per rendered
config (:func:`served_by`, called by ``packs.config`` when it renders) and cached beside the JSON;
the host's current ones ride in its cached ``HostState``. The common case, nothing changed, is
a tuple comparison and no query; a change is one UPDATE, then the cached state is replaced
without reading the host back. (Should a distributed/write of the same host refresh its state
in between, one of the two cached states wins until the next write or expiry; stale intervals
cost one more, idempotent, UPDATE at the next fetch.)
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from hosts.details import UNSIGNED_32, clamped_int
from hosts.models import Host
from hosts.nodekeys import HostState, store
from hosts.status import online_interval

# (distributed_interval, config_tls_refresh, logger_tls_period); None: the config does not set it.
Served = tuple[int | None, int | None, int | None]
NOT_SERVED: Served = (None, None, None)
_OPTIONS = ("distributed_interval", "config_refresh", "logger_tls_period")
_ZERO_DECIMALS = re.compile(r"(.*?[0-9])\.0+")  # "60.0" -> "60", as spf13/cast trims them


def _as_interval(value: Any) -> int | None:
    """An option value as Fleet reads it (``cast.ToUintE``); ``None`` where cast would fail."""
    if value is None or isinstance(value, bool):
        return int(bool(value))  # cast: nil is 0, true is 1
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0:
            return None
        value = int(value)
    if isinstance(value, int):
        return None if value < 0 else min(value, UNSIGNED_32[1])
    if isinstance(value, str) and value:
        trimmed = _ZERO_DECIMALS.fullmatch(value)
        number = clamped_int(trimmed.group(1) if trimmed else value, (-1, UNSIGNED_32[1]))
        return None if number is None or number < 0 else number
    return None


def served_by(config: Any) -> Served:
    """The intervals a rendered config document sets, from its ``options``."""
    options = config.get("options") if isinstance(config, dict) else None
    if not isinstance(options, dict):
        return NOT_SERVED
    found = tuple(_as_interval(options[name]) if name in options else None for name in _OPTIONS)
    return found  # type: ignore[return-value]


def record_served(state: HostState, served: Served) -> HostState:
    """Store the intervals just served to the host where they differ from its own; no query if equal."""
    wanted = tuple(own if new is None else new for own, new in zip(state.intervals, served, strict=True))
    if wanted == state.intervals:
        return state
    distributed, config_refresh, logger_period = wanted
    Host.objects.filter(id=state.id).update(
        distributed_interval=distributed, config_tls_refresh=config_refresh, logger_tls_period=logger_period
    )
    return store(
        dataclasses.replace(
            state,
            intervals=(distributed, config_refresh, logger_period),
            online_interval=online_interval(distributed, config_refresh),
        )
    )
