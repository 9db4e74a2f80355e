"""``manage.py enroll_secret add [SECRET] [--team NAME]``, ``enroll_secret list`` and ``remove``.

Checks go through ``hosts.services.validate_enroll_secret`` (uniqueness, 50 per scope), the same
as the console and REST API. ``list`` prints the values: the command runs with the server's own
database credentials, so whoever can run it is an operator who could read them anyway (the
console and REST API show them only to admins and maintainers of their scope).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from activities.context import as_command
from activities.events import deleting
from hosts import services
from hosts.models import EnrollSecret, Team


def _team(name: str | None) -> Team | None:
    if name is None:
        return None
    team = Team.objects.filter(name=name).first()
    if team is None:
        raise CommandError(f'No team named "{name}". See `manage.py team list`.')
    return team


class Command(BaseCommand):
    help = "Add, list or remove enroll secrets (the secrets osquery presents to enroll)."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{add,list,remove}")
        add = actions.add_parser("add", help="Add a secret (a random one when SECRET is left out).")
        add.add_argument("secret", nargs="?", help="The secret; left out: a random 24-character one.")
        add.add_argument("--team", help="Team whose hosts enroll with it (default: no team).")
        listing = actions.add_parser("list", help="List secrets with their team and creation time.")
        listing.add_argument("--team", help="Only this team's secrets.")
        remove = actions.add_parser("remove", help="Remove a secret; enrolled hosts stay enrolled.")
        remove.add_argument("secret")

    @as_command
    def handle(self, *args: Any, **options: Any) -> None:
        getattr(self, f"_{options['action']}")(options)

    def _add(self, options: dict[str, Any]) -> None:
        team = _team(options["team"])
        try:
            secret = services.add_enroll_secret(options["secret"], team)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        scope = f'team "{team.name}"' if team else "no team (global)"
        self.stdout.write(self.style.SUCCESS(f"Added enroll secret for {scope}:"))
        self.stdout.write(secret.secret)

    def _list(self, options: dict[str, Any]) -> None:
        secrets = EnrollSecret.objects.select_related("team").order_by("team__name", "created_at")
        if options["team"] is not None:
            secrets = secrets.filter(team=_team(options["team"]))
        rows = [
            (s.secret, s.team.name if s.team_id else "(global)", f"{s.created_at:%Y-%m-%d %H:%M:%S}")
            for s in secrets
        ]
        if not rows:
            self.stdout.write("No enroll secrets.")
            return
        widths = [
            max(len(header), *(len(row[i]) for row in rows)) for i, header in enumerate(("SECRET", "TEAM"))
        ]
        self.stdout.write(f"{'SECRET':<{widths[0]}}  {'TEAM':<{widths[1]}}  CREATED (UTC)")
        for secret, team, created in rows:
            self.stdout.write(f"{secret:<{widths[0]}}  {team:<{widths[1]}}  {created}")

    def _remove(self, options: dict[str, Any]) -> None:
        with deleting(EnrollSecret.objects.filter(secret=options["secret"])):
            deleted, _ = EnrollSecret.objects.filter(secret=options["secret"]).delete()
        if not deleted:
            raise CommandError("No such enroll secret.")
        self.stdout.write(self.style.SUCCESS("Removed the enroll secret; new hosts can no longer use it."))
