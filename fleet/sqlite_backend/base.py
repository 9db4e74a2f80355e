"""Django's SQLite backend, with writers queued in the process instead of in SQLite's busy handler.

SQLite allows one writer at a time. When a connection finds the database locked, SQLite's busy
handler sleeps and retries (1, 2, 5, 10 ... 100 ms), so under the embedded default's many request
threads most of a write's wait was sleep while the lock sat free, and the server (5,000 simulated
hosts enrolling) got slower as it got busier. Here the threads of one process take a write gate
first, a plain lock that wakes the next writer the moment the previous one commits: a
transaction (``atomic``, which SQLite starts with ``BEGIN IMMEDIATE``) holds it from begin to
commit or rollback, and a write statement outside a transaction holds it for that statement.
Reads never wait for it (WAL). Other processes (a ``manage.py`` command) still meet SQLite's own
busy handler. A writer that cannot get the gate within the connection's ``timeout`` gets the same
``database is locked`` error SQLite would give.
"""

from __future__ import annotations

import threading
from typing import Any

from django.db.backends.sqlite3 import base
from django.db.utils import OperationalError

WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER")
_gates: dict[str, threading.Lock] = {}
_gates_lock = threading.Lock()


def gate_for(name: str) -> threading.Lock:
    """The process's write gate of one database file."""
    with _gates_lock:
        return _gates.setdefault(name, threading.Lock())


def _is_write(query: str) -> bool:
    return query.lstrip()[:7].upper().startswith(WRITES)


class GatedCursor(base.SQLiteCursorWrapper):
    gate: threading.Lock
    timeout: float

    def execute(self, query: str, params: Any = None) -> Any:
        if self.connection.in_transaction or not _is_write(query):
            return super().execute(query, params)
        if not self.gate.acquire(timeout=self.timeout):
            raise OperationalError("database is locked")
        try:
            return super().execute(query, params)
        finally:
            self.gate.release()

    def executemany(self, query: str, param_list: Any) -> Any:
        if self.connection.in_transaction or not _is_write(query):
            return super().executemany(query, param_list)
        if not self.gate.acquire(timeout=self.timeout):
            raise OperationalError("database is locked")
        try:
            return super().executemany(query, param_list)
        finally:
            self.gate.release()


class DatabaseWrapper(base.DatabaseWrapper):
    _holds_gate = False

    @property
    def gate(self) -> threading.Lock:
        return gate_for(str(self.settings_dict["NAME"]))

    @property
    def gate_timeout(self) -> float:
        return float(self.settings_dict.get("OPTIONS", {}).get("timeout", 5))

    def create_cursor(self, name: Any = None) -> Any:
        cursor = self.connection.cursor(factory=GatedCursor)
        cursor.gate, cursor.timeout = self.gate, self.gate_timeout
        return cursor

    def _start_transaction_under_autocommit(self) -> None:
        if not self.gate.acquire(timeout=self.gate_timeout):
            raise OperationalError("database is locked")
        self._holds_gate = True
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._release_gate()
            raise

    def _commit(self) -> Any:
        try:
            return super()._commit()
        finally:
            self._release_gate()

    def _rollback(self) -> Any:
        try:
            return super()._rollback()
        finally:
            self._release_gate()

    def _close(self) -> Any:
        try:
            return super()._close()
        finally:
            self._release_gate()

    def _release_gate(self) -> None:
        if self._holds_gate:
            self._holds_gate = False
            self.gate.release()
