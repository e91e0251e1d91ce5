"""`claim_batch`'s compare-and-set (decisions 0049, 0062): one statement per state the rows
were read in, which says itself which rows it won (RETURNING). A row another sender took
between the read and the claim is not won; one that moved (its attempts or due time
changed, still due) is won and loaded again; the others are sent as they were read."""

from __future__ import annotations

import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.utils import timezone

from postroom.core.outbox import OutboxState
from postroom.core.outbox import Policy as OutboxPolicy
from postroom.engine.outbox import claim_batch
from postroom.store.models import Outgoing

pytestmark = pytest.mark.django_db


def row(n: int, due, state: OutboxState = OutboxState.PENDING, attempts: int = 0) -> Outgoing:
    return Outgoing.objects.create(
        key=f"auto_response:{n}", kind=Outgoing.AUTO_RESPONSE, envelope_from="support@example.test",
        recipients=["c@customer.test"], message_id=f"<a-{n}@postroom.example.test>", raw=b"Subject: x\r\n\r\nx\r\n",
        state=state, attempts=attempts, next_attempt_at=due,
    )


def test_a_batch_claim_wins_what_is_still_as_read_and_loads_again_what_moved() -> None:
    site = SimpleNamespace(outbox=OutboxPolicy())
    now = timezone.now()
    rows = [
        row(0, now - timedelta(seconds=5)),
        row(1, (now - timedelta(seconds=60)).replace(microsecond=0)),  # a time with no fraction
        row(2, now - timedelta(seconds=3), OutboxState.RETRY_WAIT, attempts=2),  # a second state: a second statement
        row(3, now - timedelta(seconds=2)),  # taken by another sender meanwhile
        row(4, now - timedelta(seconds=1)),  # moved meanwhile, still due
        row(5, now - timedelta(seconds=1), OutboxState.RETRY_WAIT, attempts=site.outbox.max_attempts),  # out of attempts
    ]
    read = list(Outgoing.objects.filter(pk__in=[r.pk for r in rows]).order_by("pk"))
    Outgoing.objects.filter(pk=rows[3].pk).update(
        state=OutboxState.SENDING, claimed_by="other:1:ffff", lease_until=now + site.outbox.lease
    )
    moved_due = now - timedelta(seconds=30)
    Outgoing.objects.filter(pk=rows[4].pk).update(attempts=1, next_attempt_at=moved_due)

    batch = claim_batch(read, {}, site, "me:1:abcd", now, time.monotonic())

    assert batch.asked == {r.pk for r in rows[:5]}  # the one out of attempts is left to send_one
    assert set(batch.held) == {rows[0].pk, rows[1].pk, rows[2].pk, rows[4].pk}
    for i in (0, 1, 2):
        # As read: the row read is the row sent (the due time came back equal, no reload).
        assert batch.held[read[i].pk].row is read[i]
        assert batch.held[read[i].pk].seen.attempts == read[i].attempts
    moved = batch.held[rows[4].pk]
    assert moved.row is not read[4] and moved.row.attempts == 2 and moved.row.next_attempt_at == moved_due
    assert moved.seen.attempts == 1 and moved.seen.due == moved_due

    after = {r.pk: r for r in Outgoing.objects.filter(pk__in=[r.pk for r in rows])}
    for i, attempts in ((0, 1), (1, 1), (2, 3), (4, 2)):
        r = after[rows[i].pk]
        assert (r.state, r.claimed_by, r.lease_until, r.attempts) == (
            OutboxState.SENDING, "me:1:abcd", now + site.outbox.lease, attempts
        )
        assert batch.held[r.pk].fence.lease_until == r.lease_until
    assert after[rows[3].pk].claimed_by == "other:1:ffff" and after[rows[3].pk].attempts == 0
    assert after[rows[5].pk].state == OutboxState.RETRY_WAIT and after[rows[5].pk].claimed_by == ""


def test_a_second_claim_of_the_same_rows_wins_nothing() -> None:
    site = SimpleNamespace(outbox=OutboxPolicy())
    now = timezone.now()
    rows = [row(n, now - timedelta(seconds=n + 1)) for n in range(3)]
    read = list(Outgoing.objects.filter(pk__in=[r.pk for r in rows]))
    first = claim_batch(read, {}, site, "one:1:aaaa", now, time.monotonic())
    second = claim_batch(read, {}, site, "two:1:bbbb", now, time.monotonic())
    assert set(first.held) == {r.pk for r in rows} and second.held == {}
    assert set(Outgoing.objects.filter(pk__in=[r.pk for r in rows]).values_list("claimed_by", flat=True)) == {"one:1:aaaa"}
