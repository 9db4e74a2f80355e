"""``manage.py user``: add users, set their roles, list, deactivate and reactivate them.

::

    manage.py user add alice --email alice@example.com --role observer [--team Engineering]
                       [--name "Alice Doe"] [--password-stdin]
    manage.py user role alice --role maintainer [--team Engineering]
    manage.py user role alice --remove [--team Engineering]
    manage.py user list [--json]
    manage.py user deactivate alice | activate alice
    manage.py user password alice [--password-stdin]

Without ``--password-stdin`` a new user gets no usable password and the command prints a
one-time set-password link (valid ``PASSWORD_RESET_TIMEOUT``, three days), so no password ever
appears in a shell history or a process list; ``--password-stdin`` reads one line instead, for
scripts (``printf '%s\\n' "$PW" | manage.py user add ...``). Passwords meet the same validators as
in the console. Everything goes through ``users.services``: the last active global admin can be
neither demoted nor deactivated here either. ``user add`` gives one role (``user role`` adds more);
a user has one global role or roles on teams, never both.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from activities.context import as_command
from hosts.choices import Role
from hosts.models import Team, UserRole
from hosts.permissions import check_role_assignment
from users import services
from users.links import password_setup_link

_FIELD_NAMES = {"password": "Weak password", "roles": "Roles", "username": "Username", "email": "Email"}


def _error(exc: ValidationError) -> CommandError:
    """One readable message from a service error, field by field."""
    if hasattr(exc, "error_dict"):
        parts = [
            f"{_FIELD_NAMES.get(field, field.capitalize())}: {' '.join(messages)}"
            for field, messages in exc.message_dict.items()
        ]
        return CommandError("\n".join(parts))
    return CommandError(" ".join(exc.messages))


def _link_lifetime() -> str:
    hours = settings.PASSWORD_RESET_TIMEOUT / 3600
    return f"{hours / 24:g} days" if hours >= 48 else f"{hours:g} hours"


class Command(BaseCommand):
    help = "Add users, set their Fleet roles, list, deactivate or reactivate them."
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(
            dest="action", required=True, metavar="{add,role,list,deactivate,activate,password}"
        )
        add = actions.add_parser("add", help="Create a user with one role (global, or on --team).")
        add.add_argument("username")
        add.add_argument("--email", required=True)
        add.add_argument("--role", required=True, choices=Role.values)
        add.add_argument("--team", help="Give the role on this team (by name) instead of globally.")
        add.add_argument("--name", default="", help="Full name.")
        add.add_argument(
            "--password-stdin",
            action="store_true",
            help="Read the password from the first line of stdin (otherwise: print a set-password link).",
        )

        role = actions.add_parser("role", help="Set (or --remove) the global role, or the role on --team.")
        role.add_argument("username")
        role.add_argument("--role", choices=Role.values)
        role.add_argument("--team", help="The team (by name); without it, the global role.")
        role.add_argument(
            "--remove", action="store_true", help="Remove the role (on --team, or the global one)."
        )

        listing = actions.add_parser("list", help="List users with their roles.")
        listing.add_argument("--json", action="store_true", help="JSON instead of a table.")

        for name, text in (
            ("deactivate", "Stop a user logging in; revokes their API tokens and sessions."),
            ("activate", "Let a deactivated user log in again."),
        ):
            actions.add_parser(name, help=text).add_argument("username")

        password = actions.add_parser(
            "password", help="Set a user's password (or print a set-password link)."
        )
        password.add_argument("username")
        password.add_argument("--password-stdin", action="store_true", help="Read it from stdin.")

    @as_command  # activities recorded here have surface "command" and the operator's account name
    def handle(self, *args: Any, **options: Any) -> None:
        getattr(self, f"_{options['action']}")(options)

    # --- helpers ---
    def _user(self, username: str) -> Any:
        model = get_user_model()
        user = (
            model.objects.filter(username=username).first()
            or model.objects.filter(username__iexact=username).first()
        )
        if user is None:
            raise CommandError(f'No user named "{username}".')
        return user

    def _team(self, name: str) -> Team:
        team = Team.objects.filter(name=name).first() or Team.objects.filter(name__iexact=name).first()
        if team is None:
            known = ", ".join(Team.objects.order_by("name").values_list("name", flat=True)[:20]) or "none yet"
            raise CommandError(f'No team named "{name}" (teams: {known}).')
        return team

    def _read_password(self, options: dict[str, Any]) -> str:
        stream = options.get("stdin") or sys.stdin
        password = stream.readline().rstrip("\r\n")
        if not password:
            raise CommandError("No password on stdin (one line expected).")
        return password

    def _describe(self, user: Any) -> str:
        return services.describe_user_roles(user)

    # --- subcommands ---
    def _add(self, options: dict[str, Any]) -> None:
        team = self._team(options["team"]) if options["team"] else None
        password = self._read_password(options) if options["password_stdin"] else None
        try:
            user = services.create_user(
                options["username"],
                email=options["email"],
                name=options["name"],
                roles={team.pk if team else None: options["role"]},
                password=password,
            )
        except ValidationError as exc:
            raise _error(exc) from exc
        self.stdout.write(self.style.SUCCESS(f'Created user "{user.username}": {self._describe(user)}.'))
        if password is None:
            self.stdout.write(
                "They have no password yet. Send them this link to choose one "
                f"(it works once, for {_link_lifetime()}):\n" + password_setup_link(user)
            )

    def _role(self, options: dict[str, Any]) -> None:
        user = self._user(options["username"])
        team = self._team(options["team"]) if options["team"] else None
        current = services.role_map(user)
        key = team.pk if team else None
        if options["remove"]:
            if options["role"]:
                raise CommandError("Give either --role or --remove, not both.")
            if key not in current:
                where = f"on {team.name}" if team else "globally"
                raise CommandError(f'"{user.username}" has no role {where}.')
            roles: services.RoleMap = {}
        else:
            if not options["role"]:
                raise CommandError("--role is required (or --remove).")
            try:
                check_role_assignment([*(t for t in current if t != key), key])
            except ValidationError as exc:
                hint = (
                    "remove the global role first (`user role NAME --remove`)"
                    if team
                    else "remove the team roles first (`user role NAME --remove --team TEAM`)"
                )
                raise CommandError(f"{' '.join(exc.messages)} For {user.username}: {hint}.") from exc
            roles = {key: options["role"]}
        # Without --team the scope is everything: the pre-check above made sure that only the
        # global role is there to be replaced (a user has one global role or team roles).
        scope = {team.pk} if team else None
        try:
            services.set_roles(user, roles, scope=scope)
        except ValidationError as exc:
            raise _error(exc) from exc
        if user.is_superuser:
            self.stderr.write("Note: superusers are global admins whatever their roles.")
        self.stdout.write(self.style.SUCCESS(f'"{user.username}": {self._describe(user)}.'))

    def _list(self, options: dict[str, Any]) -> None:
        users = list(get_user_model().objects.order_by("username"))
        rows: dict[int, list[UserRole]] = {}
        for row in UserRole.objects.select_related("team").filter(user__in=users):
            rows.setdefault(row.user_id, []).append(row)
        if options["json"]:
            data = [
                {
                    "username": user.username,
                    "email": user.email,
                    "name": user.get_full_name(),
                    "active": user.is_active,
                    "superuser": user.is_superuser,
                    "global_role": next((r.role for r in rows.get(user.pk, []) if r.team_id is None), None),
                    "teams": sorted(
                        ({"team": r.team.name, "role": r.role} for r in rows.get(user.pk, []) if r.team_id),
                        key=lambda item: item["team"],
                    ),
                    "last_login": user.last_login.isoformat() if user.last_login else None,
                }
                for user in users
            ]
            self.stdout.write(json.dumps(data, indent=2))
            return
        if not users:
            self.stdout.write("No users.")
            return
        table = [
            (
                u.username,
                u.email,
                "yes" if u.is_active else "no",
                services.describe_rows(rows.get(u.pk, []), superuser=u.is_superuser),
            )
            for u in users
        ]
        widths = [
            max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(("USERNAME", "EMAIL", "ACTIVE"))
        ]
        header = ("USERNAME", "EMAIL", "ACTIVE", "ROLES")
        for line in [header, *table]:
            self.stdout.write(
                "  ".join(f"{cell:<{w}}" for cell, w in zip(line[:3], widths, strict=True)) + "  " + line[3]
            )

    def _deactivate(self, options: dict[str, Any]) -> None:
        user = self._user(options["username"])
        if not user.is_active:
            self.stdout.write(f'"{user.username}" is already deactivated.')
            return
        try:
            revoked = services.deactivate(user)
        except ValidationError as exc:
            raise _error(exc) from exc
        self.stdout.write(
            self.style.SUCCESS(
                f'Deactivated "{user.username}": {revoked.tokens} API token(s) and '
                f"{revoked.sessions} session(s) revoked."
            )
        )

    def _activate(self, options: dict[str, Any]) -> None:
        user = self._user(options["username"])
        if user.is_active:
            self.stdout.write(f'"{user.username}" is already active.')
            return
        services.activate(user)
        self.stdout.write(self.style.SUCCESS(f'Reactivated "{user.username}".'))

    def _password(self, options: dict[str, Any]) -> None:
        user = self._user(options["username"])
        if not options["password_stdin"]:
            self.stdout.write(
                f'Send "{user.username}" this link to choose a new password (it works once, for '
                f"{_link_lifetime()}; their current password keeps working until then):\n"
                + password_setup_link(user)
            )
            return
        try:
            revoked = services.set_password(user, self._read_password(options))
        except ValidationError as exc:
            raise _error(exc) from exc
        self.stdout.write(
            self.style.SUCCESS(f'Password of "{user.username}" set; {revoked} API token(s) revoked.')
        )
