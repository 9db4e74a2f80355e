"""A tiny SQL engine over the simulated tables: enough for live queries, labels and policies.

Why not SQLite itself: loading every virtual table of thousands of hosts into SQLite on each
query would cost far more than the server we measure. The supported subset is

    SELECT [DISTINCT] * | expr [[AS] alias], ... [FROM table [[AS] alias]]
      [WHERE cond] [ORDER BY col [ASC|DESC], ...] [LIMIT n [OFFSET m]] [;]

with ``cond`` made of ``= == != <> < <= > >=``, ``[NOT] LIKE``, ``[NOT] IN (...)``,
``IS [NOT] NULL``, ``AND``, ``OR``, ``NOT`` and parentheses, and ``expr`` a column, a literal or
``count(*)``. Anything else fails the way osquery reports SQLite errors (status 1 and a message
such as ``no such table: foo`` or ``near "JOIN": syntax error``), which is also what a server
must cope with. Values compare as numbers when both sides are numeric, else as strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from agentapi.simulator.tables import HostTables, Row

_TOKEN = re.compile(
    r"\s+|--[^\n]*|/\*[\s\S]*?(?:\*/|\Z)"  # white space and comments (skipped), then tokens
    r"|(?P<str>'(?:[^']|'')*')|(?P<qid>\"(?:[^\"]|\"\")*\")|(?P<num>\d+(?:\.\d+)?)"
    r"|(?P<id>[A-Za-z_][A-Za-z0-9_]*)|(?P<op><=|>=|<>|!=|==|[=<>(),.*;])"
)
_KEYWORDS = frozenset(
    {
        "select",
        "distinct",
        "from",
        "where",
        "and",
        "or",
        "not",
        "like",
        "in",
        "is",
        "null",
        "order",
        "by",
        "asc",
        "desc",
        "limit",
        "offset",
        "as",
        "join",
        "left",
        "inner",
        "on",
        "union",
        "group",
        "having",
        "true",
        "false",
    }
)


_COMPARISONS = frozenset({"=", "==", "!=", "<>", "<", "<=", ">", ">="})


class SqlError(Exception):
    """A query osquery would reject; ``str(error)`` is the SQLite-style message."""


@dataclass
class QueryResult:
    """What osquery reports for one query: rows (all values strings), status 0/1 and a message."""

    rows: list[Row] = field(default_factory=list)
    status: int = 0
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 0


@dataclass(frozen=True)
class _Tok:
    kind: str  # str, num, id, kw, op, end
    value: str
    raw: str = ""


def _tokenize(sql: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(sql):
        m = _TOKEN.match(sql, pos)
        if not m:
            raise SqlError(f'unrecognized token: "{sql[pos]}"')
        pos = m.end()
        kind = m.lastgroup
        if kind is None:
            continue
        text = m.group(kind)
        if kind == "str":
            tokens.append(_Tok("str", text[1:-1].replace("''", "'"), text))
        elif kind == "qid":
            tokens.append(_Tok("id", text[1:-1].replace('""', '"'), text))
        elif kind == "id" and text.lower() in _KEYWORDS:
            tokens.append(_Tok("kw", text.lower(), text))
        else:
            tokens.append(_Tok(kind, text, text))
    tokens.append(_Tok("end", ""))
    return tokens


@dataclass(frozen=True)
class _Col:
    name: str
    # Written in double quotes: SQLite reads it as a string when no column has that name, and
    # osquery queries rely on it (Fleet's ``WHERE type = "Configuration"``).
    quoted: bool = False


@dataclass(frozen=True)
class _Lit:
    value: str | None


@dataclass(frozen=True)
class _Count:
    pass


@dataclass
class _Select:
    items: list[tuple[Any, str]]  # (expression, output name); [] means *
    distinct: bool = False
    table: str | None = None
    where: Any = None
    order: list[tuple[str, bool]] = field(default_factory=list)  # (column, descending)
    limit: int | None = None
    offset: int = 0


class _Parser:
    def __init__(self, sql: str) -> None:
        self.toks = _tokenize(sql)
        self.i = 0
        self.aliases: set[str] = set()

    def peek(self, kind: str, value: str | None = None) -> bool:
        t = self.toks[self.i]
        return t.kind == kind and (value is None or t.value == value)

    def take(self, kind: str, value: str | None = None) -> _Tok | None:
        if self.peek(kind, value):
            self.i += 1
            return self.toks[self.i - 1]
        return None

    def expect(self, kind: str, value: str | None = None) -> _Tok:
        tok = self.take(kind, value)
        if tok is None:
            raise self.error()
        return tok

    def error(self) -> SqlError:
        t = self.toks[self.i]
        return SqlError("incomplete input" if t.kind == "end" else f'near "{t.raw or t.value}": syntax error')

    def parse(self) -> _Select:
        self.expect("kw", "select")
        query = _Select(items=[], distinct=bool(self.take("kw", "distinct")))
        if not self.take("op", "*"):
            query.items = [self.item()]
            while self.take("op", ","):
                query.items.append(self.item())
        if self.take("kw", "from"):
            query.table = self.expect("id").value
            self.aliases.add(query.table)
            alias = self.take("id") or (self.expect("id") if self.take("kw", "as") else None)
            if alias:
                self.aliases.add(alias.value)
        if self.take("kw", "where"):
            query.where = self.or_expr()
        if self.take("kw", "order"):
            self.expect("kw", "by")
            query.order.append(self.order_item())
            while self.take("op", ","):
                query.order.append(self.order_item())
        if self.take("kw", "limit"):
            query.limit = int(float(self.expect("num").value))
            if self.take("kw", "offset"):
                query.offset = int(float(self.expect("num").value))
        self.take("op", ";")
        if not self.peek("end"):
            raise self.error()
        return query

    def item(self) -> tuple[Any, str]:
        start = self.i
        expr = self.operand(allow_count=True)
        name = "".join(t.raw for t in self.toks[start : self.i])
        if isinstance(expr, _Col):
            name = expr.name
        if self.take("kw", "as"):
            name = self.expect_name()
        elif self.peek("id"):
            name = self.expect("id").value
        return expr, name

    def expect_name(self) -> str:
        tok = self.take("id") or self.take("str")
        if tok is None:
            raise self.error()
        return tok.value

    def order_item(self) -> tuple[str, bool]:
        col = self.operand()
        if not isinstance(col, _Col):
            raise self.error()
        desc = bool(self.take("kw", "desc"))
        if not desc:
            self.take("kw", "asc")
        return col.name, desc

    def operand(self, allow_count: bool = False) -> Any:
        if tok := self.take("str"):
            return _Lit(tok.value)
        if tok := self.take("num"):
            return _Lit(tok.value)
        if self.take("kw", "null"):
            return _Lit(None)
        if tok := (self.take("kw", "true") or self.take("kw", "false")):
            return _Lit("1" if tok.value == "true" else "0")
        if tok := self.take("id"):
            if allow_count and tok.value.lower() == "count" and self.take("op", "("):
                self.expect("op", "*")
                self.expect("op", ")")
                return _Count()
            if self.take("op", "."):
                if tok.value not in self.aliases and not self.peek("id"):
                    raise self.error()
                return _Col(self.expect("id").value)
            return _Col(tok.value, quoted=tok.raw.startswith('"'))
        raise self.error()

    def or_expr(self) -> Any:
        node = self.and_expr()
        while self.take("kw", "or"):
            node = ("or", node, self.and_expr())
        return node

    def and_expr(self) -> Any:
        node = self.not_expr()
        while self.take("kw", "and"):
            node = ("and", node, self.not_expr())
        return node

    def not_expr(self) -> Any:
        if self.take("kw", "not"):
            return ("not", self.not_expr())
        if self.take("op", "("):
            node = self.or_expr()
            self.expect("op", ")")
            return node
        left = self.operand()
        negate = bool(self.take("kw", "not"))
        if self.take("kw", "like"):
            node: Any = ("like", left, self.operand())
        elif self.take("kw", "in"):
            self.expect("op", "(")
            values = [self.operand()]
            while self.take("op", ","):
                values.append(self.operand())
            self.expect("op", ")")
            node = ("in", left, values)
        elif not negate and self.take("kw", "is"):
            negate = bool(self.take("kw", "not"))
            self.expect("kw", "null")
            node = ("cmp", "=", left, _Lit(None))
        elif not negate and self.toks[self.i].value in _COMPARISONS and self.peek("op"):
            op = self.expect("op").value
            node = ("cmp", op, left, self.operand())
        else:
            raise self.error()
        return ("not", node) if negate else node


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _like(value: str, pattern: str) -> bool:
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE | re.DOTALL) is not None


class _Evaluator:
    def __init__(self, columns: tuple[str, ...]) -> None:
        self.columns = columns

    def value(self, node: Any, row: Row) -> str | None:
        if isinstance(node, _Lit):
            return node.value
        if node.name not in self.columns:
            if node.quoted:
                return node.name
            raise SqlError(f"no such column: {node.name}")
        return row.get(node.name)

    def check(self, node: Any) -> None:
        """Reject unknown columns even when the table has no rows, as SQLite does."""
        if isinstance(node, _Col):
            self.value(node, {})
        elif isinstance(node, tuple):
            for part in node[1:]:
                for sub in part if isinstance(part, list) else [part]:
                    self.check(sub)

    def truth(self, node: Any, row: Row) -> bool:
        kind = node[0]
        if kind == "or":
            return self.truth(node[1], row) or self.truth(node[2], row)
        if kind == "and":
            return self.truth(node[1], row) and self.truth(node[2], row)
        if kind == "not":
            return not self.truth(node[1], row)
        left = self.value(node[1] if kind != "cmp" else node[2], row)
        if kind == "like":
            right = self.value(node[2], row)
            return left is not None and right is not None and _like(left, right)
        if kind == "in":
            return any(self.compare("=", left, self.value(v, row)) for v in node[2])
        return self.compare(node[1], left, self.value(node[3], row))

    @staticmethod
    def compare(op: str, left: str | None, right: str | None) -> bool:
        if left is None or right is None:
            return op == "=" and left is None and right is None  # only IS NULL matches NULL
        a, b = _number(left), _number(right)
        x, y = (a, b) if a is not None and b is not None else (left, right)
        return {
            "=": x == y,
            "==": x == y,
            "!=": x != y,
            "<>": x != y,
            "<": x < y,
            "<=": x <= y,
            ">": x > y,
            ">=": x >= y,
        }[op]


def execute(sql: str, tables: HostTables) -> QueryResult:
    """Run ``sql`` against one host's tables; errors come back as status 1 with a message."""
    try:
        return QueryResult(rows=_run(_Parser(sql).parse(), tables))
    except SqlError as exc:
        return QueryResult(status=1, message=str(exc))


def _run(query: _Select, tables: HostTables) -> list[Row]:
    if query.table is None:
        source: list[Row] = [{}]
        columns: tuple[str, ...] = ()
    else:
        if not tables.has(query.table):
            raise SqlError(f"no such table: {query.table}")
        columns = tables.columns(query.table)
        source = tables.rows(query.table)
    ev = _Evaluator(columns)
    for expr, _ in query.items:
        ev.check(expr)
    if query.where is not None:
        ev.check(query.where)
    for name, _ in query.order:
        ev.check(_Col(name))
    rows = [r for r in source if query.where is None or ev.truth(query.where, r)]
    for name, desc in reversed(query.order):
        numeric = all(_number(r.get(name)) is not None for r in rows)
        rows.sort(key=lambda r, n=name: _number(r[n]) if numeric else r.get(n, ""), reverse=desc)
    if any(isinstance(expr, _Count) for expr, _ in query.items):
        first = rows[0] if rows else {}
        out = [
            {
                name: str(len(rows)) if isinstance(expr, _Count) else (ev.value(expr, first) or "")
                for expr, name in query.items
            }
        ]
    elif not query.items:
        out = [dict(r) for r in rows]
    else:
        out = [{name: ev.value(expr, r) or "" for expr, name in query.items} for r in rows]
    if query.distinct:
        unique: dict[tuple[tuple[str, str], ...], Row] = {}
        for r in out:
            unique.setdefault(tuple(r.items()), r)
        out = list(unique.values())
    end = None if query.limit is None or query.limit < 0 else query.offset + query.limit
    return out[query.offset : end]
