"""Reading Fleet spec documents (``apiVersion: v1``, ``kind``, ``spec``) from YAML or JSON.

Parsing only: nothing here touches the database. Every document keeps where it came from (file
and 1-based index) so that any error can name the exact document.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

# Fleet renamed "queries" to "reports" in its newer docs; both mean a saved query here.
KIND_ALIASES = {"report": "query", "queries": "query", "reports": "query"}
SUPPORTED_KINDS = ("team", "enroll_secret", "config", "query", "label", "pack", "task", "metric_destination")
# Kinds Fleet has that this server does not handle yet: reported as skipped, never an error.
UNSUPPORTED_KINDS = {
    "policy": "policies are not supported yet",
    "software": "software management is not supported yet",
    "user_roles": "user roles are managed in the console, not through specs",
    "script": "scripts are not supported yet",
    "configuration_profile": "MDM configuration profiles are not supported",
}
# A YAML document may expand aliases into a huge tree ("billion laughs"); refuse past this.
MAX_NODES = 1_000_000


class SpecSyntaxError(Exception):
    """The text is not YAML/JSON at all (or too big once expanded); nothing can be planned."""


@dataclass
class Document:
    """One spec document; ``kind`` is normalised (``report`` becomes ``query``)."""

    source: str
    index: int
    raw: Any
    kind: str = ""
    raw_kind: str = ""

    @property
    def spec(self) -> Any:
        return self.raw.get("spec") if isinstance(self.raw, dict) else None

    @property
    def name(self) -> str:
        """The document's object name for messages (best effort: the spec may be malformed)."""
        spec = self.spec
        if not isinstance(spec, dict):
            return ""
        if self.kind == "team" and isinstance(spec.get("team"), dict):
            spec = spec["team"]
        value = spec.get("name")
        return str(value) if isinstance(value, str | int | float) and not isinstance(value, bool) else ""

    @property
    def where(self) -> str:
        label = f"{self.raw_kind or self.kind or 'document'}"
        if self.name:
            label += f' "{self.name}"'
        return f"{self.source}, document {self.index} ({label})"


def _count_nodes(value: Any, budget: int) -> int:
    """Nodes in the expanded tree, stopping early once ``budget`` is spent (returns <= -1 then)."""
    stack = [value]
    while stack:
        budget -= 1
        if budget < 0:
            return budget
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return budget


def _check_size(raws: list[Any], source: str) -> None:
    budget = MAX_NODES
    for raw in raws:
        budget = _count_nodes(raw, budget)
        if budget < 0:
            raise SpecSyntaxError(f"{source}: the documents expand to more than {MAX_NODES:,} values.")


def parse_yaml(text: str, source: str) -> list[Document]:
    """All non-empty documents of a YAML stream, in order (PyYAML ``safe_load_all``)."""
    try:
        raws = list(yaml.safe_load_all(text))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = ": ".join(filter(None, [exc.context, exc.problem]))
        raise SpecSyntaxError(f"{source}: YAML syntax error at {where}: {problem}.") from None
    except yaml.YAMLError as exc:
        raise SpecSyntaxError(f"{source}: YAML error: {exc}.") from None
    _check_size(raws, source)
    return classify(raws, source)


def from_objects(items: Iterable[Any], source: str) -> list[Document]:
    """Documents given as already-parsed objects (the JSON form of the REST API)."""
    raws = list(items)
    _check_size(raws, source)
    return classify(raws, source)


def classify(raws: Iterable[Any], source: str) -> list[Document]:
    """Wrap parsed documents, skipping empty ones (a stray ``---``) but keeping their numbering."""
    documents = []
    for index, raw in enumerate(raws, start=1):
        if raw is None:
            continue
        doc = Document(source=source, index=index, raw=raw)
        if isinstance(raw, dict) and isinstance(raw.get("kind"), str):
            doc.raw_kind = raw["kind"].strip()
            doc.kind = KIND_ALIASES.get(doc.raw_kind.lower(), doc.raw_kind.lower())
        documents.append(doc)
    return documents


def document_problem(doc: Document) -> str | None:
    """What is wrong with the envelope (apiVersion, kind, spec), or None when it is well-formed."""
    if not isinstance(doc.raw, dict):
        return "a document must be a mapping with apiVersion, kind and spec"
    if doc.raw.get("apiVersion") != "v1":
        found = doc.raw.get("apiVersion")
        return "apiVersion: v1 is missing" if found is None else f"apiVersion must be v1 (found {found!r})"
    if not doc.raw_kind:
        return "kind is missing" if doc.raw.get("kind") is None else "kind must be a string such as query"
    if doc.kind not in SUPPORTED_KINDS and doc.kind not in UNSUPPORTED_KINDS:
        known = ", ".join([*SUPPORTED_KINDS, "report"])
        return f'unknown kind "{doc.raw_kind}" (supported: {known})'
    if doc.kind in SUPPORTED_KINDS and not isinstance(doc.spec, dict):
        return "spec must be a mapping"
    return None
