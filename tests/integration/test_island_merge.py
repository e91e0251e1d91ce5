"""store.islandmerge against the real database (PostgreSQL in the second pass of `make
test`): the cut-off node merges an email whose claim it won while the node on the database,
having lost that claim to it, had closed the shared record as claimed elsewhere
(engine/claimloss.py). The record is reopened and queued for routing, once, with the
winner's claim; a record closed for any other reason keeps its outcome; and a lost-claim
ending that comes after the merge leaves the winner's merged record alone.

The local store is a real SQLite file, migrated, under the alias the engine uses
(engine/localstore.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.sqlite3.base import DatabaseWrapper
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from postroom.core.island import EmailKey
from postroom.core.islandlocal import answer_message_id
from postroom.core.lifecycle import HungUp, Routed, State
from postroom.core.outbox import OutboxState
from postroom.engine.claimloss import end_lost
from postroom.engine.localstore import LOCAL
from postroom.engine.site import Site
from postroom.store.islandmerge import merge_back
from postroom.store.models import Agent, Interaction, JournalEvent, Mailbox, Outgoing
from postroom.store.transitions import apply
from tests.sites import offline_site

pytestmark = pytest.mark.django_db

BOX = "support@example.test"
WINNER, LOSER = "node-p", "node-s"
SHA = "ab" * 32


@pytest.fixture
def local(tmp_path: Path) -> Iterator[str]:
    """A migrated local store holding the box, under the engine's alias. Its connection is
    this thread's only, made here and not named in the settings: the test's database
    guard refuses configured aliases a test did not declare (the engine names it in
    `connections.settings`, engine/localstore.py)."""
    from postroom.settings import sqlite_database

    settings = connections.configure_settings({DEFAULT_DB_ALIAS: sqlite_database(tmp_path / "island.sqlite3")})
    connections[LOCAL] = DatabaseWrapper(settings[DEFAULT_DB_ALIAS], alias=LOCAL)
    executor = MigrationExecutor(connections[LOCAL])
    executor.migrate(executor.loader.graph.leaf_nodes())
    Mailbox.objects.using(LOCAL).create(address=BOX, login=BOX)
    try:
        yield LOCAL
    finally:
        connections[LOCAL].close()
        del connections[LOCAL]


def shared_email(n: int, now: datetime) -> Interaction:
    box, _ = Mailbox.objects.get_or_create(address=BOX, defaults={"login": BOX})
    return Interaction.objects.create(
        node_id=LOSER, mailbox=box, uidvalidity=1, uid=n, customer=f"c{n}@customer.test",
        arrival_time=now - timedelta(minutes=5), message_id=f"<m{n}@customer.test>", raw_sha256=SHA,
        priority=30,
    )


def ar_id(n: int) -> str:
    ident = answer_message_id("ar", BOX, f"<m{n}@customer.test>", SHA, "example.test")
    assert ident is not None
    return ident


def won_on_the_island(alias: str, n: int, now: datetime, *, sent: bool = True, read: bool = True) -> Interaction:
    """The island's record: claim won, auto-response sent under its derived ID (unless
    the link came back before it left, or before the island read its win)."""
    box = Mailbox.objects.using(alias).get(address=BOX)
    ix = Interaction.objects.using(alias).create(
        node_id=WINNER, mailbox=box, uidvalidity=1, uid=n, customer=f"c{n}@customer.test",
        arrival_time=now - timedelta(minutes=5), message_id=f"<m{n}@customer.test>", raw_sha256=SHA,
        claim_node=WINNER if read else "", claim_time=now - timedelta(minutes=2) if read else None,
        auto_response_sent_at=now - timedelta(minutes=2) if sent else None,
    )
    if not sent:
        return ix
    Outgoing.objects.using(alias).create(
        key=f"auto_response:{ix.guid}", kind=Outgoing.AUTO_RESPONSE, interaction=ix, envelope_from="",
        recipients=[ix.customer], message_id=ar_id(n), raw=b"ar", state=OutboxState.SENT,
        next_attempt_at=now, sent_at=now - timedelta(minutes=2),
    )
    return ix


def test_a_record_closed_by_the_node_that_lost_the_claim_is_reopened_and_queued(local: str) -> None:
    now = timezone.now()
    Agent.objects.create(name="Alice", address="alice@example.test")
    shared = shared_email(1, now)
    # What the losing node had for it: offered to Alice, its auto-response and a reply
    # waiting at the claim gate; the lost claim closed it and cancelled them.
    apply(shared, Routed(agent="alice@example.test"), now)
    for key, kind, ident in ((f"auto_response:{shared.guid}", Outgoing.AUTO_RESPONSE, ar_id(1)),
                             (f"reply:{shared.guid}", Outgoing.REPLY, "<re@x>")):
        Outgoing.objects.create(key=key, kind=kind, interaction=shared, envelope_from="", recipients=[shared.customer],
                                message_id=ident, raw=b"Subject: x\r\n\r\nx\r\n", state=OutboxState.RETRY_WAIT, next_attempt_at=now)
    assert end_lost(site(), EmailKey(BOX, shared.message_id, SHA), WINNER, now)
    shared.refresh_from_db()
    assert shared.state is State.CLOSED and shared.outcome == "claimed_elsewhere"
    won_on_the_island(local, 1, now)

    merge_back(WINNER, local, now)

    (ix,) = Interaction.objects.filter(message_id="<m1@customer.test>")
    assert ix.pk == shared.pk and ix.guid == shared.guid  # one record, its GUID kept
    assert ix.state is State.QUEUED and ix.closed_at is None and ix.outcome == ""
    assert ix.agent is None and ix.excluded_agents == []  # Alice lost it only to the claim
    assert (ix.node_id, ix.claim_node) == (WINNER, WINNER) and ix.claim_time is not None
    assert ix.priority == 30 and ix.auto_response_sent_at is not None
    # The auto-response the island sent is the shared row's (same derived ID): sent, never again.
    (ar,) = Outgoing.objects.filter(interaction=ix, kind=Outgoing.AUTO_RESPONSE)
    assert ar.message_id == ar_id(1) and ar.state == OutboxState.SENT
    # The cancelled reply stays cancelled and gives its key back for the real reply.
    assert Outgoing.objects.get(interaction=ix, kind=Outgoing.REPLY).state == OutboxState.CANCELLED
    assert not Outgoing.objects.filter(key=f"reply:{ix.guid}").exists()
    kinds = list(JournalEvent.objects.filter(interaction=ix).values_list("kind", flat=True))
    assert "claim_returned" in kinds and "island_merged" in kinds


def test_an_auto_response_the_island_had_not_sent_yet_is_queued_again(local: str) -> None:
    # The island won the claim and the link came back before its auto-response left:
    # the one the losing node cancelled is the customer's, due again (same derived ID).
    now = timezone.now()
    shared = shared_email(4, now)
    Outgoing.objects.create(key=f"auto_response:{shared.guid}", kind=Outgoing.AUTO_RESPONSE, interaction=shared,
                            envelope_from="", recipients=[shared.customer], message_id=ar_id(4),
                            raw=b"Subject: x\r\n\r\nx\r\n", state=OutboxState.RETRY_WAIT, next_attempt_at=now)
    assert end_lost(site(), EmailKey(BOX, shared.message_id, SHA), WINNER, now)
    won_on_the_island(local, 4, now, sent=False)

    merge_back(WINNER, local, now)

    ix = Interaction.objects.get(pk=shared.pk)
    assert ix.state is State.QUEUED and ix.claim_node == WINNER and ix.auto_response_sent_at is None
    (ar,) = Outgoing.objects.filter(interaction=ix, kind=Outgoing.AUTO_RESPONSE)
    assert ar.key == f"auto_response:{ix.guid}" and ar.state == OutboxState.PENDING


def test_a_win_the_island_had_not_read_before_the_link_came_back_is_reopened(local: str) -> None:
    # The island's claim was in flight when the link came back: the node on the database
    # read the win (and named it on the record it closed), the island never did, so it
    # sent nothing; the email must still be answered, with the winning claim's fields.
    now = timezone.now()
    claimed = now - timedelta(minutes=1)
    shared = shared_email(5, now)
    assert end_lost(site(), EmailKey(BOX, shared.message_id, SHA), WINNER, now, claimed)
    won_on_the_island(local, 5, now, sent=False, read=False)

    merge_back(WINNER, local, now)

    ix = Interaction.objects.get(pk=shared.pk)
    assert ix.state is State.QUEUED and (ix.claim_node, ix.claim_time) == (WINNER, claimed)


def test_a_record_closed_for_another_reason_keeps_its_outcome(local: str) -> None:
    now = timezone.now()
    Agent.objects.create(name="Alice", address="alice@example.test")
    shared = shared_email(2, now)
    apply(shared, Routed(agent="alice@example.test"), now)
    apply(shared, HungUp(code="spam"), now)
    Interaction.objects.filter(pk=shared.pk).update(status=State.CLOSED, closed_at=now)
    won_on_the_island(local, 2, now)

    merge_back(WINNER, local, now)

    ix = Interaction.objects.get(pk=shared.pk)
    assert ix.state is State.CLOSED and ix.outcome == "wrapped_up" and ix.claim_node == ""


def test_a_lost_claim_read_after_the_merge_leaves_the_winners_record_open(local: str) -> None:
    # The other order of the race: the winner merges first (its claim on the shared
    # record), then the node on the database reads that it lost the claim.
    now = timezone.now()
    shared = shared_email(3, now)
    won_on_the_island(local, 3, now)

    merge_back(WINNER, local, now)
    assert end_lost(site(), EmailKey(BOX, shared.message_id, SHA), WINNER, now)

    ix = Interaction.objects.get(pk=shared.pk)
    assert ix.state is State.QUEUED and ix.closed_at is None and ix.claim_node == WINNER
    assert not JournalEvent.objects.filter(interaction=ix, kind="claimed_elsewhere").exists()


def site() -> Site:
    # The agent's notice leaves from the outbound box.
    Mailbox.objects.get_or_create(
        address="outbound@example.test", defaults={"kind": Mailbox.OUTBOUND, "login": "outbound@example.test"}
    )
    return offline_site(LOSER)
