"""osquery's tables and the platforms they exist on, and the tables a query's SQL reads.

Why: a saved query naming a table osquery lacks (a typo, an extension table, a Windows-only table
in a macOS query) is valid SQL, so the parser cannot catch it; the agents would only fail at run
time. Saving still succeeds (extension tables are legitimate), but the caller gets a warning.

The schema (``queries/data/osquery-schema.json``, from osquery's ``specs/``; see the README there)
is read once, on first use. ``settings.OSQUERY_SCHEMA_PATH`` points at another copy; when the file
cannot be read the check is skipped with a logged error rather than failing every save.

Table names come from a small SQLite-aware tokenizer rather than a ``FROM``/``JOIN`` regex:
strings, quoted identifiers and comments are skipped, common-table-expression names are not
tables, ``schema.table`` counts as ``table`` and ``name(...)`` after ``FROM`` is a table-valued
function (``json_each``, ``pragma_table_info``), not a table.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)

DEFAULT_SCHEMA_PATH = Path(__file__).resolve().parent / "data" / "osquery-schema.json"
# Platforms the schema describes; for others (chrome, freebsd) only unknown tables are reported.
SCHEMA_PLATFORMS = frozenset({"darwin", "linux", "windows"})
_SQLITE_TABLES = frozenset({"sqlite_master", "sqlite_schema", "sqlite_temp_master", "sqlite_sequence"})


@dataclass(frozen=True)
class OsquerySchema:
    """Table name -> the platforms osquery has it on (empty when the schema could not be read)."""

    tables: dict[str, frozenset[str]] = field(default_factory=dict)
    source: str = ""

    @property
    def available(self) -> bool:
        return bool(self.tables)


def schema_path() -> Path:
    return Path(getattr(settings, "OSQUERY_SCHEMA_PATH", "") or DEFAULT_SCHEMA_PATH)


@functools.cache
def get_schema() -> OsquerySchema:
    """The osquery schema, loaded on first use and kept for the life of the process."""
    path = schema_path()
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        tables = document["tables"] if isinstance(document, dict) else document
        return OsquerySchema(
            tables={t["name"].lower(): frozenset(t.get("platforms") or ()) for t in tables},
            source=document.get("source", str(path)) if isinstance(document, dict) else str(path),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        logger.error("osquery schema %s unreadable (%s): table names in queries are not checked", path, exc)
        return OsquerySchema()


# --- tables named in SQL -----------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
  | (?P<string>'(?:[^']|'')*'?)
  | (?P<quoted>"(?:[^"]|"")*"?|`(?:[^`]|``)*`?|\[[^\]]*\]?)
  | (?P<word>[A-Za-z_\x80-\uffff][A-Za-z0-9_$\x80-\uffff]*)
  | (?P<number>\d[\w.]*)
  | (?P<op>.)
    """,
    re.S | re.X,
)
_TABLE_FOLLOWS = frozenset({"FROM", "JOIN", "INTO", "UPDATE"})
_FROM_ENDS = frozenset(
    {
        "WHERE",
        "GROUP",
        "ORDER",
        "LIMIT",
        "HAVING",
        "WINDOW",
        "UNION",
        "INTERSECT",
        "EXCEPT",
        "RETURNING",
        "SET",
    }
)
_QUERY_STARTS = frozenset({"SELECT", "WITH", "VALUES"})


@dataclass(frozen=True)
class _Token:
    kind: str  # word (bare identifier or keyword), name (quoted identifier), op, string, number
    text: str

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and self.text.upper() in words

    @property
    def is_name(self) -> bool:
        return self.kind in ("word", "name")


def _tokens(sql: str) -> list[_Token]:
    tokens = []
    for match in _TOKEN.finditer(sql):
        kind, text = match.lastgroup, match.group()
        if kind in ("space", "comment"):
            continue
        if kind == "quoted":
            kind, text = "name", text[1:-1] if len(text) > 1 else ""
        tokens.append(_Token(kind or "op", text))
    return tokens


def _cte_names(tokens: list[_Token]) -> set[str]:
    """Names defined as ``name [(columns)] AS [[NOT] MATERIALIZED] (`` (CTEs; also window names)."""
    names = set()
    for i, token in enumerate(tokens):
        if not token.is_name:
            continue
        j = i + 1
        if j < len(tokens) and tokens[j].text == "(":  # a column list: skip to its closing paren
            depth = 0
            while j < len(tokens):
                depth += {"(": 1, ")": -1}.get(tokens[j].text, 0) if tokens[j].kind == "op" else 0
                j += 1
                if depth == 0:
                    break
        if j < len(tokens) and tokens[j].is_word("AS"):
            j += 1
            while j < len(tokens) and tokens[j].is_word("NOT", "MATERIALIZED"):
                j += 1
            if j < len(tokens) and tokens[j].text == "(" and tokens[j].kind == "op":
                names.add(token.text.lower())
    return names


def tables_in(sql: str) -> list[str]:
    """The tables a statement reads (lower-case, first-use order), leaving out CTEs and functions."""
    tokens = _tokens(sql)
    found: list[str] = []
    # One frame per parenthesis depth: [inside a FROM list, a table name comes next]
    stack = [[False, False]]
    for i, token in enumerate(tokens):
        frame = stack[-1]
        if token.kind == "op":
            if token.text == "(":
                # "FROM (" opens a subquery or a parenthesised join: the latter lists tables directly.
                stack.append([frame[1], frame[1]])
                frame[1] = False
            elif token.text == ")" and len(stack) > 1:
                stack.pop()
            elif token.text == "," and frame[0]:
                frame[1] = True
            continue
        if token.kind == "word" and not frame[1]:
            upper = token.text.upper()
            if upper in _TABLE_FOLLOWS and not (i and tokens[i - 1].is_word("DISTINCT")):  # IS DISTINCT FROM
                frame[0] = frame[0] or upper in ("FROM", "JOIN")
                frame[1] = True
            elif upper in _FROM_ENDS or upper in _QUERY_STARTS:
                frame[0] = frame[1] = False
            continue
        if frame[1] and token.is_name:
            if token.kind == "word" and token.text.upper() in _QUERY_STARTS:
                frame[0] = frame[1] = False
                continue
            frame[1] = False
            name, j = token.text, i + 1
            if j + 1 < len(tokens) and tokens[j].text == "." and tokens[j + 1].is_name:  # schema.table
                name, j = tokens[j + 1].text, j + 2
            if j < len(tokens) and tokens[j].kind == "op" and tokens[j].text == "(":
                continue  # a table-valued function
            if name.lower() not in found:
                found.append(name.lower())
    ctes = _cte_names(tokens)
    return [name for name in found if name not in ctes and name not in _SQLITE_TABLES]


def table_warnings(sql: str, platforms: list[str]) -> list[str]:
    """Warnings for tables osquery lacks, or lacks on some of ``platforms`` (empty list: all fine).

    ``platforms`` empty means "every platform": only tables osquery has nowhere are reported, since
    a Windows-only table in such a query is common and simply returns nothing elsewhere.
    """
    schema = get_schema()
    if not schema.available:
        return []
    checked = [p for p in platforms if p in SCHEMA_PLATFORMS]
    warnings = []
    for table in tables_in(sql):
        on = schema.tables.get(table)
        if on is None:
            warnings.append(f"Table '{table}' is not in osquery's schema (an extension table, or a typo?).")
            continue
        missing = [p for p in checked if p not in on]
        if missing:
            warnings.append(
                f"Table '{table}' is not available on {', '.join(missing)} "
                f"(osquery has it on {', '.join(sorted(on))})."
            )
    return warnings
