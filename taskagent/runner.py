"""When tasks run: a wall-clock aligned schedule per task, never two runs of a task at once.

Schedule (as the original, task-server.md §4): ``offset = created_at % interval`` and a task
fires when ``now % interval == offset``. Runs of one task land on the same second of every
interval on every agent (graphs line up, restarts do not shift them), and tasks created at
different times spread over the interval without random jitter. The first run is at the next
slot, not at once.

Departures from the original, each for a fault it had:

* A run has a timeout, ``min(interval, max_timeout)`` (60 s): the original ran plugins
  synchronously, so one hung call stopped the task for good.
* A slot that comes while the previous run is still going is skipped and counted
  (``runs.skipped``) instead of queueing behind it; there is never more than one run of a task.
* A run that fails produces a failure metric (``<plugin>.success`` = 0 with an ``error`` tag),
  never a zero value; a task with an unknown plugin or invalid settings still runs on its
  schedule, as such a failure, so the problem shows on the graphs instead of in a counter only.
* ``reconcile`` replaces a task whose ``updated_at`` is newer *or* whose content changed (the
  original compared ``updated`` only), and drops an older copy.

The runner knows nothing of the connection: it keeps running the tasks it has while the agent is
disconnected, and the next ``task_list`` reconciles.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from taskagent import metrics as m
from taskagent import plugins as plugin_registry
from taskagent.metrics import Metric, PluginError
from taskagent.plugins import Plugin, RunContext, SettingsError
from taskagent.plugins._schema import validate
from taskagent.protocol import Task
from taskagent.stats import Stats

log = logging.getLogger(__name__)

EARLY_WAKE = 0.05  # seconds: a sleep that ends this much before its slot still counts


def next_fire(now: float, interval: int, created_at: float) -> float:
    """The first time strictly after ``now`` with ``time % interval == created_at % interval``."""
    offset = int(created_at) % interval
    slot = now - (now % interval) + offset
    while slot <= now:
        slot += interval
    return slot


@dataclass
class _State:
    task: Task
    settings: dict[str, Any] | None = None
    invalid: str | None = None  # the error kind of a task that cannot run
    loop: asyncio.Task | None = None
    current: asyncio.Task | None = None
    last_slot: float = 0.0


class Runner:
    def __init__(
        self,
        agent: str,
        publish: Callable[[list[Metric]], None],
        stats: Stats | None = None,
        *,
        plugins: Callable[[str], Plugin | None] = plugin_registry.get,
        max_timeout: float = 60.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.agent = agent
        self.stats = stats or Stats()
        self._publish = publish
        self._plugins = plugins
        self._max_timeout = max_timeout
        self._clock = clock
        self._sleep = sleep
        self._states: dict[Any, _State] = {}

    # --- the task set ------------------------------------------------------------------------------

    @property
    def tasks(self) -> dict[Any, Task]:
        return {tid: state.task for tid, state in self._states.items()}

    def running_ids(self) -> list[Any]:
        """Ids of the tasks on a schedule (enabled ones), in the order they were added."""
        return [tid for tid, state in self._states.items() if state.loop is not None]

    def reconcile(self, tasks: list[Task]) -> None:
        """Make the task set equal to ``tasks``: add, replace when newer or changed, remove missing."""
        wanted = {task.id for task in tasks}
        for task_id in [tid for tid in self._states if tid not in wanted]:
            self.remove(task_id)
        for task in tasks:
            self.upsert(task)

    def upsert(self, task: Task) -> bool:
        """Add ``task`` or replace the copy held; returns whether anything changed."""
        old = self._states.get(task.id)
        if old is not None:
            if old.task == task:
                return False
            if task.updated_at < old.task.updated_at:
                log.info("task %s: ignoring an older copy (updated_at %s < %s)",
                         task.id, task.updated_at, old.task.updated_at)
                return False
            self._stop_loop(old)
        state = _State(task)
        if old is not None:  # an update: a run in progress finishes, and is still not overlapped
            state.current, state.last_slot = old.current, old.last_slot
        self._check(state)
        self._states[task.id] = state
        if task.enabled:
            state.loop = asyncio.get_running_loop().create_task(self._loop(state), name=f"task-{task.id}")
        self.stats.inc("tasks.updated" if old is not None else "tasks.added")
        self._update_gauges()
        log.info("task %s (%s, %s every %ss) %s%s", task.id, task.name, task.plugin, task.interval,
                 "updated" if old else "added", "" if task.enabled else ", disabled")
        return True

    def remove(self, task_id: Any) -> bool:
        state = self._states.pop(task_id, None)
        if state is None:
            return False
        self._stop_loop(state)
        if state.current is not None and not state.current.done():
            state.current.cancel()  # a removed task's settings (and secrets) are no longer ours to use
        self.stats.inc("tasks.removed")
        self._update_gauges()
        log.info("task %s removed", task_id)
        return True

    async def close(self, grace: float = 5.0) -> None:
        """Stop scheduling; let runs in progress finish for up to ``grace`` seconds, then cancel them."""
        for state in self._states.values():
            self._stop_loop(state)
        current = [s.current for s in self._states.values() if s.current is not None and not s.current.done()]
        if current:
            _done, pending = await asyncio.wait(current, timeout=grace)
            for run in pending:
                run.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._update_gauges()

    def _check(self, state: _State) -> None:
        plugin = self._plugins(state.task.plugin)
        if plugin is None:
            state.invalid = "unknown_plugin"
        else:
            try:
                state.settings = validate(plugin.schema, state.task.settings)
            except SettingsError as exc:
                state.invalid = "invalid_settings"
                log.warning("task %s has invalid settings: %s", state.task.id, exc)
        if state.invalid:
            self.stats.inc("tasks.invalid")

    def _stop_loop(self, state: _State) -> None:
        if state.loop is not None:
            state.loop.cancel()
            state.loop = None

    def _update_gauges(self) -> None:
        self.stats.set("tasks.running", sum(1 for s in self._states.values() if s.loop is not None))

    # --- scheduling and running ---------------------------------------------------------------------

    async def _loop(self, state: _State) -> None:
        task = state.task
        while True:
            now = self._clock()
            slot = next_fire(max(now, state.last_slot), task.interval, task.created_at)
            if slot - now > 0:
                await self._sleep(slot - now)
            if self._clock() < slot - EARLY_WAKE:
                continue
            state.last_slot = slot
            self.fire(state.task.id, slot)

    def fire(self, task_id: Any, slot: float) -> asyncio.Task | None:
        """Start a run for ``slot`` unless one is in progress (then count ``runs.skipped``)."""
        state = self._states.get(task_id)
        if state is None:
            return None
        if state.current is not None and not state.current.done():
            self.stats.inc("runs.skipped")
            log.warning("task %s: the previous run is still going; slot %s skipped", task_id, slot)
            return None
        state.current = asyncio.get_running_loop().create_task(self._run(state, slot), name=f"run-{task_id}")
        return state.current

    def timeout_for(self, task: Task) -> float:
        return float(min(task.interval, self._max_timeout))

    async def _run(self, state: _State, slot: float) -> list[Metric]:
        task = state.task
        plugin_name = task.plugin
        context = RunContext(task.id, task.name, self.agent, plugin_name, slot, self.timeout_for(task))
        started = time.perf_counter()
        try:
            if state.invalid:
                raise PluginError(state.invalid, f"task {task.id} cannot run: {state.invalid}")
            plugin = self._plugins(plugin_name)
            if plugin is None:
                raise PluginError("unknown_plugin")
            async with asyncio.timeout(context.timeout):
                measured = list(await plugin.run(dict(state.settings or {}), context))
            produced = [m.success(plugin_name, slot), *measured]
            self.stats.inc("runs.succeeded")
        except PluginError as exc:
            produced = [m.failure(plugin_name, exc.kind, slot)]
            self.stats.inc("runs.failed")
            log.info("task %s run failed (%s): %s", task.id, exc.kind, exc)
        except TimeoutError:
            produced = [m.failure(plugin_name, "timeout", slot)]
            self.stats.inc("runs.failed")
            log.info("task %s run timed out after %ss", task.id, context.timeout)
        except asyncio.CancelledError:
            raise
        except Exception:
            produced = [m.failure(plugin_name, "exception", slot)]
            self.stats.inc("runs.failed")
            log.exception("task %s: plugin %s raised", task.id, plugin_name)
        log.debug("task %s ran in %.1f ms", task.id, (time.perf_counter() - started) * 1000)
        tags = {"task": str(task.id), "agent": self.agent, "plugin": plugin_name}
        stamped = [metric.with_tags(**tags) for metric in produced]
        try:
            self._publish(stamped)
        except Exception:
            log.exception("task %s: publishing its metrics failed", task.id)
        return stamped
