"""Nodes: any number of engine processes on one database (decisions 0030, 0031).

A node registers under its `node_id` (a `Node` row with a fresh epoch, its fencing
token), renews its lease with a heartbeat, and holds `Lease` rows for the work only one
node may do at a time: each watched mailbox, and the routing desk. Which leases a node
takes and gives back is decided by `core/cluster.py`; this module carries it out, each
step a compare-and-set, and fences out a node whose lease ran out before taking its work:
its database sessions are ended and its epoch raised, so the database refuses whatever it
still writes (store/fence.py).

Times are the database's (`Now()`), never a node's own clock: nodes on several machines
agree on when a lease ends without agreeing on the time.

SQLite holds one node only: a second node refuses to start with the name of the one
running, as one engine per database always did. A node restarted in place (same node id,
same host, the old process gone) takes over at once.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, connections, transaction
from django.db.backends.signals import connection_created
from django.db.models import BooleanField, ExpressionWrapper, F, Q
from django.db.models.functions import Now
from django.utils import timezone

from postroom.core.cluster import Mode, Peer, Plan, Role, plan
from postroom.store import fence
from postroom.store.compiled import Compiled, CompiledUpdate
from postroom.store.fence import app_name, end_sessions
from postroom.store.models import Lease, Node, Outgoing

log = logging.getLogger(__name__)


class NodeRefused(Exception):
    """This node may not start: another process runs under its node id, or (SQLite)
    another node runs on the database. The message names it."""


class Fenced(Exception):
    """This node's epoch or lease is gone: it must stop working and register again."""


@dataclass(frozen=True)
class Ticket:
    """This process's registration: what its database connections carry."""

    node_id: str
    role: Role
    epoch: int
    lease: timedelta
    hostname: str
    pid: int


# The ticket of this process, read by every new database connection (`_configure`).
_current: Ticket | None = None


def _configure(sender: Any, connection: Any, **kwargs: Any) -> None:
    """Every engine connection says which node and epoch it writes for (store/fence.py),
    and remembers the registration it was opened under (`keep_connection`)."""
    ticket = _current
    connection.postroom_ticket = ticket
    if ticket is None or connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('postroom.node', %s, false), set_config('postroom.epoch', %s, false), "
            "set_config('application_name', %s, false)",
            [ticket.node_id, str(ticket.epoch), app_name(ticket.node_id, ticket.epoch)],
        )


connection_created.connect(_configure, dispatch_uid="postroom.engine.nodes")


def keep_connection() -> None:
    """At the top of an engine loop's round, instead of `close_old_connections`: this
    thread's connections are closed when broken (Django's own check after an error, or
    autocommit left off) or opened under another registration than this process's
    current one (the fence reads the epoch a connection was opened with: a new epoch
    after a stand-down needs a new connection), and otherwise kept. With the database's
    CONN_MAX_AGE of 0, `close_old_connections` closed every one at every round: each of
    the worker's, the senders' and the watchers' rounds connected again (0.34 ms of CPU
    on SQLite, more on PostgreSQL: decision 0069)."""
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None and getattr(conn, "postroom_ticket", None) is not _current:
            conn.close()
            continue
        conn.close_at = None  # not closed for its age (CONN_MAX_AGE 0 would close it now)
        conn.close_if_unusable_or_obsolete()


def shared() -> bool:
    """Whether the database can hold several nodes (PostgreSQL) or one (SQLite)."""
    return connection.vendor == "postgresql"


def _live() -> Q:
    return Q(stopped_at=None, lease_until__gt=Now())


def with_liveness() -> Any:
    return Node.objects.annotate(live=ExpressionWrapper(_live(), output_field=BooleanField()))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def register(node_id: str, role: Role, lease: timedelta) -> Ticket:
    """Register this process as `node_id` with a new epoch; NodeRefused if it may not."""
    global _current, _written
    me, pid = socket.gethostname(), os.getpid()
    if shared():
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '10s'")
            added = fence.install(cursor)
            cursor.execute("SET lock_timeout = 0")
        if added:
            log.info("fence installed on %s", ", ".join(added))
    replaced: Node | None = None
    with transaction.atomic():
        row = with_liveness().select_for_update(of=("self",)).filter(node_id=node_id).first()
        # The process this one replaces, known dead (this host, its pid gone), whether or
        # not its lease has run out yet: its outbox claims end at once (below).
        if row is not None and row.hostname == me and row.pid != pid and not _pid_alive(row.pid):
            replaced = row
        if row is not None and row.live and (row.hostname, row.pid) != (me, pid):
            if row.hostname != me or _pid_alive(row.pid):
                raise NodeRefused(
                    f"node {node_id!r} is already running: pid {row.pid} on {row.hostname}, lease until "
                    f"{row.lease_until:%Y-%m-%d %H:%M:%S} UTC (stop it first, give this one another "
                    "node id, or start it once that lease has expired)"
                )
            log.warning("node %s: pid %s on this host is gone; taking over at once", node_id, row.pid)
        if not shared():
            other = with_liveness().exclude(node_id=node_id).filter(live=True).first()
            if other is not None:
                raise NodeRefused(
                    f"another node runs on this database: node {other.node_id!r}, pid {other.pid} on "
                    f"{other.hostname}, lease until {other.lease_until:%Y-%m-%d %H:%M:%S} UTC. SQLite holds "
                    "one node only: use PostgreSQL (DATABASE_URL) for several nodes, or stop that one first"
                )
        now = timezone.now()
        epoch = (row.epoch if row is not None else 0) + 1
        values: dict[str, Any] = {
            "role": role.value,
            "mode": Mode.NORMAL.value,
            "epoch": epoch,
            "hostname": me,
            "pid": pid,
            "started_at": now,
            "heartbeat_at": now,
            "stopped_at": None,
            "detail": {},
            "lease_until": Now() + lease,
        }
        try:
            with transaction.atomic():
                if row is None:
                    Node.objects.create(node_id=node_id, **{**values, "lease_until": now})
                Node.objects.filter(node_id=node_id).update(**values)
        except IntegrityError as exc:
            raise NodeRefused(f"node {node_id!r} was registered by another process at the same moment") from exc
    if replaced is not None:
        if shared() and replaced.live:
            end_sessions(node_id, replaced.epoch)
        end_claims_of_dead(replaced)
    ticket = Ticket(node_id, role, epoch, lease, me, pid)
    _written = None  # the row's detail and mode were just reset: the next heartbeat writes them
    # Connections opened from now on carry the ticket (one already open does not: the
    # engine opens its working threads' connections afresh).
    _current = ticket
    log.info("node %s registered (%s, epoch %d)", node_id, role.value, epoch)
    return ticket


# The heartbeat's UPDATE, compiled by Django once per registration (its node, epoch and
# lease are the statement's only arguments): compiling it every second was half of the
# supervisor's time once the look was compiled (decision 0058). The node's detail and mode
# are written when they change, in a statement of their own after the renewal.
_RENEW = CompiledUpdate()
# (ticket, detail as JSON, mode) as last written by this process's heartbeat.
_written: tuple[Ticket, str, str] | None = None


def heartbeat(ticket: Ticket, detail: dict[str, Any], mode: Mode = Mode.NORMAL) -> None:
    """Renew our lease (only while it is still live); Fenced if it is not ours any more."""
    global _written
    renewed = _RENEW.run(
        ticket,
        lambda: Node.objects.filter(node_id=ticket.node_id, epoch=ticket.epoch).filter(_live()),
        lambda: {"heartbeat_at": Now(), "lease_until": Now() + ticket.lease},
    )
    if renewed == 1:
        shown = (ticket, json.dumps(detail, sort_keys=True, cls=DjangoJSONEncoder), mode.value)
        if shown != _written:
            Node.objects.filter(node_id=ticket.node_id, epoch=ticket.epoch).update(detail=detail, mode=mode.value)
            _written = shown
        return
    row = Node.objects.filter(node_id=ticket.node_id).first()
    if row is None:
        raise Fenced(f"node {ticket.node_id} was removed from the database")
    if (row.hostname, row.pid) != (ticket.hostname, ticket.pid) and row.epoch > ticket.epoch:
        raise Fenced(f"node {ticket.node_id} was taken over by pid {row.pid} on {row.hostname}")
    if row.epoch != ticket.epoch:
        raise Fenced(f"node {ticket.node_id} was fenced out by another node (epoch {ticket.epoch} → {row.epoch})")
    raise Fenced(f"the lease of node {ticket.node_id} ran out before it was renewed")


def replaced_by_another_process(exc: Fenced) -> bool:
    return "was taken over by pid" in str(exc)


def stop(ticket: Ticket) -> None:
    """A clean stop: the node's leases are free at once."""
    Node.objects.filter(node_id=ticket.node_id, epoch=ticket.epoch).update(
        stopped_at=Now(), lease_until=Now(), mode=Mode.STOPPED.value
    )


def islands_out() -> bool:
    """May some node be working on its local store, or not have merged it yet (decision
    0045)? One whose lease ran out without a clean stop (it may be cut off: it cannot
    say), or whose row says island (merging, or beside such a node). Until it is live
    again, stopped or forgotten (`postroom node forget`), its interactions may be unknown
    here."""
    return (
        Node.objects.filter(stopped_at=None)
        .filter(Q(lease_until__lte=Now()) | Q(mode=Mode.ISLAND.value))
        .exists()
    )


def forget() -> None:
    """This process no longer writes as a node (its new connections carry nothing)."""
    global _current
    _current = None


def end_claims_of_dead(row: Node) -> int:
    """End the outbox claims of a node's process known to be dead (this host, its pid
    gone), instead of waiting out their lease ([outbox] lease, 5 minutes by default):
    nobody can still be sending under them, and each row is then settled as any claim
    that ended is, from the journal box after its grace (decision 0007). Only that
    process's claims (`outbox.claimant`: node:pid:token): other nodes' stay theirs. A
    process that may be alive (another host, or paused) is waited out."""
    if row.hostname != socket.gethostname() or _pid_alive(row.pid):
        return 0
    now = timezone.now()
    ended = Outgoing.objects.filter(
        state=Outgoing.SENDING, claimed_by__startswith=f"{row.node_id}:{row.pid}:", lease_until__gt=now
    ).update(lease_until=now)
    if ended:
        log.warning("ended %d outbox claims of node %s pid %s, which is gone: settled from the journal box", ended, row.node_id, row.pid)
    return ended


def fence_out(victim: str, epoch: int) -> bool:
    """Make sure `victim` (whose lease ran out at `epoch`) can write nothing more: its
    sessions are ended, its row locked (waiting for any write still in flight) and its
    epoch raised. False if it renewed in the meantime (it is live: nothing to take)."""
    if shared():
        ended = end_sessions(victim, epoch)
        if ended:
            log.warning("node %s: ended %d database session(s) of its epoch %d", victim, ended, epoch)
    with transaction.atomic():
        if shared():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '5s'")
        row = with_liveness().select_for_update(of=("self",)).filter(node_id=victim, epoch=epoch).first()
        if row is None:
            return True  # fenced out already (or re-registered with a new epoch)
        if row.live:
            return False
        Node.objects.filter(pk=row.pk).update(epoch=F("epoch") + 1)
    log.warning("node %s fenced out (epoch %d → %d): its lease ran out", victim, epoch, epoch + 1)
    end_claims_of_dead(row)
    return True


# -- leases ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class View:
    """One look at the nodes and the leases."""

    nodes: dict[str, Any]
    leases: dict[str, Lease]

    def holder(self, name: str) -> str | None:
        """The live holder of lease `name`, or None."""
        lease = self.leases.get(name)
        if lease is None or not lease.node_id:
            return None
        node = self.nodes.get(lease.node_id)
        return lease.node_id if node is not None and node.live and node.epoch == lease.epoch else None

    def peers(self) -> list[Peer]:
        return [Peer(n.node_id, Role(n.role), bool(n.live)) for n in self.nodes.values()]


# What `look` reads at every heartbeat, compiled by Django once per thread and connection:
# building and compiling the two SELECTs was most of the supervisor thread's time
# (decision 0058). They run at every look all the same: nothing of the answer is kept.
_NODES = Compiled(with_liveness)
_LEASES = Compiled(Lease.objects.all)


def look() -> View:
    return View(
        nodes={n.node_id: n for n in _NODES.objects()},  # type: ignore[attr-defined]
        leases={lease.name: lease for lease in _LEASES.objects()},  # type: ignore[attr-defined]
    )


def plan_for(ticket: Ticket, view: View, boxes: list[int]) -> Plan:
    names = set(view.leases) | {"router"} | {f"mailbox:{pk}" for pk in boxes}
    return plan(ticket.node_id, view.peers(), {n: view.holder(n) for n in names}, boxes)


def take(ticket: Ticket, name: str, view: View) -> int | None:
    """Take lease `name`, which `view` shows free; its new token, or None if another node
    was quicker. A holder whose lease ran out is fenced out first."""
    seen = view.leases.get(name)
    if seen is None:
        try:
            with transaction.atomic():
                Lease.objects.create(name=name, node_id=ticket.node_id, epoch=ticket.epoch, token=1, acquired_at=timezone.now())
        except IntegrityError:
            return None
        return 1
    holder = view.nodes.get(seen.node_id)
    if (
        seen.node_id
        and seen.node_id != ticket.node_id
        and holder is not None
        and holder.epoch == seen.epoch
        and holder.stopped_at is None
        and not fence_out(seen.node_id, seen.epoch)
    ):
        return None
    won = Lease.objects.filter(pk=seen.pk, node_id=seen.node_id, epoch=seen.epoch, token=seen.token).update(
        node_id=ticket.node_id, epoch=ticket.epoch, token=F("token") + 1, acquired_at=Now()
    )
    return seen.token + 1 if won == 1 else None


def lost_holder(ticket: Ticket, name: str, view: View) -> str | None:
    """The node that held lease `name` in `view` and lost it without stopping cleanly (it
    died, or lost the database: it may be working on its own, decision 0036); None when the
    lease was free, ours, or given back by a clean stop."""
    seen = view.leases.get(name)
    if seen is None or not seen.node_id or seen.node_id == ticket.node_id:
        return None
    holder = view.nodes.get(seen.node_id)
    return seen.node_id if holder is not None and holder.stopped_at is None else None


def release(ticket: Ticket, name: str) -> None:
    """Give lease `name` back (the token stays, so the next holder's is higher)."""
    Lease.objects.filter(name=name, node_id=ticket.node_id, epoch=ticket.epoch).update(node_id="", epoch=0)


def db_now() -> datetime:
    """The database's clock (the one leases are judged by)."""
    if shared():
        with connection.cursor() as cursor:
            cursor.execute("SELECT clock_timestamp()")
            return cursor.fetchone()[0]
    return timezone.now()
