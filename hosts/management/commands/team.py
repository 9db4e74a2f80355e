"""``manage.py team add NAME [--description TEXT]``, ``team list`` and ``team remove NAME``.

Teams are created through ``hosts.services`` (like the console and REST), so a new team gets an
enroll secret at once, printed here for the operator.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from activities.context import as_command
from activities.events import deleting
from hosts import services
from hosts.filters import with_host_counts
from hosts.models import Team


class Command(BaseCommand):
    help = "Add, list or remove teams."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{add,list,remove}")
        add = actions.add_parser("add", help="Create a team (with a new enroll secret).")
        add.add_argument("name")
        add.add_argument("--description", default="")
        actions.add_parser("list", help="List teams with their host counts.")
        remove = actions.add_parser("remove", help="Delete a team; its hosts move to no team.")
        remove.add_argument("name")

    @as_command
    def handle(self, *args: Any, **options: Any) -> None:
        getattr(self, f"_{options['action']}")(options)

    def _add(self, options: dict[str, Any]) -> None:
        try:
            team = services.create_team(options["name"], options["description"])
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        secret = team.secrets.first()
        self.stdout.write(self.style.SUCCESS(f'Created team "{team.name}" (id {team.pk}).'))
        if secret:
            self.stdout.write(f"Enroll secret: {secret.secret}")

    def _list(self, options: dict[str, Any]) -> None:
        teams = list(with_host_counts(Team.objects.order_by("name")))
        if not teams:
            self.stdout.write("No teams.")
            return
        width = max(len("NAME"), *(len(t.name) for t in teams))
        self.stdout.write(f"{'ID':>6}  {'NAME':<{width}}  {'HOSTS':>7}  DESCRIPTION")
        for team in teams:
            self.stdout.write(f"{team.pk:>6}  {team.name:<{width}}  {team.host_count:>7}  {team.description}")

    def _remove(self, options: dict[str, Any]) -> None:
        team = Team.objects.filter(name=options["name"]).first()
        if team is None:
            raise CommandError(f'No team named "{options["name"]}".')
        hosts = team.hosts.count()
        with deleting(Team.objects.filter(pk=team.pk)):
            team.delete()
        self.stdout.write(
            self.style.SUCCESS(
                f'Removed team "{team.name}"; {hosts} host(s) now have no team '
                "and its enroll secrets are gone."
            )
        )
