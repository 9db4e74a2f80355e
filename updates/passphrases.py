"""Where the signing keys' passphrases come from: Fleet's variables first, then a prompt.

``fleetctl updates`` reads ``FLEET_ROOT_PASSPHRASE``, ``FLEET_TARGETS_PASSPHRASE``,
``FLEET_SNAPSHOT_PASSPHRASE`` and ``FLEET_TIMESTAMP_PASSPHRASE`` and asks on the terminal for any
that is missing; so do we (also from ``NAME_FILE``, as every secret here). Without a terminal a
missing one is an error that names the variable, never a hang on a prompt nobody sees.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable

from fleet.env import secret
from updates.keys import ROLES


class MissingPassphrase(Exception):
    pass


def variable_for(role: str) -> str:
    return f"FLEET_{role.upper()}_PASSPHRASE"


def from_environment(role: str) -> str | None:
    """The role's passphrase from ``FLEET_<ROLE>_PASSPHRASE(_FILE)``, or ``None``."""
    value = secret(variable_for(role))
    return value or None


class PassphraseSource:
    """Callable ``role -> passphrase`` for ``UpdateRepository``; remembers where each came from.

    ``interactive``: ask on the terminal (with ``getpass``) for passphrases not in the
    environment. ``confirm``: ask twice (new keys), so a typo does not lock the key away.
    """

    def __init__(
        self,
        *,
        interactive: bool,
        confirm: bool = False,
        ask: Callable[[str], str] = getpass.getpass,
    ) -> None:
        self.interactive = interactive
        self.confirm = confirm
        self._ask = ask
        self.from_env: set[str] = set()

    def __call__(self, role: str) -> str:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        value = from_environment(role)
        if value is not None:
            self.from_env.add(role)
            return value
        if not self.interactive:
            raise MissingPassphrase(
                f"the {role} key's passphrase is needed: set {variable_for(role)} "
                f"(or {variable_for(role)}_FILE), or run the command in a terminal to be asked for it"
            )
        value = self._ask(f"{role} key passphrase: ")
        if self.confirm and self._ask(f"Repeat the {role} key passphrase: ") != value:
            raise MissingPassphrase(f"the two {role} passphrases differ")
        if not value:
            raise MissingPassphrase(f"the {role} passphrase must not be empty")
        return value

    def describe(self, role: str) -> str:
        """Where the role's passphrase came from, for error messages."""
        return f" (from {variable_for(role)})" if role in self.from_env else ""
