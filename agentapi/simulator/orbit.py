"""A simulated orbit (fleetd) beside a simulated osquery: enrolment, config, scripts, Desktop token,
lock and wipe, and an update check against the server's TUF repository.

It speaks the same endpoints with the same bodies as orbit (fleet-reference §10):
``/api/fleet/orbit/enroll`` with the host's hardware UUID (so it joins the host osquery enrolled),
``/config`` on an interval, ``/scripts/request`` and ``/scripts/result`` for each pending
execution id in queue order, ``/device_token`` with a fresh random token every rotation.

Scripts are not executed: a tiny interpreter understands ``echo``, ``sleep`` and ``exit`` lines
(enough to show output, exit codes and timeouts), prefixes the platform's canned output, and
recognises the server's built-in lock, unlock and wipe scripts to change the host's state.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentapi.simulator.stats import Stats
from agentapi.simulator.transport import Transport, TransportError

ORBIT_PREFIX = "/api/fleet/orbit"
_DEVICE_ACTION = re.compile(r"Built-in device action: (lock|unlock|wipe)\b")
ORBIT_VERSIONS = ("1.36.0", "1.37.0", "1.38.1")
# Every fourth host runs orbit with --disable-updates, so the console has outdated hosts to show.
UPDATES_DISABLED_EVERY = 4


@dataclass
class OrbitSettings:
    config_interval: float = 30.0  # orbit polls its config every 30 s
    token_rotation: float = 3600.0  # orbit rotates the Desktop token hourly
    update_interval: float = 900.0  # orbit checks for updates every 15 min
    update_url: str = ""  # the server's /tuf/ base URL; empty: no update checks
    update_root: bytes = b""  # trusted root.json; empty: fetched from the server on first use
    update_cache_dir: str = ""
    scripts_enabled: bool = True
    token_file: str = ""  # where every host's current Desktop token is written (My device URLs)


@dataclass
class OrbitState:
    """What orbit_info shows and what a device action changed."""

    version: str
    desktop_version: str
    scripts_enabled: bool
    device: str = "unlocked"  # unlocked, locked, wiped
    scripts_run: int = 0
    channels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ScriptOutcome:
    output: str
    exit_code: int
    runtime: int


def canned_output(platform: str, hostname: str) -> str:
    """What a first line of real output looks like on each platform."""
    if platform == "windows":
        return f"Host Name: {hostname}\r\nOS Name: Microsoft Windows 11 Pro\r\n"
    if platform == "darwin":
        return f"Darwin {hostname} 23.5.0 Darwin Kernel Version 23.5.0 arm64\n"
    return f"Linux {hostname} 6.8.0-45-generic #45-Ubuntu SMP x86_64 GNU/Linux\n"


def interpret(contents: str, platform: str, hostname: str, timeout: int) -> ScriptOutcome:
    """Pretend to run ``contents``: ``echo``/``Write-Output`` print, ``sleep N`` takes time,
    ``exit N`` ends; a sleep beyond ``timeout`` is a timeout (exit code -1, as orbit reports)."""
    output, runtime = [canned_output(platform, hostname)], 0
    for raw_line in contents.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            words = shlex.split(line, posix=True)
        except ValueError:
            words = line.split()
        command, args = words[0], words[1:]
        if command in ("echo", "Write-Output", "Write-Host", "printf"):
            output.append(" ".join(args) + "\n")
        elif command in ("sleep", "Start-Sleep") and args:
            seconds = int(args[-1]) if args[-1].isdigit() else 0
            runtime += seconds
            if runtime > timeout:
                output.append(f"Timeout. The script was stopped after {timeout} seconds.\n")
                return ScriptOutcome("".join(output), -1, timeout)
        elif command == "exit":
            code = int(args[0]) if args and args[0].lstrip("-").isdigit() else 0
            return ScriptOutcome("".join(output), code, runtime)
    return ScriptOutcome("".join(output), 0, runtime)


class SimulatedOrbit:
    """orbit for one simulated host (``identity`` and ``tables`` are the osquery agent's)."""

    def __init__(
        self,
        agent: Any,
        enroll_secret: str,
        settings: OrbitSettings | None = None,
        tokens: dict[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.agent = agent
        self.identity = agent.identity
        self.transport: Transport = agent.transport
        self.stats: Stats = agent.stats
        self.enroll_secret = enroll_secret
        self.settings = settings or OrbitSettings()
        self.tokens = tokens if tokens is not None else {}
        self.clock = clock
        version = ORBIT_VERSIONS[self.identity.index % len(ORBIT_VERSIONS)]
        self.state = OrbitState(
            version=version, desktop_version=version, scripts_enabled=self.settings.scripts_enabled
        )
        agent.state.orbit = self.state  # the osquery agent's orbit_info table shows it
        self.node_key: str | None = None
        self.token: str | None = None
        self.token_set_at = 0.0
        self.script_timeout = 300
        self._handled: set[str] = set()
        self._enroll_lock = asyncio.Lock()
        self._stop: asyncio.Event = agent._stop

    @property
    def platform(self) -> str:
        return self.identity.template.build_platform

    async def _post(self, endpoint: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        started = time.monotonic()
        try:
            status, raw = await self.transport.post(
                f"{ORBIT_PREFIX}/{endpoint}", body, {"User-Agent": f"fleetd/{self.state.version}"}
            )
        except TransportError as exc:
            self.stats.transport_errors += 1
            self.stats.record(f"orbit/{endpoint}", False, time.monotonic() - started, str(exc))
            return None
        try:
            parsed = json.loads(raw) if raw.strip() else {}
        except ValueError:
            parsed = {}
        if not isinstance(parsed, dict):
            parsed = {}
        ok = 200 <= status < 300
        self.stats.record(
            f"orbit/{endpoint}", ok, time.monotonic() - started, str(parsed.get("error", status))
        )
        if status == 401 and body.get("orbit_node_key") == self.node_key:
            self.node_key = None  # orbit re-enrolls on an invalid node key
        return status, parsed

    async def enroll(self) -> bool:
        response = await self._post(
            "enroll",
            {
                "enroll_secret": self.enroll_secret,
                "hardware_uuid": self.identity.uuid,
                "hardware_serial": self.identity.serial,
                "hostname": self.identity.hostname,
                "platform": self.identity.platform,
                "osquery_identifier": self.identity.host_identifier,
                "computer_name": self.identity.computer_name,
                "hardware_model": self.identity.hardware.model,
            },
        )
        if response is None or response[0] != 200 or not isinstance(response[1].get("orbit_node_key"), str):
            return False
        self.node_key = response[1]["orbit_node_key"]
        return True

    async def ensure_enrolled(self) -> bool:
        """Enroll once however many loops ask at the same time (a second enrolment would replace
        the key the first loop is using, as a real re-enrolment does)."""
        async with self._enroll_lock:
            return self.node_key is not None or await self.enroll()

    # --- config and scripts -----------------------------------------------------------------------

    async def config_cycle(self) -> list[str]:
        """One config fetch; runs the pending scripts in order; returns the ids it handled."""
        if not await self.ensure_enrolled():
            return []
        response = await self._post("config", {"orbit_node_key": self.node_key})
        if response is None or response[0] != 200:
            return []
        config = response[1]
        timeout = config.get("script_execution_timeout")
        if isinstance(timeout, int) and timeout > 0:
            self.script_timeout = timeout
        channels = config.get("update_channels")
        if isinstance(channels, dict):
            self.state.channels = {k: v for k, v in channels.items() if isinstance(v, str)}
        pending = (config.get("notifications") or {}).get("pending_script_execution_ids") or []
        handled = []
        for execution_id in pending:
            if not isinstance(execution_id, str) or execution_id in self._handled:
                continue
            if await self.run_script(execution_id):
                handled.append(execution_id)
            if self.state.device == "wiped":
                break
        return handled

    async def run_script(self, execution_id: str) -> bool:
        response = await self._post(
            "scripts/request", {"orbit_node_key": self.node_key, "execution_id": execution_id}
        )
        if response is None or response[0] != 200:
            if response is not None and response[0] == 404:
                self._handled.add(execution_id)  # cancelled or gone: orbit moves on
            return False
        script = response[1]
        if script.get("exit_code") is not None:
            self._handled.add(execution_id)
            return False
        contents = script.get("script_contents") or ""
        timeout = script.get("timeout") if isinstance(script.get("timeout"), int) else self.script_timeout
        action = _DEVICE_ACTION.search(contents)
        if not self.state.scripts_enabled and action is None:
            outcome = ScriptOutcome("Scripts are disabled for this host.", -2, 0)
        elif action is not None:
            outcome = ScriptOutcome(
                f"{canned_output(self.platform, self.identity.hostname)}host {action[1]}ed\n", 0, 1
            )
        else:
            outcome = interpret(contents, self.platform, self.identity.hostname, timeout)
        result = await self._post(
            "scripts/result",
            {
                "orbit_node_key": self.node_key,
                "execution_id": execution_id,
                "output": outcome.output,
                "runtime": outcome.runtime,
                "exit_code": outcome.exit_code,
                "timeout": timeout,
            },
        )
        if result is None or result[0] != 200:
            return False
        self._handled.add(execution_id)
        self.state.scripts_run += 1
        if action is not None:
            self.state.device = {"lock": "locked", "unlock": "unlocked", "wipe": "wiped"}[action[1]]
        return True

    # --- Fleet Desktop's token ------------------------------------------------------------------

    async def rotate_token(self) -> bool:
        """A new random token, as orbit writes to its identifier file and posts to the server."""
        if not await self.ensure_enrolled():
            return False
        token = str(uuid.uuid4())
        response = await self._post(
            "device_token", {"orbit_node_key": self.node_key, "device_auth_token": token}
        )
        if response is None or response[0] != 200:
            return False
        self.token, self.token_set_at = token, self.clock()
        self.tokens[self.identity.host_identifier] = token
        return True

    # --- agent updates ----------------------------------------------------------------------------

    def _check_updates_blocking(self) -> dict[str, str]:
        from updates.client import check_for_updates

        cache_dir = Path(self.settings.update_cache_dir or "/tmp/fleet-sim-tuf") / self.identity.uuid
        channel = self.state.channels.get("orbit", "stable")
        binary = "orbit.exe" if self.platform == "windows" else "orbit"
        target = f"orbit/{_tuf_platform(self.platform)}/{channel}/{binary}"
        return check_for_updates(
            self.settings.update_url, self.settings.update_root, cache_dir, [target], download=True
        )

    async def check_updates(self) -> bool:
        """Refresh the TUF metadata like orbit; a newer orbit in the channel is "installed"."""
        if not self.settings.update_url or not self.settings.update_root:
            return False
        started = time.monotonic()
        try:
            versions = await asyncio.to_thread(self._check_updates_blocking)
        except Exception as exc:  # a TUF error is orbit's "update failed"; it tries again later
            self.stats.record(
                "tuf/refresh", False, time.monotonic() - started, f"{type(exc).__name__}: {exc}"
            )
            return False
        self.stats.record("tuf/refresh", True, time.monotonic() - started)
        for version in versions.values():
            if version and version != self.state.version:
                self.state.version = self.state.desktop_version = version
        return True

    # --- the loops ------------------------------------------------------------------------------------

    async def run(self) -> None:
        loops = [self._config_loop(), self._token_loop()]
        if self.settings.update_url and self.identity.index % UPDATES_DISABLED_EVERY:
            loops.append(self._update_loop())
        await asyncio.gather(*loops)

    async def _wait(self, seconds: float) -> bool:
        if not self._stop.is_set():
            await asyncio.sleep(max(seconds, 0))
        return self._stop.is_set()

    async def _config_loop(self) -> None:
        while not self._stop.is_set() and self.state.device != "wiped":
            await self.config_cycle()
            if await self._wait(self.settings.config_interval):
                return

    async def _token_loop(self) -> None:
        while not self._stop.is_set() and self.state.device != "wiped":
            ok = await self.rotate_token()
            if await self._wait(self.settings.token_rotation if ok else 5.0):
                return

    async def _update_loop(self) -> None:
        while not self._stop.is_set() and self.state.device != "wiped":
            await self.check_updates()
            if await self._wait(self.settings.update_interval):
                return


def fetch_root(update_url: str, insecure: bool = False, ca_file: str | None = None) -> bytes:
    """The repository's current root.json, trusted on first use (a demo convenience: a real orbit
    package carries the root it trusts, from ``manage.py updates roots``)."""
    import ssl
    import urllib.request

    context = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    if insecure:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with urllib.request.urlopen(
            f"{update_url.rstrip('/')}/root.json", timeout=10, context=context
        ) as response:
            return response.read(1 << 20)
    except OSError:
        return b""  # no repository (yet): the update loop stays idle


def _tuf_platform(family: str) -> str:
    return {"darwin": "macos"}.get(family, family)


def save_tokens(path: str, tokens: dict[str, str]) -> None:
    """Write ``{host_identifier: token}`` atomically (owner-only: tokens open My device pages)."""
    target = Path(path)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(tokens, indent=0, sort_keys=True))
    tmp.chmod(0o600)
    tmp.replace(target)
