"""The cut-off node as an independent master (decision 0045), its database parts against
the real database (PostgreSQL in the second pass of `make test`):

* the merge carries what the island routed, forwarded and answered: the record arrives
  in the island's state with its agent, its mail (sent, maybe sent, still to send) and
  the ledger rows of the replies it took, once, whichever way the shared record stood
  (closed by the node that lost the claim, open, or never seen), and the island's GUID
  still finds it (`merged_into`: the tokens the island gave out);
* the node on the database leaves mail `waiting` while a node may be on its own store
  (`nodes.islands_out`) and reads it again once none is (`replies.rewind_waiting`).

The local store is a real SQLite file, migrated, under the alias the engine uses."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from postroom.core.island import EmailKey
from postroom.core.islandlocal import answer_message_id
from postroom.core.lifecycle import Answered, Routed, State
from postroom.core.outbox import OutboxState
from postroom.engine import nodes, replies
from postroom.engine.claimloss import end_lost
from postroom.engine.island import IslandSettings
from postroom.store.islandmerge import merge_back, merged_into
from postroom.store.models import Agent, Interaction, Mailbox, Node, OutboundMessage, Outgoing
from postroom.store.transitions import apply
from tests.integration.test_island_merge import BOX, SHA, WINNER, ar_id, local, shared_email, site  # noqa: F401

pytestmark = pytest.mark.django_db

OUTBOUND = "outbound@example.test"
ALICE, BOB = "alice@example.test", "bob@example.test"


def re_id(n: int) -> str:
    ident = answer_message_id("re", BOX, f"<m{n}@customer.test>", SHA, "example.test")
    assert ident is not None
    return ident


def agents(alias: str = "default") -> None:
    for name, address in (("Alice", ALICE), ("Bob", BOB)):
        Agent.objects.using(alias).get_or_create(address=address, defaults={"name": name})


def answered_on_the_island(
    alias: str, n: int, now: datetime, *, forward: OutboxState = OutboxState.SENT, reply_uid: int | None = None
) -> Interaction:
    """The island's record: claim won, auto-response sent, routed to Alice and forwarded
    (`forward` the state of that mail); with `reply_uid`, her reply taken from the
    outbound box at that UID and sent to the customer."""
    agents(alias)
    box = Mailbox.objects.using(alias).get(address=BOX)
    outbound, _ = Mailbox.objects.using(alias).get_or_create(
        address=OUTBOUND, defaults={"kind": Mailbox.OUTBOUND, "login": OUTBOUND}
    )
    alice = Agent.objects.using(alias).get(address=ALICE)
    at = now - timedelta(minutes=2)
    replied = reply_uid is not None
    status = State.REPLIED if replied else State.DELIVERED if forward == OutboxState.SENT else State.ANSWERED
    ix = Interaction.objects.using(alias).create(
        node_id=WINNER, mailbox=box, uidvalidity=1, uid=n, customer=f"c{n}@customer.test",
        arrival_time=now - timedelta(minutes=5), message_id=f"<m{n}@customer.test>", raw_sha256=SHA,
        claim_node=WINNER, claim_time=at, auto_response_sent_at=at, status=status, agent=alice,
        routed_at=at, answered_at=at, delivered_at=at if forward == OutboxState.SENT else None,
        replied_at=now if replied else None, deliveries=1,
        no_reply_due_at=None if replied else now + timedelta(hours=1),
    )
    mails = [
        (f"auto_response:{ix.guid}", Outgoing.AUTO_RESPONSE, ar_id(n), OutboxState.SENT, None),
        (f"forward:{ix.guid}:1", Outgoing.FORWARD, f"<fw.{n}@example.test>", forward, alice),
    ]
    if replied:
        mails.append((f"reply:{ix.guid}", Outgoing.REPLY, re_id(n), OutboxState.SENT, None))
        OutboundMessage.objects.using(alias).create(
            mailbox=outbound, uidvalidity=1, uid=reply_uid, sender=ALICE, interaction=ix,
            outcome=OutboundMessage.ACCEPTED,
        )
    for key, kind, ident, state, agent in mails:
        Outgoing.objects.using(alias).create(
            key=key, kind=kind, interaction=ix, envelope_from="", recipients=[ix.customer], message_id=ident,
            raw=b"Subject: x\r\n\r\nx\r\n", state=state, next_attempt_at=now,
            sent_at=at if state == OutboxState.SENT else None, delivery=1 if kind == Outgoing.FORWARD else None,
            agent=agent,
        )
    return ix


def test_a_reply_the_island_sent_arrives_replied_in_the_record_the_losing_node_closed(local: str) -> None:  # noqa: F811
    now = timezone.now()
    agents()
    shared = shared_email(1, now)
    # The node on the database routed its copy to Bob and queued his forward (held at the
    # claim gate), and left Alice's reply waiting (its token names the island's
    # interaction); then it lost the claim and closed its copy.
    apply(shared, Routed(agent=BOB), now)
    apply(shared, Answered(), now)
    Outgoing.objects.create(key=f"auto_response:{shared.guid}", kind=Outgoing.AUTO_RESPONSE, interaction=shared,
                            envelope_from="", recipients=[shared.customer], message_id=ar_id(1), raw=b"ar",
                            state=OutboxState.RETRY_WAIT, next_attempt_at=now)
    Outgoing.objects.create(key=f"forward:{shared.guid}:1", kind=Outgoing.FORWARD, interaction=shared,
                            envelope_from="", recipients=[BOB], message_id="<fw.bob@x>", raw=b"fw",
                            state=OutboxState.RETRY_WAIT, next_attempt_at=now, delivery=1)
    Interaction.objects.filter(pk=shared.pk).update(deliveries=1)
    outbound = Mailbox.objects.create(address=OUTBOUND, kind=Mailbox.OUTBOUND, login=OUTBOUND)
    OutboundMessage.objects.create(mailbox=outbound, uidvalidity=1, uid=7, sender=ALICE,
                                   outcome=OutboundMessage.WAITING, reason="left")
    assert end_lost(site(), EmailKey(BOX, shared.message_id, SHA), WINNER, now)
    lx = answered_on_the_island(local, 1, now, reply_uid=7)

    merge_back(WINNER, local, now)
    merge_back(WINNER, local, now)  # a node killed during its merge merges again

    (ix,) = Interaction.objects.filter(message_id="<m1@customer.test>")
    assert ix.pk == shared.pk and ix.guid == shared.guid
    assert ix.state is State.REPLIED and ix.agent.address == ALICE and ix.claim_node == WINNER
    assert ix.closed_at is None and ix.outcome == "" and ix.replied_at is not None
    # Its deliveries count after the shared record's own (Bob's round was the first).
    assert ix.deliveries == 2
    mail = {(m.kind, m.key.split(":")[0]): m for m in Outgoing.objects.filter(interaction=ix)}
    # Bob was told by the node that lost the claim (its notice); nothing is there twice.
    assert len(mail) == Outgoing.objects.filter(interaction=ix).count() == 5, mail
    assert mail[("auto_response", "auto_response")].state == OutboxState.SENT
    forward = mail[("forward", "island")]
    assert (forward.state, forward.agent.address, forward.delivery) == (OutboxState.SENT, ALICE, 2)
    assert mail[("reply", "island")].state == OutboxState.SENT and mail[("reply", "island")].message_id == re_id(1)
    # Bob's forward never left (the claim was ours) and stays cancelled.
    assert mail[("forward", "cancelled")].state == OutboxState.CANCELLED
    # The reply the database's side left waiting is the island's now: not read again.
    (ledger,) = OutboundMessage.objects.all()
    assert (ledger.outcome, ledger.interaction_id) == (OutboundMessage.ACCEPTED, ix.pk)
    # Alice's token names the island's GUID: it still finds the record.
    found = merged_into(lx.guid)
    assert found is not None and found.pk == ix.pk


def test_an_open_shared_record_takes_the_islands_state_and_its_own_routing_stops(local: str) -> None:  # noqa: F811
    now = timezone.now()
    agents()
    shared = shared_email(2, now)
    apply(shared, Routed(agent=BOB), now)
    apply(shared, Answered(), now)
    theirs = Outgoing.objects.create(key=f"forward:{shared.guid}:1", kind=Outgoing.FORWARD, interaction=shared,
                                     envelope_from="", recipients=[BOB], message_id="<fw.bob@x>", raw=b"fw",
                                     state=OutboxState.RETRY_WAIT, next_attempt_at=now, delivery=1)
    answered_on_the_island(local, 2, now)

    merge_back(WINNER, local, now)

    ix = Interaction.objects.get(pk=shared.pk)
    assert ix.state is State.DELIVERED and ix.agent.address == ALICE and ix.no_reply_due_at is not None
    theirs.refresh_from_db()
    assert theirs.state == OutboxState.CANCELLED
    (forward,) = Outgoing.objects.filter(interaction=ix, kind=Outgoing.FORWARD, key__startswith="island:")
    assert forward.state == OutboxState.SENT


def test_an_email_only_the_island_saw_is_inserted_with_its_forward_still_to_settle(local: str) -> None:  # noqa: F811
    now = timezone.now()
    agents()
    Mailbox.objects.create(address=BOX, login=BOX)
    # The island's forward was being sent when the link came back: maybe it left.
    lx = answered_on_the_island(local, 3, now, forward=OutboxState.SENDING)

    merge_back(WINNER, local, now)

    (ix,) = Interaction.objects.all()
    assert ix.guid == lx.guid and ix.state is State.ANSWERED and ix.agent.address == ALICE
    forward = Outgoing.objects.get(interaction=ix, kind=Outgoing.FORWARD)
    # Settled from the journal box by its Message-ID before it could go again; the
    # delivery step sees it on its way for this round and agent, and builds no other.
    assert (forward.state, forward.message_id, forward.delivery) == (OutboxState.UNKNOWN, "<fw.3@example.test>", 1)
    assert forward.agent is not None and forward.agent.address == ALICE


def test_mail_left_while_a_node_is_away_is_read_again_once_none_is() -> None:
    now = timezone.now()
    box = Mailbox.objects.create(address=OUTBOUND, kind=Mailbox.OUTBOUND, login=OUTBOUND, uidvalidity=1, last_uid=10)
    for uid, outcome in ((4, OutboundMessage.WAITING), (5, OutboundMessage.ACCEPTED), (6, OutboundMessage.WAITING)):
        OutboundMessage.objects.create(mailbox=box, uidvalidity=1, uid=uid, outcome=outcome)
    away = Node.objects.create(node_id="node-p", hostname="h", pid=1, epoch=3, started_at=now, heartbeat_at=now,
                               lease_until=now - timedelta(seconds=5))
    island = dataclasses.replace(site(), island=IslandSettings(sync_address="sync@example.test", sender="n"))

    assert nodes.islands_out()
    assert replies.rewind_waiting(box, island) == 0
    assert Mailbox.objects.get(pk=box.pk).last_uid == 10
    # Back on the database, but its row still says island (merging): still out.
    Node.objects.filter(pk=away.pk).update(lease_until=now + timedelta(minutes=1), mode="island")
    assert nodes.islands_out() and replies.rewind_waiting(box, island) == 0
    Node.objects.filter(pk=away.pk).update(mode="normal")
    assert not nodes.islands_out()

    assert replies.rewind_waiting(box, island) == 2
    assert Mailbox.objects.get(pk=box.pk).last_uid == box.last_uid == 3
    assert list(OutboundMessage.objects.values_list("uid", flat=True)) == [5]
