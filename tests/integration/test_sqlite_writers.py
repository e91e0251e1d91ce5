"""store/sqlite: the engine's writers of one SQLite file queue in the process (decision 0063).

A write transaction holds the process's lock for its file from BEGIN to its end (commit,
rollback, the connection's close); a write statement outside a transaction for itself; a
read never. A second writer of the process waits on that lock, and is let in the moment
the first ends (not at the next poll of SQLite's busy handler), and sees what it wrote.
Shown by the lock's state and the order of events, not by timing.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from django.db import DEFAULT_DB_ALIAS, connections

from postroom.settings import sqlite_database
from postroom.store.sqlite import base as backend
from postroom.store.sqlite.base import DatabaseWrapper, writer_lock


def wrapper(path: Path, alias: str = "writers", timeout: float | None = None) -> DatabaseWrapper:
    settings = connections.configure_settings({DEFAULT_DB_ALIAS: sqlite_database(path)})[DEFAULT_DB_ALIAS]
    if timeout is not None:
        settings["OPTIONS"]["timeout"] = timeout
    return DatabaseWrapper(settings, alias=alias)


@pytest.fixture(autouse=True)
def _files_of_their_own(django_db_blocker):
    """These tests open SQLite files of their own, never the test database."""
    with django_db_blocker.unblock():
        yield


@pytest.fixture
def db(tmp_path: Path):
    path = tmp_path / "w.sqlite3"
    first = wrapper(path)
    with first.cursor() as cursor:
        cursor.execute("CREATE TABLE t (x INTEGER)")
    yield path, first
    first.close()


def test_the_settings_name_this_backend() -> None:
    assert sqlite_database(Path("/tmp/x.sqlite3"))["ENGINE"] == "postroom.store.sqlite"


def test_a_write_transaction_holds_the_files_lock_to_its_end(db) -> None:
    path, conn = db
    lock = writer_lock(str(path))
    assert not lock.locked()
    with _atomic(conn):
        assert lock.locked()
        with conn.cursor() as cursor:
            cursor.execute("INSERT INTO t VALUES (1)")
        assert lock.locked()
    assert not lock.locked()
    # A rollback (an error in the block) lets go of it too.
    with pytest.raises(RuntimeError), _atomic(conn):
        assert lock.locked()
        raise RuntimeError("boom")
    assert not lock.locked()
    # So does closing the connection in the middle of a transaction.
    _atomic(conn).__enter__()
    assert lock.locked()
    conn.close()
    assert not lock.locked()


def test_reads_do_not_take_it_and_a_lone_write_holds_it_for_itself(db) -> None:
    path, conn = db
    lock = writer_lock(str(path))
    lock.acquire()  # another thread's transaction, as far as this connection can tell
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM t")  # not held up
            assert cursor.fetchone() == (0,)
    finally:
        lock.release()
    seen: list[bool] = []

    class Spy:
        def acquire(self, timeout: float = -1) -> bool:
            seen.append(True)
            return lock.acquire(timeout=timeout)

        def release(self) -> None:
            lock.release()

    with conn.cursor() as cursor:
        cursor.cursor.writer = Spy()
        cursor.execute("SELECT 1")
        assert seen == []
        cursor.execute("INSERT INTO t VALUES (2)")
        assert seen == [True]
    assert not lock.locked()


def test_a_second_writer_waits_for_the_first_and_sees_its_rows(db, monkeypatch) -> None:
    path, first = db
    lock = writer_lock(str(path))
    asked = threading.Event()

    class Queue:
        """The file's lock, telling when the second writer asks for it."""

        def acquire(self, timeout: float = -1) -> bool:
            if threading.current_thread() is not threading.main_thread():
                asked.set()
            return lock.acquire(timeout=timeout)

        def release(self) -> None:
            lock.release()

        def locked(self) -> bool:
            return lock.locked()

    monkeypatch.setitem(backend._locks, str(path), Queue())
    events: list[str] = []

    def second() -> None:
        conn = wrapper(path, alias="second")
        try:
            with _atomic(conn):
                events.append("second began")
                with conn.cursor() as cursor:
                    cursor.execute("SELECT count(*) FROM t")
                    events.append(f"second saw {cursor.fetchone()[0]}")
                    cursor.execute("INSERT INTO t VALUES (20)")
        finally:
            conn.close()

    thread = threading.Thread(target=second)
    with _atomic(first):
        with first.cursor() as cursor:
            cursor.execute("INSERT INTO t VALUES (10)")
        thread.start()
        # The second writer queues on the process's lock (not in SQLite's busy handler)
        # and has not begun while the first holds it.
        assert asked.wait(10)
        assert lock.locked()
        events.append("first commits")
    thread.join(10)
    assert not thread.is_alive()
    assert events == ["first commits", "second began", "second saw 1"]
    with first.cursor() as cursor:
        cursor.execute("SELECT x FROM t ORDER BY x")
        assert [r[0] for r in cursor.fetchall()] == [10, 20]
    assert not lock.locked()


def test_a_writer_that_waits_past_the_busy_timeout_goes_on_without_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"
    conn = wrapper(path, timeout=0.05)
    lock = writer_lock(str(path))
    lock.acquire()  # held by nobody who writes: SQLite's own lock is free
    try:
        with _atomic(conn), conn.cursor() as cursor:
            cursor.execute("CREATE TABLE u (x INTEGER)")
            cursor.execute("INSERT INTO u VALUES (1)")
        with conn.cursor() as cursor:
            cursor.execute("INSERT INTO u VALUES (2)")
            cursor.execute("SELECT count(*) FROM u")
            assert cursor.fetchone() == (2,)
    finally:
        lock.release()
        conn.close()


def test_an_in_memory_database_takes_no_lock() -> None:
    conn = DatabaseWrapper(
        connections.configure_settings({DEFAULT_DB_ALIAS: {"ENGINE": "postroom.store.sqlite", "NAME": ":memory:"}})[
            DEFAULT_DB_ALIAS
        ],
        alias="memory",
    )
    try:
        with _atomic(conn), conn.cursor() as cursor:
            cursor.execute("CREATE TABLE m (x INTEGER)")
            cursor.execute("INSERT INTO m VALUES (1)")
            assert conn._writer is None
            assert cursor.cursor.writer is None
    finally:
        conn.connection is not None and conn.connection.close()


class _atomic:
    """`transaction.atomic` for a connection that is not among `connections`."""

    def __init__(self, conn: DatabaseWrapper) -> None:
        self.conn = conn

    def __enter__(self) -> DatabaseWrapper:
        self.conn.ensure_connection()
        self.conn.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)
        return self.conn

    def __exit__(self, kind, value, tb) -> None:
        try:
            if kind is None:
                self.conn.commit()
            else:
                self.conn.rollback()
        finally:
            self.conn.set_autocommit(True)
