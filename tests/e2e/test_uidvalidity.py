"""Window 7 of issue 7: a box rebuilt or restored (new UIDVALIDITY) strands nothing.

All UIDs change with the UIDVALIDITY. Interactions in progress are re-bound to their
mail's new UID by Message-ID (not closed as vanished, not re-read as duplicates), and so
are the outbound box's ledger rows (an accepted reply is not refused as a second one).
Tested on the real Dovecot, rebuilt under the engine mid-interaction.
"""

from __future__ import annotations

import pytest

from postroom.core.lifecycle import State
from postroom.store.models import Interaction, JournalEvent, Mailbox, Outgoing
from tests.e2e.boxes import (
    auto_responses,
    customer_replies,
    mail,
    notices,
    rebuild,
    reply_as,
    run,
    write_in,
)

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]


def test_interactions_in_progress_survive_a_rebuilt_box(center) -> None:
    original = mail(center, subject="My kettle is broken")
    write_in(center, original)
    write_in(center, mail(center, subject="A second question"), count=2)
    run(center)  # queued: no agent is ready yet
    assert Interaction.objects.filter(status=State.QUEUED).count() == 2

    old, new = rebuild(center, "support")
    center.ready("alice")
    run(center)
    ix = Interaction.objects.get(subject="My kettle is broken")
    assert ix.state is State.DELIVERED, ix.status  # not vanished
    assert ix.uidvalidity == new
    assert Interaction.objects.count() == 2
    assert len(auto_responses(center)) == 2  # no second auto-response for re-read mail

    # The agent answers; the outbound box is rebuilt after the reply was accepted and
    # before it was cleared away.
    reply_as(center, "alice", "We send you a new kettle.", forwarded=next(m for m in center.wait_for("alice", 1) if "kettle" in str(m["Subject"])))
    center.wait_for("outbound", 1)
    outbound = Mailbox.objects.get(address=center.address("outbound"))
    session = center.engine._sessions_for_worker().get(outbound, ingesting=True)
    center.engine.ingest_box(outbound, session)
    rebuild(center, "outbound")
    run(center)

    replies = customer_replies(center)
    assert [str(m["Subject"]) for m in replies] == ["Re: My kettle is broken"]
    assert not [m for m in notices(center, "alice") if "Not delivered" in str(m["Subject"])]
    assert center.messages("dead") == []
    assert center.messages("outbound") == []
    assert [str(m["Subject"]) for m in center.messages("support")] == ["A second question"]
    ix.refresh_from_db()
    assert ix.state is State.CLOSED and ix.outcome == "replied"
    assert not JournalEvent.objects.filter(kind="duplicate_ignored").exists()


@pytest.mark.parametrize("session", ["kept open", "opened after the rebuild"])
def test_a_box_rebuilt_between_two_forwards_holds_the_second_back_until_the_re_bind(center, session) -> None:
    """Decision 0060: delivery checks the box's UIDVALIDITY against the one it read with
    its interactions (not read again). The box is rebuilt after the first forward left
    and before the watcher took it again: the second interaction's forward waits for the
    re-bind (not built under the old UID, not closed as vanished), then goes out. A
    session kept open learns of the rebuild from its NOOP (the server ends it); one
    opened after it, from the UIDVALIDITY check."""
    write_in(center, mail(center, subject="First"))
    write_in(center, mail(center, subject="Second"), count=2)
    center.ready("alice")
    run(center)
    first = Interaction.objects.get(subject="First")
    second = Interaction.objects.get(subject="Second")
    assert first.state is State.DELIVERED
    assert second.state is State.QUEUED

    old, new = rebuild(center, "support")
    if session == "opened after the rebuild":
        center.engine._sessions_for_worker().close()
    center.ready("bob")
    steps = dict(center.engine.steps())
    steps["routing"]()  # the worker's steps, without the watcher's re-bind
    steps["delivery"]()
    second.refresh_from_db()
    assert second.state is State.ANSWERED and second.uidvalidity == old
    assert not second.outgoing.filter(kind=Outgoing.FORWARD).exists()

    run(center)  # the watcher re-binds; delivery goes on
    second.refresh_from_db()
    assert second.state is State.DELIVERED and second.uidvalidity == new
    assert not JournalEvent.objects.filter(kind="vanished").exists()
