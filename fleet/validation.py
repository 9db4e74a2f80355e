"""Collecting validation errors field by field, so a form or API reports every problem at once."""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import ValidationError


class FieldErrors:
    """``check(field, fn)`` runs ``fn`` and files its ``ValidationError`` under ``field``."""

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def check(self, field: str, call: Callable[[], object]) -> None:
        try:
            call()
        except ValidationError as exc:
            self.add(field, *exc.messages)

    def add(self, field: str, *messages: str) -> None:
        self.errors.setdefault(field, []).extend(messages)

    def raise_if_any(self) -> None:
        if self.errors:
            raise ValidationError(self.errors)
