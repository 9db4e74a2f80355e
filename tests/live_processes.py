"""Real processes for tests that need more than one: daphne servers on this test's database, task
agents as their own programs, and a failover TCP proxy standing in for a load balancer; also
the web server (granian) and Celery as production runs them.

Everything binds 127.0.0.1 and is stopped by its process id (``stop``), in the test's ``finally``;
the web server and Celery run in process groups of their own, stopped by that group's id
(``stop_group``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, what: str = "a condition") -> float:
    """Seconds until ``predicate()`` was true; AssertionError after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(var_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a server process on this test's database, with this process's secret
    key (sealed task settings open in either)."""
    from django.conf import settings
    from django.db import connection

    env = dict(os.environ, FLEET_VAR_DIR=str(var_dir), DJANGO_SECRET_KEY=settings.SECRET_KEY, **extra)
    name = connection.settings_dict["NAME"]
    if connection.vendor == "sqlite":
        env["SQLITE_PATH"] = str(name)
    else:
        parts = urllib.parse.urlsplit(env["DATABASE_URL"])
        env["DATABASE_URL"] = urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))
    return env


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def start_daphne(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen, str]:
    """A daphne process (not yet waited for: see :func:`wait_healthy`) and its URL."""
    port = free_port()
    log = open(log_path, "wb")  # noqa: SIM115 - the child holds it; closed with the process
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "fleet.asgi:application"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    return process, f"http://127.0.0.1:{port}"


def wait_healthy(process: subprocess.Popen, url: str, timeout: float = 60.0) -> None:
    wait_for(lambda: process.poll() is not None or healthy(url), timeout, f"{url} to start")
    assert process.poll() is None, f"the server at {url} exited with {process.returncode}"


def stop(process: subprocess.Popen | None) -> None:
    """Stop a child by its process id: SIGINT, then SIGKILL after 10 s."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


class AgentProcess:
    """``fleet-task-agent`` as its own program; what it runs is read back from its log."""

    TASK_LINE = re.compile(rb"task (\d+) \((.+?), \w+ every \d+s\) (added|updated)|task (\d+) removed")

    def __init__(self, server: str, key: str, name: str, tags: str, directory: Path) -> None:
        self.name = name
        self.log_path = directory / f"{name}.log"
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child holds it
        self.process = subprocess.Popen(
            [sys.executable, "-m", "taskagent.cli", "--server", server, "--name", name, "--tags", tags,
             "--state-dir", str(directory / f"{name}-state"), "--host-uuid", ""],
            cwd=ROOT, env=dict(os.environ, FLEET_AGENT_KEY=key), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()

    def log(self) -> bytes:
        return self.log_path.read_bytes()

    def task_names(self) -> set[str]:
        """The tasks its runner holds now, replaying the runner's log lines."""
        names: dict[int, str] = {}
        for added_id, name, _, removed_id in self.TASK_LINE.findall(self.log()):
            if added_id:
                names[int(added_id)] = name.decode()
            else:
                names.pop(int(removed_id), None)
        return set(names.values())

    def connections(self) -> int:
        return self.log().count(b"welcome: agent ")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        stop(self.process)


class FailoverProxy:
    """A TCP load balancer: each connection goes to the first backend that accepts it."""

    def __init__(self, backends: list[str]) -> None:
        self.backends = [urllib.parse.urlsplit(url) for url in backends]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def __enter__(self) -> FailoverProxy:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            # Close the connections still piped, rather than leave their tasks pending in a dead
            # loop ("Task was destroyed but it is pending!" at exit).
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for backend in self.backends:
            try:
                up_reader, up_writer = await asyncio.open_connection(backend.hostname, backend.port)
                break
            except OSError:
                continue
        else:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


# --- the production shape: the web server and Celery (each its own process group) -----------------


def _start_group(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """A child in a session (process group) of its own, so :func:`kill_group` and
    :func:`stop_group` reach its forked workers too, and nothing else."""
    log = open(log_path, "wb")  # noqa: SIM115 - the child holds it; closed with the process
    process = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    log.close()
    return process


def start_web(
    env: dict[str, str], log_path: Path, workers: int = 1, threads: int = 4
) -> tuple[subprocess.Popen, str]:
    """The web server as production runs it (``fleet.web_server``: granian serving ``fleet.wsgi``),
    not yet waited for (see :func:`wait_healthy`), and its URL. Stop it with :func:`stop_group`."""
    port = free_port()
    process = _start_group(
        [sys.executable, "-m", "fleet.web_server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers), "--threads", str(threads)],
        env, log_path,
    )  # fmt: skip
    return process, f"http://127.0.0.1:{port}"


def start_celery(
    env: dict[str, str], log_path: Path, role: str, schedule: Path | None = None
) -> subprocess.Popen:
    """``celery -A fleet worker`` (threads pool, two threads) or ``beat`` (``schedule``: its state
    file). Stop it with :func:`stop_group`."""
    argv = [sys.executable, "-m", "celery", "-A", "fleet", role, "-l", "info"]
    if role == "worker":
        argv += ["--pool", "threads", "--concurrency", "2", "--without-gossip", "--without-mingle"]
    elif role == "beat":
        assert schedule is not None, "beat needs a schedule file"
        argv += ["-s", str(schedule)]
    else:
        raise ValueError(f"unknown Celery role {role!r}")
    return _start_group(argv, env, log_path)


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL a child started in its own process group (:func:`start_web`,
    :func:`start_celery`) with every process it forked: a machine that dies."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def stop_group(process: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """Stop a child started in its own process group: SIGTERM to the group, SIGKILL to it after
    ``timeout`` seconds."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:  # not reaped yet, so the group id is still this child's
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a server's log, for a failure message."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])
