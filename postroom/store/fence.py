"""Fencing on PostgreSQL: the database refuses every write of a node whose lease is gone.

A node that was paused (SIGSTOP, a VM freeze, a long stall) past its lease comes back
believing it still owns its mailboxes; meanwhile another node took them. Whatever the
stale node then writes must be refused, whichever code path writes it. So the check is
not in the code paths but in the database, in the writing transaction (decision 0031):

* every engine connection carries its node id and epoch as session settings
  (`postroom.node`, `postroom.epoch`; `engine/nodes.py` sets them when a connection
  opens), and an application name that names them, so the connections of one node's
  incarnation can be found and ended;
* a statement trigger on every table of the store (but `store_node` itself) checks that
  the node's row still has that epoch and a lease live by the database's clock, and
  takes a FOR KEY SHARE lock on the row, held to the commit;
* a node that fences another out locks that row FOR UPDATE (which waits for the writes
  in flight, or ends the stale node's sessions first) and raises its epoch: from then on
  every write of the stale node fails with SQLSTATE `PRFEN`, and its heartbeat finds
  its epoch gone.

Connections without the settings (the web, the CLI, migrations) are not fenced: they
are people's commands, not a node's work. SQLite holds one node only and has no trigger.
A node's own heartbeat updates its row without changing a key, which FOR KEY SHARE does
not block, so a node's writes never hold up its own renewals.

`LISTEN/NOTIFY`: a second trigger notifies channel `postroom` after every insert into the
journal and the outbox, so nodes wake each other (and the web's changes wake them) at
once instead of polling.
"""

from __future__ import annotations

from typing import Any

from django.db import connection

SQLSTATE = "PRFEN"
CHANNEL = "postroom"
# Tables whose inserts wake the nodes: every state change journals, every mail is queued.
WAKE_TABLES = ("store_journalevent", "store_outgoing")
UNFENCED = ("store_node",)

FENCE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION postroom_fence() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  me text := current_setting('postroom.node', true);
BEGIN
  IF me IS NULL OR me = '' THEN
    RETURN NULL;
  END IF;
  PERFORM 1 FROM store_node
   WHERE node_id = me
     AND epoch = current_setting('postroom.epoch')::bigint
     AND stopped_at IS NULL
     AND lease_until > clock_timestamp()
   FOR KEY SHARE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'postroom fence: node % (epoch %) no longer holds its lease; write to % refused',
      me, current_setting('postroom.epoch'), TG_TABLE_NAME
      USING ERRCODE = '{SQLSTATE}';
  END IF;
  RETURN NULL;
END $$;
"""

WAKE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION postroom_wake() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('{CHANNEL}', TG_TABLE_NAME);
  RETURN NULL;
END $$;
"""


def app_name(node_id: str, epoch: int) -> str:
    """The PostgreSQL application_name of a node incarnation's connections (63 bytes at
    most), by which a node that fences it out ends them."""
    return f"postroom:{epoch}:{node_id}"[:63]


def end_sessions(node_id: str, epoch: int) -> int:
    """End the database sessions of one incarnation of a node (PostgreSQL): its open
    transactions roll back and let go of their locks, whatever state its process is in
    (a paused process cannot commit them)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s AND pid <> pg_backend_pid()",
            [app_name(node_id, epoch)],
        )
        return int(cursor.fetchone()[0])


class LeaseLost(Exception):
    """The lease a write depends on has another holder now (or none)."""


def store_tables(cursor: Any) -> list[str]:
    cursor.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE 'store\\_%'"
    )
    return sorted(row[0] for row in cursor.fetchall())


def _with_trigger(cursor: Any, name: str) -> set[str]:
    cursor.execute(
        "SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid WHERE t.tgname = %s AND NOT t.tgisinternal",
        [name],
    )
    return {row[0] for row in cursor.fetchall()}


def missing(cursor: Any) -> list[str]:
    """Store tables without the fence trigger (PostgreSQL)."""
    fenced = _with_trigger(cursor, "postroom_fence")
    return [t for t in store_tables(cursor) if t not in fenced and t not in UNFENCED]


def install(cursor: Any) -> list[str]:
    """Create the functions and every missing trigger; returns the tables newly fenced.
    Idempotent (run by the migration and again at every node start, for tables added by
    later migrations)."""
    cursor.execute(FENCE_FUNCTION)
    cursor.execute(WAKE_FUNCTION)
    tables = missing(cursor)
    for table in tables:
        cursor.execute(
            f'CREATE OR REPLACE TRIGGER postroom_fence BEFORE INSERT OR UPDATE OR DELETE ON "{table}" '
            "FOR EACH STATEMENT EXECUTE FUNCTION postroom_fence()"
        )
    # Only where missing: a trigger is created under a table lock, which a node starting
    # beside busy nodes should not wait for.
    waking = _with_trigger(cursor, "postroom_wake")
    for table in (t for t in WAKE_TABLES if t not in waking):
        cursor.execute(
            f'CREATE OR REPLACE TRIGGER postroom_wake AFTER INSERT ON "{table}" '
            "FOR EACH STATEMENT EXECUTE FUNCTION postroom_wake()"
        )
    return tables


def install_for_migration(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            install(cursor)


def is_fence_error(exc: BaseException | None) -> bool:
    """Whether `exc` (or what caused it) is the database refusing a fenced-out write."""
    seen = 0
    while exc is not None and seen < 10:
        if getattr(exc, "sqlstate", None) == SQLSTATE or "postroom fence:" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def hold_lease(name: str, node_id: str, token: int) -> None:
    """In the caller's transaction: the lease `name` is still `node_id`'s under `token`,
    locked against a change of holder until the commit; LeaseLost otherwise. What a
    watcher writes about its box (the cursor, and with it every message it takes) passes
    through here, so a watcher that lost its box writes nothing more about it."""
    sql = "SELECT 1 FROM store_lease WHERE name = %s AND node_id = %s AND token = %s"
    if connection.vendor == "postgresql":
        sql += " FOR SHARE"
    with connection.cursor() as cursor:
        cursor.execute(sql, [name, node_id, token])
        if cursor.fetchone() is None:
            raise LeaseLost(f"{name} is no longer held by {node_id} under token {token}")
