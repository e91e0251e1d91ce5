"""store/compiled.CompiledAt as timers.py uses it (decision 0058): the same rows as the
queryset for any time, writes made after compiling seen, a new connection compiled again;
and what the compiled read finds due is what the step then takes under its lock (one
definition of "due" for both, decision 0064)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from postroom.core.lifecycle import State
from postroom.engine import timers
from postroom.store.models import Interaction, Mailbox

pytestmark = pytest.mark.django_db(transaction=True)


def interaction(box: Mailbox, n: int, status: str, **dues) -> Interaction:
    return Interaction.objects.create(
        node_id="n", mailbox=box, uidvalidity=1, uid=n, customer=f"c{n}@example.test", status=status,
        arrival_time=timezone.now(), **dues,
    )


def orm(status: str, field: str, at) -> list[int]:
    qs = Interaction.objects.filter(status=status, **{f"{field}__lte": at}).select_related("agent", "mailbox")
    return list(qs.values_list("pk", flat=True)[: timers.DUE_AT_ONCE])


def first(qs) -> list[int]:
    return list(qs.values_list("pk", flat=True)[: timers.DUE_AT_ONCE])


def test_the_compiled_due_reads_are_the_querysets_at_every_time() -> None:
    box = Mailbox.objects.create(address="support@example.test", login="support@example.test")
    now = timezone.now()
    for n in range(6):
        interaction(box, n, State.ROUTED, offer_due_at=now + timedelta(seconds=10 * n - 25))
        interaction(box, 10 + n, State.DELIVERED, no_reply_due_at=now + timedelta(seconds=10 * n - 25))
    interaction(box, 99, State.QUEUED, offer_due_at=now - timedelta(hours=1))  # not routed: never due
    for step in range(-4, 6):
        at = now + timedelta(seconds=step * 7, microseconds=step * 13)
        assert timers._due(timers._OFFERS_DUE, at) == orm(State.ROUTED, "offer_due_at", at)
        assert timers._due(timers._REPLIES_DUE, at) == orm(State.DELIVERED, "no_reply_due_at", at)
        # The querysets the step locks with (`locking.take`) hold the same rows.
        assert timers._due(timers._OFFERS_DUE, at) == first(timers.offers_due(at))
        assert timers._due(timers._REPLIES_DUE, at) == first(timers.replies_due(at))
    assert len(timers._due(timers._OFFERS_DUE, now)) == 3
    # Compiled (the statement carries the time once, as Django prepared it), and used.
    assert timers._OFFERS_DUE._local.plans[None].at is not None
    late = interaction(box, 50, State.ROUTED, offer_due_at=now - timedelta(seconds=1))
    with CaptureQueriesContext(connection) as queries:
        assert late.pk in timers._due(timers._OFFERS_DUE, now)
    assert len(queries.captured_queries) == 1
    connection.close()  # a connection made again: compiled again, same answer
    assert timers._due(timers._OFFERS_DUE, now) == orm(State.ROUTED, "offer_due_at", now)
