"""A database of its own for each deployment that the tests run as subprocesses.

SQLite by default: a file in the test's temp dir. When DATABASE_URL names a PostgreSQL
server (the PostgreSQL pass of `make test`), a fresh database on that server instead,
dropped by `drop()`. The test process reads it with plain SQL (stdlib `sqlite3` read-only,
or psycopg in autocommit), never through Django, so what it sees is what the engine
committed. Queries are written with `?` placeholders, as for SQLite.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse, urlunparse

Row = dict[str, Any]


@dataclass
class Database:
    url: str  # what the engine gets as DATABASE_URL
    sqlite_path: Path | None = None
    server_url: str | None = None  # PostgreSQL: where to drop it from
    name: str = ""

    @property
    def kind(self) -> str:
        return "sqlite" if self.sqlite_path is not None else "postgres"

    def rows(self, sql: str, params: tuple = ()) -> list[Row]:
        if self.sqlite_path is not None:
            if not self.sqlite_path.exists():
                return []
            conn = sqlite3.connect(f"file:{self.sqlite_path}?mode=ro", uri=True, timeout=30)
            conn.row_factory = sqlite3.Row
            try:
                return [dict(r) for r in conn.execute(sql, params).fetchall()]
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):  # not migrated yet
                    return []
                raise
            finally:
                conn.close()
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(_libpq(self.url), autocommit=True, row_factory=dict_row) as conn:
            try:
                return list(conn.execute(sql.replace("?", "%s"), params).fetchall())
            except psycopg.errors.UndefinedTable:
                return []

    def execute(self, sql: str, params: tuple = ()) -> None:
        execute(self.url, sql, params)

    def scalar(self, sql: str, params: tuple = ()) -> Any:
        found = self.rows(sql, params)
        return next(iter(found[0].values())) if found else None

    def drop(self) -> None:
        if self.server_url is None:
            return
        import psycopg

        with psycopg.connect(_libpq(self.server_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def fresh_database(tmp: Path, prefix: str = "e2e") -> Database:
    """A new, empty database for one deployment, of the kind DATABASE_URL names."""
    base = os.environ.get("DATABASE_URL", "")
    if urlparse(base).scheme not in ("postgres", "postgresql"):
        path = tmp / f"{prefix}.sqlite3"
        return Database(url=f"sqlite:///{path}", sqlite_path=path)
    import psycopg

    name = f"{prefix}_{secrets.token_hex(5)}"
    with psycopg.connect(_libpq(base), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parsed = urlparse(base)
    return Database(url=urlunparse(parsed._replace(path=f"/{name}")), server_url=base, name=name)


def execute(url: str, sql: str, params: tuple = ()) -> None:
    """Write to the database at DATABASE_URL `url` behind the engine's back (a test playing
    a restore or an operator's slip); `?` placeholders."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        conn = sqlite3.connect(unquote(parsed.path), timeout=30)
        try:
            with conn:
                conn.execute(sql, params)
        finally:
            conn.close()
        return
    import psycopg

    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute(sql.replace("?", "%s"), params)


def _libpq(url: str) -> str:
    return "postgresql://" + url.split("://", 1)[1]
