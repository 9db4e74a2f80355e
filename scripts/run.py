"""``make run``: the whole product on the embedded default, in one terminal.

Migrates SQLite, prepares the demo (admin login, enroll secret, self-signed certificate), starts
one server process (``fleet.embedded_server``: uvicorn, HTTP handed to Django's WSGI handler)
serving HTTP on ``PORT`` and HTTPS on ``TLS_PORT`` (console, REST, agent API and WebSockets: the
in-memory channel layer, cache and live-query store are shared only within a process), and
``DEMO_HOSTS`` simulated hosts that enroll over HTTPS: osquery, and orbit beside it (scripts,
lock and wipe, a Fleet Desktop token, update checks against the demo TUF repository). The first
``DEMO_MACS`` of them are Macs that also enroll in Apple MDM (set up with a stand-in push
certificate; the simulator runs the local APNs stand-in that wakes them) and install the demo
configuration profiles, which their osquery then verifies. ``DEMO_AGENT`` (1 by default) starts a
task agent (``fleet-task-agent``) that checks this server itself and sends its metrics back, so the
Tasks pages' charts fill in. Once a simulated host has its Desktop token, the URL of its My device
page is printed. Ctrl-C stops every process it started, by
process id.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
VAR_DIR = Path(os.environ.get("FLEET_VAR_DIR", ROOT / "var"))
TOKEN_FILE = VAR_DIR / "demo_device_tokens.json"


def manage(*args: str, capture: bool = False) -> str:
    """Run a management command in a child process; stop ``make run`` if it fails."""
    result = subprocess.run(
        [PYTHON, "manage.py", *args], cwd=ROOT, text=True, capture_output=capture, check=False
    )
    if result.returncode != 0:
        if capture:
            sys.stderr.write(result.stdout + result.stderr)
        sys.exit(f"manage.py {args[0]} failed")
    return result.stdout or ""


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit("the server exited while starting; see its output above")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    sys.exit(f"the server did not answer {url} within {timeout:.0f} s")


LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def reachable_names(bind: str) -> list[str]:
    """The names and addresses other machines may use for this one (``ALLOWED_HOSTS``).

    Only when ``make run`` listens beyond loopback (``BIND``): the server's default allows
    loopback names only, and a real osquery elsewhere sends this machine's name or address.
    """
    names = {socket.gethostname(), socket.getfqdn()}
    if bind not in ("0.0.0.0", "::"):
        names.add(bind)
    with contextlib.suppress(OSError):
        names.update(info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None))
    with contextlib.suppress(OSError):
        names.update(subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split())
    return sorted(n if ":" not in n else f"[{n}]" for n in names if n)


def show_my_device_link(port: int) -> bool:
    """Print one simulated host's My device URL once its orbit has set a Desktop token."""
    try:
        tokens = json.loads(TOKEN_FILE.read_text())
    except (OSError, ValueError):
        return False
    if not tokens:
        return False
    token = tokens[sorted(tokens)[0]]
    print(
        f"  My device (a simulated host's end-user page): http://127.0.0.1:{port}/device/{token}", flush=True
    )
    return True


def main() -> None:
    port = int(os.environ.get("PORT", "8000"))
    tls_port = int(os.environ.get("TLS_PORT", "8443"))
    bind = os.environ.get("BIND", "127.0.0.1")
    demo_hosts = int(os.environ.get("DEMO_HOSTS", "25"))
    demo_macs = min(int(os.environ.get("DEMO_MACS", "3")), demo_hosts)
    demo_agent = os.environ.get("DEMO_AGENT", "1") not in ("0", "", "false", "no")
    if any(os.environ.get(name) for name in ("DATABASE_URL", "REDIS_URL")):
        print("note: DATABASE_URL/REDIS_URL are set; make run uses them instead of the embedded default")

    manage("migrate", "--noinput", "-v", "0")
    demo = dict(
        line.split("=", 1) for line in manage("prepare_demo", capture=True).splitlines() if "=" in line
    )

    children: list[subprocess.Popen] = []
    env = {**os.environ, "TLS_PORT": str(tls_port)}
    if demo_macs > 0:
        # Profiles turn "verified" when osquery's macos_profiles detail query sees them on the Mac;
        # hourly by default, every two minutes here so the demo shows it (25 hosts: no load to speak of).
        env.setdefault("OSQUERY_DETAIL_UPDATE_INTERVAL", "120")
    if bind not in LOOPBACK and "DJANGO_ALLOWED_HOSTS" not in os.environ:
        env["DJANGO_ALLOWED_HOSTS"] = ",".join(["localhost", "127.0.0.1", "[::1]", *reachable_names(bind)])
        print(f"note: BIND={bind}: accepting requests for {env['DJANGO_ALLOWED_HOSTS']}")
    server = subprocess.Popen(
        [
            PYTHON, "-m", "fleet.embedded_server", "--bind", bind, "--port", str(port),
            "--tls-port", str(tls_port), "--cert", demo["cert"], "--key", demo["key"],
        ],
        cwd=ROOT,
        env=env,
    )  # fmt: skip
    children.append(server)

    def stop(*_: object) -> None:
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
        sys.exit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    wait_until_up(f"http://127.0.0.1:{port}/healthz", server)

    if demo_hosts > 0:
        children.append(
            subprocess.Popen(
                [
                    PYTHON,
                    "manage.py",
                    "simulate_hosts",
                    "--url",
                    f"https://127.0.0.1:{tls_port}",
                    "--ca-file",
                    demo["cert"],
                    f"--enroll-secret={demo['enroll_secret']}",  # "=": a secret may start with "-"
                    "--count",
                    str(demo_hosts),
                    "--start-period",
                    "5",
                    "--node-key-file",
                    str(VAR_DIR / "demo_node_keys.json"),
                    "--progress-interval",
                    "60",
                    "--orbit",
                    "--device-token-file",
                    str(TOKEN_FILE),
                    "--update-url",
                    f"http://127.0.0.1:{port}/tuf",  # TUF's signatures, not TLS, protect the files
                    "--update-interval",
                    "120",
                    "--mdm",
                    str(demo_macs),
                ],
                cwd=ROOT,
            )  # fmt: skip
        )

    if demo_agent:
        agent_key = Path(demo["agent_key_file"]).read_text().strip()
        children.append(
            subprocess.Popen(
                [
                    PYTHON, "-m", "taskagent.cli", "--server", f"http://127.0.0.1:{port}",
                    "--name", "demo-agent", "--tags", "demo", "--state-dir", str(VAR_DIR / "demo-agent"),
                    "--log-level", "WARNING",
                ],
                cwd=ROOT,
                env={**os.environ, "FLEET_AGENT_KEY": agent_key},  # never on the command line (ps)
            )  # fmt: skip
        )

    agent_line = (
        f"a task agent running {demo['demo_tasks']} demo tasks on this server (charts: Tasks; DEMO_AGENT)"
        if demo_agent
        else "no task agent (DEMO_AGENT=0)"
    )
    print(
        f"""
  Fleet is running.
    Console:   http://127.0.0.1:{port}/admin/
    Login:     {demo["username"]} / {demo["password"]}
    REST API:  http://127.0.0.1:{port}/api/v1/docs/
    Agents:    https://127.0.0.1:{tls_port}  (enroll secret {demo["enroll_secret"]}; see "Add hosts")
    Demo:      {demo_hosts} simulated hosts (DEMO_HOSTS=0 for none), {demo_macs} of them Macs in Apple MDM
               (DEMO_MACS), with {demo["mdm_profiles"]} demo configuration profiles to install
               {agent_line}
  Ctrl-C stops everything.
""",
        flush=True,
    )
    my_device_shown = demo_hosts == 0
    TOKEN_FILE.unlink(missing_ok=True)
    while True:
        if not my_device_shown:
            my_device_shown = show_my_device_link(port)
        if server.poll() is not None:
            print("the server stopped; stopping the rest", file=sys.stderr)
            stop()
        time.sleep(1)


if __name__ == "__main__":
    main()
