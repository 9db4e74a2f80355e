"""Checking osquery SQL before it reaches any agent.

osquery runs SQLite's dialect over virtual tables, so SQLite's own parser (``EXPLAIN`` on an
in-memory database) tells syntax errors apart from the only thing it cannot know: the tables.
"No such table/column/function" is left to the schema check (saved queries) or to the agents.
"""

from __future__ import annotations

import sqlite3

from django.core.exceptions import ValidationError

MAX_SQL_LENGTH = 100_000
_SCHEMA_ERRORS = ("no such table", "no such column", "no such function", "no such module")


def validate_sql(sql: object) -> str:
    """Return the SQL stripped; raise ``ValidationError`` with the parser's message when invalid."""
    if not isinstance(sql, str) or not sql.strip():
        raise ValidationError("SQL is empty.", code="empty")
    sql = sql.strip()
    if len(sql) > MAX_SQL_LENGTH:
        raise ValidationError(f"SQL is longer than {MAX_SQL_LENGTH} characters.", code="too_long")
    if "\x00" in sql:
        raise ValidationError("SQL contains a NUL character.", code="invalid")
    body = sql.rstrip(";").rstrip()
    if not sqlite3.complete_statement(body + ";"):
        raise ValidationError("SQL syntax error: incomplete input.", code="syntax")
    for index, char in enumerate(body):
        if char == ";" and sqlite3.complete_statement(body[: index + 1]) and body[index + 1 :].strip():
            raise ValidationError("SQL must be a single statement.", code="multiple")
    connection = sqlite3.connect(":memory:")
    try:
        connection.execute(f"EXPLAIN {body}")
    except sqlite3.Error as exc:
        message = str(exc)
        if not message.startswith(_SCHEMA_ERRORS):
            raise ValidationError(f"SQL syntax error: {message}.", code="syntax") from None
    finally:
        connection.close()
    return sql
