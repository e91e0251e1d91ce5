"""A FETCH batch read ahead and inserted table by table (decision 0043): what a mail asks
of the database is answered for the whole batch at once, and the answers still take the
batch's own earlier mails into account (a copy, a follow-up, the rate limit), a bad mail
is still quarantined alone, and a mail another node took meanwhile still makes one
interaction."""

from __future__ import annotations

import pytest

from postroom.engine import batchreads, reception
from postroom.store.models import Interaction, JournalEvent, Outgoing, Quarantined
from tests.e2e.boxes import mail, run, write_in

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]


def test_one_batch_sees_its_own_copies_follow_ups_and_auto_responses(center, monkeypatch) -> None:
    first = mail(center, subject="Order 1")
    write_in(center, first, count=1)
    write_in(center, first, count=2)  # the same mail again: a copy, not a second interaction
    follow_up = mail(center, subject="Re: Order 1", In_Reply_To=first["Message-ID"])
    write_in(center, follow_up, count=3)
    for n, subject in enumerate(["Order 2", "Boom", "Order 3", "Order 4"], start=4):
        write_in(center, mail(center, subject=subject), count=n)

    real = reception.facts_from_mail

    def fails_on_boom(parsed):
        if parsed.subject == "Boom":
            raise ValueError("a bug met by this mail alone")
        return real(parsed)

    monkeypatch.setattr(reception, "facts_from_mail", fails_on_boom)
    taken: list[int] = []
    real_reads = batchreads.Reads

    def counted(*args, **kwargs):
        reads = real_reads(*args, **kwargs)
        taken.append(len(reads.mails))
        return reads

    monkeypatch.setattr(batchreads, "Reads", counted)
    run(center)

    assert taken[0] == 7  # all seven in one batch, read ahead
    by_subject = {ix.subject: ix for ix in Interaction.objects.all()}
    assert sorted(by_subject) == ["Order 1", "Order 2", "Order 3", "Order 4", "Re: Order 1"]
    assert len(by_subject["Order 1"].copies) == 1
    assert by_subject["Re: Order 1"].follows_id == by_subject["Order 1"].pk
    # The default limit: three auto-responses to one address a day, counted across the batch.
    assert Outgoing.objects.filter(kind=Outgoing.AUTO_RESPONSE).count() == 3
    skipped = [ix.subject for ix in Interaction.objects.order_by("uid") if ix.auto_response_skipped.startswith("rate limit")]
    assert skipped == ["Order 3", "Order 4"]
    (held,) = Quarantined.objects.all()
    assert held.reason == "internal error while taking the message"
    assert not JournalEvent.objects.filter(kind="received", detail__uid=held.uid).exists()
    assert JournalEvent.objects.filter(kind="received").count() == 5
    assert JournalEvent.objects.filter(kind="duplicate_ignored").count() == 1


def test_a_mail_taken_elsewhere_after_the_reads_makes_the_batch_run_mail_by_mail(center, monkeypatch, caplog) -> None:
    original = mail(center, subject="Order 9")
    write_in(center, original)
    run(center)
    (ix,) = Interaction.objects.all()

    # The same mail again, with another: the reads ahead miss the interaction, as when
    # another node commits it between the batch's reads and its insert.
    write_in(center, original, count=2)
    write_in(center, mail(center, subject="Order 10"), count=3)
    monkeypatch.setattr(batchreads.Reads, "maybe_known", lambda self, uid, key: False)
    with caplog.at_level("INFO", logger="postroom.engine.reception"):
        run(center)
    assert "taken elsewhere meanwhile" in caplog.text  # the unique index refused the batch

    assert sorted(Interaction.objects.values_list("subject", flat=True)) == ["Order 10", "Order 9"]
    ix.refresh_from_db()
    assert len(ix.copies) == 1
    assert Outgoing.objects.filter(kind=Outgoing.AUTO_RESPONSE).count() == 2
    assert not Quarantined.objects.exists()


def test_a_mail_the_reads_ahead_cannot_read_is_taken_alone_not_the_batch_stopped(center, monkeypatch) -> None:
    real = batchreads.dedupe_key

    def fails_on_odd(message_id, sender, date, subject):
        if subject == "Odd":
            raise ValueError("something in this mail the reads ahead do not expect")
        return real(message_id, sender, date, subject)

    monkeypatch.setattr(batchreads, "dedupe_key", fails_on_odd)
    write_in(center, mail(center, subject="Odd"))
    write_in(center, mail(center, subject="Plain"), count=2)
    run(center)
    assert sorted(Interaction.objects.values_list("subject", flat=True)) == ["Odd", "Plain"]
    assert Outgoing.objects.filter(kind=Outgoing.AUTO_RESPONSE).count() == 2
    assert not Quarantined.objects.exists()


def test_a_mail_a_rule_deletes_taken_elsewhere_meanwhile_makes_the_batch_run_mail_by_mail(
    make_center, monkeypatch, caplog
) -> None:
    """A mail inserted at once inside the batch (a rule deletes it) that another node took
    meanwhile: its INSERT is refused inside its take, not at the batch's end. Decision
    0054 took the mail's own savepoint away in a batch read ahead; the refusal still makes
    the batch run mail by mail, where the mail is a copy, and nothing is quarantined."""
    center = make_center(
        """
[[rules]]
name = "Spam"
conditions = [{{field = "subject", op = "contains", value = "WIN A PRIZE"}}]
actions = [{{action = "delete", value = "spam"}}]
"""
    )
    spam = mail(center, subject="WIN A PRIZE now")
    write_in(center, spam)
    run(center)
    (ix,) = Interaction.objects.all()

    write_in(center, mail(center, subject="Order 11"), count=2)
    write_in(center, spam, count=3)  # the same mail again, as if another node took it meanwhile
    write_in(center, mail(center, subject="Order 12"), count=4)
    monkeypatch.setattr(batchreads.Reads, "maybe_known", lambda self, uid, key: False)
    with caplog.at_level("INFO", logger="postroom.engine.reception"):
        run(center)
    assert "taken elsewhere meanwhile" in caplog.text

    assert sorted(Interaction.objects.values_list("subject", flat=True)) == ["Order 11", "Order 12", "WIN A PRIZE now"]
    ix.refresh_from_db()
    assert len(ix.copies) == 1
    assert not Quarantined.objects.exists()
    assert JournalEvent.objects.filter(kind="received").count() == 3
