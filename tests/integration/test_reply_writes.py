"""The outbound box's per-reply writes without the query compiler (decision 0059): the
search row's UPDATE with SQL built once, the ledger and outbox rows by `journal.insert`,
on SQLite and PostgreSQL: the same rows the ORM writes, and the search finds them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from postroom.store import journal, search
from postroom.store.compiled import CompiledUpdate
from postroom.store.models import Interaction, InteractionText, Mailbox, OutboundMessage, Outgoing

pytestmark = pytest.mark.django_db(transaction=True)


def interaction(box: Mailbox, uid: int) -> Interaction:
    return Interaction.objects.create(
        node_id="n", mailbox=box, uidvalidity=1, uid=uid, customer=f"c{uid}@customer.test",
        arrival_time=timezone.now() - timedelta(seconds=uid), subject=f"Order {uid}",
    )


def box() -> Mailbox:
    return Mailbox.objects.create(address="support@example.test", login="s", display_name="Support")


def test_the_reply_text_is_written_where_a_row_is_and_a_row_made_where_none_is() -> None:
    support = box()
    kept, bare = interaction(support, 1), interaction(support, 2)
    InteractionText.objects.create(interaction=kept, subject="Order 1", customer_text="where is my parcel")
    with transaction.atomic():
        search.keep_reply_text(kept, "Your parcel left Zürich today")
        # No search row yet (a reply queued for an interaction reception kept no text of):
        # the UPDATE changes nothing, and the row is made (a caller ignoring the count
        # would leave the reply unsearchable).
        search.keep_reply_text(bare, "Refund granted")
    texts = {t.interaction_id: t for t in InteractionText.objects.all()}
    assert texts[kept.pk].reply_text == "Your parcel left Zürich today"
    assert texts[kept.pk].customer_text == "where is my parcel"  # the rest of the row kept
    assert texts[bare.pk].reply_text == "Refund granted" and texts[bare.pk].subject == "Order 2"
    # The index follows the compiled statement (SQLite: the FTS5 triggers; PostgreSQL: the
    # expression index): found by the words of the reply, folded.
    everything = Interaction.objects.all()
    assert list(search.matching(everything, "zurich parcel").values_list("pk", flat=True)) == [kept.pk]
    assert list(search.matching(everything, "refund").values_list("pk", flat=True)) == [bare.pk]
    # A second reply text replaces the first (one row per interaction).
    with transaction.atomic():
        search.keep_reply_text(kept, "Second thoughts")
    assert InteractionText.objects.filter(interaction=kept).count() == 1
    assert list(search.matching(everything, "zurich").values_list("pk", flat=True)) == []
    assert search._update_reply_text(interaction(support, 3), "nobody") == 0
    assert search._REPLY_TEXT._local.plan.at is not None  # compiled, and used


def test_the_compiled_reply_text_update_is_the_orms_statement() -> None:
    """store/compiled.CompiledUpdate with per-call values (decision 0064): the statement
    and parameters Django runs for the queryset's update, for each interaction and text,
    and one plan per thread and connection."""
    support = box()
    one, two = interaction(support, 1), interaction(support, 2)
    for ix in (one, two):
        InteractionText.objects.create(interaction=ix, subject=ix.subject)

    def statements(write) -> tuple[list[str], int]:
        with CaptureQueriesContext(connection) as queries, transaction.atomic():
            changed = write()
        return [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")], changed

    for ix, text in [(one, "first"), (two, "zweite Antwort"), (one, "it's 100% \"quoted\"")]:
        orm = statements(lambda ix=ix, text=text: InteractionText.objects.filter(interaction=ix).update(reply_text=text))
        compiled = statements(lambda ix=ix, text=text: search._update_reply_text(ix, text))
        assert compiled == orm and compiled[1] == 1
        assert InteractionText.objects.get(interaction=ix).reply_text == text
    plan = search._REPLY_TEXT._local.plan
    assert plan.at is not None
    connection.close()  # closed and opened again: the same connection, the same plan
    assert search._update_reply_text(one, "again") == 1
    assert search._REPLY_TEXT._local.plan is plan
    assert InteractionText.objects.get(interaction=one).reply_text == "again"


def test_a_compiled_update_whose_marks_do_not_stand_once_is_the_querysets_own() -> None:
    """A per-call value that stands twice in the statement (or a None, written as NULL)
    cannot be put in place of one mark: the queryset's own update runs, with the same
    effect."""
    support = box()
    ix = interaction(support, 1)
    InteractionText.objects.create(interaction=ix, subject=ix.subject)
    twice = CompiledUpdate(InteractionText._meta.get_field("interaction"), InteractionText._meta.get_field("reply_text"))

    def rows(interaction_id: int, text: str):
        return InteractionText.objects.filter(interaction=interaction_id)

    def values(interaction_id: int, text: str) -> dict[str, str]:
        return {"reply_text": text, "customer_text": text}

    assert twice.run(None, rows, values, ix.pk, "both") == 1
    assert twice._local.plan.at is None
    kept = InteractionText.objects.get(interaction=ix)
    assert (kept.reply_text, kept.customer_text) == ("both", "both")
    assert twice.run(None, rows, values, ix.pk + 1000, "nobody") == 0


def test_the_reply_rows_inserted_as_the_orm_inserts_them_and_refused_by_the_same_indexes() -> None:
    support = box()
    outbound = Mailbox.objects.create(address="outbound@example.test", login="o", kind=Mailbox.OUTBOUND)
    ix = interaction(support, 1)
    now = timezone.now()
    # Both tables take the plain statement (not bulk_create's fallback) on this database.
    assert journal._plan(OutboundMessage, connection) is not None
    assert journal._plan(Outgoing, connection) is not None
    with transaction.atomic():
        row = OutboundMessage(mailbox=outbound, uidvalidity=7, uid=1, message_id="<a@x>", sender="alice@example.test",
                              subject="Re: Order 1", interaction=ix, outcome=OutboundMessage.ACCEPTED)
        journal.insert(OutboundMessage, [row])
        queued = Outgoing(key=f"reply:{ix.guid}", kind=Outgoing.REPLY, interaction=ix, envelope_from=support.address,
                          recipients=["c1@customer.test"], message_id="<re@x>", raw=b"Subject: Re\r\n\r\nhi\r\n",
                          next_attempt_at=now)
        journal.insert(Outgoing, [queued])
    assert row.pk is not None and queued.pk is not None
    ledgered = OutboundMessage.objects.get(pk=row.pk)
    assert (ledgered.uid, ledgered.interaction_id, ledgered.outcome, ledgered.reason) == (1, ix.pk, "accepted", "")
    assert ledgered.created_at is not None
    sent = Outgoing.objects.get(pk=queued.pk)
    assert (sent.key, sent.recipients, bytes(sent.raw), sent.state, sent.attempts) == (
        f"reply:{ix.guid}", ["c1@customer.test"], b"Subject: Re\r\n\r\nhi\r\n", "pending", 0
    )
    assert sent.created_at is not None and sent.next_attempt_at == now
    # The unique indexes refuse a second ledger row for the UID and a second reply:<guid>
    # where the statement runs, so the reply's savepoint (engine/replies.py) turns it down.
    with transaction.atomic():
        with pytest.raises(IntegrityError), transaction.atomic():
            journal.insert(OutboundMessage, [OutboundMessage(mailbox=outbound, uidvalidity=7, uid=1, outcome="dead")])
        with pytest.raises(IntegrityError), transaction.atomic():
            journal.insert(Outgoing, [Outgoing(key=f"reply:{ix.guid}", kind=Outgoing.REPLY, interaction=ix,
                                               envelope_from="x", recipients=[], message_id="m", raw=b"",
                                               next_attempt_at=now)])
    assert OutboundMessage.objects.count() == 1 and Outgoing.objects.count() == 1
