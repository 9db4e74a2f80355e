"""Simulated Macs in the host simulator: which hosts are Macs under MDM, their HTTP, their loops,
and the local APNs stand-in that wakes them.

Why this shape: the Mac's protocol logic (:mod:`agentapi.simulator.apple`) is synchronous and does
real RSA work (key generation, a signature per message), which must not stall the event loop that
drives thousands of osquery agents. Each Mac's steps therefore run in a worker thread
(``asyncio.to_thread``), while its HTTP goes through one small aiohttp session on the event loop
(``MdmHttp.send`` bridges the two), so TLS settings and connection reuse match the agents'.

A Mac enrolls once its osquery has a node key (a Mac gets fleetd before the MDM profile, as
Fleet's own enrollment flow does), then polls every ``interval`` seconds and at once when the
stand-in receives a push for its token. The stand-in listens where the server pushes
(``MDM["DEV_APNS_URL"]``) with the material ``mdm setup --dev`` wrote; when that material is
missing or the port is taken, the Macs simply poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from agentapi.simulator.apple import DeviceError, MacInfo, SimulatedMac
from agentapi.simulator.identity import HostIdentity, make_identity
from agentapi.simulator.protocol import REQUEST_TIMEOUT
from agentapi.simulator.stats import Stats
from agentapi.simulator.transport import TransportError, open_session, ssl_context

logger = logging.getLogger(__name__)

MAX_ENROLL_BACKOFF = 300.0


@dataclass
class MdmSettings:
    """``simulate_hosts --mdm`` options."""

    count: int = 0  # this many darwin hosts are also MDM devices ...
    rate: float | None = None  # ... or this share of them (0..1), when set
    interval: float = 60.0  # seconds between polls (a push wakes a Mac at once)
    not_now_rate: float = 0.1  # share of commands a Mac puts off with NotNow
    unlock_after: float = 120.0  # a locked Mac's user types the PIN after this long (0: never)
    reenroll_after_erase: bool = False  # an erased Mac is set up and enrolls again
    enroll_retry: float = 10.0  # first wait after a failed enrollment (doubles, up to 5 min)
    standin_dir: str = ""  # <FLEET_MDM_DIR>/apns-standin; empty: no pushes
    apns_url: str = ""  # where the server sends pushes; the stand-in listens on its port


def mdm_count(settings: MdmSettings, darwin_hosts: int, total: int) -> int:
    """How many Macs: ``count`` (at most every host), or ``rate`` of the darwin hosts."""
    if settings.rate is not None:
        return min(math.ceil(max(settings.rate, 0.0) * darwin_hosts), darwin_hosts)
    return max(0, min(settings.count, total))


def with_macs(identities: list[HostIdentity], settings: MdmSettings) -> tuple[list[HostIdentity], list[int]]:
    """The identities, and the positions of those that are MDM-managed Macs.

    With fewer darwin hosts than ``count``, the first ``count`` hosts become Macs (same seed and
    index, the macOS template), so ``--mdm 3`` gives three Macs whatever the OS mix.
    """
    darwin = [i for i, identity in enumerate(identities) if identity.template.key == "macos"]
    wanted = mdm_count(settings, len(darwin), len(identities))
    if len(darwin) < wanted:
        identities = [
            make_identity(identity.seed, identity.index, [("macos", 1)])
            if position < wanted and identity.template.key != "macos"
            else identity
            for position, identity in enumerate(identities)
        ]
        darwin = [i for i, identity in enumerate(identities) if identity.template.key == "macos"]
    return identities, darwin[:wanted]


class MdmHttp:
    """The Macs' HTTP client: an aiohttp session on the event loop, called from worker threads."""

    def __init__(self, *, insecure: bool = False, ca_file: str | None = None, connections: int = 16) -> None:
        self._ssl = ssl_context(insecure, ca_file)
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> MdmHttp:
        self._loop = asyncio.get_running_loop()
        self._session = open_session(self._ssl, self._connections)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self, method: str, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        if self._session is None:
            raise RuntimeError("MdmHttp used outside 'async with'")
        try:
            async with self._session.request(method, url, data=body or None, headers=headers) as response:
                return response.status, dict(response.headers), await response.read()
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError, OSError) as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc

    def send(
        self, method: str, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        """The Mac's ``send``: runs :meth:`request` on the event loop from a worker thread."""
        if self._loop is None or self._session is None or self._loop.is_closed():
            raise TransportError("the simulation is stopping")
        future = asyncio.run_coroutine_threadsafe(self.request(method, url, body, headers), self._loop)
        try:
            return future.result(timeout=REQUEST_TIMEOUT + 5)
        except TimeoutError:
            future.cancel()
            raise TransportError("TimeoutError: no answer") from None


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, DeviceError | TransportError) else f"{type(exc).__name__}: {exc}"


def observer(stats: Stats) -> Callable[[str, int, float, str], None]:
    """Count each MDM request in the simulation's stats (``mdm/enroll``, ``mdm/scep``, ...)."""

    def record(label: str, status: int, elapsed: float, error: str) -> None:
        if status == 0:
            stats.transport_errors += 1
        stats.record(label, 0 < status < 400, elapsed, error)

    return record


class MacRunner:
    """One simulated Mac's life in the simulator: enroll after osquery, then poll and answer."""

    def __init__(
        self,
        mac: SimulatedMac,
        agent: Any,
        settings: MdmSettings,
        stats: Stats,
        stop: asyncio.Event,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mac = mac
        self.agent = agent
        self.settings = settings
        self.stats = stats
        self.stop = stop
        self.clock = clock
        self.wake = asyncio.Event()
        self.locked_since: float | None = None
        agent.state.mdm = mac  # its osquery answers macos_profiles from the Mac's profiles

    async def _wait(self, seconds: float) -> bool:
        """Sleep, or return early on a push; True when the simulation is stopping."""
        if not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=max(seconds, 0.0))
        self.wake.clear()
        return self.stop.is_set()

    async def enroll(self) -> bool:
        """Enroll, retrying with a doubling wait; False when the simulation stopped first."""
        wait = self.settings.enroll_retry
        while not self.stop.is_set():
            try:
                await asyncio.to_thread(self.mac.enroll)
            except Exception as exc:  # any failure is this Mac's problem, never the simulation's
                self.stats.last_errors = [*self.stats.last_errors[-4:], f"mdm enroll: {_reason(exc)}"]
            else:
                self.stats.mdm_enrollments += 1
                return True
            if await self._sleep(wait):
                return False
            wait = min(wait * 2, MAX_ENROLL_BACKOFF)
        return False

    async def _sleep(self, seconds: float) -> bool:
        if not self.stop.is_set():
            await asyncio.sleep(max(seconds, 0.0))
        return self.stop.is_set()

    async def poll(self) -> int:
        """One check-in (Idle, then every queued command); errors are counted, not raised."""
        before = self.mac.answered
        try:
            await asyncio.to_thread(self.mac.poll)
        except Exception as exc:  # counted; the Mac tries again at its next check-in
            self.stats.last_errors = [*self.stats.last_errors[-4:], f"mdm poll: {_reason(exc)}"]
        answered = self.mac.answered - before
        for handled in list(self.mac.history)[-answered:] if answered else ():
            self.stats.mdm_commands[f"{handled.request_type or '?'}:{handled.status}"] += 1
        return answered

    def _unlock_if_due(self) -> float | None:
        """A locked Mac: the user types the PIN once ``unlock_after`` passed; the seconds left."""
        if not self.mac.locked:
            self.locked_since = None
            return None
        now = self.clock()
        if self.locked_since is None:
            self.locked_since = now
        if self.settings.unlock_after <= 0:
            return self.settings.interval
        left = self.locked_since + self.settings.unlock_after - now
        if left <= 0 and self.mac.lock_pin is not None:
            self.mac.unlock(self.mac.lock_pin)
            self.locked_since = None
            return None
        return left

    async def run(self) -> None:
        while not self.agent.node_key:  # fleetd first: the Mac enrolls in MDM after osquery
            if await self._sleep(0.5):
                return
        if not await self.enroll():
            return
        while not self.stop.is_set():
            if self._unlock_if_due() is None:
                await self.poll()
                if self.mac.wiped and not self.mac.reenroll_after_erase:
                    return  # an erased Mac is gone until someone sets it up again
            was_locked = self.mac.locked
            locked_for = self._unlock_if_due()  # the lock screen's clock starts when the Mac locks
            if locked_for is not None:
                period = min(locked_for, self.settings.interval)
            else:
                period = 0.0 if was_locked else self.settings.interval  # just unlocked: check in now
            if await self._wait(period):
                return


def build_runners(
    agents: list[Any],
    positions: list[int],
    settings: MdmSettings,
    *,
    base_url: str,
    enroll_secret: str,
    send: Callable[[str, str, bytes, dict[str, str]], tuple[int, dict[str, str], bytes]],
    stats: Stats,
    stop: asyncio.Event,
) -> list[MacRunner]:
    """A Mac beside each chosen agent, with the agent's hardware UUID and serial."""
    runners = []
    for position in positions:
        agent = agents[position]
        mac = SimulatedMac(
            MacInfo.from_identity(agent.identity),
            send,
            base_url=base_url,
            enroll_secret=enroll_secret,
            not_now_rate=settings.not_now_rate,
            reenroll_after_erase=settings.reenroll_after_erase,
            on_request=observer(stats),
        )
        runners.append(MacRunner(mac, agent, settings, stats, stop))
    return runners


class PushRouter:
    """Hands each push the stand-in accepts to the Mac whose token it names."""

    def __init__(self, runners: list[MacRunner], loop: asyncio.AbstractEventLoop, stats: Stats) -> None:
        self.runners = runners
        self.loop = loop
        self.stats = stats

    def __call__(self, push: Any) -> None:  # runs on the stand-in's thread
        token = push.token_hex.lower()
        for runner in self.runners:
            if runner.mac.push_token and runner.mac.push_token.hex() == token:
                if runner.mac.push_magic and push.push_magic != runner.mac.push_magic:
                    return  # a Mac ignores a push without its PushMagic
                self.stats.mdm_pushes += 1
                self.loop.call_soon_threadsafe(runner.wake.set)
                return


def start_standin(settings: MdmSettings, on_push: Callable[[Any], None], out: Callable[[str], None]) -> Any:
    """The APNs stand-in on the port the server pushes to, or ``None`` (the Macs then only poll)."""
    from mdm.apns.certificate import PushCertificateError
    from mdm.apns.standin import ApnsStandIn

    directory = Path(settings.standin_dir) if settings.standin_dir else None
    if directory is None or not (directory / "ca.pem").exists():
        out("MDM: no APNs stand-in material (manage.py mdm setup --dev); Macs poll without pushes")
        return None
    target = urlsplit(settings.apns_url or "https://127.0.0.1:0")
    try:
        standin = ApnsStandIn.from_dev_dir(
            directory, host=target.hostname or "127.0.0.1", port=target.port or 0, on_push=on_push
        )
        standin.start()
    except (OSError, RuntimeError, PushCertificateError) as exc:
        out(f"MDM: APNs stand-in not started ({exc}); Macs poll every {settings.interval:g} s without pushes")
        return None
    out(f"MDM: APNs stand-in listening on {standin.url}")
    return standin
