"""The server under test for the scripts beside it (``bench.py``, ``fuzz.py``): start, watch, stop.

One place for what both need: a throwaway MariaDB database or SQLite file, a Redis database
index of their own, granian (production: ``fleet.web_server`` serving ``fleet.wsgi``) or daphne
(``make run``: ``fleet.asgi``) on 127.0.0.1 and a free port, the server's output captured to a
file, its CPU and memory read from /proc, and every process it starts stopped by PID (never by
name: other people's servers may run on the same machine).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# bench.py's defaults; other scripts pass their own database, Redis index and secret.
MYSQL_DB = "fleet_bench"
REDIS_URL = "redis://127.0.0.1:6379/5"
SECRET = "bench-enroll-secret"


def mariadb_available() -> bool:
    """MariaDB answers on its socket and the MySQL driver is installed (``make setup-mysql``)."""
    if importlib.util.find_spec("MySQLdb") is None or not shutil.which("mariadb-admin"):
        return False
    ping = subprocess.run(["mariadb-admin", "--silent", "ping"], capture_output=True, timeout=10)
    return ping.returncode == 0


def redis_available(url: str = REDIS_URL) -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except Exception:
        return False


def mysql(statement: str) -> None:
    """Run SQL as root over the socket (root has no password and cannot use TCP here)."""
    subprocess.run(["mariadb", "-uroot", "-e", statement], check=True, capture_output=True, timeout=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([PY, str(ROOT / "manage.py"), *args], env=env, check=True, cwd=ROOT, timeout=300)


def tail_of(path: Path, lines: int = 20) -> str:
    """The last lines of a server's log, for error messages ("" when it has none)."""
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def children_of(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (the web server's worker processes, forked by its master)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes, in seconds (a process that vanished counts 0)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)
    return total / CLK_TCK


def rss_bytes(pids: list[int]) -> int:
    """Resident memory of these processes together (``statm``'s second field; vanished count 0)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
    return total


def service_pids(db: str, cache: str, redis_url: str = REDIS_URL) -> list[int]:
    """mariadbd and redis-server when the server uses them, to report their CPU too (not ours to stop)."""
    pids = []
    if db == "mariadb":
        with contextlib.suppress(OSError, ValueError):
            pids.append(int(Path("/run/mysqld/mysqld.pid").read_text().strip()))
    if cache == "redis":
        with contextlib.suppress(Exception):
            import redis

            pids.append(int(redis.Redis.from_url(redis_url, socket_timeout=1).info("server")["process_id"]))
    return pids


class Server:
    """granian serving ``fleet.wsgi`` on 127.0.0.1 as production starts it (``fleet.web_server``),
    against MariaDB+Redis or the embedded default.

    ``workers`` worker processes, each running up to ``threads`` requests at once: 1, the default,
    is one request at a time per worker, the cheapest (what the benchmarks measured before with
    gunicorn's sync workers); production runs 8 so that synchronous APIs cannot hold a worker.
    """

    name = "granian"

    def __init__(
        self,
        workers: int,
        db: str,
        cache: str,
        tmp: Path,
        *,
        mysql_db: str = MYSQL_DB,
        redis_url: str = REDIS_URL,
        secret: str = SECRET,
        log_level: str = "WARNING",
        threads: int = 1,
    ) -> None:
        self.workers, self.threads, self.db, self.cache, self.tmp = workers, threads, db, cache, tmp
        self.mysql_db, self.redis_url, self.secret = mysql_db, redis_url, secret
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        tmp.mkdir(parents=True, exist_ok=True)
        self.log_path = tmp / f"{self.name}.log"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "fleet.settings",
            "DJANGO_SECRET_KEY": "bench-" + "x" * 40,
            "FLEET_VAR_DIR": str(tmp),
            "STATIC_ROOT": str(tmp / "static"),
            "LOG_LEVEL": log_level,
            "DJANGO_DEBUG": "false",
            # Plain HTTP on loopback, as behind a load balancer that terminates TLS (production
            # settings would otherwise redirect every request to https://).
            "DJANGO_SECURE_SSL_REDIRECT": "false",
        }
        for name in ("DATABASE_URL", "REDIS_URL", "SQLITE_PATH"):
            self.env.pop(name, None)
        if db == "mariadb":
            self.env["DATABASE_URL"] = f"mysql://root@localhost/{mysql_db}"
        else:
            self.env["SQLITE_PATH"] = str(tmp / "db.sqlite3")
        if cache == "redis":
            self.env["REDIS_URL"] = redis_url

    def prepare(self) -> None:
        if self.db == "mariadb":
            mysql(
                f"DROP DATABASE IF EXISTS {self.mysql_db}; CREATE DATABASE {self.mysql_db} "
                "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
        if self.cache == "redis":
            import redis

            redis.Redis.from_url(self.redis_url).flushdb()
        manage(self.env, "migrate", "--noinput", "-v0")
        code = (
            "from hosts.models import EnrollSecret; "
            f"EnrollSecret.objects.get_or_create(secret={self.secret!r})"
        )
        manage(self.env, "shell", "-v0", "-c", code)

    def share_data_with(self, other: Server) -> Server:
        """Use ``other``'s database and Redis (a second server beside the main one)."""
        for name in ("DATABASE_URL", "SQLITE_PATH", "REDIS_URL"):
            self.env.pop(name, None)
            if name in other.env:
                self.env[name] = other.env[name]
        return self

    def command(self) -> list[str]:
        # granian's own log level; LOG_LEVEL in the environment is Django's.
        return [
            PY, "-m", "fleet.web_server", "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", str(self.workers), "--threads", str(self.threads), "--log-level", "warning",
        ]  # fmt: skip

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(),
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.log_tail()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                if r.status == 200:
                    return
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} did not answer /healthz within 60 s:\n{self.log_tail()}")

    def pids(self) -> list[int]:
        return [self.proc.pid, *children_of(self.proc.pid)] if self.proc else []

    def log_tail(self) -> str:
        return tail_of(self.log_path)

    def stop(self) -> None:
        """SIGTERM the master (it stops its workers); SIGKILL whatever is left, by PID."""
        if self.proc is None or self.proc.poll() is not None:
            return
        workers = children_of(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def cleanup(self) -> None:
        if self.db == "mariadb":
            with contextlib.suppress(Exception):
                mysql(f"DROP DATABASE IF EXISTS {self.mysql_db}")
        if self.cache == "redis":
            with contextlib.suppress(Exception):
                import redis

                redis.Redis.from_url(self.redis_url).flushdb()


class DaphneServer(Server):
    """daphne serving ``fleet.asgi``: the WebSockets beside granian, or everything as ``make run`` does."""

    name = "daphne"

    def __init__(self, db: str, cache: str, tmp: Path, **kwargs: str) -> None:
        super().__init__(1, db, cache, tmp, **kwargs)
        self.env["DATABASE_CONN_MAX_AGE"] = "0"  # ASGI processes leak persistent connections

    def command(self) -> list[str]:
        return [
            PY,
            "-m",
            "daphne",
            "-v",
            "0",
            "-b",
            "127.0.0.1",
            "-p",
            str(self.port),
            "fleet.asgi:application",
        ]


class EmbeddedServer(Server):
    """The embedded default's server as ``make run`` starts it (``fleet.embedded_server``): HTTP
    and WebSockets in one process, HTTP through Django's WSGI handler."""

    name = "embedded"

    def __init__(self, db: str, cache: str, tmp: Path, **kwargs: str) -> None:
        super().__init__(1, db, cache, tmp, **kwargs)

    def command(self) -> list[str]:
        return [PY, "-m", "fleet.embedded_server", "--port", str(self.port)]
