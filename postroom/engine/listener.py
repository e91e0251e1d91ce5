"""LISTEN/NOTIFY: a node's worker wakes as soon as anyone commits work for it.

The database notifies channel `postroom` after every insert into the journal and the
outbox (store/fence.py), whichever node or web process made it, at its commit. Each node
keeps one connection listening and wakes its worker on every notification, so mail taken
by one node is routed, delivered and sent by the others at once rather than at their next
poll (the worker still looks every second for timers that fall due). PostgreSQL only.

Each notification carries the notifying session's backend pid (psycopg's `Notify.pid`):
a node tells its own commits apart from the others' by it (decision 0043). Its
watchers and its worker mark what their own work made work for, so their notifications
wake nothing more; everyone else's (other nodes, the web, this node's senders) do.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from django.conf import settings
from django.db import connection

from postroom.store.fence import CHANNEL

log = logging.getLogger(__name__)


def conninfo(db: dict[str, Any]) -> str:
    return psycopg.conninfo.make_conninfo(
        dbname=db["NAME"],
        user=db.get("USER") or None,
        password=db.get("PASSWORD") or None,
        host=db.get("HOST") or None,
        port=db.get("PORT") or None,
        connect_timeout=5,
        application_name="postroom-listener",
    )


def backend_pid() -> int | None:
    """The PostgreSQL backend pid of this thread's database session (None: not connected,
    or not PostgreSQL)."""
    info = getattr(connection.connection, "info", None)
    return getattr(info, "backend_pid", None)


def listen(wake: Callable[[str, int], None], stop: threading.Event) -> None:
    """Until `stop`: call `wake` with the table named by every notification (the engine
    wakes the senders for the outbox, the worker for the journal) and the notifying
    backend's pid; reconnect after failures."""
    info = conninfo(settings.DATABASES["default"])
    failures = 0
    while not stop.is_set():
        try:
            with psycopg.connect(info, autocommit=True) as conn:
                conn.execute(f"LISTEN {CHANNEL}")
                failures = 0
                while not stop.is_set():
                    for note in conn.notifies(timeout=1.0, stop_after=1):
                        wake(note.payload, note.pid)
        except psycopg.Error as exc:
            failures += 1
            log.warning("listener: %s", str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
            stop.wait(min(10.0, float(failures)))
