"""The outbound box's FETCH batch in one transaction (decision 0050): the replies of one
FETCH commit together (one commit, one cursor write, their journal rows in one INSERT),
while each reply is still judged and kept on its own: a forged reply goes to the dead
box, a reply whose taking raises is quarantined alone, the others are sent once, and a
batch that fails as a whole (the database away) leaves nothing and is read again whole.
"""

from __future__ import annotations

from email.message import EmailMessage

import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext

from postroom.core.lifecycle import State
from postroom.engine import replies
from postroom.store.models import (
    Agent,
    Interaction,
    InteractionText,
    JournalEvent,
    Mailbox,
    OutboundMessage,
    Outgoing,
    Quarantined,
)
from tests.e2e.test_figures import customer_replies, mail, ready, reply_as, run, write_in
from tests.e2e.test_mail_security import as_outsider, body_text, outsider_mail, token_address

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]


def three_delivered(center) -> dict[str, EmailMessage]:
    """Three customer mails forwarded to Alice; her copies by the customer's subject."""
    Agent.objects.filter(address=center.address("alice")).update(capacity=3)
    ready(center, "alice")
    for n, subject in enumerate(["Order 1", "Order 2", "Boom 3"], start=1):
        write_in(center, mail(center, subject=subject), count=n)
    run(center)
    copies = center.wait_for("alice", 3)
    return {subject: next(m for m in copies if subject in str(m["Subject"])) for subject in ["Order 1", "Order 2", "Boom 3"]}


def answers(center, *known: str) -> list[str]:
    """Which of the `known` answers reached the customer, one entry per reply there."""
    found = customer_replies(center)
    assert len(found) == len({*map(str, (m["Message-ID"] for m in found))}), "a reply arrived twice"
    return sorted(answer for m in found for answer in known if answer in body_text(m))


def outbound_box_alone(center) -> int:
    """One pass of the outbound box's watcher, as the running engine makes it."""
    box = Mailbox.objects.get(kind=Mailbox.OUTBOUND)
    return center.engine.ingest_box(box, center.engine._sessions_for_worker().get(box, ingesting=True))


def test_one_batch_a_forged_reply_dead_boxed_a_failing_one_quarantined_the_others_sent_once(center, monkeypatch) -> None:
    copies = three_delivered(center)
    reply_as(center, "alice", "Answer one", forwarded=copies["Order 1"])
    reply_as(center, "alice", "Answer boom", forwarded=copies["Boom 3"])
    forged_to = token_address(copies["Order 2"])
    as_outsider(center, outsider_mail(center, to=forged_to, forward=copies["Order 2"], text="Pay here"), forged_to)
    reply_as(center, "alice", "Answer two", forwarded=copies["Order 2"])
    assert len(center.wait_for("outbound", 4)) == 4

    real_compose = replies.reply_to_customer

    def fails_on_boom(*args, **kwargs):
        if "Boom" in kwargs["subject"]:
            raise ValueError("a bug met by this reply alone")
        return real_compose(*args, **kwargs)

    monkeypatch.setattr(replies, "reply_to_customer", fails_on_boom)
    batches: list[int] = []
    real_ahead = getattr(replies, "Ahead", None)  # none before decision 0050

    def counted(box, session, fetched, site, now):
        batches.append(len(fetched))
        return real_ahead(box, session, fetched, site, now)

    monkeypatch.setattr(replies, "Ahead", counted, raising=False)

    with CaptureQueriesContext(connection) as queries:
        assert outbound_box_alone(center) == 4
    statements = [q["sql"] for q in queries.captured_queries]
    cursor_writes = [s for s in statements if s.startswith("UPDATE") and '"store_mailbox"' in s and '"last_uid"' in s]
    journal_inserts = [s for s in statements if s.startswith('INSERT INTO "store_journalevent"')]
    # One cursor write and one journal INSERT for the batch (one of each per message before).
    assert (len(cursor_writes), len(journal_inserts)) == (1, 1), (cursor_writes, journal_inserts)
    assert batches == [4]  # the four read ahead as one batch

    run(center)
    run(center)  # a second pass finds everything done: nothing is sent again
    assert answers(center, "Answer one", "Answer two", "Answer boom") == ["Answer one", "Answer two"]
    assert len(customer_replies(center)) == 2
    by_subject = {ix.subject: ix for ix in Interaction.objects.all()}
    assert by_subject["Order 1"].replied_at and by_subject["Order 2"].replied_at
    assert by_subject["Boom 3"].state is State.DELIVERED and by_subject["Boom 3"].replied_at is None
    assert sorted(Outgoing.objects.filter(kind=Outgoing.REPLY).values_list("state", flat=True)) == ["sent", "sent"]
    # Each reply's text indexed for search, read from the composed reply (not parsed again).
    indexed = dict(InteractionText.objects.values_list("interaction__subject", "reply_text"))
    assert "Answer one" in indexed["Order 1"] and "Answer two" in indexed["Order 2"] and not indexed["Boom 3"]

    # Every message of the batch accounted for: ledgered (two accepted, the forgery dead)
    # or quarantined with its reason; the cursor past them all.
    ledger = dict(OutboundMessage.objects.values_list("uid", "outcome"))
    (held,) = Quarantined.objects.all()
    assert held.reason == "internal error while taking the message"
    assert sorted(ledger.values()) == ["accepted", "accepted", "dead"]
    assert held.uid not in ledger and len({*ledger, held.uid}) == 4
    (dead,) = OutboundMessage.objects.filter(outcome=OutboundMessage.DEAD)
    assert "mail server" in dead.reason and dead.interaction_id == by_subject["Order 2"].pk
    assert JournalEvent.objects.filter(kind="dead_boxed").count() == 1
    assert JournalEvent.objects.filter(kind="reply_accepted").count() == 2
    assert Mailbox.objects.get(kind=Mailbox.OUTBOUND).last_uid == max(*ledger, held.uid)


def test_a_batch_the_database_fails_keeps_nothing_and_is_read_again_whole(center, monkeypatch) -> None:
    copies = three_delivered(center)
    for n, subject in enumerate(["Order 1", "Order 2", "Boom 3"], start=1):
        reply_as(center, "alice", f"Answer {n}", forwarded=copies[subject])
    assert len(center.wait_for("outbound", 3)) == 3

    real_accept = replies.accept
    failed: list[str] = []

    def away_once(box, session, message, mail, ix, site, now):
        if ix.subject == "Boom 3" and not failed:
            failed.append(ix.subject)
            raise OperationalError("the database went away mid-batch")
        return real_accept(box, session, message, mail, ix, site, now)

    monkeypatch.setattr(replies, "accept", away_once)
    box = Mailbox.objects.get(kind=Mailbox.OUTBOUND)
    with pytest.raises(OperationalError):
        outbound_box_alone(center)
    # Nothing of the batch was kept, the two replies taken before the failure included.
    assert failed and not OutboundMessage.objects.exists() and not Outgoing.objects.filter(kind=Outgoing.REPLY).exists()
    assert Mailbox.objects.get(pk=box.pk).last_uid == 0
    assert not JournalEvent.objects.filter(kind="reply_accepted").exists()

    run(center)
    run(center)
    assert answers(center, "Answer 1", "Answer 2", "Answer 3") == ["Answer 1", "Answer 2", "Answer 3"]
    assert len(customer_replies(center)) == 3
    assert sorted(OutboundMessage.objects.values_list("outcome", flat=True)) == ["accepted"] * 3
    assert JournalEvent.objects.filter(kind="reply_accepted").count() == 3


def test_a_batch_holding_its_interactions_checks_no_version_and_a_second_reply_still_sees_the_first(center) -> None:
    """Decision 0055: inside the batch's write transaction (SQLite's write lock, PostgreSQL's
    row locks taken on entering) the interaction `match` read is current, so `accept` does
    not read its version again; the batch's own earlier reply is still seen: a second
    reply to the same interaction is refused as not waiting for a reply."""
    copies = three_delivered(center)
    reply_as(center, "alice", "First answer", forwarded=copies["Order 1"])
    reply_as(center, "alice", "Second answer", forwarded=copies["Order 1"])
    reply_as(center, "alice", "Answer two", forwarded=copies["Order 2"])
    assert len(center.wait_for("outbound", 3)) == 3

    with CaptureQueriesContext(connection) as queries:
        assert outbound_box_alone(center) == 3
    version_checks = [
        q["sql"] for q in queries.captured_queries
        if q["sql"].startswith("SELECT") and '"store_interaction"."version" =' in q["sql"]
    ]
    assert version_checks == []  # on main one per accepted reply

    run(center)
    run(center)
    assert answers(center, "First answer", "Second answer", "Answer two") == ["Answer two", "First answer"]
    ledger = sorted(OutboundMessage.objects.values_list("outcome", "reason"))
    assert [outcome for outcome, _ in ledger] == ["accepted", "accepted", "dead"]
    assert "not waiting for a reply" in ledger[-1][1]
    assert JournalEvent.objects.filter(kind="reply_accepted").count() == 2
