"""Window 10 of issue 7 and per-box health: one failing box never blocks the others.

The engine runs as in production (watcher threads, worker thread). One of several boxes
breaks (its password no longer works); mail in the other boxes keeps flowing to agents
and customers, judged from their real mailboxes; the broken box shows its error in the
health figures and raises a "box not synced" alert, mailed to the supervisors; once it is
repaired its mail flows too and the alert clears.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from postroom.core.lifecycle import State
from postroom.store.models import Interaction, Mailbox
from tests.e2e.boxes import auto_responses, customer_replies, mail, reply_as, write_in

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]

SITE = """
[[incoming]]
address = "{sales}"
password = "{sales_pw}"
skills = ["support"]

[health]
sync_alert_after = "30s"
"""


def eventually(what: str, check: Callable[[], bool], timeout: float = 90.0) -> None:
    start = time.monotonic()
    while not check():
        assert time.monotonic() < start + timeout, f"timed out waiting for {what}"
        time.sleep(0.3)



def forwards(center, who: str):
    return [m for m in center.messages(who) if m["Reply-To"] is not None and m["Auto-Submitted"] is None]


def test_a_broken_box_does_not_hold_up_the_others(make_center) -> None:
    center = make_center(SITE)
    support = Mailbox.objects.get(address=center.address("support"))
    write_in(center, mail(center, subject="Support question"), "support")
    write_in(center, mail(center, subject="Sales question", sender="stranger", to="sales"), "sales", sender="stranger")
    center.engine.start()
    try:
        eventually("both mails taken", lambda: Interaction.objects.count() == 2)
        # support@'s password changes on the mail server and its sessions are ended (and
        # nobody told Postroom).
        center.stack.add_user(center.address("support"), "not-the-password")
        center.stack.kick(center.address("support"))
        center.ready("alice")
        center.ready("bob")

        # sales@ flows: its mail reaches an agent, whose reply reaches the customer.
        eventually("the sales mail to reach an agent", lambda: any(forwards(center, w) for w in ("alice", "bob")))
        agent = next(w for w in ("alice", "bob") if forwards(center, w))
        reply_as(center, agent, "Here is your quote.", forwarded=forwards(center, agent)[0])
        eventually("the reply to reach the customer", lambda: len(customer_replies(center, "stranger")) == 1)
        assert len(auto_responses(center, "stranger")) == 1

        # support@ is visibly broken: its health, an alert, a mail to the supervisor.
        from postroom.store.models import Alert, BoxHealth

        ix = Interaction.objects.get(subject="Support question")
        assert ix.state is State.ANSWERED  # waiting for its box, not lost, not vanished
        eventually("the box-not-synced alert", lambda: Alert.objects.filter(kind="box_not_synced", key=support.address, cleared_at=None).exists())
        health = BoxHealth.objects.get(mailbox=support)
        assert health.failures > 0 and "uthenticat" in health.last_error
        eventually("the supervisor's alert mail", lambda: any("box not synced" in str(m["Subject"]) for m in center.messages("sam")))

        # Repaired: its mail flows too, the alert clears.
        center.stack.add_user(center.address("support"), center.password("support"))
        other = "bob" if agent == "alice" else "alice"
        eventually("the support mail to reach its agent", lambda: bool(forwards(center, other)), timeout=120)
        reply_as(center, other, "We are on it.", forwarded=forwards(center, other)[0])
        eventually("the second reply", lambda: len(customer_replies(center, "carol")) == 1)
        eventually("the alert to clear", lambda: not Alert.objects.filter(kind="box_not_synced", cleared_at=None).exists())
        eventually("both interactions closed", lambda: set(Interaction.objects.values_list("status", flat=True)) == {"closed"})
    finally:
        center.engine.stop()
    assert len(auto_responses(center, "carol")) == 1 and len(customer_replies(center, "carol")) == 1
    assert len(auto_responses(center, "stranger")) == 1 and len(customer_replies(center, "stranger")) == 1
    for box in ("support", "sales", "outbound", "dead"):
        assert center.messages(box) == [], box
    # Reconciliation ran at every watcher start meanwhile: no false alarm.
    assert not Alert.objects.filter(kind="unaccounted").exists()
