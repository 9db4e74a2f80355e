"""``fleet-task-agent``: run a task agent until SIGINT or SIGTERM.

The agent key is read from ``FLEET_AGENT_KEY`` when ``--key`` is not given; prefer the variable,
as command-line arguments are visible to every user in ``ps``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import ssl
import sys
from pathlib import Path

from taskagent import __version__

log = logging.getLogger("taskagent")


def default_state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "fleet-task-agent")


def read_host_uuid() -> str:
    """The machine's hardware UUID from the firmware tables (Linux; readable by root only on most
    systems), or ``""``: the same value osquery's ``system_info.uuid`` reports."""
    try:
        with open("/sys/class/dmi/id/product_uuid") as source:
            return source.read().strip()[:64]
    except OSError:
        return ""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fleet-task-agent", description="Run fleet tasks and publish their metrics."
    )
    parser.add_argument("--server", required=True, help="server URL, e.g. https://fleet.example.com")
    parser.add_argument("--key", help="agent key (default: the FLEET_AGENT_KEY environment variable)")
    parser.add_argument("--name", default=socket.gethostname(), help="agent name (default: the host name)")
    parser.add_argument("--tags", default="", help="comma-separated agent tags")
    parser.add_argument("--state-dir", default=default_state_dir(), help="where metric buffers are kept")
    parser.add_argument(
        "--host-uuid",
        default=os.environ.get("FLEET_AGENT_HOST_UUID") or read_host_uuid(),
        help="this machine's hardware UUID, as osquery reports it: ties the agent to its enrolled host "
        "(default: FLEET_AGENT_HOST_UUID, else read from the firmware where readable)",
    )
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--insecure", action="store_true", help="do not verify the server's TLS certificate")
    tls.add_argument("--ca-file", help="CA bundle to verify the server's certificate with")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def ssl_option(args: argparse.Namespace):
    if args.insecure:
        return False
    if args.ca_file:
        return ssl.create_default_context(cafile=args.ca_file)
    return True


async def _main(args: argparse.Namespace, key: str) -> None:
    from taskagent.agent import Agent

    tags = [t.strip() for t in args.tags.split(",") if t.strip()]
    agent = Agent(
        args.server, key, args.name, Path(args.state_dir), tags=tags, ssl=ssl_option(args),
        host_uuid=args.host_uuid,
    )  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    log.info("fleet-task-agent %s: agent %s, server %s", __version__, args.name, agent.connection.url)
    await agent.run(stop)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    key = args.key or os.environ.get("FLEET_AGENT_KEY", "")
    if not key:
        parser.error("an agent key is required: set FLEET_AGENT_KEY (or pass --key)")
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.key:
        log.warning("the agent key was given with --key and is visible in ps; prefer FLEET_AGENT_KEY")
    if args.insecure:
        log.warning("--insecure: the server's certificate is not verified")
    try:
        asyncio.run(_main(args, key))
    except ValueError as exc:  # a bad --server URL
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
