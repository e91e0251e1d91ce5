"""The idle worker steps' reads compiled once (decision 0065): each gives what the queryset
it stands for gives (the same rows, in the same order, at every time), on SQLite and
PostgreSQL; and a gate that says "nothing to do" never does so while its step has work
(each of clean-up's five kinds of work, a due withdrawal, an urgent outbox row)."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from postroom.core.claimloss import OUTCOME as CLAIMED_ELSEWHERE
from postroom.core.lifecycle import State
from postroom.core.outbox import OutboxState, expired_before
from postroom.core.outbox import Policy as OutboxPolicy
from postroom.engine import alerts, approvals, cleanup, outbox, withdrawals
from postroom.store.models import (
    Agent,
    Alert,
    Approval,
    Interaction,
    Mailbox,
    OutboundMessage,
    Outgoing,
    Withdrawal,
)
from tests.e2e.outbox_rows import due_row

pytestmark = pytest.mark.django_db(transaction=True)


def box() -> Mailbox:
    return Mailbox.objects.create(address="support@example.test", login="support@example.test")


def interaction(mailbox: Mailbox, n: int, status: str = State.QUEUED, **fields) -> Interaction:
    return Interaction.objects.create(
        node_id="n", mailbox=mailbox, uidvalidity=1, uid=n, customer=f"c{n}@example.test", status=status,
        arrival_time=timezone.now(), **fields,
    )


def ledger(mailbox: Mailbox, n: int, outcome: str, **fields) -> OutboundMessage:
    return OutboundMessage.objects.create(mailbox=mailbox, uidvalidity=1, uid=n, outcome=outcome, **fields)


def test_the_approvals_reads_are_their_querysets() -> None:
    mailbox = box()
    assert approvals._UNMAILED.rows() == [] and approvals._UNDONE.objects() == []
    now = timezone.now()
    for n, (state, mailed, applied) in enumerate(
        [(s, m, a) for s in (Approval.PENDING, Approval.APPROVED, Approval.REJECTED) for m in (None, now) for a in (None, now)]
        * 15
    ):
        ix = interaction(mailbox, n)
        Approval.objects.create(
            interaction=ix, reply=ledger(mailbox, n, OutboundMessage.ACCEPTED), raw=b"x", state=state,
            requested_at=now, mailed_at=mailed, applied_at=applied,
        )
    waiting = list(approvals.unmailed().values_list("pk", flat=True)[: approvals.AT_ONCE])
    assert waiting and [pk for (pk,) in approvals._UNMAILED.rows()] == waiting
    decided = list(approvals.undone().select_related("reply")[: approvals.AT_ONCE])
    compiled = approvals._UNDONE.objects()
    assert len(decided) == approvals.AT_ONCE  # more than one read's worth: the limit says something
    assert [a.pk for a in compiled] == [a.pk for a in decided]
    assert [(a.state, a.interaction_id, a.reply_id, bytes(a.raw)) for a in compiled] == [
        (a.state, a.interaction_id, a.reply_id, bytes(a.raw)) for a in decided
    ]
    with CaptureQueriesContext(connection) as queries:  # the ledger row came with it, no read of its own
        assert [a.reply.uid for a in compiled] == [a.reply.uid for a in decided]
    assert queries.captured_queries == []


def test_the_alerts_read_is_its_queryset() -> None:
    now = timezone.now()
    assert alerts._PENDING.objects() == []
    for n in range(60):
        Alert.objects.create(
            kind="send_failed", key=f"k{n}", message="m", raised_at=now, last_raised_at=now,
            pending_notice=n % 3 != 0, cleared_at=now if n % 5 == 0 else None,
        )
    expected = list(alerts.pending_notices()[: alerts.AT_ONCE])
    assert expected
    assert [(a.pk, a.key, a.notified_at) for a in alerts._PENDING.objects()] == [(a.pk, a.key, a.notified_at) for a in expected]


def test_the_withdrawals_gate_is_its_queryset_at_every_time() -> None:
    mailbox = box()
    agent = Agent.objects.create(name="A", address="a@example.test")
    now = timezone.now()
    ix = interaction(mailbox, 1)
    assert withdrawals._ANY_DUE.rows(now) == []
    for n, (done, due_in) in enumerate([(now, None), (None, 30), (None, 90), (now, -100)]):
        Withdrawal.objects.create(
            interaction=ix, agent=agent, message_id=f"<{n}@x>", reason="r", done_at=done,
            next_attempt_at=None if due_in is None else now + timedelta(seconds=due_in),
        )
    for step in range(-2, 12):
        at = now + timedelta(seconds=step * 10, microseconds=step)
        expected = list(withdrawals.due(at).values_list("pk")[:1])
        assert withdrawals._ANY_DUE.rows(at) == [tuple(r) for r in expected]
        assert bool(expected) is (step >= 3)  # the row due in 30 s is the first due
    assert withdrawals._ANY_DUE._local.plans[None].at is not None  # the compiled path ran
    # Never tried (no next attempt): due at any time, and the gate says so.
    Withdrawal.objects.create(interaction=ix, agent=agent, message_id="<new@x>", reason="r")
    assert withdrawals._ANY_DUE.rows(now - timedelta(days=1))


@pytest.mark.parametrize("work", ["unsent reply", "dead", "decision", "replied", "ended", "late copy"])
def test_the_cleanup_gate_sees_each_kind_of_work(work: str) -> None:
    mailbox = box()
    # Rows that are no work: the gate says nothing to do.
    done = interaction(mailbox, 1, State.CLOSED)
    ledger(mailbox, 1, OutboundMessage.ACCEPTED, interaction=done)
    ledger(mailbox, 2, OutboundMessage.DEAD, removed_at=timezone.now())
    interaction(mailbox, 3, State.DELIVERED)
    assert not cleanup.any_work()
    match work:
        case "unsent reply":
            lost = interaction(mailbox, 10, State.CLOSED, outcome=CLAIMED_ELSEWHERE)
            ledger(mailbox, 10, OutboundMessage.ACCEPTED, interaction=lost)
        case "dead":
            ledger(mailbox, 10, OutboundMessage.DEAD)
        case "decision":
            ledger(mailbox, 10, OutboundMessage.DECISION)
        case "replied":
            interaction(mailbox, 10, State.REPLIED)
        case "ended":
            interaction(mailbox, 10, State.ENDED)
        case "late copy":
            interaction(mailbox, 10, State.CLOSED, copies_pending=True)
    assert cleanup.any_work()
    # ... and exactly when one of the querysets `clean` reads has a row.
    assert any(q().exists() for q in (
        cleanup.unsent_replies, cleanup.dead_rows, cleanup.decided_rows, cleanup.finished, cleanup.late_copies
    ))


def test_urgent_due_is_its_queryset_at_every_time() -> None:
    site = SimpleNamespace(outbox=OutboxPolicy())
    now = timezone.now()

    def old(at) -> bool:  # what urgent_due asked before (decision 0060)
        return Outgoing.objects.filter(outbox.due(at, site), kind__in=outbox.URGENT_KINDS).exists()

    due_row(Outgoing.AUTO_RESPONSE, 0, age_s=100)
    due_row(Outgoing.NOTICE, 0, age_s=100)
    due_row(Outgoing.REPLY, 0, age_s=100, state=OutboxState.SENT)
    due_row(Outgoing.FORWARD, 1, age_s=-40)  # due in 40 s
    claimed = due_row(Outgoing.REPLY, 2, age_s=-3600, state=OutboxState.SENDING)  # its lease runs out in 90 s
    Outgoing.objects.filter(pk=claimed.pk).update(claimed_by="x", lease_until=now + timedelta(seconds=90))
    answers = []
    for step in range(-1, 60):
        at = now + timedelta(seconds=step * 5)
        assert outbox.urgent_due(at, site) is old(at)
        answers.append(old(at))
    assert False in answers and True in answers  # both answers were compared
    assert outbox.URGENT_DUE._local.plans[None].at is not None  # the compiled path ran
    assert expired_before(now, site.outbox) < now


def test_the_senders_rows_are_in_bulks() -> None:
    site = SimpleNamespace(outbox=OutboxPolicy())
    for n in range(30):
        due_row((Outgoing.AUTO_RESPONSE, Outgoing.FORWARD, Outgoing.REPLY)[n % 3], n, age_s=n)
    ids = list(Outgoing.objects.order_by("-pk").values_list("pk", flat=True))
    for count in (1, 2, 7, 30):
        wanted = ids[:count]
        rows = {r.pk: r for r in outbox.ROWS.objects(wanted)}
        bulk = Outgoing.objects.in_bulk(wanted)
        assert sorted(rows) == sorted(bulk)
        for pk, row in rows.items():
            other = bulk[pk]
            assert [getattr(row, f.attname) for f in Outgoing._meta.concrete_fields] == [
                getattr(other, f.attname) for f in Outgoing._meta.concrete_fields
            ]
        padded = {r.pk: r for r in outbox.ROWS.objects(outbox.padded(wanted))}  # as due_rows reads them
        assert sorted(padded) == sorted(bulk)
    assert all(plan.fits for plan in outbox.ROWS._local.plans.values())  # the compiled path ran
    assert {4, 16, 64} <= set(outbox.ROWS._local.plans)
    assert outbox.padded([7, 9]) == [7, 9, -1, -2] and len(outbox.padded(list(range(1, 20)))) == 64
    # due_rows with shares: the rows of this share, in send order, as before.
    mine = outbox.due_rows(timezone.now(), site, 50, share=1, shares=2)
    ordered = list(outbox.due_ids(timezone.now(), expired_before(timezone.now(), site.outbox)))
    assert [r.pk for r in mine] == [pk for pk, _ in ordered[1::2]]
