"""The production web server: granian serving ``fleet.wsgi`` (agent API, REST, console, /metrics).

    python -m fleet.web_server --port 8000 --workers 2 --threads 2

Why granian and not gunicorn: every host calls the agent endpoints every few seconds, so what the
server itself costs per request is multiplied by the whole fleet. granian parses HTTP in Rust and
keeps connections alive; gunicorn's sync workers parse it in Python and close every connection
after one reply (its gthread workers keep them, at a higher cost per request). Measured on the
same machine, tree and load (docs/architecture.md, "Serving"): Django's cheapest view costs
0.33 ms of server CPU under granian against 0.55-0.63 ms under gunicorn, a check-in 0.40 against
0.59-0.66 ms, and the load report's mix holds 8,581 hosts per web core against 5,102. The
application is plain WSGI either way; gunicorn still works (``fleet/gunicorn_conf.py``).

Each worker process runs requests on ``--threads`` threads, two by default: agent requests are
short bursts of Python between database and Redis round trips, and two threads keep a core busy
through those waits where more would only queue for the GIL (docs/architecture.md, "Serving").
The REST calls that wait for agents (a live query or a script run synchronously) belong to the ws
role; a worker holds at most one less than its threads of them (``fleet.held_requests``), so
agents always keep a thread. With more threads than ``FLEET_AGENT_CONCURRENCY`` agent requests
pass a gate (``fleet.agent_admission``). The workers learn their thread count from
``FLEET_WEB_THREADS``, which this wrapper sets.

This wrapper exists for what the command line cannot do: empty ``PROMETHEUS_MULTIPROC_DIR``
before the workers start (counts left by a previous run would be summed in), and fix the options
production relies on (WSGI, no WebSockets here: daphne serves ``/ws/``; a crashed worker is
replaced; a worker that will not stop is killed).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from fleet.metrics_dir import empty_multiproc_dir

if TYPE_CHECKING:
    from granian.server.common import AbstractServer

APP = "fleet.wsgi:application"
KILL_TIMEOUT = 30  # seconds a worker gets to finish its requests at shutdown before it is killed


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip().isdigit() else default


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve fleet.wsgi with granian (production web role).")
    parser.add_argument("--host", default=os.environ.get("FLEET_WEB_HOST", "0.0.0.0"), help="bind address")
    parser.add_argument("--port", type=int, default=_env_int("FLEET_WEB_PORT", 8000), help="port (8000)")
    parser.add_argument(
        "--workers", type=int, default=_env_int("FLEET_WEB_WORKERS", 1),
        help="worker processes: one per core (FLEET_WEB_WORKERS, 1)",
    )  # fmt: skip
    parser.add_argument(
        "--threads", type=int, default=_env_int("FLEET_WEB_THREADS", 2),
        help="request threads per worker (FLEET_WEB_THREADS, 2)",
    )  # fmt: skip
    parser.add_argument("--backlog", type=int, default=2048, help="pending connections (2048)")
    parser.add_argument("--log-level", default=os.environ.get("FLEET_WEB_LOG_LEVEL", "warning"))
    parser.add_argument("--access-log", action="store_true", help="log every request (off: agents are many)")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.threads < 1:
        parser.error("--workers and --threads must be at least 1")
    return args


def build(args: argparse.Namespace) -> AbstractServer:
    """The granian server for ``args``, not started (tests read its settings)."""
    from granian.constants import HTTPModes, Interfaces
    from granian.log import LogLevels
    from granian.server import Server

    server = Server(
        APP,
        address=args.host,
        port=args.port,
        interface=Interfaces.WSGI,
        workers=args.workers,
        blocking_threads=args.threads,
        http=HTTPModes.http1,
        websockets=False,
        backlog=args.backlog,
        log_level=LogLevels(args.log_level.lower()),
        log_access=args.access_log,
        respawn_failed_workers=True,
        workers_kill_timeout=KILL_TIMEOUT,
    )
    server.on_startup(empty_multiproc_dir)
    return server


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
    args = parse_args(argv)
    os.environ["FLEET_WEB_THREADS"] = str(args.threads)  # the workers' settings.WEB_THREADS
    build(args).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
