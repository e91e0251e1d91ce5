"""Django's SQLite backend, with the process's writers queued in the process (decision 0063).

SQLite has one write lock. With `transaction_mode = IMMEDIATE` every write transaction
takes it at BEGIN; a single write statement outside a transaction takes it for itself. A
writer that finds it held waits in SQLite's busy handler, which sleeps and polls: 1, 2, 5,
10, 15, 20, 25, 25, 25, 50, 50, 100 ms, then 100 ms each. It is not told when the lock is
free: a writer arriving during a sender's 5 ms transaction sleeps until the poll after it
(8 or 18 ms after it arrived), and one that loses a poll to another writer sleeps longer
each time. In the engine (watchers, the worker, four senders: one process, a connection
per thread) every step of a customer's mail from reception to its forward's 250 writes,
and each queued behind the others that way.

Here a writer first takes a lock of the process for its database file: a write
transaction from its BEGIN to its COMMIT or ROLLBACK (or the connection's close), a write
statement outside a transaction for that statement. A writer waiting for another thread of
the same process is woken the moment that one ends. The SQLite lock is still taken as
before, so another process (the web, `postroom` commands, the bench's readers) is waited
for in the busy handler as before; what a transaction sees or writes does not change, only
when a queued writer of this process starts. Correctness never rests on this lock: SQLite's
own is taken in every case. A writer that waits longer than the connection's busy timeout
goes on without it (SQLite's wait then, as before). In-memory databases are left as they
were (the shared cache reports a held lock at once; nothing waits there).
"""

from __future__ import annotations

import threading
from typing import Any

from django.db.backends.sqlite3 import base

_locks: dict[str, threading.Lock] = {}
_guard = threading.Lock()
# Statements that take SQLite's write lock outside a transaction (Django's reads are
# SELECTs; its writes these). A write hidden anywhere else waits in the busy handler as
# before: nothing but its wait depends on this list.
WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def writer_lock(name: str) -> threading.Lock:
    """The process's lock for the writers of database file `name`."""
    with _guard:
        return _locks.setdefault(name, threading.Lock())


def _is_write(query: str) -> bool:
    return query[:8].lstrip().upper().startswith(WRITES)


class Cursor(base.SQLiteCursorWrapper):
    """Django's cursor; a write statement outside a transaction holds the writer lock."""

    writer: threading.Lock | None = None
    wait: float = 30.0

    def execute(self, query: str, params: Any = None) -> Any:
        lock = self._hold(query)
        try:
            return super().execute(query, params)
        finally:
            if lock is not None:
                lock.release()

    def executemany(self, query: str, param_list: Any) -> Any:
        lock = self._hold(query)
        try:
            return super().executemany(query, param_list)
        finally:
            if lock is not None:
                lock.release()

    def _hold(self, query: str) -> threading.Lock | None:
        """The writer lock, taken, when `query` is a write outside a transaction (a
        transaction holds it from its BEGIN: `DatabaseWrapper`); None otherwise, or when
        the wait ran out (SQLite's own lock then, as before)."""
        lock = self.writer
        if lock is None or self.connection.in_transaction or not _is_write(query):
            return None
        return lock if lock.acquire(timeout=self.wait) else None


class DatabaseWrapper(base.DatabaseWrapper):
    # The writer lock while this connection's transaction holds it.
    _writer: threading.Lock | None = None
    # The file's lock and the busy timeout, found once per connection (the name of a
    # wrapper's file may change between connections: the test runner's database).
    _file: threading.Lock | None = None
    _wait: float = 30.0

    def get_new_connection(self, conn_params: Any) -> Any:
        conn = super().get_new_connection(conn_params)
        self._file = None if self.is_in_memory_db() else writer_lock(str(self.settings_dict["NAME"]))
        self._wait = float(self.settings_dict.get("OPTIONS", {}).get("timeout", 5))
        return conn

    def create_cursor(self, name: str | None = None) -> Any:
        cursor = self.connection.cursor(factory=Cursor)
        cursor.writer, cursor.wait = self._file, self._wait
        return cursor

    def _start_transaction_under_autocommit(self) -> None:
        if self._writer is None and (lock := self._file) is not None and lock.acquire(timeout=self._wait):
            self._writer = lock
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._release_writer()
            raise

    def _release_writer(self) -> None:
        lock, self._writer = self._writer, None
        if lock is not None:
            lock.release()

    def _commit(self) -> None:
        try:
            super()._commit()
        finally:
            self._release_writer()

    def _rollback(self) -> None:
        try:
            super()._rollback()
        finally:
            self._release_writer()

    def _close(self) -> None:
        try:
            super()._close()
        finally:
            self._release_writer()
