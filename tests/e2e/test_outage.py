"""Outages survived (issue 7): Dovecot and Postfix stopped for 60 s in the middle of a run.

The engine runs as in production (watcher threads with IDLE, the worker thread); agents
answer from their own mailboxes as their mail clients would, and keep trying while the
server is away. The whole mail server goes down (both daemons stopped by their pids) for
a minute while interactions are in flight, then comes back with its state. The engine
reconnects with backoff and jitter, resumes IDLE and drains what piled up: every customer
ends with exactly one auto-response and one reply, and the incoming and outbound boxes
end empty.
"""

from __future__ import annotations

import contextlib
import smtplib
import threading
import time

import pytest
from django.db import connection
from imapclient.exceptions import IMAPClientError

from postroom.store.models import Interaction
from tests.e2e.boxes import auto_responses, customer_replies, mail, reply_as

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]

OUTAGE = 60.0
WAVE = 3


class AgentsAtTheirDesks(threading.Thread):
    """Alice and Bob in their mail clients: each forward they find is answered once."""

    def __init__(self, center) -> None:
        super().__init__(daemon=True)
        self.center = center
        self.answered: set[str] = set()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            for who in ("alice", "bob"):
                with contextlib.suppress(OSError, IMAPClientError, smtplib.SMTPException):
                    for fwd in self.center.messages(who):
                        if fwd["Reply-To"] is None or fwd["Auto-Submitted"] is not None:
                            continue
                        key = str(fwd["Message-ID"])
                        if key not in self.answered:
                            reply_as(self.center, who, f"Answer to {fwd['Subject']}", forwarded=fwd)
                            self.answered.add(key)
            self.stopping.wait(0.5)


def eventually(what: str, check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, IMAPClientError):
            if check():
                return
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{ledger()}"
        time.sleep(1.0)


def ledger() -> str:
    import faulthandler
    import sys

    from postroom.store.models import Outgoing

    faulthandler.dump_traceback(file=sys.stderr)

    lines = [f"{ix.subject}: {ix.status} {ix.agent_id}" for ix in Interaction.objects.order_by("id")]
    lines += [f"{o.key} {o.state} attempts={o.attempts} next={o.next_attempt_at:%H:%M:%S} {o.last_error[:80]}" for o in Outgoing.objects.order_by("id")]
    return "\n".join(lines)


def test_the_mail_server_away_for_a_minute(center, new_user) -> None:
    if connection.vendor == "postgresql":
        pytest.skip("the outage is the mail server's: run once, on the SQLite pass")
    customers = [f"customer{n}" for n in range(2 * WAVE)]
    for name in customers:
        center.users[name] = new_user(name, "customer.test")
    center.ready("alice")
    center.ready("bob")
    agents = AgentsAtTheirDesks(center)
    agents.start()
    center.engine.start()
    try:
        for name in customers[:WAVE]:
            center.send(mail(center, subject=f"Question from {name}", sender=name), center.address("support"), center.address(name))
        eventually("the first wave taken", lambda: Interaction.objects.count() == WAVE, 60)

        center.stack.stop(hold_ports=True)  # in the middle: replies being written, forwards in flight
        try:
            time.sleep(OUTAGE)
        finally:
            center.stack.resume()

        for name in customers[WAVE:]:
            center.send(mail(center, subject=f"Question from {name}", sender=name), center.address("support"), center.address(name))
        eventually(
            "every interaction closed",
            lambda: Interaction.objects.count() == 2 * WAVE and set(Interaction.objects.values_list("status", flat=True)) == {"closed"},
            240,
        )
        eventually("every customer's reply", lambda: all(customer_replies(center, c) for c in customers), 60)
    finally:
        agents.stopping.set()
        agents.join(10)
        center.engine.stop()
    for name in customers:
        autos, replies = auto_responses(center, name), customer_replies(center, name)
        assert (len(autos), len(replies)) == (1, 1), (name, [m["Subject"] for m in autos + replies])
        assert "Answer to" in replies[0].get_body(("plain",)).get_content()
    assert center.messages("support") == []
    assert center.messages("outbound") == []
    from postroom.store.models import Alert

    assert not Alert.objects.filter(kind="unaccounted").exists()
