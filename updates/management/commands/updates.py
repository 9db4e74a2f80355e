"""``manage.py updates``: keep the agent-update (TUF) repository, as ``fleetctl updates`` does.

    updates init                       generate the four signing keys, commit empty metadata
    updates add --target FILE --name orbit --platform linux --version 1.15.1 -t 1.15 -t 1 -t stable
    updates timestamp                  re-sign timestamp.json (valid 14 days)
    updates roots                      print root.json, for `fleetctl package --update-roots`
    updates list                       the targets with their versions, and the metadata expiries
    updates change-passphrase ROLE     re-seal one key under a new passphrase

Passphrases come from ``FLEET_<ROLE>_PASSPHRASE`` or a prompt (``updates.passphrases``).
``--path DIR`` works on ``DIR/keys`` and ``DIR/repository`` instead of the configured ones, for
an operator who signs on another machine and uploads the repository. Every failure is one
line of explanation (``CommandError``), never a traceback.
"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from activities import recording
from activities.context import as_command
from fleet.env import secret
from updates import keys
from updates.naming import COMPONENTS, PLATFORMS
from updates.passphrases import MissingPassphrase, PassphraseSource, variable_for
from updates.repository import NewTarget, RepositoryError, UpdateRepository


def _size(length: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if length < 1024:
            return f"{length} {unit}" if unit == "B" else f"{length:.1f} {unit}"
        length /= 1024  # type: ignore[assignment]
    return f"{length:.1f} GiB"


class Command(BaseCommand):
    help = "Keep the TUF repository that orbit updates itself, osqueryd and Fleet Desktop from."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(
            dest="action", required=True, metavar="{init,add,timestamp,roots,list,change-passphrase}"
        )
        parsers = {
            "init": actions.add_parser("init", help="Generate the signing keys and empty signed metadata."),
            "add": actions.add_parser("add", help="Publish a file; re-sign targets, snapshot and timestamp."),
            "timestamp": actions.add_parser("timestamp", help="Re-sign timestamp.json (valid 14 days)."),
            "roots": actions.add_parser(
                "roots", help="Print root.json (for fleetctl package --update-roots)."
            ),
            "list": actions.add_parser("list", help="List targets and metadata expiries."),
            "change-passphrase": actions.add_parser(
                "change-passphrase", help="Re-seal one signing key under a new passphrase."
            ),
        }
        for sub in parsers.values():
            sub.add_argument(
                "--path",
                type=Path,
                help="Repository root holding keys/ and repository/ (default: the AGENT_UPDATES settings).",
            )
        add = parsers["add"]
        add.add_argument("--target", required=True, type=Path, help="The file to publish.")
        add.add_argument("--name", required=True, help=f"Component: {', '.join(COMPONENTS)}.")
        add.add_argument("--platform", required=True, help=f"Platform: {', '.join(PLATFORMS)}.")
        add.add_argument("--version", required=True, help="Its version (also published as a channel).")
        add.add_argument(
            "-t", "--tag", action="append", default=[], dest="tags", help="A channel to publish it in too."
        )
        parsers["change-passphrase"].add_argument("role", choices=keys.ROLES)

    @as_command
    def handle(self, *args: Any, **options: Any) -> None:
        self.passphrases = PassphraseSource(
            interactive=sys.stdin.isatty(), confirm=options["action"] == "init"
        )
        repository = self._repository(options["path"])
        action = options["action"].replace("-", "_")
        try:
            getattr(self, f"_{action}")(repository, options)
        except keys.WrongPassphrase as exc:
            raise CommandError(f"{exc}{self.passphrases.describe(exc.role)}") from None
        except (RepositoryError, keys.KeyFileError, MissingPassphrase, ValueError) as exc:
            raise CommandError(str(exc)) from None
        except OSError as exc:
            raise CommandError(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from None

    def _repository(self, path: Path | None) -> UpdateRepository:
        repository = UpdateRepository.from_settings()
        if path is not None:
            repository.repository_dir = path / "repository"
            repository.keys_dir = path / "keys"
        return repository

    # --- actions ---------------------------------------------------------------------------------
    def _init(self, repository: UpdateRepository, options: dict[str, Any]) -> None:
        key_ids = repository.init(self.passphrases)
        recording.record("initialised_update_repository", details={"key_ids": key_ids})
        for role, key_id in key_ids.items():
            self.stdout.write(f"Generated {role} key with ID: {key_id}")
        self.stdout.write(
            self.style.SUCCESS(f"Initialised the update repository in {repository.repository_dir}.")
        )
        self.stdout.write(
            f"Keys are in {repository.keys_dir} (keep them and their passphrases safe, away from the "
            "server: it needs only the timestamp key). Next: `manage.py updates add`, then "
            "`manage.py updates roots` for `fleetctl package --update-roots`."
        )

    def _add(self, repository: UpdateRepository, options: dict[str, Any]) -> None:
        target = NewTarget(
            name=options["name"],
            platform=options["platform"],
            version=options["version"],
            tags=tuple(options["tags"]),
            source=options["target"],
        )
        target.validate()  # bad input is reported before any passphrase is asked for
        paths = repository.add_targets([target], self.passphrases)
        recording.record(
            "published_agent_update",
            object_type="update_target",
            object_name=f"{target.name}/{target.platform}",
            details={
                "name": target.name,
                "platform": target.platform,
                "version": target.version,
                "paths": paths,
            },
        )
        self.stdout.write(self.style.SUCCESS(f"Added {target.name} {target.version} for {target.platform}:"))
        for path in paths:
            self.stdout.write(f"  targets/{path}")

    def _timestamp(self, repository: UpdateRepository, options: dict[str, Any]) -> None:
        status = repository.refresh_timestamp(self.passphrases)
        self.stdout.write(
            self.style.SUCCESS(
                f"Signed timestamp version {status.version}, valid until {status.expires:%Y-%m-%d %H:%M} UTC."
            )
        )

    def _roots(self, repository: UpdateRepository, options: dict[str, Any]) -> None:
        self.stdout.write(repository.root_bytes().decode().strip())

    def _list(self, repository: UpdateRepository, options: dict[str, Any]) -> None:
        entries = repository.targets()
        if not entries:
            self.stdout.write("No targets yet: add one with `manage.py updates add`.")
        else:
            header = ("NAME", "PLATFORM", "CHANNEL", "VERSION", "SIZE", "SHA256")
            rows = [
                (e.name, e.platform, e.channel, e.version, _size(e.length), e.sha256[:12]) for e in entries
            ]
            widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
            for row in [header, *rows]:
                cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)]
                self.stdout.write("  ".join(cells).rstrip())
        self.stdout.write("")
        for status in repository.roles():
            self.stdout.write(
                f"{status.role}.json: version {status.version}, expires {status.expires:%Y-%m-%d %H:%M} UTC"
            )

    def _change_passphrase(self, repository: UpdateRepository, options: dict[str, Any]) -> None:
        role = options["role"]
        old = self.passphrases(role)
        variable = f"FLEET_NEW_{role.upper()}_PASSPHRASE"
        new = secret(variable)
        if not new and self.passphrases.interactive:
            new = getpass.getpass(f"New {role} key passphrase: ")
            if getpass.getpass(f"Repeat the new {role} key passphrase: ") != new:
                raise CommandError(f"the two new {role} passphrases differ")
        if not new:
            raise CommandError(
                f"the new {role} passphrase is needed: set {variable}, or run the command in a terminal"
            )
        repository.change_passphrase(role, old, new)
        self.stdout.write(
            self.style.SUCCESS(
                f"The {role} key is now sealed with the new passphrase; update {variable_for(role)} "
                "wherever it is set."
            )
        )
