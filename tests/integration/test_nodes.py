"""Nodes on one database (decisions 0030, 0031): registration, leases, and the fence.

On PostgreSQL the database itself refuses every write of a node whose lease is gone, in
the writing transaction: these tests write as a node through a connection of its own
(what an engine's working thread has) and check what the database lets through.
"""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from postroom.core.cluster import ROUTER, Role, mailbox_lease
from postroom.core.outbox import OutboxState
from postroom.engine import nodes
from postroom.engine.listener import conninfo
from postroom.store.commands import CommandError, forget_node
from postroom.store.models import Lease, Mailbox, Node, Outgoing

pytestmark = pytest.mark.django_db(transaction=True)

LEASE = timedelta(seconds=30)
postgres_only = pytest.mark.skipif(
    settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql", reason="PostgreSQL only"
)


@pytest.fixture(autouse=True)
def as_nobody():
    """The test's own connection never writes as a node."""
    yield
    nodes.forget()


def node_connection(ticket: nodes.Ticket) -> psycopg.Connection:
    """A connection as an engine thread of `ticket`'s node opens it."""
    conn = psycopg.connect(conninfo(settings.DATABASES["default"]), autocommit=True)
    conn.execute(
        "SELECT set_config('postroom.node', %s, false), set_config('postroom.epoch', %s, false), "
        "set_config('application_name', %s, false)",
        [ticket.node_id, str(ticket.epoch), nodes.app_name(ticket.node_id, ticket.epoch)],
    )
    return conn


def expire(node_id: str) -> None:
    Node.objects.filter(node_id=node_id).update(lease_until=timezone.now() - timedelta(seconds=1))


def write_as(conn: psycopg.Connection) -> None:
    conn.execute("INSERT INTO store_journalevent (at, kind, detail) VALUES (now(), 'probe', '{}')")


@postgres_only
def test_a_node_past_its_lease_writes_nothing_and_learns_it_was_fenced_out() -> None:
    ticket = nodes.register("node-a", Role.PRIMARY, LEASE)
    conn = node_connection(ticket)
    try:
        write_as(conn)  # live: allowed
        expire("node-a")
        with pytest.raises(psycopg.Error) as refused:
            write_as(conn)
        assert refused.value.sqlstate == "PRFEN"
        assert nodes.fence_out("node-a", ticket.epoch)
        assert Node.objects.get(node_id="node-a").epoch == ticket.epoch + 1
        # The node comes back (say, resumed after SIGSTOP): still refused, and told why.
        Node.objects.filter(node_id="node-a").update(lease_until=timezone.now() + LEASE)
        with pytest.raises(psycopg.Error):
            write_as(conn)
        with pytest.raises(nodes.Fenced, match="fenced out"):
            nodes.heartbeat(ticket, {})
    finally:
        conn.close()


@postgres_only
def test_fencing_out_ends_a_stale_nodes_open_transaction() -> None:
    """A paused node's open transaction (its locks with it) is ended, not waited for."""
    ticket = nodes.register("node-a", Role.PRIMARY, LEASE)
    conn = node_connection(ticket)
    conn.autocommit = False
    write_as(conn)  # a transaction left open, as by a process frozen before its commit
    expire("node-a")
    assert nodes.fence_out("node-a", ticket.epoch)
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
        conn.commit()
    conn.close()
    assert not Node.objects.filter(node_id="node-a", epoch=ticket.epoch).exists()


@postgres_only
def test_every_store_table_is_fenced() -> None:
    from postroom.store import fence

    with connection.cursor() as cursor:
        assert fence.missing(cursor) == []


def test_a_live_node_id_is_refused_and_a_live_other_host_respected_until_its_lease_ends() -> None:
    now = timezone.now()
    Node.objects.create(
        node_id="node-b", hostname="elsewhere.example", pid=1, epoch=4, started_at=now, heartbeat_at=now,
        lease_until=now + timedelta(seconds=30),
    )
    with pytest.raises(nodes.NodeRefused, match="already running"):
        nodes.register("node-b", Role.PRIMARY, LEASE)
    expire("node-b")
    ticket = nodes.register("node-b", Role.PRIMARY, LEASE)
    assert ticket.epoch == 5
    row = Node.objects.get(node_id="node-b")
    assert (row.epoch, row.pid) == (5, ticket.pid)


def test_sqlite_holds_one_node_only() -> None:
    nodes.register("node-a", Role.PRIMARY, LEASE)
    if nodes.shared():
        assert nodes.register("node-b", Role.PRIMARY, LEASE).node_id == "node-b"
    else:
        with pytest.raises(nodes.NodeRefused, match="SQLite holds one node only"):
            nodes.register("node-b", Role.PRIMARY, LEASE)


def test_leases_are_shared_out_and_a_dead_nodes_taken_over() -> None:
    boxes = [Mailbox.objects.create(address=f"box{n}@example.test", login=f"box{n}").pk for n in range(3)]
    a = nodes.register("node-a", Role.PRIMARY, LEASE)
    if not nodes.shared():
        pytest.skip("SQLite holds one node only")
    b = nodes.register("node-b", Role.PRIMARY, LEASE)
    standby = nodes.register("node-c", Role.SECONDARY, LEASE)

    def settle() -> dict[str, str]:
        for _ in range(3):
            for ticket in (a, b, standby):
                if Node.objects.filter(node_id=ticket.node_id, epoch=ticket.epoch, lease_until__gt=timezone.now()).exists():
                    view = nodes.look()
                    plan = nodes.plan_for(ticket, view, boxes)
                    for name in plan.release:
                        nodes.release(ticket, name)
                    for name in plan.take:
                        nodes.take(ticket, name, nodes.look())
        view = nodes.look()
        return {name: view.holder(name) for name in view.leases}

    held = settle()
    assert held[ROUTER] in ("node-a", "node-b")
    assert sorted(held[mailbox_lease(pk)] for pk in boxes) == ["node-a", "node-a", "node-b"]
    tokens = {lease.name: lease.token for lease in Lease.objects.all()}
    # node-b dies (its lease runs out): node-a takes its share, the standby still nothing.
    expire("node-b")
    held = settle()
    assert {held[mailbox_lease(pk)] for pk in boxes} == {"node-a"}
    assert held[ROUTER] == "node-a"
    assert Node.objects.get(node_id="node-b").epoch == b.epoch + 1  # fenced out first
    moved = [lease for lease in Lease.objects.all() if lease.node_id == "node-a" and tokens[lease.name] != lease.token]
    assert moved and all(lease.token == tokens[lease.name] + 1 for lease in moved)
    # Every primary gone: the secondary takes everything.
    expire("node-a")
    held = settle()
    assert set(held.values()) == {"node-c"}


@postgres_only
def test_a_commit_anywhere_wakes_a_listening_node() -> None:
    """LISTEN/NOTIFY: an insert into the journal (any node, the web) wakes the workers,
    told which table it was (decision 0041: the outbox's wake the senders)."""
    import threading

    from postroom.engine.listener import listen
    from postroom.store.models import JournalEvent

    wake, stop = threading.Event(), threading.Event()
    tables: list[str] = []
    pids: list[int] = []

    def heard(table: str, pid: int) -> None:
        tables.append(table)
        pids.append(pid)
        wake.set()

    thread = threading.Thread(target=listen, args=(heard, stop), daemon=True)
    thread.start()
    try:
        # Until the listener has said LISTEN, a notification may go unheard: say it again.
        for _ in range(100):
            JournalEvent.objects.create(at=timezone.now(), kind="probe", detail={})
            if wake.wait(0.1):
                break
        assert wake.is_set()
        wake.clear()
        JournalEvent.objects.create(at=timezone.now(), kind="probe", detail={})
        assert wake.wait(10.0)
        assert set(tables) == {JournalEvent._meta.db_table}
        # The notifying session's backend: how a node tells its own commits apart (0043).
        assert set(pids) == {connection.connection.info.backend_pid}
    finally:
        stop.set()
        thread.join(5)


@postgres_only
def test_the_router_takes_in_an_event_that_commits_after_a_later_one() -> None:
    """Ids are handed out at the insert and seen at the commit: an agent going Ready in a
    transaction that commits after another writer's later event is still taken in."""
    from postroom.core.keys import KeyRing
    from postroom.engine.routing import RoutingDesk
    from postroom.engine.site import Site
    from postroom.mail.smtp import SmtpAccount
    from postroom.store.models import Agent, JournalEvent

    site = Site(
        node_id="n", keys=KeyRing.from_secrets([b"x" * 32]), imap_host="127.0.0.1", imap_port=1, imap_tls="none",
        smtp=SmtpAccount(host="127.0.0.1", port=1, tls="none", login="", password=""),
    )
    agent = Agent.objects.create(name="Alice", address="alice@example.test", skills=["support"])
    desk = RoutingDesk(site)
    desk.sync(timezone.now())
    slow = psycopg.connect(conninfo(settings.DATABASES["default"]))  # a transaction of its own
    try:
        slow.execute("UPDATE store_agent SET ready = true, state_changed_at = now() WHERE id = %s", [agent.pk])
        slow.execute(
            "INSERT INTO store_journalevent (at, kind, agent_id, detail) VALUES (now(), 'agent_ready', %s, '{}')",
            [agent.pk],
        )
        JournalEvent.objects.create(at=timezone.now(), kind="probe", detail={})  # a later id, committed first
        desk.sync(timezone.now())
        assert not desk.router.agent(agent.address).ready
        slow.commit()
    finally:
        slow.close()
    desk.sync(timezone.now())
    assert desk.router.agent(agent.address).ready


# -- the operator forgets a node (`postroom node forget`) -----------------------------------


def sending_row(key: str, claimed_by: str) -> Outgoing:
    now = timezone.now()
    return Outgoing.objects.create(
        key=key, kind=Outgoing.NOTICE, envelope_from="a@example.test", recipients=["b@example.test"],
        message_id=f"<{key}@example.test>", raw=b"", state=OutboxState.SENDING, next_attempt_at=now,
        claimed_by=claimed_by, lease_until=now + timedelta(minutes=5),
    )


def test_a_live_node_cannot_be_forgotten_and_an_unknown_one_is_named() -> None:
    nodes.register("node-a", Role.PRIMARY, LEASE)
    nodes.forget()
    with pytest.raises(CommandError, match="is live") as refused:
        forget_node("node-a", by_user="cli:test", now=timezone.now())
    assert refused.value.status == 409
    with pytest.raises(CommandError, match="No node 'node-x'"):
        forget_node("node-x", by_user="cli:test", now=timezone.now())
    row = Node.objects.get(node_id="node-a")
    assert row.stopped_at is None and row.epoch == 1


def test_forgetting_a_node_past_its_lease_stops_it_raises_its_epoch_and_ends_its_outbox_claims() -> None:
    ticket = nodes.register("node-a", Role.PRIMARY, LEASE)
    nodes.forget()
    mine, other = sending_row("n1", f"node-a:{ticket.pid}:t1"), sending_row("n2", "node-b:1:t2")
    expire("node-a")
    now = timezone.now()
    assert forget_node("node-a", by_user="cli:test", now=now) is True
    row = Node.objects.get(node_id="node-a")
    assert row.stopped_at is not None and row.epoch == ticket.epoch + 1 and row.mode == "stopped"
    assert row.detail["forgotten_by"] == "cli:test"
    # Its claim ends now (settled from the journal box before anyone sends it again);
    # another node's stays.
    mine.refresh_from_db(), other.refresh_from_db()
    assert mine.lease_until == now and other.lease_until > now
    assert forget_node("node-a", by_user="cli:test", now=now) is False  # already stopped
    # Should it come back, its old registration is gone: it must register again.
    with pytest.raises(nodes.Fenced):
        nodes.heartbeat(ticket, {})
    assert nodes.register("node-a", Role.PRIMARY, LEASE).epoch == ticket.epoch + 2


@postgres_only
def test_a_forgotten_node_s_old_incarnation_writes_nothing() -> None:
    ticket = nodes.register("node-a", Role.PRIMARY, LEASE)
    nodes.forget()
    conn = node_connection(ticket)
    write_as(conn)
    expire("node-a")
    forget_node("node-a", by_user="cli:test", now=timezone.now())
    with pytest.raises(psycopg.errors.Error):
        write_as(conn)  # its session was ended (or, were it not, the fence refuses it)
    fresh = node_connection(ticket)
    with pytest.raises(psycopg.errors.Error, match="postroom fence"):
        write_as(fresh)
    fresh.close()
