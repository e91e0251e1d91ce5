"""The demo's database links: a loopback relay between a node and PostgreSQL, cut and
healed as people ask (issue 10: "cut and heal the link from the console or the CLI").

`postroom demo --nodes N` gives each node after the first its own `TcpProxy` in front of
PostgreSQL and hands that node the relay's address as its DATABASE_URL; the first node
stays on the database directly, so the site always has a node there. Nobody tells this
process to cut a link: people set `store_node.link` ("up" or "cut") from the nodes page
or `postroom node cut|heal`, which the demo process reads here every half second. Cut:
every open connection of the node to the database is dropped and new ones are refused,
as when a cable is pulled. Healed: connections go through again. What the node does then
is the engine's business (docs/redundancy.md): today its lease runs out and the others
take its boxes, and it registers again once the link is back.

The requests live in the database rather than in this process so that the web (any
process) and the CLI can make them; the relays live here because only the demo knows
where it put them. A cut asked for a node without a relay (the first, or one this demo
did not start) cannot be carried out: it is set back to "up" with a logged reason.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from urllib.parse import urlsplit, urlunsplit

import psycopg

from postroom.core.cluster import Link
from postroom.devstack.netproxy import TcpProxy

log = logging.getLogger("postroom.demo")

POLL_S = 0.5


def libpq_url(url: str) -> str:
    """Django's `postgres://` URL as libpq's `postgresql://` (the same otherwise)."""
    scheme, rest = url.split("://", 1)
    return ("postgresql" if scheme in ("postgres", "postgresql", "pgsql") else scheme) + "://" + rest


def via(url: str, port: int) -> str:
    """`url` with its host and port replaced by the relay's, 127.0.0.1:`port`."""
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    netloc = f"{user}@127.0.0.1:{port}" if user else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


class DbLinks:
    """One relay per relayed node, kept cut or up as `store_node.link` says."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        parts = urlsplit(database_url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.relays: dict[str, TcpProxy] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def relay(self, node_id: str) -> str:
        """A relay for `node_id`; the DATABASE_URL the node should use to go through it."""
        proxy = TcpProxy(self._target[1], self._target[0])
        self.relays[node_id] = proxy
        return via(self.database_url, proxy.port)

    def start(self) -> DbLinks:
        self._thread = threading.Thread(target=self._watch, name="demo-db-links", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        for proxy in self.relays.values():
            proxy.stop()

    def _watch(self) -> None:
        conn: psycopg.Connection | None = None
        while not self._stop.wait(POLL_S):
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(libpq_url(self.database_url), autocommit=True, connect_timeout=5)
                self.apply(dict(conn.execute("SELECT node_id, link FROM store_node").fetchall()), conn)
            except psycopg.Error as exc:
                # The demo's own link is direct; a database restarting is no reason to stop.
                log.warning("database links: cannot read the nodes' links (%s); trying again", exc)
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def apply(self, asked: dict[str, str], conn: psycopg.Connection) -> None:
        """Bring each relay to what was asked; set back cuts no relay can carry out."""
        for node_id, proxy in self.relays.items():
            cut = asked.get(node_id) == Link.CUT
            if cut and not proxy.refusing:
                proxy.down()
                log.warning("database link of node %s: CUT (its connections dropped, new ones refused)", node_id)
            elif not cut and proxy.refusing:
                proxy.up()
                log.warning("database link of node %s: healed", node_id)
        for node_id, link in asked.items():
            if link == Link.CUT and node_id not in self.relays:
                log.warning(
                    "database link of node %s: cannot cut it, it has no relay in this demo (%s have one)",
                    node_id,
                    ", ".join(sorted(self.relays)) or "no node",
                )
                conn.execute("UPDATE store_node SET link = %s WHERE node_id = %s", (Link.UP.value, node_id))
