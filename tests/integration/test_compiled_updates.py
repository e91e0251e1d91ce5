"""The sender's claim and fenced write (decision 0062) as store/compiled.CompiledUpdates
(decision 0068): each statement is the ORM's own UPDATE, with the same parameters (the
claim's with RETURNING the won rows' columns), compiled once per key; on this database.
Fails if a value is bound in another's place or the ORM's statement changes shape."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from postroom.core.outbox import OutboxState
from postroom.engine import outbox
from postroom.store.models import Outgoing

pytestmark = pytest.mark.django_db


def row(n: int, due, state: OutboxState = OutboxState.PENDING, **more) -> Outgoing:
    return Outgoing.objects.create(
        key=f"auto_response:{n}", kind=Outgoing.AUTO_RESPONSE, envelope_from="support@example.test",
        recipients=["c@customer.test"], message_id=f"<a-{n}@postroom.example.test>", raw=b"Subject: x\r\n\r\nx\r\n",
        state=state, next_attempt_at=due, **more,
    )


def orm_statement(update) -> tuple[str, int]:
    """The SQL (parameters interpolated) and count of the ORM's own update, rolled back."""
    with CaptureQueriesContext(connection) as orms, transaction.atomic():
        count = update()
        transaction.set_rollback(True)
    (query,) = updates(orms)
    return query, count


def updates(captured: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in captured.captured_queries if q["sql"].startswith("UPDATE")]


def test_the_claim_is_the_orms_update_returning_the_won_rows() -> None:
    now = timezone.now()
    rows = [row(n, now - timedelta(seconds=n + 1), attempts=n % 2) for n in range(4)]
    row(9, now + timedelta(hours=1))  # not due: never claimed
    lease = now + timedelta(minutes=5)
    for n in (1, 2, 4):
        pks = [r.pk for r in rows[:n]]
        args = (OutboxState.SENDING.value, "me:1:abcd", lease, *pks, OutboxState.PENDING.value, now, 5)
        theirs, count = orm_statement(lambda args=args: outbox.claim_rows(*args).update(**outbox.claim_values(*args)))
        with CaptureQueriesContext(connection) as ours, transaction.atomic():
            won = outbox.CLAIMS.returned(n, outbox.claim_fields(n), outbox.claim_rows, outbox.claim_values, *args)
            after = {r.pk: r for r in Outgoing.objects.filter(pk__in=pks)}
            transaction.set_rollback(True)
        q = connection.ops.quote_name
        assert updates(ours) == [f"{theirs} RETURNING {q('id')}, {q('attempts')}, {q('next_attempt_at')}"]
        assert len(won) == count == n
        assert sorted((pk, attempts, outbox.as_datetime(due)) for pk, attempts, due in won) == sorted(
            (r.pk, r.attempts, r.next_attempt_at) for r in after.values()
        )
        assert {(r.state, r.claimed_by, r.lease_until) for r in after.values()} == {(OutboxState.SENDING, "me:1:abcd", lease)}
        assert [r.attempts for r in rows[:n]] == [after[r.pk].attempts - 1 for r in rows[:n]]
    assert {1, 2, 4} <= set(outbox.CLAIMS._local.plans)  # one plan per count (others: earlier tests of this thread)


@pytest.mark.parametrize("leased", [True, False])
def test_a_fenced_write_is_the_orms_update(leased: bool) -> None:
    now = timezone.now()
    lease = now + timedelta(minutes=5) if leased else None
    mine = row(1, now, OutboxState.SENDING, claimed_by="me:1:abcd", lease_until=lease)
    writes = [
        {"state": OutboxState.SENDING.value, "attempts": 2, "claimed_by": "me:1:abcd", "lease_until": now + timedelta(minutes=9)},
        {"state": OutboxState.SENT.value, "attempts": 2, "claimed_by": "", "lease_until": None, "sent_at": now},
        {"state": OutboxState.RETRY_WAIT.value, "attempts": 3, "claimed_by": "", "lease_until": None,
         "next_attempt_at": now + timedelta(minutes=1), "last_error": "4.2.0 try later"},
    ]
    for changes in writes:
        given = tuple(name for name, value in changes.items() if value is not None)
        key = (tuple(changes), given, lease is None)
        args = [changes[name] for name in given] + [mine.pk, OutboxState.SENDING.value, "me:1:abcd"]
        args += [lease] if lease is not None else []
        make, values = outbox.fenced(key)
        theirs, count = orm_statement(lambda make=make, values=values, args=args: make(*args).update(**values(*args)))
        with CaptureQueriesContext(connection) as ours, transaction.atomic():
            updated = outbox.FENCED.run(key, outbox.fence_fields(given, lease is None), make, values, *args)
            transaction.set_rollback(True)
        assert updates(ours) == [theirs]
        assert updated == count == 1
        assert outbox.FENCED._local.plans[key].at is not None  # the compiled statement ran
    # Not ours (another holder): nothing written, by either.
    key = (("state",), ("state",), lease is None)
    args = [OutboxState.SENT.value, mine.pk, OutboxState.SENDING.value, "other:1:ffff", *([lease] if lease else [])]
    assert outbox.FENCED.run(key, outbox.fence_fields(("state",), lease is None), *outbox.fenced(key), *args) == 0
