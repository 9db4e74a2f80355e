"""What an apply would do: one :class:`Change` per object, plus skipped documents and warnings.

The same object is printed by ``manage.py apply --dry-run``, returned by ``POST /api/v1/spec/``
and, without ``dry_run``, carried out by :mod:`packs.spec.engine`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CREATE, UPDATE, UNCHANGED, DELETE = "create", "update", "unchanged", "delete"
ACTIONS = (CREATE, UPDATE, DELETE, UNCHANGED)


@dataclass
class Change:
    kind: str
    name: str
    action: str
    source: str = ""
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # field -> (old, new)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "name": self.name, "action": self.action}
        if self.source:
            data["source"] = self.source
        if self.fields:
            data["fields"] = {key: {"old": old, "new": new} for key, (old, new) in self.fields.items()}
        if self.notes:
            data["notes"] = list(self.notes)
        return data


@dataclass
class Skipped:
    kind: str
    name: str
    source: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "source": self.source, "reason": self.reason}


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    steps: list[Callable[[], None]] = field(default_factory=list, repr=False)
    applied: bool = False

    @property
    def has_changes(self) -> bool:
        return any(change.action != UNCHANGED for change in self.changes)

    def summary(self) -> dict[str, int]:
        counts = Counter(change.action for change in self.changes)
        return {**{action: counts.get(action, 0) for action in ACTIONS}, "skipped": len(self.skipped)}

    def as_dict(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "summary": self.summary(),
            "changes": [change.as_dict() for change in self.changes],
            "skipped": [item.as_dict() for item in self.skipped],
            "warnings": list(self.warnings),
        }

    def render(self) -> str:
        """The plan as text, one line per object (and per changed field)."""
        lines: list[str] = []
        for change in self.changes:
            lines.append(f'{change.action:<9} {change.kind} "{change.name}"')
            for key, (old, new) in change.fields.items():
                lines.extend(f"            {line}" for line in describe_difference(key, old, new))
            lines.extend(f"            note: {note}" for note in change.notes)
        for item in self.skipped:
            name = f' "{item.name}"' if item.name else ""
            lines.append(f"skipped   {item.kind}{name} ({item.source}): {item.reason}")
        lines.extend(f"warning: {warning}" for warning in self.warnings)
        counts = self.summary()
        lines.append(
            f"{counts[CREATE]} to create, {counts[UPDATE]} to update, {counts[DELETE]} to delete, "
            f"{counts[UNCHANGED]} unchanged, {counts['skipped']} skipped."
        )
        return "\n".join(lines)


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_difference(path: str, old: Any, new: Any) -> list[str]:
    """Readable lines for one changed value; mappings are compared key by key (dotted paths)."""
    if isinstance(old, dict) and isinstance(new, dict):
        lines: list[str] = []
        for key in [*old, *(k for k in new if k not in old)]:
            before, after = old.get(key, _MISSING), new.get(key, _MISSING)
            if before != after:
                lines.extend(describe_difference(f"{path}.{key}", before, after))
        return lines
    if isinstance(old, list) and isinstance(new, list) and all(isinstance(v, str) for v in [*old, *new]):
        added = [v for v in new if v not in old]
        removed = [v for v in old if v not in new]
        if added or removed:
            parts = [f"+{_short(v, 60)}" for v in added] + [f"-{_short(v, 60)}" for v in removed]
            return [f"{path}: {', '.join(parts)}"]
        return [f"{path}: reordered"]
    if old is _MISSING:
        return [f"{path}: added {_short(new)}"]
    if new is _MISSING:
        return [f"{path}: removed (was {_short(old)})"]
    return [f"{path}: {_short(old)} -> {_short(new)}"]


class _Missing:
    def __repr__(self) -> str:
        return "(absent)"


_MISSING: Any = _Missing()


def compare(kind: str, name: str, source: str, old: dict[str, Any] | None, new: dict[str, Any]) -> Change:
    """A change from the current values (``None`` when the object does not exist) to the wanted ones."""
    if old is None:
        return Change(kind, name, CREATE, source)
    fields = {key: (old.get(key), value) for key, value in new.items() if old.get(key) != value}
    return Change(kind, name, UPDATE if fields else UNCHANGED, source, fields)
