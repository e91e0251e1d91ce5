"""The reads on the path from a routed mail to its forward, compiled once (decision 0067):
delivery's due rows are `delivery.waiting()`'s (one definition of "due", equality shown on
every case of it), routing's round reads the same interactions and agents as before, and
an idle routing round on SQLite asks one question yet takes in whatever is journaled
after it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from postroom.core.lifecycle import State
from postroom.engine import delivery, routing
from postroom.engine.routing import RoutingDesk
from postroom.store import journal, locking
from postroom.store.models import Agent, Interaction, JournalEvent, Mailbox, Outgoing
from tests.integration.test_routing_round import queued, site

pytestmark = pytest.mark.django_db(transaction=True)


def forward(ix: Interaction, n: int, agent: Agent, delivery_no: int | None, state: str) -> None:
    Outgoing.objects.create(
        key=f"forward:{ix.guid}:{n}", kind=Outgoing.FORWARD, interaction=ix, delivery=delivery_no, agent=agent,
        envelope_from="outbound@example.test", recipients=[agent.address], message_id=f"<{n}@x>", raw=b"x",
        state=state, next_attempt_at=timezone.now(),
    )


def described(rows) -> list[tuple]:
    """What delivery uses of each row, its related rows' included."""
    return [
        (ix.pk, ix.status, ix.deliveries, ix.uid, ix.uidvalidity, ix.guid, ix.mailbox.address,
         ix.mailbox.uidvalidity, ix.agent.address if ix.agent_id else None)
        for ix in rows
    ]


def orm_waiting() -> list[tuple]:
    return described(delivery.waiting()[: delivery.BATCH])


def compiled_waiting() -> list[tuple]:
    with locking.batch_compiled(delivery._WAITING, delivery._WAITING_HELD) as rows:
        return described(rows)


def test_delivery_s_compiled_read_is_the_querysets_in_every_case() -> None:
    box = Mailbox.objects.create(address="support@example.test", login="s", uidvalidity=7)
    Mailbox.objects.create(address="outbound@example.test", login="o", kind=Mailbox.OUTBOUND)
    alice = Agent.objects.create(name="Alice", address="alice@example.test", skills=["unassigned"], capacity=5)
    bob = Agent.objects.create(name="Bob", address="bob@example.test", skills=["unassigned"], capacity=5)
    start = timezone.now() - timedelta(hours=1)
    made: list[Interaction] = []
    for i in range(60):  # more than a batch: the limit is part of the compiled read
        made.append(Interaction.objects.create(
            node_id="n", mailbox=box, uidvalidity=7, uid=i + 1, customer=f"c{i}@customer.test",
            arrival_time=start + timedelta(seconds=i), priority=i % 3,
            status=State.ANSWERED if i % 7 else State.ROUTED, agent=alice if i % 2 else bob, deliveries=i % 3,
        ))
    assert compiled_waiting() == orm_waiting()
    # Every way a forward does or does not count as on its way.
    ans = [ix for ix in made if ix.status == State.ANSWERED]
    cases = [
        (ans[0], ans[0].deliveries, Outgoing.PENDING),  # this round's, in flight: not due
        (ans[1], ans[1].deliveries + 1, Outgoing.PENDING),  # another round's: due
        (ans[2], None, Outgoing.RETRY_WAIT),  # no round named, in flight: not due
        (ans[3], ans[3].deliveries, Outgoing.SENT),  # this round's, done
        (ans[4], ans[4].deliveries, Outgoing.UNKNOWN),  # this round's, maybe sent: not due
        (ans[5], ans[5].deliveries, Outgoing.CANCELLED),
    ]
    for n, (ix, seq, state) in enumerate(cases):
        forward(ix, n, ix.agent, seq, state)
    forward(ans[6], 90, bob if ans[6].agent == alice else alice, ans[6].deliveries, Outgoing.PENDING)  # another agent's
    expected = orm_waiting()
    assert compiled_waiting() == expected
    due = {row[0] for row in expected}
    assert not due & {ans[0].pk, ans[2].pk, ans[4].pk} and {ans[1].pk, ans[3].pk, ans[5].pk, ans[6].pk} <= due
    # Written after compiling: seen, in one statement.
    Interaction.objects.filter(status=State.ANSWERED).update(status=State.DELIVERED)
    assert compiled_waiting() == orm_waiting() == []
    Interaction.objects.filter(pk=made[-1].pk).update(status=State.ANSWERED, priority=9)
    with CaptureQueriesContext(connection) as queries:
        assert [row[0] for row in compiled_waiting()] == [made[-1].pk]
    assert len([q for q in queries.captured_queries if q["sql"].startswith("SELECT")]) == 1
    connection.close()  # a connection made again: compiled again, same answer
    assert compiled_waiting() == orm_waiting()
    assert delivery.outbound_box().address == "outbound@example.test"


def test_delivery_s_held_read_skips_rows_another_transaction_holds() -> None:
    """Where rows are shared (PostgreSQL), the compiled read is the locked one: a row
    another node's step holds is skipped, as `locking.batch` skipped it."""
    if not locking.shared():
        pytest.skip("SQLite holds one node: nothing to skip")
    import threading

    box = Mailbox.objects.create(address="support@example.test", login="s", uidvalidity=7)
    alice = Agent.objects.create(name="Alice", address="alice@example.test", skills=["unassigned"], capacity=5)
    a, b = (
        Interaction.objects.create(
            node_id="n", mailbox=box, uidvalidity=7, uid=i, customer="c@customer.test",
            arrival_time=timezone.now() + timedelta(seconds=i), status=State.ANSWERED, agent=alice,
        )
        for i in (1, 2)
    )
    held, done = threading.Event(), threading.Event()

    def other_node() -> None:
        try:
            with transaction.atomic():
                list(Interaction.objects.select_for_update().filter(pk=a.pk))
                held.set()
                done.wait(30)
        finally:
            connection.close()

    thread = threading.Thread(target=other_node)
    thread.start()
    try:
        assert held.wait(30)
        assert [row[0] for row in compiled_waiting()] == [b.pk]
    finally:
        done.set()
        thread.join()
    assert [row[0] for row in compiled_waiting()] == [a.pk, b.pk]


def test_an_idle_round_asks_one_question_and_takes_in_what_comes_after(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite (no look-back): a round with nothing journaled since the last reads the
    journal's newest id only; a mail queued after it is routed in the next round, and an
    agent made Ready after it is seen, in the order the journal says."""
    items = queued(2)
    alice = Agent.objects.create(
        name="Alice", address="alice@example.test", skills=["unassigned"], capacity=5, ready=True,
        state_changed_at=timezone.now(),
    )
    monkeypatch.setattr(routing, "AGENT_REFRESH_EVERY", 3600.0)
    desk = RoutingDesk(site())
    assert desk.route(timezone.now())
    assert not desk.route(timezone.now())  # passes over its own rows
    with CaptureQueriesContext(connection) as queries:
        assert not desk.route(timezone.now())
    if not locking.shared():
        # The compiled question, not the window's read (one statement too, on main).
        assert [q["sql"] for q in queries.captured_queries] == [routing._NEWEST._local.plan.sql % ()]
        assert desk.cursor == routing.newest_event()
    # Alice goes Not Ready and Bob Ready elsewhere (the web), then a mail is queued.
    now = timezone.now()
    bob = Agent.objects.create(
        name="Bob", address="bob@example.test", skills=["unassigned"], capacity=5, ready=True, state_changed_at=now,
    )
    Agent.objects.filter(pk=alice.pk).update(ready=False)
    with transaction.atomic():
        journal.record("agent_not_ready", now, agent=alice)
        journal.record("agent_ready", now, agent=bob)
    with transaction.atomic():
        late = Interaction.objects.create(
            node_id="n", mailbox=items[0].mailbox, uidvalidity=1, uid=99, customer="late@customer.test",
            arrival_time=now,
        )
        journal.record("queued", now, interaction=late)
    assert desk.route(timezone.now())
    late.refresh_from_db()
    assert late.state is State.ROUTED and late.agent.address == "bob@example.test"
    assert JournalEvent.objects.filter(kind="routed", interaction=late).count() == 1


def test_a_round_of_many_agents_reads_each_item_and_agent_it_routes() -> None:
    """The round's compiled reads by id and address: every item of a round spread over
    several agents is routed once, each to an agent with room, counted on that agent."""
    items = queued(12)
    for name in ("a", "b", "c"):
        Agent.objects.create(
            name=name, address=f"{name}@example.test", skills=["unassigned"], capacity=3, ready=True,
            state_changed_at=timezone.now(),
        )
    desk = RoutingDesk(site())
    assert desk.route(timezone.now())
    routed = Interaction.objects.filter(pk__in=[ix.pk for ix in items], status=State.ROUTED)
    assert routed.count() == 9  # three agents, three each
    assert sorted(ix.arrival_time for ix in routed) == sorted(ix.arrival_time for ix in items)[:9]  # arrival order
    assert sorted(Agent.objects.values_list("routed_count", flat=True)) == [3, 3, 3]
    assert JournalEvent.objects.filter(kind="routed").count() == 9
