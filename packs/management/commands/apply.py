"""``manage.py apply -f FILE [-f FILE ...] [--dry-run]``: apply Fleet YAML specs (``-`` reads stdin).

All files form one apply: a pack in one file may use a query from another. Every document is
checked first; if any has an error, the errors are listed (file, document number, kind, name)
and nothing is applied. ``--dry-run`` prints the plan and changes nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from activities.context import as_command
from packs.spec import SpecError, SpecSyntaxError, apply_documents, parse_yaml


def read_source(name: str) -> tuple[str, str]:
    """(text, name to show) of a file, or of stdin for ``-``."""
    if name == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        return Path(name).read_text(encoding="utf-8"), name
    except OSError as exc:
        raise CommandError(f"{name}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CommandError(f"{name}: not UTF-8 text") from None


class Command(BaseCommand):
    help = (
        "Apply YAML specs (queries, labels, packs, teams, enroll secrets, agent options, tasks, "
        "metric destinations)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "-f",
            "--file",
            dest="files",
            action="append",
            required=True,
            metavar="FILE",
            help="A YAML file of spec documents; repeat for several; - reads stdin.",
        )
        parser.add_argument("--dry-run", action="store_true", help="Print what would change; change nothing.")

    @as_command
    def handle(self, *args: Any, **options: Any) -> None:
        documents = []
        for name in options["files"]:
            text, shown = read_source(name)
            try:
                documents.extend(parse_yaml(text, shown))
            except SpecSyntaxError as exc:
                raise CommandError(f"{exc} Nothing was applied.") from None
        if not documents:
            raise CommandError("No spec documents found; nothing to apply.")
        try:
            plan = apply_documents(documents, dry_run=options["dry_run"])
        except SpecError as exc:
            lines = [f"{len(exc.errors)} error(s); nothing was applied:", *(f"  {e}" for e in exc.errors)]
            raise CommandError("\n".join(lines)) from None
        self.stdout.write(plan.render())
        if options["dry_run"]:
            self.stdout.write(self.style.WARNING("Dry run: nothing was changed."))
        else:
            self.stdout.write(self.style.SUCCESS("Applied."))
