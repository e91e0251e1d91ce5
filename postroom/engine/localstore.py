"""The islanded node's local store: a SQLite file in the state directory (decision 0036).

With `[cluster] sync_address` set, a node on PostgreSQL prepares at start-up a local
store it can work on alone should the database stay away for `island_after`: a fresh
SQLite file, migrated and loaded with the site's configuration (mailboxes, agents, rules:
store/loader.py), so the switch itself costs nothing. The patent's secondary likewise
keeps its own tracking data (fig. 4).

The switch is per thread, not a database router: Django's `transaction.atomic()` and
`connection` use the `default` alias, which a router does not move. A thread that works
on the island makes its own `default` connection a connection to the local file
(`use_local`); the engine starts its working threads afresh after the switch, so no
connection of the shared database survives in them. Threads that never switch (the web
of `postroom run`) stay on PostgreSQL.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.db import DEFAULT_DB_ALIAS, DatabaseError, InterfaceError, OperationalError, connections

from postroom.config import Config

log = logging.getLogger(__name__)

LOCAL = "island"
# How long the probe of the shared database waits for an answer.
PROBE_TIMEOUT_S = 2


class LocalStore:
    def __init__(self, node_id: str, config: Config, state_dir: Path | None = None) -> None:
        self.config = config
        self.node_id = node_id
        self.path = Path(state_dir or settings.STATE_DIR) / f"island-{node_id}.sqlite3"
        self._preparing: threading.Thread | None = None
        self._ready = False

    def prepare_soon(self) -> None:
        """`prepare()` in a thread of its own: migrating takes seconds that neither the
        start of the engine nor a node coming back should wait for."""
        self.wait()
        self._ready = False
        self._preparing = threading.Thread(target=self._prepare_logged, name="postroom-localstore", daemon=True)
        self._preparing.start()

    def wait(self) -> bool:
        """Wait for a `prepare_soon()` under way; whether the store is ready."""
        if self._preparing is not None:
            self._preparing.join()
            self._preparing = None
        return self._ready

    def _prepare_logged(self) -> None:
        try:
            self.prepare()
        except Exception:
            log.exception("island mode: the local store could not be prepared; this node will not island")
        finally:
            connections.close_all()

    def left_unmerged(self) -> bool:
        """Whether the file holds an island of this node that was never merged: the node
        was killed (or stopped) while it worked on it, or in the middle of its merge. If
        so, the store is kept, brought to this version's schema and named `LOCAL` for the
        merge (`store/islandmerge.py`), which the engine runs before it registers.

        The marker is the node's own row in the local store: `_go_island` registers there
        before any thread works on the file, `prepare()` never writes one, and the file is
        prepared afresh only once the merge is done. So a store with the row may hold
        claims won and mail sent that PostgreSQL does not know of; one without it (or one
        whose preparing was cut short: no table yet) holds nothing of the kind."""
        if not self.path.exists():
            return False
        self._name()
        try:
            with connections[LOCAL].cursor() as cursor:
                cursor.execute("SELECT 1 FROM store_node WHERE node_id = %s", [self.node_id])
                held = cursor.fetchone() is not None
        except DatabaseError as exc:
            held = False
            if "no such table" not in str(exc):
                # Never thrown away: kept aside for the operator, and a fresh one prepared.
                aside = f"{self.path}.unreadable-{int(time.time())}"
                log.error("island mode: local store %s unreadable (%s); kept as %s", self.path, exc, aside)
                connections[LOCAL].close()
                for suffix in ("", "-wal", "-shm"):  # the WAL holds committed writes too
                    if Path(f"{self.path}{suffix}").exists():
                        Path(f"{self.path}{suffix}").rename(f"{aside}{suffix}")
        finally:
            connections[LOCAL].close()
        if held:
            # The node may have been upgraded since: the merge reads it with this schema.
            in_local(lambda: call_command("migrate", verbosity=0, interactive=False))
        return held

    def _name(self) -> None:
        """The local file under the alias `LOCAL` (closing this thread's old connection)."""
        from postroom.settings import sqlite_database

        if LOCAL in connections.settings:
            connections[LOCAL].close()
        connections.settings[LOCAL] = connections.configure_settings(
            {DEFAULT_DB_ALIAS: sqlite_database(self.path)}
        )[DEFAULT_DB_ALIAS]

    def prepare(self) -> None:
        """A fresh local store, migrated and loaded. What an earlier island left was
        merged back before that node registered: at its return to the database, or at its
        next start if it was killed while on its local store (`left_unmerged`)."""
        from postroom.store.loader import apply_config

        if LOCAL in connections.settings:
            connections[LOCAL].close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        self._name()
        # Migrated as `default` in a thread whose `default` is the local file: a data
        # migration that uses the default manager (0006) then writes there too, never to
        # PostgreSQL, which may be the very thing that is away.
        in_local(lambda: (call_command("migrate", verbosity=0, interactive=False), apply_config(self.config)))
        connections[LOCAL].close()
        self._ready = True
        log.info("island mode: local store ready at %s", self.path)


def use_local() -> None:
    """From now on this thread's `default` database is the local store."""
    connections[DEFAULT_DB_ALIAS].close()
    local = connections.create_connection(LOCAL)
    # One connection under both names: code that names the alias (`using(LOCAL)`, the
    # migration recorder) must not open a second one, which SQLite would lock out.
    connections[DEFAULT_DB_ALIAS] = connections[LOCAL] = local


def use_shared() -> None:
    """This thread's `default` database is the configured one again."""
    connections[DEFAULT_DB_ALIAS].close()
    del connections[DEFAULT_DB_ALIAS]
    del connections[LOCAL]


def on_local() -> bool:
    return connections[DEFAULT_DB_ALIAS].alias == LOCAL


def in_local(work: Callable[[], object]) -> None:
    """Run `work` on the local store, in a thread of its own (this one's connection stays)."""
    failed: list[BaseException] = []

    def run() -> None:
        use_local()
        try:
            work()
        except BaseException as exc:
            failed.append(exc)
        finally:
            connections[DEFAULT_DB_ALIAS].close()

    thread = threading.Thread(target=run, name="postroom-localstore")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]


def shared_answers() -> bool:
    """Whether the configured (shared) database answers a query now."""
    probe = connections.create_connection(DEFAULT_DB_ALIAS)
    options = {**probe.settings_dict.get("OPTIONS", {}), "connect_timeout": PROBE_TIMEOUT_S}
    probe.settings_dict = {**probe.settings_dict, "OPTIONS": options}
    try:
        with probe.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except (OperationalError, InterfaceError):
        return False
    finally:
        probe.close()


__all__ = [
    "LOCAL",
    "LocalStore",
    "in_local",
    "on_local",
    "shared_answers",
    "use_local",
    "use_shared",
]
