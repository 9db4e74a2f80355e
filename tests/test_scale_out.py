"""The production shape scaled out, without Docker: two web processes (granian), two daphne
processes, a Celery worker and beat, on MariaDB and Redis (docs/deployment.md).

Simulated hosts (osquery and orbit, ``agentapi.simulator``, in this process) check in every
second, half of them through each web process. Each half reaches the web processes through a
failover balancer of its own (``FailoverProxy``: its web process first, the other one when that is
down), and the WebSocket watcher through one in front of the two daphnes (daphne B first). Then:

1. a live query started through web A's REST API reaches every host, including those served by
   web B, and every answer streams to the WebSocket held by daphne B;
2. result and status log lines of hosts on both web processes reach the filesystem destination;
3. a script run synchronously through daphne A (where the proxies send the calls that wait)
   reaches a host served by web B, whose orbit posts the result, and the call returns it;
4. beat and the worker expire an overdue campaign (beat every second: ``LIVE_QUERY_UPKEEP_INTERVAL``);
5. while a second live query runs (some answers acknowledged by web A, five hosts of web A's half
   still to answer) web A and daphne B are killed (SIGKILL). The hosts carry on through web B, the
   watcher reconnects to daphne A, which replays the stored answers and streams the rest, and the
   query finishes for every host.

Nothing acknowledged may be lost: every log line a host got a success for is in the destination
file, every live-query answer a web process acknowledged is stored, and so is the script result.
The hosts' transport records what the servers acknowledged, so the check is exact.

Only in the MariaDB+Redis run (``DATABASE_URL`` and ``REDIS_URL``): the servers use the test's
database (``transaction=True``, so they see what it committed) and the test's own ``REDIS_URL``,
since the test reads the same live-query store. That run is a single pytest process (.ci/run), so
nothing else flushes that Redis database while the servers use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
import urllib.request
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from agentapi.simulator import protocol
from agentapi.simulator.agent import AgentSettings, SimulatedAgent
from agentapi.simulator.identity import DEFAULT_TEMPLATES, make_identities, parse_templates
from agentapi.simulator.orbit import OrbitSettings, SimulatedOrbit
from agentapi.simulator.stats import Stats
from agentapi.simulator.transport import HttpTransport
from campaigns.models import Campaign, CampaignResult
from campaigns.store import get_store
from hosts.models import EnrollSecret, Host
from hostscripts.models import ScriptRun
from queries.models import Query
from tests.factories import make_host, token_for
from tests.live_processes import (
    FailoverProxy,
    kill_group,
    log_tail,
    server_env,
    start_celery,
    start_daphne,
    start_web,
    stop,
    stop_group,
    wait_for,
    wait_healthy,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")),
        reason="the scale-out test runs only in the MariaDB+Redis CI run (DATABASE_URL and REDIS_URL): "
        "several server processes need a shared database, live-query store and channel layer",
    ),
]

HOSTS = 20
HELD = 5  # hosts of web A's half whose answer to the second live query waits for the kill
SECRET = "scale-out-enroll-secret"
SCHEDULED = "scale-out uptime"
SQL_1 = "SELECT hostname, uuid FROM system_info"
SQL_2 = "SELECT total_seconds FROM uptime"
SCRIPT = "echo scale-out-script\nexit 3"
OSQUERY, ORBIT = "/api/osquery", "/api/fleet/orbit"
DEADLINE = 60.0  # any single wait; the whole scenario has its own
SCENARIO_DEADLINE = 240.0


# --- what the servers acknowledged, as the hosts saw it -------------------------------------------


@dataclass
class Ledger:
    """Every request a server acknowledged, by host; and the gate that holds some answers back."""

    log_lines: dict[str, list[dict]] = field(default_factory=lambda: {"result": [], "status": []})
    answers: dict[tuple[str, str], float] = field(default_factory=dict)  # (host, query name) -> when
    # host -> path -> when last acknowledged
    acked: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    log_acks: dict[str, float] = field(default_factory=dict)  # host -> last acknowledged result log
    script_results: dict[str, str] = field(default_factory=dict)  # execution id -> host
    held_query: str = ""
    held_hosts: set[str] = field(default_factory=set)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, host: str, path: str, body: dict[str, Any], status: int, raw: bytes) -> None:
        now = time.monotonic()
        if path.startswith("/api/fleet/orbit/"):
            if status != 200:
                return
            if path.endswith("/scripts/result"):
                self.script_results[body["execution_id"]] = host
        elif status != 200 or not protocol.read_response(raw).ok:
            return
        elif path.endswith("/log"):
            self.log_lines[body["log_type"]].extend(body["data"])
            if body["log_type"] == "result":
                self.log_acks[host] = now
        elif path.endswith("/distributed/write"):
            for name, status_code in body.get("statuses", {}).items():
                if name.startswith("fleet_distributed_query_") and status_code == 0:
                    self.answers.setdefault((host, name), now)
        self.acked[host][path] = now

    async def gate(self, host: str, path: str, body: dict[str, Any]) -> None:
        if (
            path.endswith("/distributed/write")
            and self.held_query in body.get("queries", {})
            and host in self.held_hosts
        ):
            await asyncio.wait_for(self.release.wait(), SCENARIO_DEADLINE)


class TrackedTransport:
    """One host's side of the network: its balancer, with the ledger told what was acknowledged."""

    def __init__(self, inner: HttpTransport, host: str, ledger: Ledger) -> None:
        self.inner, self.host, self.ledger = inner, host, ledger

    async def post(
        self, path: str, body: dict[str, Any], headers: dict[str, str], compress: bool = False
    ) -> tuple[int, bytes]:
        await self.ledger.gate(self.host, path, body)
        status, raw = await self.inner.post(path, body, headers, compress)  # TransportError: not acked
        self.ledger.record(self.host, path, body, status, raw)
        return status, raw


# --- a watcher that reconnects, as the console's page does -----------------------------------------


class Watcher:
    """``/ws/campaigns/<id>/`` through the balancer; reconnects whenever the connection drops.
    Keeps, per connection, the hosts whose answers it got (the server replays stored answers on
    every connection, and must not send one twice on the same connection)."""

    def __init__(self, http: aiohttp.ClientSession, ws_url: str, campaign_id: int, token: str) -> None:
        self.http, self.campaign_id, self.token = http, campaign_id, token
        self.url = f"{ws_url.replace('http', 'ws', 1)}/ws/campaigns/{campaign_id}/"
        self.per_connection: list[list[int]] = []
        self.results: dict[int, dict] = {}
        self.last_status: dict = {}
        self.totals: dict = {}
        self.errors: list[str] = []
        self.trace: list[str] = []  # what arrived, briefly, for failure messages
        self.finished = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    @property
    def connections(self) -> int:
        return len(self.per_connection)

    async def _run(self) -> None:
        while not self.finished.is_set():
            try:
                async with self.http.ws_connect(
                    self.url, headers={"Authorization": f"Token {self.token}"}
                ) as ws:
                    self.per_connection.append([])
                    async for message in ws:
                        if message.type != aiohttp.WSMsgType.TEXT:
                            break
                        self._handle(json.loads(message.data))
                        if self.finished.is_set():
                            return
                    self.errors.append(f"connection {self.connections} closed: {ws.close_code}")
            except (aiohttp.ClientError, OSError) as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0.2)

    def _handle(self, message: dict) -> None:
        kind, data = message["type"], message["data"]
        if kind == "result":
            self.trace.append(f"{self.connections}:result {data['host_id']}")
        elif kind == "status":
            self.trace.append(f"{self.connections}:status {data['actual_results']} {data['campaign_status']}")
        if kind == "totals":
            self.totals = data
        elif kind == "result":
            self.per_connection[-1].append(data["host_id"])
            self.results[data["host_id"]] = data
        elif kind == "status":
            self.last_status = data
            if data.get("campaign_status") == "finished":
                self.finished.set()
        else:
            self.errors.append(f"unexpected message {message}")

    async def wait_finished(self) -> None:
        try:
            await asyncio.wait_for(self.finished.wait(), DEADLINE)
        except TimeoutError:
            raise AssertionError(
                f"campaign {self.campaign_id}: the watcher saw no 'finished' within {DEADLINE:.0f} s; "
                f"answers from {len(self.results)} hosts, last status {self.last_status}, "
                f"errors {self.errors}"
            ) from None
        finally:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


# --- the processes ---------------------------------------------------------------------------------


@dataclass
class Cluster:
    web_a: str
    web_b: str
    ws_a: str
    ws_b: str
    processes: dict[str, subprocess.Popen]
    logs: dict[str, Path]
    result_log: Path
    status_log: Path

    def report(self) -> str:
        parts = []
        for name, process in self.processes.items():
            state = "running" if process.poll() is None else f"exited {process.returncode}"
            tail = log_tail(self.logs[name], 15 if name in ("worker", "beat") else 60)
            parts.append(f"--- {name} ({state}): {self.logs[name]} ---\n{tail}")
        return "\n".join(parts)


def _start_cluster(tmp_path: Path) -> Cluster:
    result_log, status_log = (
        tmp_path / "logs" / "osquery_result.log",
        tmp_path / "logs" / "osquery_status.log",
    )
    env = server_env(
        tmp_path / "var",
        REDIS_URL=settings.REDIS_URL,
        DJANGO_SECURE_SSL_REDIRECT="false",  # plain HTTP on loopback
        CELERY_TASK_ALWAYS_EAGER="false",
        METRICS_TOKEN="scale-out-metrics-token-0123456789abcdef",
        STATIC_ROOT=str(tmp_path / "static"),
        OSQUERY_RESULT_LOG_PLUGIN="filesystem",
        OSQUERY_STATUS_LOG_PLUGIN="filesystem",
        OSQUERY_RESULT_LOG_FILE=str(result_log),
        OSQUERY_STATUS_LOG_FILE=str(status_log),
        OSQUERY_SEEN_FLUSH_INTERVAL="0.5",
        LIVE_QUERY_UPKEEP_INTERVAL="1",  # beat sends campaigns.expire_and_sweep every second
        LOG_LEVEL="WARNING",
        PYTHONDONTWRITEBYTECODE="1",
    )
    logs = {
        name: tmp_path / f"{name}.log"
        for name in ("web-a", "web-b", "daphne-a", "daphne-b", "worker", "beat")
    }
    processes: dict[str, subprocess.Popen] = {}
    try:
        processes["web-a"], web_a = start_web(
            {**env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom-a")}, logs["web-a"], threads=2
        )
        processes["web-b"], web_b = start_web(
            {**env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom-b")}, logs["web-b"], threads=2
        )
        daphne_env = {**env, "DATABASE_CONN_MAX_AGE": "0"}
        processes["daphne-a"], ws_a = start_daphne(daphne_env, logs["daphne-a"])
        processes["daphne-b"], ws_b = start_daphne(daphne_env, logs["daphne-b"])
        processes["worker"] = start_celery(env, logs["worker"], "worker")
        processes["beat"] = start_celery(env, logs["beat"], "beat", tmp_path / "celerybeat-schedule")
        cluster = Cluster(web_a, web_b, ws_a, ws_b, processes, logs, result_log, status_log)
        for name, url in (("web-a", web_a), ("web-b", web_b), ("daphne-a", ws_a), ("daphne-b", ws_b)):
            try:
                wait_healthy(processes[name], url, timeout=120)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{cluster.report()}") from None
        return cluster
    except BaseException:
        _stop_cluster(processes)
        raise


def _stop_cluster(processes: dict[str, subprocess.Popen]) -> None:
    """Stop every process by its id (the web servers and Celery by their process group's), all at once."""
    with ThreadPoolExecutor(len(processes) or 1) as pool:
        for name, process in processes.items():
            pool.submit(stop if name.startswith("daphne") else stop_group, process)


# --- REST ------------------------------------------------------------------------------------------


async def _rest(
    http: aiohttp.ClientSession, base: str, token: str, method: str, path: str, body: Any = None
) -> Any:
    headers = {"Authorization": f"Token {token}"}
    async with http.request(method, f"{base}/api/v1/{path}", json=body, headers=headers) as response:
        text = await response.text()
        assert response.status < 300, f"{method} {base}/api/v1/{path}: {response.status} {text[:500]}"
        return json.loads(text) if text else None


async def _until(predicate: Any, what: str, timeout: float = DEADLINE, every: float = 0.1) -> None:
    """Poll ``predicate`` (sync or async) every ``every`` s; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(every)


def _file_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- the scenario ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    ledger: Ledger
    group_a: list[str]
    group_b: list[str]
    campaign_1: int = 0
    campaign_2: int = 0
    execution_id: str = ""
    killed_at: float = 0.0
    notes: list[str] = field(default_factory=list)


async def _scenario(
    cluster: Cluster, ws_url: str, token: str, outcome: Outcome, agents: list[SimulatedAgent]
) -> None:
    ledger = outcome.ledger
    hostname = {a.identity.host_identifier: a.identity.hostname for a in agents}
    platform = {a.identity.host_identifier: a.identity.template.build_platform for a in agents}
    everyone = [*outcome.group_a, *outcome.group_b]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        # Every host enrolled (osquery and orbit) and checked in; the servers count them online.
        enrolled = {f"{OSQUERY}/distributed/read", f"{OSQUERY}/config", f"{ORBIT}/enroll", f"{ORBIT}/config"}
        await _until(
            lambda: all(enrolled <= ledger.acked[h].keys() for h in everyone),
            "every host to enroll and check in",
        )

        async def online() -> bool:
            page = await _rest(http, cluster.web_b, token, "GET", "hosts/?status=online&limit=100")
            return {h["hostname"] for h in page["results"]} >= set(hostname.values())

        await _until(online, f"all {HOSTS} hosts to show online", every=0.3)
        hosts = (await _rest(http, cluster.web_a, token, "GET", "hosts/?limit=100"))["results"]
        host_id = {h["uuid"]: h["id"] for h in hosts if h["uuid"] in hostname}  # not the offline one
        assert len(host_id) == HOSTS, host_id

        # 3. A script for a host of web B's half, run synchronously through daphne A, where the
        # proxies send the calls that wait (docs/deployment.md, "Requests that wait"); it waits
        # while the live query below runs. An ad-hoc shell script (script.sh), so not Windows.
        script_host = next(h for h in outcome.group_b if platform[h] != "windows")
        synced = asyncio.create_task(
            _rest(
                http,
                cluster.ws_a,
                token,
                "POST",
                "scripts/run/sync/",
                {"host_id": host_id[script_host], "script_contents": SCRIPT},
            )
        )

        # 1. A live query started through web A, watched on daphne B, answered by every host.
        started = await _rest(
            http,
            cluster.web_a,
            token,
            "POST",
            "campaigns/",
            {"sql": SQL_1, "targets": {"hosts": list(hostname.values())}},
        )
        outcome.campaign_1 = started["id"]
        assert started["totals"]["online"] == HOSTS, started["totals"]
        watcher = Watcher(http, ws_url, outcome.campaign_1, token)
        await watcher.wait_finished()
        assert watcher.connections == 1, watcher.errors
        assert sorted(watcher.per_connection[0]) == sorted(host_id.values()), (
            f"every answer, once: {watcher.trace}"
        )
        for result in watcher.results.values():
            assert result["state"] == "rows" and result["rows"][0]["hostname"] == result["hostname"], result
        assert watcher.last_status["actual_results"] == HOSTS, watcher.last_status

        # The script's result, posted through web B: the synchronous call returns it, and web A
        # reads the same.
        ran = await synced
        outcome.execution_id = ran["execution_id"]
        assert ran["exit_code"] == 3 and "scale-out-script" in ran["output"] and not ran["host_timeout"], ran
        await _until(lambda: outcome.execution_id in ledger.script_results, "the script's result")
        assert ledger.script_results[outcome.execution_id] == script_host
        run = await _rest(http, cluster.web_a, token, "GET", f"scripts/results/{outcome.execution_id}/")
        assert run["exit_code"] == 3 and "scale-out-script" in run["output"], run

        # 2. Result logs of hosts on both web processes are in the destination file.
        def logged_hosts() -> set[str]:
            return {
                line.get("hostIdentifier")
                for line in _file_lines(cluster.result_log)
                if SCHEDULED in line.get("name", "")
            }

        await _until(lambda: logged_hosts() >= set(everyone), "result log lines from every host")

        # 5. A second live query; five of web A's hosts hold their answer until after the kill.
        held = outcome.group_a[:HELD]
        ledger.held_hosts = set(held)
        started = await _rest(
            http,
            cluster.web_a,
            token,
            "POST",
            "campaigns/",
            {"sql": SQL_2, "targets": {"hosts": list(hostname.values())}},
        )
        outcome.campaign_2 = campaign_2 = started["id"]
        ledger.held_query = f"fleet_distributed_query_{campaign_2}"
        watcher = Watcher(http, ws_url, campaign_2, token)
        not_held = [h for h in everyone if h not in held]
        others = {host_id[h] for h in not_held}
        await _until(
            lambda: (
                set(watcher.results) >= others
                and all((h, ledger.held_query) in ledger.answers for h in not_held)
            ),
            "the answers of the hosts not held: acknowledged (half of them by web A), and on daphne B",
        )
        before_kill = set(watcher.results)
        assert not watcher.finished.is_set() and watcher.connections == 1, (
            watcher.last_status,
            watcher.errors,
        )

        kill_group(cluster.processes["web-a"])
        cluster.processes["daphne-b"].kill()
        cluster.processes["daphne-b"].wait(timeout=10)
        outcome.killed_at = time.monotonic()
        ledger.release.set()

        await watcher.wait_finished()
        outcome.notes.append(
            f"second live query finished on the watcher {time.monotonic() - outcome.killed_at:.1f} s after "
            f"the kill; its connections: {watcher.connections}, drops: {watcher.errors}"
        )
        assert watcher.connections >= 2, f"the watcher never reconnected: {watcher.errors}"
        after = watcher.per_connection[-1]
        assert len(after) == len(set(after)), f"an answer was sent twice on one connection: {watcher.trace}"
        assert set(after) == set(host_id.values()), (
            f"after reconnecting, 'finished' came before every answer (stored, then live): {watcher.trace}"
        )
        assert set(watcher.results) == set(host_id.values()) and before_kill == others
        assert watcher.last_status["actual_results"] == HOSTS, watcher.last_status
        # The held answers were acknowledged through web B, after the kill (the watcher may hear of
        # an answer a moment before its host has the response).
        await _until(
            lambda: all((h, ledger.held_query) in ledger.answers for h in held), "the held answers' acks"
        )
        assert all(ledger.answers[(h, ledger.held_query)] > outcome.killed_at for h in held)

        # Web A's hosts carry on through web B: check-ins and result logs acknowledged after the kill.
        await _until(
            lambda: all(
                ledger.acked[h].get(f"{OSQUERY}/distributed/read", 0) > outcome.killed_at
                and ledger.log_acks.get(h, 0) > outcome.killed_at
                for h in outcome.group_a
            ),
            "web A's hosts to check in and log through web B",
        )


def _run_agents(cluster: Cluster, token: str, outcome: Outcome, balancers: dict[str, FailoverProxy]) -> Stats:
    async def main() -> Stats:
        stop_event = asyncio.Event()
        stats = Stats()
        agent_settings = AgentSettings(
            distributed_interval=1, logger_tls_period=1, follow_config_options=False,
            builtin_schedule=False, retry_scale=0.2,
        )  # fmt: skip
        identities = make_identities(7, HOSTS, parse_templates(DEFAULT_TEMPLATES))
        async with (
            HttpTransport(balancers["a"].url, connections=16) as via_a,
            HttpTransport(balancers["b"].url, connections=16) as via_b,
        ):
            agents, tasks = [], []
            outcome.ledger.release = asyncio.Event()  # bound to this loop
            for index, identity in enumerate(identities):
                host = identity.host_identifier
                (outcome.group_a if index % 2 == 0 else outcome.group_b).append(host)
                transport = TrackedTransport(via_a if index % 2 == 0 else via_b, host, outcome.ledger)
                agent = SimulatedAgent(identity, transport, SECRET, agent_settings, stats, stop=stop_event)
                orbit = SimulatedOrbit(agent, SECRET, OrbitSettings(config_interval=1.0))
                agents.append(agent)
                tasks.append(asyncio.create_task(_start_later(index * 0.05, agent, orbit)))
            try:
                scenario = _scenario(cluster, balancers["ws"].url, token, outcome, agents)
                await asyncio.wait_for(scenario, SCENARIO_DEADLINE)
            finally:
                stop_event.set()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        return stats

    return asyncio.run(main())


async def _start_later(delay: float, agent: SimulatedAgent, orbit: SimulatedOrbit) -> None:
    await asyncio.sleep(delay)
    await asyncio.gather(agent.run(), orbit.run())


# --- the test --------------------------------------------------------------------------------------


def test_scaled_out_servers_lose_nothing_acknowledged_when_a_web_and_a_daphne_die(tmp_path):
    admin = get_user_model().objects.create_superuser("scale-admin", "scale@example.com", "pw")
    token = token_for(admin)
    EnrollSecret.objects.create(secret=SECRET)
    Query.objects.create(
        name=SCHEDULED, query="SELECT total_seconds FROM uptime", interval=1, logging="snapshot",
        automations_enabled=True,
    )  # fmt: skip
    offline = make_host("scale-offline.local")  # never checks in: the overdue campaign's target

    started = time.monotonic()
    cluster = _start_cluster(tmp_path)
    outcome = Outcome(Ledger(), [], [])
    try:
        outcome.notes.append(f"servers up after {time.monotonic() - started:.1f} s")
        # 4. An overdue campaign (started two days ago, on a host that never answers), for beat.
        request = urllib.request.Request(
            f"{cluster.web_b}/api/v1/campaigns/",
            data=json.dumps({"sql": "SELECT 1", "targets": {"hosts": [offline.pk]}}).encode(),
            headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            overdue = json.loads(response.read())["id"]
        Campaign.objects.filter(pk=overdue).update(created_at=timezone.now() - timedelta(days=2))

        with (
            FailoverProxy([cluster.web_a, cluster.web_b]) as via_a,
            FailoverProxy([cluster.web_b, cluster.web_a]) as via_b,
            FailoverProxy([cluster.ws_b, cluster.ws_a]) as via_ws,
        ):
            stats = _run_agents(cluster, token, outcome, {"a": via_a, "b": via_b, "ws": via_ws})
        ledger = outcome.ledger
        outcome.notes.append(
            f"scenario done after {time.monotonic() - started:.1f} s: acknowledged {len(ledger.answers)} "
            f"live answers, {len(ledger.log_lines['result'])} result and {len(ledger.log_lines['status'])} "
            f"status log lines; {stats.transport_errors} requests cut off, e.g. {stats.last_errors[-2:]}"
        )

        wait_for(
            lambda: Campaign.objects.filter(pk=overdue, status="expired").exists(),
            30,
            "beat and the worker to expire it",
        )
        wait_for(lambda: overdue not in get_store().active_ids(), 10, "the sweep to drop it from Redis")
        _check_nothing_acknowledged_was_lost(cluster, outcome)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise AssertionError(f"{exc!r}\nnotes: {outcome.notes}\n{cluster.report()}") from exc
    finally:
        _stop_cluster(cluster.processes)
    print("\n".join(outcome.notes), f"total {time.monotonic() - started:.1f} s")


def _check_nothing_acknowledged_was_lost(cluster: Cluster, outcome: Outcome) -> None:
    ledger = outcome.ledger
    for log_type, path in (("result", cluster.result_log), ("status", cluster.status_log)):
        in_file = {json.dumps(line, sort_keys=True) for line in _file_lines(path)}
        acked = [json.dumps(line, sort_keys=True) for line in ledger.log_lines[log_type]]
        missing = [line for line in acked if line not in in_file]
        assert acked and not missing, (
            f"{len(missing)} of {len(acked)} acknowledged {log_type} lines lost: {missing[:3]}"
        )
    logged = {line["hostIdentifier"] for line in ledger.log_lines["result"]}
    assert logged >= {*outcome.group_a, *outcome.group_b}

    for campaign_id in (outcome.campaign_1, outcome.campaign_2):
        name = f"fleet_distributed_query_{campaign_id}"
        acked_hosts = {host for host, query in ledger.answers if query == name}
        stored_ids = CampaignResult.objects.filter(campaign_id=campaign_id).values_list("host_id", flat=True)
        stored = set(Host.objects.filter(pk__in=list(stored_ids)).values_list("osquery_host_id", flat=True))
        assert not acked_hosts - stored, (
            f"campaign {campaign_id}: acknowledged, not stored: {acked_hosts - stored}"
        )
        assert stored == {*outcome.group_a, *outcome.group_b}, (
            f"campaign {campaign_id}: {len(stored)} answers"
        )
        assert Campaign.objects.get(pk=campaign_id).status == "finished"

    run = ScriptRun.objects.select_related("host").get(execution_id=outcome.execution_id)
    assert (run.exit_code, run.host.osquery_host_id) == (3, ledger.script_results[outcome.execution_id])
    assert "scale-out-script" in run.output
