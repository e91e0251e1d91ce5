"""Routing commits a round's decisions together (issue 9, decision 0042): what the
database keeps and what the index believes stay the same when a round fails."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from postroom.core.keys import KeyRing
from postroom.core.lifecycle import State
from postroom.engine import routing
from postroom.engine.routing import RoutingDesk
from postroom.engine.site import Site
from postroom.mail.smtp import SmtpAccount
from postroom.store.models import Agent, Interaction, JournalEvent, Mailbox, Outgoing

pytestmark = pytest.mark.django_db(transaction=True)


def site() -> Site:
    return Site(
        node_id="n", keys=KeyRing.from_secrets([b"x" * 32]), imap_host="127.0.0.1", imap_port=1, imap_tls="none",
        smtp=SmtpAccount(host="127.0.0.1", port=1, tls="none", login="", password=""),
    )


def queued(n: int) -> list[Interaction]:
    box = Mailbox.objects.create(address="support@example.test", login="s")
    Mailbox.objects.create(address="outbound@example.test", login="o", kind=Mailbox.OUTBOUND)
    start = timezone.now() - timedelta(minutes=5)
    return [
        Interaction.objects.create(
            node_id="n", mailbox=box, uidvalidity=1, uid=i + 1, customer=f"c{i}@customer.test",
            arrival_time=start + timedelta(seconds=i),
        )
        for i in range(n)
    ]


def test_a_round_routes_each_item_once_with_its_journal_row_and_notice() -> None:
    items = queued(3)
    Agent.objects.create(
        name="Alice", address="alice@example.test", skills=["unassigned"], capacity=5, ready=True,
        notify_offers=True, state_changed_at=timezone.now(),
    )
    desk = RoutingDesk(site())
    assert desk.route(timezone.now())
    for ix in items:
        ix.refresh_from_db()
        assert ix.state is State.ROUTED and ix.agent.address == "alice@example.test"
    assert JournalEvent.objects.filter(kind="routed").count() == 3
    assert Outgoing.objects.filter(key__startswith="notice:offer:").count() == 3
    assert Agent.objects.get(address="alice@example.test").routed_count == 3
    assert not desk.route(timezone.now())


def test_a_round_that_fails_is_routed_again_in_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    """The second decision of a round fails (the database goes away, say): the index had
    taken all three as routed. They are routed at the next round, not left queued until
    the index's next full rebuild (minutes later)."""
    items = queued(3)
    Agent.objects.create(
        name="Alice", address="alice@example.test", skills=["unassigned"], capacity=5, ready=True,
        notify_offers=True, state_changed_at=timezone.now(),
    )
    calls = []
    real = routing.queue_notice

    def failing(*args: object, **kwargs: object) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the database went away")
        real(*args, **kwargs)

    monkeypatch.setattr(routing, "queue_notice", failing)
    desk = RoutingDesk(site())
    with pytest.raises(RuntimeError):
        desk.route(timezone.now())
    monkeypatch.setattr(routing, "queue_notice", real)
    desk.route(timezone.now())
    for ix in items:
        ix.refresh_from_db()
        assert ix.state is State.ROUTED, ix.pk
    # Once each: the failed round left nothing behind.
    assert JournalEvent.objects.filter(kind="routed").count() == 3
    assert Outgoing.objects.filter(key__startswith="notice:offer:").count() == 3


def test_the_next_round_does_not_read_back_what_its_own_round_wrote(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decision 0055: the journal rows a round committed (routed, its agent's load one up)
    say what the index made so itself when it assigned; the next round's sync passes over
    them instead of reading those interactions and agents again. Whatever anyone else
    journals is still read: a new item is routed, an agent's change is seen."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from postroom.store import journal

    items = queued(3)
    Agent.objects.create(
        name="Alice", address="alice@example.test", skills=["unassigned"], capacity=5, ready=True,
        state_changed_at=timezone.now(),
    )
    monkeypatch.setattr(routing, "AGENT_REFRESH_EVERY", 3600.0)
    desk = RoutingDesk(site())
    assert desk.route(timezone.now())
    assert desk.own and JournalEvent.objects.filter(kind="routed", id__in=desk.own).count() == 3

    with CaptureQueriesContext(connection) as queries:
        assert not desk.route(timezone.now())
    read_back = [q["sql"] for q in queries.captured_queries if '"store_interaction"' in q["sql"] or '"store_agent"' in q["sql"]]
    assert read_back == []  # on main: the three routed items and Alice's load read again
    assert not desk.own
    assert desk.router.agent("alice@example.test").load == 3

    # Someone else's rows are read as before: a new mail queued, Alice's load changed
    # behind the index's back (an interaction of hers ended elsewhere).
    box = Mailbox.objects.get(address="support@example.test")
    now = timezone.now()
    with transaction.atomic():
        late = Interaction.objects.create(
            node_id="n", mailbox=box, uidvalidity=1, uid=99, customer="late@customer.test", arrival_time=now
        )
        journal.record("queued", now, interaction=late)
    Interaction.objects.filter(pk=items[0].pk).update(status=State.CLOSED.value)
    with transaction.atomic():
        journal.record("closed", now, interaction=Interaction.objects.get(pk=items[0].pk))
    assert desk.route(timezone.now())
    late.refresh_from_db()
    assert late.state is State.ROUTED and late.agent.address == "alice@example.test"
    # 3 routed - 1 closed + 1 routed now, as the database counts them.
    assert desk.router.agent("alice@example.test").load == 3


def test_a_round_with_a_decision_the_database_did_not_keep_is_read_back_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """A decision that lost its compare-and-set was counted for its agent by the index all
    the same: that round's rows are not passed over, so the next sync reads its agents'
    loads from the database again (decision 0055)."""
    items = queued(3)
    Agent.objects.create(
        name="Alice", address="alice@example.test", skills=["unassigned"], capacity=5, ready=True,
        state_changed_at=timezone.now(),
    )
    desk = RoutingDesk(site())
    real = desk.commit
    monkeypatch.setattr(desk, "commit", lambda ix, *a, **k: False if ix.pk == items[1].pk else real(ix, *a, **k))
    assert desk.route(timezone.now())
    assert desk.own == set()
    assert desk.router.agent("alice@example.test").load == 3  # the index's count, one too many
    monkeypatch.setattr(desk, "commit", real)
    desk.sync(timezone.now())
    assert desk.router.agent("alice@example.test").load == 2  # as the database counts them
