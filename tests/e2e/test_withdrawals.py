"""Window 11 of issue 7: a withdrawal that failed is tried again, then given up loudly.

When an unanswered mail is taken from an agent (fig. 8), the forwarded copy is withdrawn
from the agent's mailbox. If that mailbox cannot be reached at that moment, the
withdrawal is retried with backoff; after [health] withdrawal_attempts it is given up with
an alert, so a supervisor knows a stale copy is still there.
"""

from __future__ import annotations

import pytest

from postroom.store.models import Interaction, Withdrawal
from tests.e2e.boxes import mail, run, write_in

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]


def forwards(center, who: str):
    return [m for m in center.messages(who) if m["Reply-To"] is not None and m["Auto-Submitted"] is None]


def taken_from_alice(center, *, restore: bool = True) -> None:
    center.ready("alice")
    write_in(center, mail(center))
    run(center)
    assert len(forwards(center, "alice")) == 1
    center.ready("bob")
    # Alice's mailbox cannot be reached when the no-reply time passes: its password changed
    # on the mail server, and nobody told Postroom.
    center.stack.add_user(center.address("alice"), "wrong-password")
    center.clock.advance(hours=5)
    run(center)
    assert Interaction.objects.get().agent.address == center.address("bob")
    if restore:  # the engine is not told; its next attempt simply succeeds
        center.stack.add_user(center.address("alice"), center.password("alice"))


def test_a_failed_withdrawal_is_retried(center) -> None:
    taken_from_alice(center)
    assert len(forwards(center, "alice")) == 1  # the first attempt failed
    center.clock.advance(minutes=10)
    run(center)
    assert forwards(center, "alice") == []
    (row,) = Withdrawal.objects.all()
    assert row.done_at is not None and "removed 1" in row.result


def test_a_withdrawal_is_given_up_with_an_alert(make_center) -> None:
    center = make_center("\n[health]\nwithdrawal_attempts = 3\n")
    taken_from_alice(center, restore=False)
    for _ in range(3):
        center.clock.advance(minutes=10)
        run(center)
    from postroom.store.models import Alert

    (row,) = Withdrawal.objects.all()
    assert row.done_at is not None and row.result.startswith("given up after 3 attempts")
    (alert,) = Alert.objects.filter(kind="withdrawal_given_up")
    assert center.address("alice") in alert.message
    # The supervisor is told by mail, once.
    told = [m for m in center.wait_for("sam", 1) if "withdrawal given up" in str(m["Subject"])]
    assert len(told) == 1
    center.stack.add_user(center.address("alice"), center.password("alice"))
    assert len(forwards(center, "alice")) == 1  # still there, and now everybody knows
