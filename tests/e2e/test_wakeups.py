"""Who wakes whom in a running engine (decision 0041): mail queued wakes the senders only;
any other change marks every worker step; mail taken in marks routing and delivery."""

from __future__ import annotations

import threading

import pytest

from postroom.engine.runtime import GATHER, STEPS
from postroom.store.models import JournalEvent, Mailbox, Outgoing

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
