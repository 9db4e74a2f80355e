"""The embedded default's server: one process serving HTTP and HTTPS (and WebSockets on both).

    python -m fleet.embedded_server --port 8000 --tls-port 8443 --cert cert.pem --key key.pem

``make run`` starts it (scripts/run.py). Two uvicorn servers, plain and TLS, share one event loop
and one application (:mod:`fleet.embedded_asgi`), so everything they serve shares the process's
in-memory channel layer, cache and live-query store. Production does not use this: granian
serves HTTP and daphne WebSockets, sharing state through MariaDB and Redis (docs/architecture.md).
Ctrl-C or SIGTERM stops both servers; in-flight requests finish first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Generator

import uvicorn


class _Server(uvicorn.Server):
    """A uvicorn server whose signals are handled by :func:`serve` for both servers at once."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def configs(args: argparse.Namespace) -> list[uvicorn.Config]:
    common = {
        "app": "fleet.embedded_asgi:application",
        "host": args.bind,
        "lifespan": "off",
        "access_log": False,
        "log_level": args.log_level,
        "proxy_headers": False,  # nothing is in front of it: the peer address is the client's
        "ws_max_size": 4 * 1024 * 1024,  # a task agent's metrics frame is at most 1 MiB
        "timeout_keep_alive": 75,  # osquery and orbit keep their connection between requests
    }
    found = [uvicorn.Config(port=args.port, **common)]
    if args.tls_port:
        found.append(
            uvicorn.Config(port=args.tls_port, ssl_certfile=args.cert, ssl_keyfile=args.key, **common)
        )
    return found


async def serve(servers: list[uvicorn.Server]) -> None:
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server in servers:
            if server.should_exit:
                server.force_exit = True  # a second Ctrl-C: do not wait for open connections
            server.should_exit = True

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)
    await asyncio.gather(*(server.serve() for server in servers))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fleet.embedded_server", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--tls-port", type=int, default=0, help="also serve HTTPS here (needs --cert, --key)")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )
    args = parser.parse_args(argv)
    if args.tls_port and not (args.cert and args.key):
        parser.error("--tls-port needs --cert and --key")
    return args


# How long a busy request thread may keep the GIL while the event loop waits for it. The loop gives
# the GIL up at every socket and TLS call and must win it back each time: at Python's default (5 ms)
# a loop serving thousands of agents spent most of its time waiting, handshakes timed out while the
# request threads had CPU to spare (5,000 hosts: the server at 61 % of a core, p50 750 ms).
SWITCH_INTERVAL = 0.0005


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    servers = [_Server(config) for config in configs(args)]
    for config in (server.config for server in servers):
        config.load()  # import the application once per config before serving (errors show here)
    _use_uvloop()
    sys.setswitchinterval(float(os.environ.get("FLEET_GIL_SWITCH_INTERVAL", SWITCH_INTERVAL)))
    asyncio.run(serve(servers))
    return 0


def _use_uvloop() -> None:
    """uvloop when installed (uvicorn[standard]): the event loop is part of the per-request cost."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


if __name__ == "__main__":
    sys.exit(main())
