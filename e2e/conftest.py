"""Browser tests of the console: Playwright drives Debian's Chromium against a real server.

One server for the whole run (session fixture ``fleet``): a fresh database (SQLite in a temporary
directory, or the MariaDB database and Redis index named by ``E2E_DATABASE_URL`` /
``E2E_REDIS_URL``), migrated, with the users, a team, a saved query and a pack the tests need;
then the server ``make run`` starts (``fleet.embedded_server``: the console over HTTP and its
WebSockets in one process) on 127.0.0.1 and a free port, and ``manage.py simulate_hosts`` with
``HOSTS`` agents checking in every second, so live queries finish in a few seconds. Tests talk to
the server only through the browser; they read the database (the ORM, configured like the server)
for the numbers they expect. Both processes are stopped by process id at the end, and their logs
are copied to ``test-results/``.

This run never shares a process with the unit suite (``tests/``): pytest-playwright's event loop
breaks pytest-asyncio's tests, so ``e2e/pytest.ini`` is a run of its own (``make e2e``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
HOSTS = 12  # simulated agents
TEAM = "Engineering"
TEAM_HOSTS = 4  # of them moved to TEAM, for the team observer
PASSWORD = "e2e-Console-Passw0rd"
ADMIN, OBSERVER, TEAM_OBSERVER = "admin", "observer", "team-observer"
QUERY_NAME = "E2E uptime"
QUERY_SQL = "SELECT * FROM uptime"
PACK_NAME = "E2E pack"
PACK_DESCRIPTION = "Made by the e2e fixture."
START_TIMEOUT = 60.0  # seconds for the server to answer and every agent to check in

# --- the environment of the server and of this process (set before Django loads) -------------
_TMP = Path(tempfile.mkdtemp(prefix="fleet-e2e-"))
_DATABASE_URL = os.environ.get("E2E_DATABASE_URL", "")
_REDIS_URL = os.environ.get("E2E_REDIS_URL", "")
for _name in ("DATABASE_URL", "REDIS_URL", "SQLITE_PATH", "SQLITE_TEST_PATH", "STATIC_ROOT"):
    os.environ.pop(_name, None)  # never the developer's own database or Redis
os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "fleet.settings",
        "FLEET_VAR_DIR": str(_TMP / "var"),
        "STATIC_ROOT": str(_TMP / "static"),
        "DJANGO_SECRET_KEY": "e2e-only-secret-key-not-for-production-0123456789abcdef",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECURE_SSL_REDIRECT": "false",
        "OSQUERY_SEEN_FLUSH_INTERVAL": "0.5",  # hosts show online half a second after checking in
        "LOG_LEVEL": "WARNING",
    }
)
if _DATABASE_URL:
    os.environ["DATABASE_URL"] = _DATABASE_URL
else:
    os.environ["SQLITE_PATH"] = str(_TMP / "db.sqlite3")
if _REDIS_URL:
    os.environ["REDIS_URL"] = _REDIS_URL
# The tests call the ORM while Playwright's sync API runs its event loop in this thread.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
sys.path.insert(0, str(ROOT))

import django  # noqa: E402

django.setup()


# --- the server under test ------------------------------------------------------------------------
@dataclass
class Fleet:
    url: str
    hosts: int
    team: str
    team_host_ids: list[int]
    password: str = PASSWORD
    logs: dict[str, Path] = field(default_factory=dict)

    def reverse(self, name: str, *args: object) -> str:
        from django.urls import reverse

        return reverse(name, args=args or None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _recreate_mysql_database(url: str) -> None:
    """Drop and create the database of ``E2E_DATABASE_URL`` (its name must say it is for e2e)."""
    import MySQLdb

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if "e2e" not in name:
        pytest.exit(f"E2E_DATABASE_URL: the database is dropped first; its name must contain 'e2e': {name}")
    kwargs = {"user": unquote(parts.username or "root"), "passwd": unquote(parts.password or "")}
    if parts.hostname in (None, "", "localhost"):
        pass  # the local socket, as Django does for "localhost"
    else:
        kwargs.update(host=parts.hostname, port=parts.port or 3306)
    conn = MySQLdb.connect(**kwargs)
    try:
        cur = conn.cursor()
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    finally:
        conn.close()


def _prepare_database() -> str:
    """Migrate a fresh database and add what the tests need; returns the enroll secret."""
    if _DATABASE_URL:
        _recreate_mysql_database(_DATABASE_URL)
    if _REDIS_URL:
        import redis

        redis.Redis.from_url(_REDIS_URL).flushdb()
    subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, check=True, timeout=300)

    from django.contrib.auth import get_user_model

    from hosts.choices import Role
    from hosts.models import EnrollSecret, Team, UserRole
    from packs.models import Pack
    from queries.models import Query

    users = get_user_model()
    admin = users.objects.create_superuser(ADMIN, "admin@example.com", PASSWORD)
    UserRole.objects.create(user=admin, team=None, role=Role.ADMIN)
    observer = users.objects.create_user(OBSERVER, "observer@example.com", PASSWORD)
    UserRole.objects.create(user=observer, team=None, role=Role.OBSERVER)
    team = Team.objects.create(name=TEAM)
    team_observer = users.objects.create_user(TEAM_OBSERVER, "team-observer@example.com", PASSWORD)
    UserRole.objects.create(user=team_observer, team=team, role=Role.OBSERVER)
    Query.objects.create(name=QUERY_NAME, query=QUERY_SQL, description="Saved by the e2e fixture.")
    Pack.objects.create(name=PACK_NAME, description=PACK_DESCRIPTION)
    return EnrollSecret.objects.create(secret="e2e-enroll-secret").secret


def _wait_for_health(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.exit(f"the e2e server exited while starting:\n{log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
            if response.status == 200:
                return
        time.sleep(0.2)
    pytest.exit(f"the e2e server did not answer {url}/healthz within {START_TIMEOUT:.0f} s")


def _wait_for_hosts(simulator: subprocess.Popen, log: Path) -> None:
    """Until every simulated host has enrolled and shows online (its seen time is written)."""
    from django.utils import timezone

    from hosts.models import Host, HostSeenTime

    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if simulator.poll() is not None:
            pytest.exit(f"the host simulator exited:\n{log.read_text(errors='replace')[-3000:]}")
        online = HostSeenTime.objects.filter(offline_after__gte=timezone.now()).count()
        if Host.objects.count() == HOSTS and online == HOSTS:
            return
        time.sleep(0.25)
    pytest.exit(f"not all {HOSTS} simulated hosts checked in within {START_TIMEOUT:.0f} s; see {log}")


def _stop(process: subprocess.Popen) -> None:
    """Stop one child we started, by its process id: Ctrl-C first, then SIGKILL."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def fleet(results_dir: Path) -> Iterator[Fleet]:
    secret = _prepare_database()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    logs = {"server": _TMP / "server.log", "simulator": _TMP / "simulator.log"}
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    children: list[subprocess.Popen] = []
    try:
        with open(logs["server"], "wb") as out:
            server = subprocess.Popen(
                [PY, "-m", "fleet.embedded_server", "--port", str(port)],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        children.append(server)
        _wait_for_health(url, server, logs["server"])
        with open(logs["simulator"], "wb") as out:
            simulator = subprocess.Popen(
                [
                    PY, "manage.py", "simulate_hosts", "--url", url, f"--enroll-secret={secret}",
                    "--count", str(HOSTS), "--start-period", "0", "--distributed-interval", "1",
                    "--logger-tls-period", "10", "--ignore-config-options", "--progress-interval", "10",
                ],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        children.append(simulator)
        _wait_for_hosts(simulator, logs["simulator"])

        from hosts import services
        from hosts.models import Host, Team

        team_host_ids = list(Host.objects.order_by("hostname").values_list("id", flat=True)[:TEAM_HOSTS])
        services.transfer_hosts(team_host_ids, Team.objects.get(name=TEAM))
        yield Fleet(url=url, hosts=HOSTS, team=TEAM, team_host_ids=team_host_ids, logs=logs)
    finally:
        for child in reversed(children):
            _stop(child)
        for name, path in logs.items():
            with contextlib.suppress(OSError):
                shutil.copy(path, results_dir / f"{name}.log")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_TMP, ignore_errors=True)


# --- Playwright: Debian's Chromium, the server's URL, a screenshot per test --------------------------
def _chromium() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.exit(
            "Chromium is not installed: apt-get install -y chromium (make e2e does it); "
            "the tests never download a browser."
        )
    return path


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    return {
        **browser_type_launch_args,
        "executable_path": _chromium(),
        "args": [
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict) -> dict:
    return {**browser_context_args, "viewport": {"width": 1280, "height": 800}}


@pytest.fixture(scope="session")
def base_url(fleet: Fleet) -> str:
    return fleet.url


@pytest.fixture(scope="session")
def results_dir(pytestconfig: pytest.Config) -> Path:
    """``test-results/`` (pytest-playwright's ``--output``, which it empties at the start)."""
    path = Path(pytestconfig.getoption("--output")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def page(page, request: pytest.FixtureRequest, results_dir: Path):
    """pytest-playwright's page, and a full-page screenshot of it when the test ends (pass or fail)."""
    yield page
    path = results_dir / f"{request.node.originalname}.png"
    with contextlib.suppress(Exception):  # a crashed page must not hide the test's own error
        page.screenshot(path=str(path), full_page=True, timeout=10_000)


def log_in(page, username: str, password: str = PASSWORD) -> None:
    """Through the console's login form; ends on the dashboard."""
    from playwright.sync_api import expect

    page.goto("/admin/login/?next=/admin/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#user-tools")).to_contain_text("Log out", ignore_case=True)
    expect(page).to_have_url(re.compile(r"/admin/$"))
    expect(page.locator("#dashboard")).to_be_visible()


@pytest.fixture
def as_admin(page, fleet: Fleet):
    log_in(page, ADMIN)
    return page


@pytest.fixture
def as_observer(page, fleet: Fleet):
    log_in(page, OBSERVER)
    return page


@pytest.fixture
def as_team_observer(page, fleet: Fleet):
    log_in(page, TEAM_OBSERVER)
    return page
