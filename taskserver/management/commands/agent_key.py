"""``manage.py agent_key``: the keys task agents connect with.

    agent_key add [NAME] [--team TEAM]   # prints the new key, this once
    agent_key list [--team TEAM]
    agent_key remove NAME [--team TEAM]

``--team`` is a team's name or id; without it the key is global (its agents run global tasks).
The server keeps only a digest of each key: a lost key is removed and replaced, never shown again.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from activities.context import command_surface
from hosts.models import Team
from taskserver import services
from taskserver.models import AgentKey


def find_team(value: str | None) -> Team | None:
    if not value:
        return None
    team = Team.objects.filter(name=value).first()
    if team is None and value.isdigit():
        team = Team.objects.filter(pk=int(value)).first()
    if team is None:
        raise CommandError(f"No team named {value!r}.")
    return team


class Command(BaseCommand):
    help = "Add, list or remove the keys task agents connect with (a new key is printed once)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="Create a key and print it (this once).")
        add.add_argument("name", nargs="?", help="Default: key-<date and time>.")
        add.add_argument("--team", help="A team's name or id (default: global).")
        listing = sub.add_parser("list", help="List the keys (never the keys themselves).")
        listing.add_argument("--team", help="Only this team's keys.")
        remove = sub.add_parser("remove", help="Delete a key: agents using it can no longer connect.")
        remove.add_argument("name")
        remove.add_argument("--team", help="The key's team (default: global).")

    def handle(self, *args: Any, **options: Any) -> None:
        team = find_team(options.get("team"))
        with command_surface():
            getattr(self, f"_{options['action']}")(team, options)

    def _add(self, team: Team | None, options: dict[str, Any]) -> None:
        try:
            name = options["name"] or f"key-{timezone.now():%Y%m%d-%H%M%S}"
            key, raw = services.create_agent_key(name=name, team_id=team.pk if team else None)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        except services.NameTaken as exc:
            raise CommandError(exc.message) from None
        self.stderr.write(f"Agent key {key.name!r} ({team.name if team else 'global'}); shown this once:")
        self.stdout.write(raw)

    def _list(self, team: Team | None, options: dict[str, Any]) -> None:
        keys = AgentKey.objects.select_related("team")
        if team is not None:
            keys = keys.filter(team=team)
        for key in keys:
            used = key.last_used_at.isoformat(timespec="seconds") if key.last_used_at else "never used"
            scope = key.team.name if key.team_id else "global"
            self.stdout.write(f"{key.name}\t{scope}\tcreated {key.created_at:%Y-%m-%d}\t{used}")

    def _remove(self, team: Team | None, options: dict[str, Any]) -> None:
        key = AgentKey.objects.filter(scope=team.pk if team else 0, name=options["name"]).first()
        if key is None:
            where = f"team {team.name}" if team else "the global keys"
            raise CommandError(f"No agent key named {options['name']!r} in {where}.")
        services.delete_agent_key(key)
        self.stdout.write(f"Removed agent key {key.name!r}.")
