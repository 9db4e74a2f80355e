"""``manage.py export [-o FILE]``: write the configuration as Fleet YAML specs.

Applying the output (``manage.py apply -f FILE``) to an empty database recreates the same
queries, labels, packs, teams, enroll secrets and agent options. It contains enroll secrets:
keep the file as private as the secrets themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from packs.spec.export import dump_yaml, export_documents


class Command(BaseCommand):
    help = (
        "Export queries, labels, packs, teams, enroll secrets, agent options, tasks and metric "
        "destinations as YAML."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("-o", "--output", metavar="FILE", help="Write here instead of stdout.")

    def handle(self, *args: Any, **options: Any) -> None:
        documents = export_documents()
        text = dump_yaml(documents)
        if not options["output"]:
            self.stdout.write(text, ending="")
            return
        try:
            Path(options["output"]).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"{options['output']}: {exc.strerror or exc}") from None
        self.stderr.write(f"Wrote {len(documents)} documents to {options['output']}.")
