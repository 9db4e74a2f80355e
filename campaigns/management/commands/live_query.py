"""``manage.py live_query "SQL" [--hosts ...] [--labels ...] [--teams ...] [--all] [--timeout S]
[--format table|json|csv] [--user USERNAME]``: ask hosts a question and watch the answers arrive.

The campaign is started through ``campaigns.services`` (the same checks as REST and the console,
run as ``--user``, by default the first superuser). Answers reach whichever web process the agent
talks to and all of them write to the database, so the command polls the database for new
answers rather than listening on a channel: it works the same on the embedded default and in a
multi-process deployment.

Rows go to stdout as they arrive; progress, failures and the final summary go to stderr, so
``--format json`` or ``csv`` can be piped. The command exits once every target that was online at
the start answered, or at the timeout (the campaign keeps running: hosts that check in later still
answer it). The exit status is 1 if any host failed.
"""

from __future__ import annotations

import json
import time
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper

from activities.context import as_command
from campaigns import services
from campaigns.models import ACTIVE_STATUSES, Campaign, CampaignResult, ResultState
from fleet.csvsafe import SafeWriter

POLL_INTERVAL = 0.2
MAX_CELL_WIDTH = 60  # table cells wider than this are not padded beyond it (the line just runs on)


def _row_columns(rows: list[Any]) -> list[str]:
    columns: dict[str, None] = {}
    for row in rows:
        if isinstance(row, dict):
            columns.update(dict.fromkeys(row))
    return list(columns)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


class _Table:
    """Aligned columns; a new header whenever a host's columns differ from the last one printed."""

    def __init__(self, out: OutputWrapper) -> None:
        self.out = out
        self.columns: list[str] | None = None
        self.widths: list[int] = []

    def rows(self, result: CampaignResult, rows: list[dict[str, Any]]) -> None:
        columns = _row_columns(rows)
        if columns != self.columns:
            # Widths come from the first host with these columns; later hosts rarely differ much.
            header = ["HOST", *(c.upper() for c in columns)]
            cells = [[result.hostname, *(_text(row.get(c)) for c in columns)] for row in rows]
            self.widths = [
                min(MAX_CELL_WIDTH, max(len(line[i]) for line in [header, *cells]))
                for i in range(len(header))
            ]
            if self.columns is not None:
                self.out.write("")
            self.out.write(self._line(header))
            self.out.write(self._line(["-" * w for w in self.widths]))
            self.columns = columns
        for row in rows:
            self.out.write(self._line([result.hostname, *(_text(row.get(c)) for c in columns)]))

    def _line(self, cells: list[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, self.widths, strict=True)).rstrip()

    def failure(self, result: CampaignResult) -> None:
        """Failures are reported on stderr only; a table of rows has no place for them."""


class _JSONLines:
    """One object per line: ``{"host_id", "hostname", "row": {...}}``, or ``"error"`` for a failure.

    The row is nested rather than merged so a column called ``hostname`` (``system_info`` has one)
    cannot overwrite the host's.
    """

    def __init__(self, out: OutputWrapper) -> None:
        self.out = out

    def rows(self, result: CampaignResult, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.out.write(json.dumps({"host_id": result.host_id, "hostname": result.hostname, "row": row}))

    def failure(self, result: CampaignResult) -> None:
        self.out.write(
            json.dumps({"host_id": result.host_id, "hostname": result.hostname, "error": result.error})
        )


class _CSV:
    """``host_id,hostname,<columns>``, the header written once from the first host with rows.

    Rows stream, so the header cannot wait for every host's columns: a column a later host adds is
    left out, with a warning (``--format json`` keeps everything).
    """

    def __init__(self, out: OutputWrapper, err: OutputWrapper) -> None:
        self.out = out
        self.err = err
        self.writer = SafeWriter(out, lineterminator="\n")
        self.columns: list[str] | None = None
        self.dropped: set[str] = set()

    def rows(self, result: CampaignResult, rows: list[dict[str, Any]]) -> None:
        if self.columns is None:
            self.columns = _row_columns(rows)
            self.writer.writerow(["host_id", "hostname", *self.columns])
        extra = set(_row_columns(rows)) - set(self.columns) - self.dropped
        if extra:
            self.dropped |= extra
            self.err.write(
                f"warning: column(s) {', '.join(sorted(extra))} from {result.hostname} are not in the CSV "
                "header and are left out (use --format json to keep them)"
            )
        for row in rows:
            self.writer.writerow(
                [result.host_id, result.hostname, *(_text(row.get(c)) for c in self.columns)]
            )

    def failure(self, result: CampaignResult) -> None:
        """Failures are reported on stderr only, keeping the CSV one shape."""


class Command(BaseCommand):
    help = (
        "Run a live query on hosts and stream their rows as they arrive. Put the SQL first: "
        'live_query "SELECT * FROM os_version" --all'
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("sql", help="The osquery SQL to run.")
        parser.add_argument(
            "--hosts",
            nargs="+",
            action="extend",
            default=[],
            metavar="HOST",
            help="Host ids, hostnames, uuids or serials (space- or comma-separated).",
        )
        parser.add_argument("--labels", nargs="+", action="extend", default=[], metavar="LABEL")
        parser.add_argument(
            "--teams", nargs="+", action="extend", default=[], metavar="TEAM", help="Team ids or names."
        )
        parser.add_argument("--all", action="store_true", dest="all_hosts", help="Every host.")
        parser.add_argument(
            "--timeout",
            type=float,
            default=None,
            help="Seconds to wait for the online targets (default: LIVE_QUERY_REST_PERIOD, 25).",
        )
        parser.add_argument("--format", choices=["table", "json", "csv"], default="table")
        parser.add_argument("--user", help="Run as this user (default: the first superuser).")

    @as_command
    def handle(self, *args: Any, **options: Any) -> None:
        user = self._user(options["user"])
        timeout = options["timeout"]
        if timeout is None:
            timeout = settings.LIVE_QUERY["REST_PERIOD"]
        if timeout < 0:
            raise CommandError("--timeout must be zero or more seconds")
        targets = {
            "hosts": _items(options["hosts"]),
            "labels": _items(options["labels"]),
            "teams": _items(options["teams"]),
            "all": options["all_hosts"],
        }
        try:
            campaign = services.create_campaign(user, options["sql"], targets)
        except services.CampaignError as exc:
            raise CommandError(str(exc)) from None
        self.stderr.write(
            f"campaign {campaign.pk}: {campaign.targeted_count} host(s) targeted, "
            f"{campaign.online_count} online, {campaign.offline_count} offline"
        )
        if options["format"] == "json":
            output: _Table | _JSONLines | _CSV = _JSONLines(self.stdout)
        elif options["format"] == "csv":
            output = _CSV(self.stdout, self.stderr)
        else:
            output = _Table(self.stdout)
        try:
            finished, failed = self._follow(campaign, output, time.monotonic() + timeout)
        except KeyboardInterrupt:
            self.stderr.write(f"\ninterrupted; campaign {campaign.pk} keeps running ({_where(campaign)})")
            raise CommandError("interrupted", returncode=130) from None
        campaign.refresh_from_db()
        summary = services.status_summary(campaign)
        self.stderr.write(
            f"{summary['rows']} with rows, {summary['no_rows']} without, {summary['failed']} failed, "
            f"{summary['pending']} pending, {summary['offline']} offline"
        )
        if not finished:
            self.stderr.write(
                f"timed out after {timeout:g} s with "
                f"{summary['actual_results']}/{summary['expected_results']} answered; campaign {campaign.pk} "
                "keeps running, hosts that check in later still answer it "
                f"({_where(campaign)})"
            )
        if failed:
            raise CommandError(f"{failed} host(s) failed")

    def _user(self, username: str | None) -> Any:
        users = get_user_model().objects.filter(is_active=True)
        if username:
            user = users.filter(username=username).first()
            if user is None:
                raise CommandError(f"no active user named {username!r}")
            return user
        user = users.filter(is_superuser=True).order_by("pk").first()
        if user is None:
            raise CommandError(
                "no superuser to run as: create one (manage.py createsuperuser) or pass --user"
            )
        return user

    def _follow(
        self, campaign: Campaign, output: _Table | _JSONLines | _CSV, deadline: float
    ) -> tuple[bool, int]:
        """Print answers until every online target answered or the deadline: ``(finished, failed)``.

        New answers are read by id. Ids are assigned at insert but become visible at commit, so on
        a database with concurrent writers a lower id can appear after a higher one was read; the
        answer count catches that and the stragglers are fetched by what is missing.
        """
        answers = CampaignResult.objects.filter(campaign=campaign).order_by("id")
        seen: set[int] = set()
        offline_at_start = set(campaign.offline_host_ids)
        online_answered: set[int] = set()
        last_id = failed = 0
        reported = -1
        while True:
            status = Campaign.objects.filter(pk=campaign.pk).values_list("status", flat=True).first()
            batch = list(answers.filter(id__gt=last_id))
            if answers.count() > len(seen) + len(batch):
                missing = set(answers.values_list("id", flat=True)) - seen - {r.id for r in batch}
                batch += list(answers.filter(id__in=sorted(missing)))
            for result in batch:
                seen.add(result.id)
                if result.host_id not in offline_at_start:
                    online_answered.add(result.host_id)
                last_id = max(last_id, result.id)
                failed += self._emit(result, output)
            self.stdout.flush()
            if len(seen) != reported:
                reported = len(seen)
                self.stderr.write(f"answered {reported}/expected {campaign.online_count}")
            # Done when every host online at the start answered (offline ones answering early
            # do not count towards that), or the campaign ended.
            if status not in ACTIVE_STATUSES or len(online_answered) >= campaign.online_count:
                return True, failed
            left = deadline - time.monotonic()
            if left <= 0:
                return False, failed
            time.sleep(min(POLL_INTERVAL, left))

    def _emit(self, result: CampaignResult, output: _Table | _JSONLines | _CSV) -> int:
        if result.state == ResultState.FAILED:
            self.stderr.write(f"{result.hostname or result.host_id} failed: {result.error}")
            output.failure(result)
            return 1
        rows = [row for row in result.rows or [] if isinstance(row, dict)]
        if rows:
            output.rows(result, rows)
        return 0


def _items(values: list[str]) -> list[int | str]:
    """``--hosts a,b c`` -> ``["a", "b", "c"]``; numbers become ids (ints), as REST clients send them."""
    items: list[int | str] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if part:
                items.append(int(part) if part.isdigit() else part)
    return items


def _where(campaign: Campaign) -> str:
    return (
        f"results: /api/v1/campaigns/{campaign.pk}/results/, stop: POST /api/v1/campaigns/{campaign.pk}/stop/"
    )
