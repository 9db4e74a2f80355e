"""``manage.py import_pack FILE.conf [--name NAME] [--dry-run] [--strict]``: import an osquery pack.

The pack is named after the file (``osx-attacks.conf`` -> ``osx-attacks``) unless ``--name``
says otherwise. Each query that cannot be imported is listed with the reason; the others are
imported (``--strict``: nothing is imported when anything is wrong).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from activities.context import as_command
from packs.management.commands.apply import read_source
from packs.osquery_packs import PackFileError, import_pack
from packs.spec import SpecError


class Command(BaseCommand):
    help = "Import an osquery pack file (JSON, as in osquery's packs/ directory) as a pack."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", metavar="FILE.conf", help="The osquery pack file; - reads stdin.")
        parser.add_argument("--name", help="The pack's name (default: the file name without extension).")
        parser.add_argument("--dry-run", action="store_true", help="Print what would change; change nothing.")
        parser.add_argument(
            "--strict", action="store_true", help="Import nothing if any query has a problem."
        )

    @as_command
    def handle(self, *args: Any, **options: Any) -> None:
        text, source = read_source(options["file"])
        name = options["name"] or (Path(options["file"]).stem if options["file"] != "-" else "")
        if not name:
            raise CommandError("Give the pack a name with --name.")
        try:
            pack, plan = import_pack(text, name, source, dry_run=options["dry_run"], strict=options["strict"])
        except PackFileError as exc:
            self._problems(exc.problems)
            raise CommandError(str(exc)) from None
        except SpecError as exc:
            raise CommandError(
                "\n".join(["Nothing was imported:", *(f"  {e}" for e in exc.errors)])
            ) from None
        self._problems(pack.problems)
        self.stdout.write(plan.render())
        imported = len(pack.queries)
        summary = f'Pack "{name}": {imported} of {pack.total} queries'
        if options["dry_run"]:
            self.stdout.write(
                self.style.WARNING(f"{summary} would be imported (dry run: nothing was changed).")
            )
        else:
            self.stdout.write(self.style.SUCCESS(f"{summary} imported."))

    def _problems(self, problems: list[str]) -> None:
        for problem in problems:
            self.stderr.write(self.style.WARNING(f"warning: {problem}"))
