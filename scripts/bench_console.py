"""Console pages at 100,000 hosts: dashboard, host list, host page, CSV export (``make bench-console``).

Fills a database of its own (MariaDB and Redis by default, as in production; ``--sqlite`` for the
embedded default) with ``--hosts`` hosts spread over teams and platforms, their seen times and
label memberships, once (kept between runs), then times each page through Django's test client
in this process: the median and the worst of ``--runs`` loads, and the SQL queries each load
makes. The dashboard is timed cold (its cache cleared before each load: the one aggregation a
cache period costs) and warm (what every other load costs).

Prints a Markdown table; ``--write`` puts it in docs/benchmarks.md under "Console at scale".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from benchdoc import replace_section  # scripts/benchdoc.py, beside this file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECTION = "## Console at scale"
RESULTS = ROOT / "docs" / "console-bench.json"  # the last run, which bench.py renders too


def report_lines(path: Path = RESULTS) -> list[str]:
    """The "Console at scale" section of docs/benchmarks.md, from the last recorded run."""
    if not path.exists():
        return [SECTION, "", "Not measured yet (`make bench-console`).", ""]
    return report_lines_from(json.loads(path.read_text()))


def report_lines_from(r: dict) -> list[str]:
    return [
        SECTION,
        "",
        f"`make bench-console`: {r['hosts']:,} hosts (10 teams, 5 platforms, 3 labels each) on "
        f"{r['engine']}, pages loaded through Django's test client in one process, median and worst of "
        f"{r['runs']}.",
        "",
        "The dashboard's counts are two grouped queries kept in the cache for `DASHBOARD_CACHE_SECONDS` "
        "(30) per scope: *cold* is the load that computes them (once per period for everyone with the same "
        "teams), *warm* every other load. The host list never counts the whole table (a capped count), "
        "and its filter counts are the dashboard's kept ones.",
        "",
        "| page | median | worst | SQL queries |",
        "|---|---:|---:|---:|",
        *(f"| {n} | {m * 1000:.1f} ms | {w * 1000:.1f} ms | {q} |" for n, m, w, q in r["rows"]),
        "",
        f"Software: {r.get('software_links', 0):,} host-software links (1,000 titles, 2,000 versions). Its "
        "pages read the kept per-(title, team, platform) counts; the background recount that keeps them "
        + (
            f"takes {r['software_recount_seconds']:.1f} s over all of them"
            + (
                f" ({r['software_first_recount_seconds']:.1f} s the first time)"
                if r.get("software_first_recount_seconds")
                else ""
            )
            + ", in slices of 5,000 hosts so that no query nears the database read timeout; Celery beat "
            "runs it every `SOFTWARE_COUNTS_INTERVAL` when something changed."
            if r.get("software_recount_seconds")
            else "was not timed in this run."
        ),
        "",
    ]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--sqlite", action="store_true", help="Use a SQLite file instead of MariaDB.")
    parser.add_argument("--write", action="store_true", help="Write the table into docs/benchmarks.md.")
    return parser.parse_args()


def configure(args: argparse.Namespace) -> None:
    var = ROOT / "var" / "bench-console"
    var.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("FLEET_VAR_DIR", str(var))
    if args.sqlite:
        os.environ.pop("DATABASE_URL", None)
        os.environ["SQLITE_PATH"] = str(var / "console.sqlite3")
    else:
        os.environ.setdefault("DATABASE_URL", "mysql://root@localhost/fleet_bench_console")
        # Production's shape: the cache in Redis (index 8, cleared for the cold loads) and Celery
        # not eager, so the software recount runs on a worker, never inside a page load.
        os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/8")
        os.environ.setdefault(
            "DJANGO_SECRET_KEY", "bench-only-secret-key-not-for-production-0123456789abcdef"
        )
        os.environ.setdefault("DJANGO_SECURE_SSL_REDIRECT", "false")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
    os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "testserver,127.0.0.1,localhost")


def ensure_database() -> None:
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("mysql"):
        import MySQLdb

        kwargs = {"user": db["USER"] or "root", "passwd": db["PASSWORD"] or ""}
        kwargs.update({"host": db["HOST"]} if db["HOST"] else {"unix_socket": "/run/mysqld/mysqld.sock"})
        conn = MySQLdb.connect(**kwargs)
        conn.cursor().execute(f"CREATE DATABASE IF NOT EXISTS `{db['NAME']}` CHARACTER SET utf8mb4")
        conn.close()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def populate(count: int) -> None:
    """``count`` hosts (kept between runs): 10 teams, 5 platforms, seen times, labels."""
    from datetime import timedelta

    from django.utils import timezone

    from hosts.labels import ensure_builtin_labels
    from hosts.models import Host, HostSeenTime, Label, LabelMembership, Team

    have = Host.objects.count()
    if have >= count:
        return
    teams = [Team.objects.get_or_create(name=f"Team {i}")[0] for i in range(10)]
    ensure_builtin_labels()
    extra = [
        Label.objects.get_or_create(name=f"Label {i}", defaults={"query": "SELECT 1"})[0] for i in range(20)
    ]
    platforms = [("darwin", "macOS 14.5"), ("ubuntu", "Ubuntu 22.04"), ("windows", "Windows 11"),
                 ("rhel", "RHEL 9"), ("debian", "Debian 12")]  # fmt: skip
    now = timezone.now()
    batch = 5000
    for start in range(have, count, batch):
        hosts = []
        for i in range(start, min(start + batch, count)):
            platform, os_version = platforms[i % len(platforms)]
            hosts.append(
                Host(
                    osquery_host_id=f"bench-{i}",
                    hostname=f"host-{i:06d}.example",
                    computer_name=f"host-{i:06d}",
                    uuid=f"uuid-{i:06d}",
                    platform=platform,
                    os_version=os_version,
                    osquery_version=f"5.{10 + i % 3}.0",
                    team=teams[i % 11] if i % 11 < 10 else None,
                    primary_ip=f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}",
                    memory=16 * 2**30,
                    uptime=i * 37 % 864000,
                    created_at=now - timedelta(days=i % 60),
                )
            )
        Host.objects.bulk_create(hosts)
        created = list(
            Host.objects.filter(osquery_host_id__in=[h.osquery_host_id for h in hosts]).values_list(
                "id", flat=True
            )
        )
        seen = []
        for n, host_id in enumerate(created):
            ago = timedelta(seconds=5) if n % 3 else timedelta(hours=n % 48 + 1)
            if n % 97 == 0:
                ago = timedelta(days=40)
            seen.append(
                HostSeenTime(
                    host_id=host_id, seen_time=now - ago, offline_after=now - ago + timedelta(seconds=70)
                )
            )
        HostSeenTime.objects.bulk_create(seen)
        memberships = [
            LabelMembership(label=extra[(host_id + k) % len(extra)], host_id=host_id)
            for host_id in created
            for k in range(3)
        ]
        LabelMembership.objects.bulk_create(memberships, ignore_conflicts=True)
        print(f"  {min(start + batch, count):,} hosts", flush=True)


SOFTWARE_PER_HOST = 20


def populate_software(count: int) -> float | None:
    """1,000 titles with 2 versions each; every host gets ``SOFTWARE_PER_HOST`` of them (once).
    Returns the seconds of the host-count recount that follows, or ``None`` when already done."""
    from software import counts
    from software.models import HostSoftware, SoftwareTitle, SoftwareVersion, title_key, version_key

    if HostSoftware.objects.exists():
        return None
    titles = [
        SoftwareTitle(name=f"App {i:04d}", source="apps", key=title_key(f"App {i:04d}", "apps", "", ""))
        for i in range(1000)
    ]
    SoftwareTitle.objects.bulk_create(titles, ignore_conflicts=True)
    title_ids = dict(SoftwareTitle.objects.values_list("key", "id"))
    versions = [
        SoftwareVersion(title_id=title_ids[t.key], version=f"{v}.0", key=version_key(t.key, f"{v}.0"))
        for t in titles
        for v in (1, 2)
    ]
    SoftwareVersion.objects.bulk_create(versions, ignore_conflicts=True)
    version_ids = list(SoftwareVersion.objects.order_by("id").values_list("id", flat=True))
    host_ids = list(_host_ids())
    batch: list = []
    for n, host_id in enumerate(host_ids):
        for k in range(SOFTWARE_PER_HOST):
            batch.append(
                HostSoftware(host_id=host_id, version_id=version_ids[(n * 7 + k * 97) % len(version_ids)])
            )
        if len(batch) >= 20_000:
            HostSoftware.objects.bulk_create(batch, ignore_conflicts=True)
            batch = []
        if n and n % 20_000 == 0:
            print(f"  software for {n:,} hosts", flush=True)
    HostSoftware.objects.bulk_create(batch, ignore_conflicts=True)
    start = time.perf_counter()
    counts.recount()
    return time.perf_counter() - start


def _host_ids():
    from hosts.models import Host

    return Host.objects.order_by("id").values_list("id", flat=True).iterator(chunk_size=10_000)


def timed(client, url: str, runs: int, before=None) -> tuple[float, float, int]:
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    times, queries = [], 0
    for _ in range(runs):
        if before:
            before()
        reset_queries()
        with CaptureQueriesContext(connection) as captured:
            start = time.perf_counter()
            response = client.get(url)
            if response.streaming:
                b"".join(response.streaming_content)
            times.append(time.perf_counter() - start)
        assert response.status_code == 200, (url, response.status_code)
        queries = len(captured)
    return statistics.median(times), max(times), queries


def main() -> int:
    args = parse_args()
    configure(args)
    import django

    django.setup()
    ensure_database()
    print(f"filling {args.hosts:,} hosts (once)…", flush=True)
    populate(args.hosts)
    print(f"filling software ({SOFTWARE_PER_HOST} items per host, once)…", flush=True)
    first_recount = populate_software(args.hosts)
    from software import counts

    start = time.perf_counter()
    counts.recount()  # nothing changed since the last: the steady-state pass
    recount_seconds = time.perf_counter() - start
    print(
        f"software recount: {first_recount or 0:.1f} s first, {recount_seconds:.1f} s unchanged", flush=True
    )

    from django.contrib.auth import get_user_model
    from django.core.cache import cache
    from django.db import connection
    from django.test import Client

    from hosts.choices import Role
    from hosts.models import Host, Team, UserRole

    user_model = get_user_model()
    admin = user_model.objects.filter(username="bench-admin").first() or user_model.objects.create_superuser(
        "bench-admin", "b@example.com", "x"
    )
    observer = user_model.objects.filter(username="bench-team-observer").first()
    if observer is None:
        observer = user_model.objects.create_user("bench-team-observer", password="x")
        UserRole.objects.create(user=observer, team=Team.objects.get(name="Team 3"), role=Role.OBSERVER)
    host = Host.objects.order_by("id")[args.hosts // 2]
    admin_client, observer_client = Client(), Client()
    admin_client.force_login(admin)
    observer_client.force_login(observer)
    pages = [
        ("Dashboard, cold (one aggregation per cache period)", admin_client, "/admin/", cache.clear),
        ("Dashboard, warm (every other load)", admin_client, "/admin/", None),
        ("Dashboard, team observer, cold", observer_client, "/admin/", cache.clear),
        ("Host list, page 1", admin_client, "/admin/hosts/host/", None),
        (
            "Host list, online macOS, page 3",
            admin_client,
            "/admin/hosts/host/?status=online&platform=darwin&p=3",
            None,
        ),
        ("Host list, search by name", admin_client, "/admin/hosts/host/?q=host-04321", None),
        ("Host list, team observer", observer_client, "/admin/hosts/host/", None),
        ("Host page", admin_client, f"/admin/hosts/host/{host.pk}/change/", None),
        ("Software titles", admin_client, "/admin/software/softwaretitle/", None),
        ("Software titles, team observer", observer_client, "/admin/software/softwaretitle/", None),
        (
            "Host list, hosts with one software version",
            admin_client,
            "/admin/hosts/host/?software_version_id=5",
            None,
        ),
        ("REST: a host's software", admin_client, f"/api/v1/hosts/{host.pk}/software/", None),
        ("REST: software titles", admin_client, "/api/v1/software/?limit=100", None),
    ]
    rows = []
    admin_client.get("/admin/")  # warm-up: templates, caches
    for name, client, url, before in pages:
        median, worst, queries = timed(client, url, args.runs, before)
        rows.append((name, median, worst, queries))
        print(f"{name:55s} {median * 1000:8.1f} ms (worst {worst * 1000:.1f}), {queries} queries", flush=True)
    median, worst, queries = timed(admin_client, "/admin/hosts/host/export.csv", 1)
    rows.append((f"CSV export of all {args.hosts:,} hosts (streamed)", median, worst, queries))
    print(f"CSV export: {median:.2f} s", flush=True)

    engine = "MariaDB" if connection.vendor == "mysql" else "SQLite"
    record = {"hosts": args.hosts, "engine": engine, "runs": args.runs, "rows": rows}
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    record["software_recount_seconds"] = recount_seconds
    record["software_first_recount_seconds"] = first_recount or previous.get("software_first_recount_seconds")
    record["software_links"] = args.hosts * SOFTWARE_PER_HOST
    text = "\n".join(report_lines_from(record))
    print(text)
    if args.write:
        RESULTS.write_text(json.dumps(record, indent=1) + "\n")
        replace_section(text.split("\n"), ROOT / "docs" / "benchmarks.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
