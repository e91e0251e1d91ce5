"""Two senders on one database: every outgoing row is sent once, because a row is claimed
under a lease and never sent while another sender's lease on it is live.

A second `postroom engine` on the same database refuses to start while the first holds
the engine lease (tests/e2e/test_lease.py), so here two sending workers run the outbox
step side by side in two threads, each with its own database connection, its own SMTP
session and its own claimant name, exactly as two engine processes would (SQLite, or
PostgreSQL in the second pass of `make test`). They send through the SMTP fault proxy,
which holds each final reply back for two seconds: while one worker's transaction is in
flight, the other one finds that row due and must leave it alone. The verdict: every
row's Message-ID was accepted by Postfix once (the proxy saw each 250) and is in the
customer's real mailbox once.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from email.message import EmailMessage
from email.utils import make_msgid

import pytest
from django.db import connection

from postroom.engine import outbox
from postroom.engine.connections import Sessions
from postroom.engine.runtime import watched_boxes
from postroom.mail.journalbox import JournalBox
from postroom.mail.smtp import SmtpSender
from postroom.store.models import Outgoing
from tests.faults.smtp_proxy import Fault, Rule, proxy_for

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]

MAILS = 8


@pytest.fixture
def proxy(mailstack):
    p = proxy_for(mailstack)
    yield p
    p.stop()


def test_two_senders_send_each_row_once(make_center, proxy) -> None:
    # Every final reply comes 2 s late: long transactions, inside the 4 s budget.
    proxy.add(Rule(Fault.DELAY_REPLY, delay=2.0, times=None))
    # One customer writes all of them: no per-address auto-response limit here.
    center = make_center("\n[auto_response]\nmax_per_address = 0\n")
    site = center.engine.site
    site = replace(site, smtp=replace(site.smtp, port=proxy.port, timeout=4.0))
    for n in range(MAILS):
        msg = EmailMessage()
        msg["From"] = f"Carol Customer <{center.address('carol')}>"
        msg["To"] = center.address("support")
        msg["Subject"] = f"Question {n}"
        msg["Message-ID"] = make_msgid("c", domain="customer.test")
        msg.set_content(f"Question number {n}.\n")
        center.send(msg, center.address("support"), center.address("carol"))
    center.wait_for("support", MAILS)
    sessions = Sessions(site)
    try:
        for box in watched_boxes():
            center.engine.ingest_box(box, sessions.get(box, ingesting=True))
    finally:
        sessions.close()
    assert Outgoing.objects.filter(kind=Outgoing.AUTO_RESPONSE).count() == MAILS

    errors: list[BaseException] = []

    def worker(n: int) -> None:
        sender, journal = SmtpSender(site.smtp), JournalBox(site.journal.account)
        holder = outbox.claimant(f"{site.node_id}-{n}")
        try:
            while Outgoing.objects.exclude(state=Outgoing.SENT).exists():
                if not outbox.send(site, sender, journal, holder, center.clock):
                    threading.Event().wait(0.05)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            sender.close()
            journal.close()
            connection.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)

    rows = list(Outgoing.objects.all())
    assert len(rows) == MAILS and {r.state for r in rows} == {Outgoing.SENT}
    assert {r.claimed_by for r in rows} == {""}  # settled rows hold no claim
    # Both workers were sending (each keeps one SMTP connection of its own).
    assert len({t.client for t in proxy.log}) >= 2, [(t.client, t.message_id) for t in proxy.log]
    ids = [r.message_id for r in rows]
    assert {mid: proxy.delivered(mid) for mid in ids} == {mid: 1 for mid in ids}
    carol = center.wait_for("carol", MAILS)
    assert sorted(str(m["Message-ID"]).strip() for m in carol) == sorted(ids)
