"""``manage.py run_script``: run a script on hosts from the shell, and optionally wait for the results.

    run_script --host web-1 --host 42 --file fix.sh --wait 120
    run_script --label "Ubuntu Linux" --script-name patch.sh --script-team Servers
    run_script --team Servers --contents 'uptime'
    run_script --cancel 6f1c...-execution-id

Targets are the union of ``--host`` (id, name, hostname, UUID or serial), ``--label`` and
``--team``; the script is a saved one (``--script-id``, ``--script-name`` with ``--script-team``)
or contents (``--file``, ``--contents``). Queueing goes through ``hostscripts.services`` like the
console and REST, so the same hosts are skipped for the same reasons (printed on stderr).

Who acts: with ``--user`` that Fleet user, whose role limits the hosts (as in the console); without
it the operator (the OS account running the command), who has the server's shell and so every
host. Either way the activities say the command did it, naming the operator.

``--wait S`` polls the database (results reach whichever web process the host talks to) and
prints each host's output and exit code as they arrive. Exit status: 0 when every run succeeded
(or, without ``--wait``, was queued), 1 when a run failed or a host was skipped, 2 when some host
had not answered by the deadline (its run stays queued).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from activities.context import command_surface, operator_name
from hosts.identifiers import match_hosts
from hosts.models import Host, Label, Team
from hostscripts import access, messages, services, targets
from hostscripts.models import Script, ScriptRun
from hostscripts.validation import MAX_ADHOC_CHARS

TIMED_OUT = 2


class Command(BaseCommand):
    help = "Run a script on hosts (saved, from a file or typed), optionally waiting for the results."

    def add_arguments(self, parser: CommandParser) -> None:
        where = parser.add_argument_group("targets (their union)")
        where.add_argument(
            "--host",
            action="append",
            default=[],
            metavar="ID_OR_NAME",
            help="A host id, name, hostname, UUID or serial (repeatable).",
        )
        where.add_argument(
            "--label", action="append", default=[], metavar="NAME", help="A label (repeatable)."
        )
        where.add_argument("--team", metavar="NAME", help="Every host of this team (name or id).")
        what = parser.add_mutually_exclusive_group()
        what.add_argument("--script-id", type=int, metavar="N", help="A saved script, by id.")
        what.add_argument(
            "--script-name", metavar="NAME", help="A saved script, by name (see --script-team)."
        )
        what.add_argument("--file", metavar="PATH", help="Run this file's contents (not saved).")
        what.add_argument("--contents", metavar="TEXT", help="Run this text (not saved).")
        what.add_argument("--cancel", metavar="EXECUTION_ID", help="Cancel a pending run instead.")
        parser.add_argument(
            "--script-team", metavar="TEAM", help="With --script-name: the team's library (default: global)."
        )
        parser.add_argument(
            "--wait", type=float, metavar="SECONDS", help="Wait up to this long and print the results."
        )
        parser.add_argument(
            "--user", metavar="USERNAME", help="Act as this Fleet user (default: the operator)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user = self._user(options["user"])
        with command_surface(user):
            if options["cancel"]:
                self._cancel(user, options["cancel"])
                return
            self._run(user, options)

    # --- who, where, what -------------------------------------------------------------------------
    def _user(self, username: str | None) -> Any:
        if not username:
            return None
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise CommandError(f"no active user named {username!r}")
        return user

    def _hosts(self, user: Any, options: dict[str, Any]) -> tuple[Any, list[int]]:
        """The targets' queryset and the hosts named by --host (for "unknown host" reports)."""
        if not (options["host"] or options["label"] or options["team"]):
            raise CommandError("give the targets: --host, --label or --team")
        scope = Host.objects.all() if user is None else access.visible_hosts(user)
        named: set[int] = set()
        if options["host"]:
            named, missing = match_hosts(options["host"], scope)
            if missing:
                raise CommandError(f"no host matches {', '.join(missing)}")
        label_ids = []
        for name in options["label"]:
            label = Label.objects.filter(name=name).first()
            if label is None:
                raise CommandError(f"no label named {name!r}")
            label_ids.append(label.pk)
        team_id = self._team(options["team"]).pk if options["team"] else None
        queryset = targets.target_queryset(host_ids=named, label_ids=label_ids, team_id=team_id)
        return queryset, sorted(named)

    def _team(self, name: str) -> Team:
        team = Team.objects.filter(name=name).first()
        if team is None and name.isascii() and name.isdigit():
            team = Team.objects.filter(pk=int(name)).first()
        if team is None:
            raise CommandError(f"no team named {name!r}")
        return team

    def _script(self, user: Any, options: dict[str, Any]) -> dict[str, Any]:
        """``queue_runs`` keywords for the chosen script: ``script=``, or ``contents=`` (+ ``name=``)."""
        scripts = (
            Script.objects.all() if user is None else access.readable_scripts(Script.objects.all(), user)
        )
        if options["script_id"] is not None:
            script = scripts.filter(pk=options["script_id"]).first()
            if script is None:
                raise CommandError(f"no script with id {options['script_id']}")
            return {"script": script}
        if options["script_name"]:
            team = self._team(options["script_team"]) if options["script_team"] else None
            script = scripts.filter(name=options["script_name"], team=team).first()
            if script is None:
                where = f"team {team.name!r}" if team else "the global library"
                raise CommandError(f"no script named {options['script_name']!r} in {where}")
            return {"script": script}
        if options["script_team"]:
            raise CommandError("--script-team goes with --script-name")
        if options["file"]:
            return self._file(Path(options["file"]))
        if options["contents"] is not None:
            return {"contents": options["contents"]}
        raise CommandError("give the script: --script-id, --script-name, --file or --contents")

    def _file(self, path: Path) -> dict[str, Any]:
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_ADHOC_CHARS * 4 + 1)
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from None
        try:
            contents = data.decode("utf-8")
        except UnicodeDecodeError:
            raise CommandError(f"{path} is not UTF-8 text") from None
        run: dict[str, Any] = {"contents": contents}
        if path.suffix.lower() in (".sh", ".ps1"):
            run["name"] = path.name  # decides the platforms, as a saved script's name does
        return run

    # --- running -------------------------------------------------------------------------------------
    def _run(self, user: Any, options: dict[str, Any]) -> None:
        wait = options["wait"]
        if wait is not None and wait < 0:
            raise CommandError("--wait must be zero or more seconds")
        queryset, named = self._hosts(user, options)
        run = self._script(user, options)
        actor = user if user is not None else operator_name()
        try:
            chosen = targets.resolve(user, queryset, named_ids=named)
            result = targets.queue_on_targets(chosen, user=actor, **run)
        except services.ScriptError as exc:
            raise CommandError(exc.message) from None
        for queued in result.runs:
            self.stdout.write(
                f"queued {queued.script_name} on {queued.host.display_name}: {queued.execution_id}"
            )
        skipped = sum(len(ids) for ids in result.skipped.values())
        for reason, host_ids in result.skipped.items():
            self.stderr.write(f"skipped {len(host_ids)} host(s) ({_ids(host_ids)}): {reason}")
        if not result.runs:
            raise CommandError("no host can run this script")
        failed = pending = 0
        if wait is not None:
            failed, pending = self._wait(result.runs, wait)
        if failed or skipped:
            raise CommandError(f"{failed} run(s) failed, {skipped} host(s) skipped")
        if pending:
            raise CommandError(
                f"{pending} host(s) did not answer within {wait:g} s; their runs stay queued",
                returncode=TIMED_OUT,
            )

    def _wait(self, runs: list[ScriptRun], seconds: float) -> tuple[int, int]:
        """Print each result as it arrives; ``(failed, still pending)`` at the end."""
        deadline = time.monotonic() + seconds
        waiting = {run.pk for run in runs}
        failed = 0
        while True:
            done = ScriptRun.objects.filter(pk__in=waiting).exclude(exit_code__isnull=True, cancelled=False)
            for run in done.select_related("host"):
                waiting.discard(run.pk)
                failed += run.status != "ran"
                self._print_result(run)
            left = deadline - time.monotonic()
            if not waiting or left <= 0:
                return failed, len(waiting)
            time.sleep(min(settings.SCRIPTS["SYNC_POLL_INTERVAL"], left))

    def _print_result(self, run: ScriptRun) -> None:
        code = "cancelled" if run.cancelled else f"exit code {run.exit_code}"
        self.stdout.write(f"== {run.host.display_name}: {code}, {run.runtime} s ==")
        if run.output:
            self.stdout.write(run.output.rstrip("\n"))
        message = messages.result_message(run)
        if message:
            self.stdout.write(message)

    def _cancel(self, user: Any, execution_id: str) -> None:
        runs = ScriptRun.objects.select_related("host")
        if user is not None:
            runs = access.visible_runs(runs, user)
        run = runs.filter(execution_id=execution_id).first()
        if run is None:
            raise CommandError(f"no run with execution id {execution_id!r}")
        if user is not None and not access.may_run_on(user, run.host):
            raise CommandError("your role does not allow cancelling runs on this host")
        if not services.cancel_run(run, user=user):
            raise CommandError("this run already has a result (or was cancelled)")
        self.stdout.write(f"cancelled {run.script_name} on {run.host.display_name}")


def _ids(host_ids: list[int], shown: int = 10) -> str:
    ids = sorted(host_ids)
    text = ", ".join(map(str, ids[:shown]))
    return f"ids {text}{', ...' if len(ids) > shown else ''}"
