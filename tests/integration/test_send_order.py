"""Which due mail the outbox sends first (issue 9): replies, then forwards, then notices,
then auto-responses, oldest first within a kind, so that a backlog of auto-responses never
holds back a customer's reply or an agent's forward."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.utils import timezone

from postroom.core.outbox import OutboxState
from postroom.core.outbox import Policy as OutboxPolicy
from postroom.engine.outbox import due_rows
from postroom.store.models import Outgoing
from tests.e2e.outbox_rows import due_row

pytestmark = pytest.mark.django_db


def test_replies_then_forwards_then_notices_then_auto_responses_oldest_first() -> None:
    site = SimpleNamespace(outbox=OutboxPolicy())
    for n in range(3):  # the oldest rows are the auto-responses, as after a burst of mail
        due_row(Outgoing.AUTO_RESPONSE, n, age_s=100 - n)
    due_row(Outgoing.NOTICE, 0, age_s=50)
    due_row(Outgoing.FORWARD, 1, age_s=10)
    due_row(Outgoing.FORWARD, 0, age_s=20)
    due_row(Outgoing.REPLY, 0, age_s=1, state=OutboxState.RETRY_WAIT)
    due_row(Outgoing.REPLY, 1, age_s=-60)  # not due yet
    due_row(Outgoing.REPLY, 2, age_s=5, state=OutboxState.SENT)  # done

    order = [r.key for r in due_rows(timezone.now(), site, limit=50)]

    assert order == [
        "reply:0", "forward:0", "forward:1", "notice:0", "auto_response:0", "auto_response:1", "auto_response:2",
    ]
    assert [r.key for r in due_rows(timezone.now(), site, limit=2)] == ["reply:0", "forward:0"]


def test_the_static_split_of_the_sessions_is_kept_when_each_has_urgent_mail() -> None:
    site = SimpleNamespace(outbox=OutboxPolicy())
    for n in range(4):
        due_row(Outgoing.FORWARD, n, age_s=40 - n)
    for n in range(4):
        due_row(Outgoing.AUTO_RESPONSE, n, age_s=100 - n)

    split = [[r.key for r in due_rows(timezone.now(), site, limit=50, share=s, shares=4)] for s in range(4)]

    assert split == [[f"forward:{s}", f"auto_response:{s}"] for s in range(4)]


def test_session_1_asks_for_the_most_urgent_row_too_when_it_has_no_urgent_row_of_its_own() -> None:
    # Decision 0060: a forward queued while session 0 sends its interaction's
    # auto-response waited for that send (the static split gave it to session 0 alone)
    # although the other sessions were idle. `steal`: the caller saw session 0 busy.
    site = SimpleNamespace(outbox=OutboxPolicy())
    due_row(Outgoing.FORWARD, 0, age_s=1)
    assert [[r.key for r in due_rows(timezone.now(), site, limit=50, share=s, shares=4)] for s in range(4)] == [
        ["forward:0"], [], [], [],
    ]

    alone = [[r.key for r in due_rows(timezone.now(), site, limit=50, share=s, shares=4, steal=True)] for s in range(4)]
    assert alone == [["forward:0"], ["forward:0"], [], []]

    due_row(Outgoing.AUTO_RESPONSE, 0, age_s=5)
    due_row(Outgoing.AUTO_RESPONSE, 1, age_s=4)
    split = [[r.key for r in due_rows(timezone.now(), site, limit=50, share=s, shares=4, steal=True)] for s in range(4)]
    assert split == [["forward:0"], ["forward:0", "auto_response:0"], ["auto_response:1"], []]

    due_row(Outgoing.REPLY, 0, age_s=2)  # now session 1 has a forward of its own
    split = [[r.key for r in due_rows(timezone.now(), site, limit=50, share=s, shares=4, steal=True)] for s in range(4)]
    assert split == [["reply:0"], ["forward:0"], ["auto_response:0"], ["auto_response:1"]]


def test_the_compiled_read_of_the_due_rows_equals_the_querysets() -> None:
    # Decision 0062: the senders' read of the due ids is the queryset's statement,
    # compiled once, with the two times put in; it must give what the queryset gives.
    from postroom.engine.outbox import DUE_IDS, due_ids

    site = SimpleNamespace(outbox=OutboxPolicy())
    now = timezone.now()
    for n, age in enumerate((100, 30, 5, 1, 0, -1, -30)):
        for kind in (Outgoing.AUTO_RESPONSE, Outgoing.FORWARD, Outgoing.REPLY, Outgoing.NOTICE):
            for state in (OutboxState.PENDING, OutboxState.RETRY_WAIT, OutboxState.UNKNOWN, OutboxState.SENT):
                due_row(kind, n * 10 + list(OutboxState).index(state), age_s=age, state=state)
    # Claimed rows: leases over long ago (due for a check), just over (in the grace), live.
    for n, lease_age in enumerate((3600, 1, -60)):
        r = due_row(Outgoing.AUTO_RESPONSE, 900 + n, age_s=10, state=OutboxState.SENDING)
        Outgoing.objects.filter(pk=r.pk).update(claimed_by="x", lease_until=now - timedelta(seconds=lease_age))
    for at in (now - timedelta(seconds=20), now, now + timedelta(seconds=20), now + timedelta(hours=2)):
        for n in (3, 200):
            expected = list(due_ids(at, at - site.outbox.grace)[:n])
            assert DUE_IDS.rows(at, at - site.outbox.grace, count=n) == expected
            assert expected  # every time has due rows: the comparison says something
    plans = DUE_IDS._local.plans
    assert set(plans) == {3, 200} and all(plan.at is not None for plan in plans.values())  # the compiled path ran


def test_a_sessions_read_tells_which_other_sessions_have_rows() -> None:
    # Decision 0062: one sender reads for all when mail is queued; it hands out what it
    # read to the senders whose share has rows in it, and says when the first is urgent.
    site = SimpleNamespace(outbox=OutboxPolicy())
    told: list[tuple[set[int], bool]] = []

    def hand_out(shares: set[int], urgent: bool) -> None:
        told.append((shares, urgent))

    assert due_rows(timezone.now(), site, limit=50, share=0, shares=4, hand_out=hand_out) == []
    assert told == []  # nothing due: nobody to tell

    due_row(Outgoing.AUTO_RESPONSE, 0, age_s=5)
    assert [r.key for r in due_rows(timezone.now(), site, limit=50, share=2, shares=4, hand_out=hand_out)] == []
    assert told == [({0}, False)]

    due_row(Outgoing.FORWARD, 0, age_s=1)
    due_row(Outgoing.AUTO_RESPONSE, 1, age_s=4)
    told.clear()
    keys = [r.key for r in due_rows(timezone.now(), site, limit=50, share=0, shares=4, hand_out=hand_out)]
    assert keys == ["forward:0"]
    assert told == [({1, 2}, True)]

    for n in range(2, 6):
        due_row(Outgoing.AUTO_RESPONSE, n, age_s=3)
    told.clear()
    due_rows(timezone.now(), site, limit=50, share=3, shares=4, hand_out=hand_out)
    assert told == [({0, 1, 2}, True)]
