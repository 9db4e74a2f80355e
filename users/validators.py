"""Fleet's password rule that Django's stock validators lack: a number and a symbol.

Fleet requires passwords of 12 or more characters with at least one number and one symbol.
Django's ``MinimumLengthValidator(min_length=12)`` covers the length (``AUTH_PASSWORD_VALIDATORS``
in ``fleet/settings.py``); this validator covers the character classes. A symbol is any character
that is neither a letter, a digit nor white space, so ``é`` is a letter and ``€`` a symbol.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError


class FleetPasswordValidator:
    """At least one digit and one symbol (punctuation or any other non-alphanumeric character)."""

    def validate(self, password: str, user: Any = None) -> None:
        errors = []
        if not any(ch.isdigit() for ch in password):
            errors.append(
                ValidationError("This password must contain at least one number.", code="password_no_digit")
            )
        if not any(not ch.isalnum() and not ch.isspace() for ch in password):
            errors.append(
                ValidationError(
                    "This password must contain at least one symbol (such as ! ? # % - _).",
                    code="password_no_symbol",
                )
            )
        if errors:
            raise ValidationError(errors)

    def get_help_text(self) -> str:
        return "Your password must contain at least one number and one symbol."
