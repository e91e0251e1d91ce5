"""Window 9 of issue 7: a SQLite commit is on disk before the engine acts on it.

With WAL and synchronous=NORMAL a power loss may undo the last commits, which IMAP moves
and SMTP sends already relied on; FULL makes every commit durable (decision 0012).
"""

from __future__ import annotations

import pytest
from django.db import connection

from postroom.settings import sqlite_database

pytestmark = pytest.mark.django_db


def test_every_sqlite_connection_commits_durably(tmp_path) -> None:
    options = sqlite_database(tmp_path / "x.sqlite3")["OPTIONS"]
    assert "synchronous=FULL" in options["init_command"]
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            assert cursor.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
            assert cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
