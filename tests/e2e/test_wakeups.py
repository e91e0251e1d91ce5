"""Who wakes whom in a running engine (decision 0041): mail queued wakes the senders only;
any other change marks every worker step; mail taken in marks routing and delivery."""

from __future__ import annotations

import threading

import pytest

from postroom.engine import runtime
from postroom.engine.runtime import GATHER, STEPS
from postroom.mail.smtp import SmtpSender
from postroom.store.models import JournalEvent, Mailbox, Outgoing
from tests.e2e.enginerun import wait_until
from tests.e2e.outbox_rows import notice

pytestmark = pytest.mark.mailstack


# What a mark brings forward: every step but the housekeeping that gathers its work
# (decision 0047: clean-up runs at most every few seconds, marked or not).
MARKABLE = tuple(name for name in STEPS if name not in GATHER)


def asked_just_now(engine) -> None:
    for name in STEPS:
        engine.schedule.due(name)
    engine.wake.clear()


@pytest.mark.django_db(transaction=True)
def test_a_notification_wakes_the_senders_for_mail_and_the_worker_for_changes(center) -> None:
    engine = center.engine
    engine._sender_wakes = [threading.Event(), threading.Event()]
    asked_just_now(engine)

    engine._notified(Outgoing._meta.db_table)
    assert all(event.is_set() for event in engine._sender_wakes)
    assert not engine.wake.is_set()
    assert not any(engine.schedule.due(name) for name in STEPS)

    engine._notified(JournalEvent._meta.db_table)
    assert engine.wake.is_set()
    assert all(engine.schedule.due(name) for name in MARKABLE)


@pytest.mark.django_db(transaction=True)
def test_mail_taken_in_marks_routing_and_delivery_a_reply_every_step(center) -> None:
    engine = center.engine
    asked_just_now(engine)
    engine._took_mail(Mailbox.objects.get(kind=Mailbox.INCOMING))
    assert engine.wake.is_set()
    assert [name for name in STEPS if engine.schedule.due(name)] == ["routing", "delivery"]

    asked_just_now(engine)
    engine._took_mail(Mailbox.objects.get(kind=Mailbox.OUTBOUND))
    assert all(engine.schedule.due(name) for name in MARKABLE)


@pytest.mark.django_db(transaction=True)
def test_a_notification_of_this_nodes_own_watcher_or_worker_wakes_nothing(center) -> None:
    """They marked what their commit made work for (decision 0043); any other session's
    commit (another node, the web, a sender) still wakes as before."""
    engine = center.engine
    engine._sender_wakes = [threading.Event()]
    engine._own_sessions["postroom-worker"] = 4242  # what _own_session() records
    asked_just_now(engine)

    engine._notified(JournalEvent._meta.db_table, 4242)
    engine._notified(Outgoing._meta.db_table, 4242)
    assert not engine.wake.is_set() and not engine._sender_wakes[0].is_set()
    assert not any(engine.schedule.due(name) for name in STEPS)

    engine._notified(JournalEvent._meta.db_table, 4343)
    engine._notified(Outgoing._meta.db_table, 4343)
    assert engine.wake.is_set() and engine._sender_wakes[0].is_set()
    assert all(engine.schedule.due(name) for name in MARKABLE)


@pytest.mark.django_db(transaction=True)
def test_queued_mail_wakes_one_idle_sender_and_a_read_wakes_the_senders_with_rows(center) -> None:
    """Decision 0062: mail queued wakes one idle sender (the first by share), which reads
    the due rows for all; with none idle, every sender, as before. A read wakes the
    senders whose share has rows, and sender 1 for sender 0's urgent row while sender 0
    has mail on the wire (decision 0060)."""
    engine = center.engine
    engine._sender_wakes = wakes = [threading.Event() for _ in range(3)]
    idle = engine._senders_idle = {share: threading.Event() for share in range(3)}
    idle[1].set()
    idle[2].set()

    engine._wake_senders()
    assert [w.is_set() for w in wakes] == [False, True, False]
    engine._wake_senders()  # sender 1 is no longer taken for idle: the next one is woken
    assert [w.is_set() for w in wakes] == [False, True, True]
    for w in wakes:
        w.clear()
    engine._wake_senders()  # none idle: all of them
    assert all(w.is_set() for w in wakes)

    for w in wakes:
        w.clear()
    engine._hand_out({2}, True)
    assert [w.is_set() for w in wakes] == [False, False, True]
    engine._senders_sending[0] = sending = threading.Event()
    engine._hand_out({0}, False)  # not urgent: sender 1 is not asked
    assert [w.is_set() for w in wakes] == [True, False, True]
    engine._hand_out({0}, True)  # urgent, but sender 0 is not on the wire
    assert not wakes[1].is_set()
    sending.set()
    engine._hand_out({0}, True)
    assert wakes[1].is_set()


class HoldsSenderZero(SmtpSender):
    """The real SMTP sender; sender 0's first transaction waits (before its first byte)
    until the test lets it go."""

    go = threading.Event()
    held = threading.Event()

    def send(self, *args, **kw):
        if threading.current_thread().name == "postroom-sender-0" and not self.held.is_set():
            self.held.set()
            self.go.wait(60)
        return super().send(*args, **kw)


@pytest.mark.django_db(transaction=True)
def test_the_sender_that_reads_hands_out_the_other_senders_rows(center, monkeypatch) -> None:
    """Decision 0062, in the running engine: senders 1-3 never look on their own here
    (their safety-net wait made an hour long), and one wake-up is given for four rows,
    one in each sender's share; sender 0 takes it, and its send is held. The other
    senders' rows leave meanwhile: sender 0's read woke them for theirs. (Without the
    hand-out, nothing leaves until sender 0 is let go.) Every row is sent once."""
    monkeypatch.setattr(runtime, "IDLE_SENDER_WAIT", 3600.0)
    monkeypatch.setattr(runtime, "SmtpSender", HoldsSenderZero)
    HoldsSenderZero.go.clear()
    HoldsSenderZero.held.clear()
    engine = center.engine
    engine.start()
    try:
        wait_until("four idle senders", lambda: len(engine._senders_idle) == 4 and all(
            e.is_set() for e in engine._senders_idle.values()), timeout=30)
        rows = [notice(center, n) for n in range(4)]
        pks = [r.pk for r in rows]
        engine._wake_senders()  # sender 0 is woken for them ...
        engine._wake_senders = lambda: None  # ... and nothing else wakes a sender
        wait_until("sender 0 to hold its row", HoldsSenderZero.held.is_set, timeout=30)
        # Its one row is held; of the three others, those still in senders 1-3's shares
        # when they read (two or three, as their reads and sender 0's claim fall) leave.
        wait_until("the other senders' rows sent", lambda: Outgoing.objects.filter(
            pk__in=pks, state=Outgoing.SENT).count() >= 2, timeout=30)
        HoldsSenderZero.go.set()
        wait_until("every row sent", lambda: Outgoing.objects.filter(pk__in=pks, state=Outgoing.SENT).count() == 4,
                   timeout=30)
        assert [r.attempts for r in Outgoing.objects.filter(pk__in=pks)] == [1] * 4
        assert len(center.wait_for("sam", 4)) == 4
    finally:
        HoldsSenderZero.go.set()
        vars(engine).pop("_wake_senders", None)  # the stop wakes every thread again
        engine.stop()


@pytest.mark.django_db(transaction=True)
def test_a_stop_reaches_every_idle_sender(center, monkeypatch) -> None:
    """Decision 0062: mail queued wakes one idle sender, but a stop (`_wake_all`) must
    wake each: with senders 1-3's own wait made an hour, every sender thread has ended
    when `stop` returns. (Found on the branch: `_wake_all` woke one sender only.)"""
    monkeypatch.setattr(runtime, "IDLE_SENDER_WAIT", 3600.0)
    engine = center.engine
    engine.start()
    try:
        wait_until("four idle senders", lambda: len(engine._senders_idle) == 4 and all(
            e.is_set() for e in engine._senders_idle.values()), timeout=30)
        senders = [t for name, t in engine._threads.items() if name.startswith("sender-")]
        assert len(senders) == 4
    finally:
        engine.stop(timeout=2.0)
    assert not any(t.is_alive() for t in senders)
