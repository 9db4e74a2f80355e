"""One simulated osquery agent: lazy enrollment, config refresh, distributed polling, logging.

Why four loops: osquery runs its config refresher, distributed runner, log forwarder and
scheduler in separate threads, so a slow log request never delays a live query. Each loop here
is an asyncio task with osquery's timings and retry rules (osquery-protocol.md §3-§7):

* the node key is fetched lazily by whichever request needs it first, under a lock;
* ``node_invalid: true`` drops the key, fails that attempt, and the next attempt re-enrolls;
* config/read/write get 3 attempts (waits 1 s, 4 s); a failed write keeps its results and
  re-sends them with the next cycle's;
* logs get one attempt per period per kind and back off ``period × n²`` while failing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agentapi.simulator import logs, protocol, schedule
from agentapi.simulator.detail import answer
from agentapi.simulator.identity import HostIdentity
from agentapi.simulator.sql import execute
from agentapi.simulator.stats import Stats
from agentapi.simulator.tables import AgentState, HostTables
from agentapi.simulator.transport import Transport, TransportError


@dataclass
class AgentSettings:
    """The agent's command-line flags (options in the served config may override some)."""

    distributed_interval: float = 10.0
    logger_tls_period: float = 10.0
    config_interval: float = 60.0  # --config_refresh (CLI only: the config cannot change it)
    follow_config_options: bool = True
    builtin_schedule: bool = True
    logger_tls_max_lines: int = 1024
    buffered_log_max: int = 1_000_000
    compress_logs: bool = False
    retry_scale: float = 1.0  # multiplies osquery's retry waits; tests shrink them
    prefix: str = "/api/osquery"


class SimulatedAgent:
    """A host running osqueryd with Fleet's flagfile, talking through ``transport``."""

    def __init__(
        self,
        identity: HostIdentity,
        transport: Transport,
        enroll_secret: str,
        settings: AgentSettings | None = None,
        stats: Stats | None = None,
        node_key: str | None = None,
        clock: Callable[[], float] = time.time,
        stop: asyncio.Event | None = None,
    ) -> None:
        self.identity = identity
        self.transport = transport
        self.enroll_secret = enroll_secret
        self.settings = settings or AgentSettings()
        self.stats = stats or Stats()
        self.node_key = node_key
        self.clock = clock
        self.state = AgentState(started_at=clock())
        self.tables = HostTables(identity, self.state, clock)
        self.logs = logs.LogBuffer(self.settings.buffered_log_max)
        self.distributed_interval = self.settings.distributed_interval
        self.logger_tls_period = self.settings.logger_tls_period
        self.request_attempts = protocol.REQUEST_ATTEMPTS
        self.pack_delimiter = "_"
        self.accelerate_until = 0.0
        self.schedule: list[schedule.ScheduledQuery] = []
        self.decorations: dict[str, str] = {}
        self.pending: dict[str, dict[str, Any]] = {"queries": {}, "statuses": {}, "messages": {}, "stats": {}}
        self.ever_enrolled = node_key is not None
        self._previous: dict[str, list[dict[str, str]]] = {}
        self._counters: dict[str, int] = {}
        self._log_failures = {"result": 0, "status": 0}
        self._log_not_before = {"result": 0.0, "status": 0.0}
        self._enroll_lock = asyncio.Lock()
        self._rng = random.Random(f"fleet-sim-agent:{identity.seed}:{identity.index}")
        self._stop = stop or asyncio.Event()
        self._sync_flags()

    # --- requests ------------------------------------------------------------------------------

    def _headers(self, key: str | None) -> dict[str, str]:
        headers = {"User-Agent": f"osquery/{self.identity.osquery_version}"}
        if key and self.identity.sends_header_key:
            headers["Authorization"] = f"NodeKey {key}"
        return headers

    async def _post(
        self, endpoint: str, body: dict[str, Any], key: str | None, compress: bool = False
    ) -> tuple[bytes, float] | None:
        """(raw body, seconds taken), or None after a transport error (already counted)."""
        started = time.monotonic()
        try:
            _status, raw = await self.transport.post(
                f"{self.settings.prefix}/{endpoint}", body, self._headers(key), compress
            )
        except TransportError as exc:
            self.stats.transport_errors += 1
            self.stats.record(endpoint, False, time.monotonic() - started, str(exc))
            return None
        return raw, time.monotonic() - started  # the status code is ignored, as osquery does

    async def enroll_once(self) -> bool:
        """One enroll attempt; keeps the key on success."""
        body = {
            "enroll_secret": self.enroll_secret,
            "host_identifier": self.identity.host_identifier,
            "platform_type": self.identity.template.platform_mask,
            "host_details": self.host_details(),
        }
        response = await self._post("enroll", body, None)
        if response is None:
            return False
        key, reason = protocol.read_enroll_response(response[0])
        self.stats.record("enroll", key is not None, response[1], reason)
        if key is None:
            return False
        self.node_key = key
        if self.ever_enrolled:
            self.stats.reenrollments += 1
        else:
            self.stats.enrollments += 1
        self.ever_enrolled = True
        return True

    async def ensure_node_key(self, max_attempts: int = protocol.ENROLL_MAX_ATTEMPTS) -> str:
        """The cached key, or enroll now (n² waits); ``""`` after the last failed attempt, as osquery."""
        async with self._enroll_lock:
            attempt = 0
            while self.node_key is None and attempt < max_attempts and not self._stop.is_set():
                attempt += 1
                if await self.enroll_once():
                    break
                if attempt < max_attempts and await self._sleep(protocol.enroll_wait(attempt)):
                    break
            return self.node_key or ""

    async def request(
        self, endpoint: str, body: dict[str, Any], attempts: int = 1, compress: bool = False
    ) -> protocol.Outcome:
        """An authenticated request with osquery's retries and node_invalid handling."""
        outcome = protocol.Outcome(ok=False, reason="not sent")
        for attempt in range(1, attempts + 1):
            key = await self.ensure_node_key()
            response = await self._post(endpoint, {**body, "node_key": key}, key, compress)
            if response is None:
                outcome = protocol.Outcome(ok=False, reason="transport error")
            else:
                outcome = protocol.read_response(response[0])
                self.stats.record(endpoint, outcome.ok, response[1], outcome.reason)
                if outcome.node_invalid:
                    self.stats.node_invalid += 1
                    if self.node_key == key:
                        self.node_key = None
            if outcome.ok or attempt == attempts or await self._sleep(protocol.request_wait(attempt)):
                break
        return outcome

    async def _sleep(self, seconds: float) -> bool:
        """A retry wait (scaled by ``retry_scale``); True when the agent is stopping."""
        return await self._wait(seconds * self.settings.retry_scale)

    async def _wait(self, seconds: float) -> bool:
        """A loop's own period; True when the agent is stopping.

        A plain sleep, not ``wait_for(event)``: that would create a task per wait, thousands per
        second across a large simulation. The runner cancels the loops when it stops.
        """
        if not self._stop.is_set():
            await asyncio.sleep(max(seconds, 0))
        return self._stop.is_set()

    # --- what the host says about itself ------------------------------------------------------

    def host_details(self) -> dict[str, dict[str, str]]:
        """First row of os_version, osquery_info, system_info, platform_info (omitted when empty)."""
        details = {}
        for table in ("os_version", "osquery_info", "system_info", "platform_info"):
            rows = self.tables.rows(table)
            if rows:
                details[table] = rows[0]
        return details

    def _sync_flags(self) -> None:
        """What ``osquery_flags`` shows: the flags in effect now (Fleet's detail query reads them)."""
        refresh = str(int(self.settings.config_interval))
        self.state.flags = {
            "host_identifier": "uuid",
            "config_plugin": "tls",
            "logger_plugin": "tls",
            "distributed_plugin": "tls",
            "disable_distributed": "false",
            "distributed_interval": str(int(self.distributed_interval)),
            "logger_tls_period": str(int(self.logger_tls_period)),
            "config_refresh": refresh,
            "config_tls_refresh": refresh,
            "pack_delimiter": self.pack_delimiter,
            "distributed_tls_max_attempts": str(self.request_attempts),
        }

    def status(self, severity: int, filename: str, line: int, message: str) -> None:
        identity = self.identity
        self.logs.add_status(
            logs.status_line(
                identity.host_identifier,
                severity,
                filename,
                line,
                message,
                identity.osquery_version,
                self.decorations,
                int(self.clock()),
            )
        )

    # --- config --------------------------------------------------------------------------------

    async def fetch_config(self) -> bool:
        outcome = await self.request("config", {}, self.request_attempts)
        if not outcome.ok:
            return False
        self.apply_config(outcome.body)
        return True

    def apply_config(self, config: dict[str, Any]) -> None:
        """Apply a served config: options (flags), load decorators, the schedule."""
        encoded = json.dumps(config, sort_keys=True)
        digest = hashlib.sha1(encoded.encode()).hexdigest()
        if digest == self.state.config_hash:
            return  # unchanged: osquery does not reconfigure
        self.state.config_hash = digest
        if len(encoded) > protocol.MAX_CONFIG_SIZE:
            self.state.config_valid = False
            self.schedule = []  # osquery drops the packs before it rejects the config
            return
        self.state.config_valid = True
        options = config.get("options") if isinstance(config.get("options"), dict) else {}
        if self.settings.follow_config_options:
            self._apply_options(options)
        self.decorations = self._decorations(config.get("decorators"))
        family = self.identity.template.build_platform
        self.schedule = schedule.from_config(
            config, family, self.identity.hostname, self._rng, self.settings.builtin_schedule, self._has_rows
        )
        self._sync_flags()

    def _apply_options(self, options: dict[str, Any]) -> None:
        for name, attr in (
            ("distributed_interval", "distributed_interval"),
            ("logger_tls_period", "logger_tls_period"),
            ("distributed_tls_max_attempts", "request_attempts"),
        ):
            value = protocol.as_int(options.get(name))
            if value is not None and value > 0:
                setattr(self, attr, value)
        if isinstance(options.get("pack_delimiter"), str):
            self.pack_delimiter = options["pack_delimiter"]

    def _has_rows(self, sql: str) -> bool:
        result = execute(sql, self.tables)
        return result.ok and bool(result.rows)

    def _decorations(self, decorators: Any) -> dict[str, str]:
        found: dict[str, str] = {}
        if not isinstance(decorators, dict):
            return found
        for kind in ("load", "always"):
            for sql in decorators.get(kind) or []:
                result = execute(sql, self.tables) if isinstance(sql, str) else None
                if result and result.ok and result.rows:
                    found.update(result.rows[0])
        return found

    # --- distributed ---------------------------------------------------------------------------

    def accept_work(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        """The (id, sql) pairs to run, in id order, after ``discovery``; also reads ``accelerate``."""
        queries, discovery = body.get("queries"), body.get("discovery")
        discovery = discovery if isinstance(discovery, dict) else {}
        accepted: list[tuple[str, str]] = []
        complete = True
        for query_id, sql in queries.items() if isinstance(queries, dict) else ():
            if not (isinstance(query_id, str) and query_id and isinstance(sql, str) and sql):
                complete = False  # a bad entry stops processing, accelerate included
                break
            if query_id in discovery:
                check = discovery[query_id]
                result = execute(check, self.tables) if isinstance(check, str) else None
                if result is None or not result.ok:
                    return []  # a discovery SQL error drops the whole batch
                if not result.rows:
                    self.stats.queries_skipped += 1
                    continue  # nothing at all is reported for this id
            accepted.append((query_id, sql))
        accelerate = body.get("accelerate")
        if complete and isinstance(accelerate, int) and not isinstance(accelerate, bool) and accelerate > 0:
            self.accelerate_until = self.clock() + accelerate
        return sorted(accepted)

    def run_queries(self, work: list[tuple[str, str]]) -> None:
        """Run queries and add their results to the pending write."""
        for query_id, sql in work:
            started = time.perf_counter()
            result = answer(query_id, sql, self.tables)
            wall_ms = int((time.perf_counter() - started) * 1000)
            self.stats.queries_run += 1
            self.pending["queries"][query_id] = result.rows
            self.pending["statuses"][query_id] = result.status
            self.pending["messages"][query_id] = result.message
            self.pending["stats"][query_id] = {
                "wall_time_ms": wall_ms,
                "user_time": wall_ms,
                "system_time": 0,
                "memory": 0,
            }
            if not result.ok:
                self.stats.queries_failed += 1
                self.status(
                    2,
                    "distributed.cpp",
                    187,
                    f"Error executing distributed query: {query_id}: {result.message}",
                )

    async def distributed_cycle(self) -> None:
        """Read, run, write: one iteration of osquery's distributed runner."""
        outcome = await self.request("distributed/read", {}, self.request_attempts)
        if outcome.ok:
            self.run_queries(self.accept_work(outcome.body))
        if self.pending["queries"]:
            written = await self.request("distributed/write", dict(self.pending), self.request_attempts)
            if written.ok:
                self.pending = {"queries": {}, "statuses": {}, "messages": {}, "stats": {}}

    def poll_interval(self) -> float:
        if self.clock() < self.accelerate_until:
            return protocol.ACCELERATED_INTERVAL
        return float(self.distributed_interval)

    # --- scheduled queries and logs -------------------------------------------------------------

    def run_scheduled(self, query: schedule.ScheduledQuery, now: int) -> None:
        """Run one scheduled query and buffer its differential (or snapshot) result lines."""
        result = execute(query.sql, self.tables)
        stat = self.state.schedule.setdefault(
            query.name,
            {
                "query": query.sql,
                "interval": str(query.interval),
                "executions": "0",
                "last_executed": "0",
                "denylisted": "0",
                "output_size": "0",
                "wall_time": "0",
                "wall_time_ms": "0",
                "user_time": "0",
                "system_time": "0",
                "average_memory": "0",
            },
        )
        stat.update(executions=str(int(stat["executions"]) + 1), last_executed=str(now))
        if not result.ok:
            message = f"Error executing scheduled query {query.name}: {result.message}"
            self.status(2, "scheduler.cpp", 128, message)
            return
        host = self.identity.host_identifier
        previous = self._previous.get(query.name)
        self._previous[query.name] = result.rows
        if query.snapshot:
            lines = [logs.snapshot_line(query.name, host, now, 0, result.rows, self.decorations)]
        elif previous is None:
            self._counters[query.name] = 0
            self.status(0, "query.cpp", 119, f"Storing initial results for new scheduled query: {query.name}")
            lines = logs.event_lines(query.name, host, now, 0, result.rows, [], self.decorations)
        else:
            added, removed = logs.diff_rows(previous, result.rows)
            if not added and not removed:
                return
            self._counters[query.name] = counter = self._counters.get(query.name, 0) + 1
            lines = logs.event_lines(
                query.name, host, now, counter, added, removed if query.removed else [], self.decorations
            )
        self.logs.add_results(lines)
        stat["output_size"] = str(int(stat["output_size"]) + sum(len(json.dumps(line)) for line in lines))

    async def flush_logs(self) -> None:
        """One forwarder period: results, then statuses, each in its own request."""
        results, statuses = self.logs.peek(self.settings.logger_tls_max_lines)
        for log_type, batch in (("result", results), ("status", statuses)):
            now = self.clock()
            if not batch or now < self._log_not_before[log_type]:
                continue
            body = {"log_type": log_type, "data": batch}
            outcome = await self.request("log", body, 1, self.settings.compress_logs)
            if outcome.ok:
                self.logs.ack(log_type, len(batch))
                self._log_failures[log_type] = 0
                self._log_not_before[log_type] = 0.0
                if log_type == "result":
                    self.stats.result_lines += len(batch)
                else:
                    self.stats.status_lines += len(batch)
            else:
                self._log_failures[log_type] += 1
                wait = protocol.log_backoff(self.logger_tls_period, self._log_failures[log_type])
                self._log_not_before[log_type] = now + wait * self.settings.retry_scale

    # --- the loops -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Start like osqueryd: config first (enrolling inside it), then the other loops."""
        if stop is not None:
            self._stop = stop
        configured = await self.fetch_config()
        self.status(0, "init.cpp", 723, f"osquery initialized [version={self.identity.osquery_version}]")
        loops = [
            self._config_loop(configured),
            self._distributed_loop(),
            self._logger_loop(),
            self._scheduler_loop(),
        ]
        await asyncio.gather(*loops)

    async def _config_loop(self, last_ok: bool) -> None:
        while not await self._wait(
            self.settings.config_interval
            if last_ok
            else protocol.CONFIG_ACCELERATED_REFRESH * self.settings.retry_scale
        ):
            last_ok = await self.fetch_config()

    async def _distributed_loop(self) -> None:
        while not self._stop.is_set():
            await self.distributed_cycle()
            if await self._wait(self.poll_interval()):
                return

    async def _logger_loop(self) -> None:
        while not await self._wait(self.logger_tls_period):
            await self.flush_logs()

    async def _scheduler_loop(self) -> None:
        while not self._stop.is_set():
            now = self.clock()
            queries = list(self.schedule)
            due_at = min((q.next_due(now) for q in queries), default=int(now) + 60)
            if await self._wait(min(due_at - now, 60.0)):
                return
            second = int(self.clock())
            for query in queries:
                if query.next_due(now) <= second:
                    self.run_scheduled(query, second)
