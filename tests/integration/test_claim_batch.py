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


def test_a_fenced_write_lands_only_under_its_own_claim() -> None:
    """`Fence.write` (decision 0062: its UPDATE written once per set of columns): the
    outcome lands only while the row is SENDING under this holder and lease (none: IS
    NULL), with its extra fields and due time; anything else writes nothing."""
    from postroom.core.outbox import Row
    from postroom.engine.outbox import Fence

    policy = OutboxPolicy()
    now = timezone.now()
    lease = now + policy.lease
    a, b, c = (row(n, now - timedelta(seconds=1)) for n in range(3))
    Outgoing.objects.filter(pk__in=[a.pk, b.pk]).update(state=OutboxState.SENDING, claimed_by="me:1:abcd", lease_until=lease)
    Outgoing.objects.filter(pk=c.pk).update(state=OutboxState.SENDING, claimed_by="me:1:abcd", lease_until=None)

    sent = Row(state=OutboxState.SENT, attempts=1, due=None, lease_until=None, holder="")
    assert not Fence(a.pk, "other:1:ffff", lease).write(sent, sent_at=now)  # not our claim
    assert not Fence(a.pk, "me:1:abcd", lease + timedelta(seconds=1)).write(sent, sent_at=now)  # not our lease
    assert not Fence(a.pk, "me:1:abcd", None).write(sent, sent_at=now)  # not a claim without a lease
    assert Outgoing.objects.get(pk=a.pk).state == OutboxState.SENDING

    assert Fence(a.pk, "me:1:abcd", lease).write(sent, last_error="250 ok", sent_at=now, ignored=None)
    got = Outgoing.objects.get(pk=a.pk)
    assert (got.state, got.attempts, got.claimed_by, got.lease_until, got.last_error, got.sent_at) == (
        OutboxState.SENT, 1, "", None, "250 ok", now
    )
    assert not Fence(a.pk, "me:1:abcd", lease).write(sent)  # written once: no longer ours

    later, renewed = now + timedelta(minutes=3), lease + timedelta(minutes=1)
    fence = Fence(b.pk, "me:1:abcd", lease)
    assert fence.write(Row(state=OutboxState.SENDING, attempts=2, due=later, lease_until=renewed, holder="me:1:abcd"))
    assert fence.lease_until == renewed  # the fence follows its own renewal
    got = Outgoing.objects.get(pk=b.pk)
    assert (got.state, got.attempts, got.next_attempt_at, got.lease_until) == (OutboxState.SENDING, 2, later, renewed)

    assert Fence(c.pk, "me:1:abcd", None).write(Row(state=OutboxState.RETRY_WAIT, attempts=1, due=later))
    got = Outgoing.objects.get(pk=c.pk)
    assert (got.state, got.next_attempt_at, got.claimed_by) == (OutboxState.RETRY_WAIT, later, "")
