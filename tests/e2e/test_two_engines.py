"""Two engines on one database (a second node, or an operator starting it twice): every
outgoing row is sent once, because a row is claimed under a lease and never sent while
another engine's lease on it is live.

Both are `postroom engine` processes on the deployment's database (SQLite, or PostgreSQL in
the second pass of `make test`), sending through the SMTP fault proxy, which holds each
final reply back for two seconds: while one engine's transaction is in flight, the other
one's worker (awake at least once a second) looks at the outbox and finds that row due.
The mail arrives one message at a time while both run, so this happens for every row.
The verdict: every row's Message-ID was accepted by Postfix once (the proxy saw each 250)
and is in the customer's real mailbox once.
"""

from __future__ import annotations

import signal
from email.message import EmailMessage
from email.utils import make_msgid

import pytest

from tests.e2e.enginerun import make_deployment, wait_until
from tests.faults.smtp_proxy import Fault, Rule, proxy_for

pytestmark = pytest.mark.mailstack

MAILS = 8


@pytest.fixture
def proxy(mailstack):
    p = proxy_for(mailstack)
    yield p
    p.stop()


def test_two_engines_send_each_row_once(mailstack, new_user, tmp_path, proxy) -> None:
    # Every final reply comes 2 s late: long transactions, inside the 4 s budget.
    proxy.add(Rule(Fault.DELAY_REPLY, delay=2.0, times=None))
    dep = make_deployment(mailstack, new_user, tmp_path, smtp_port=proxy.port)
    center = dep.center
    try:
        dep.load()
        first, second = dep.start_engine(), dep.start_engine()
        for n in range(MAILS):
            msg = EmailMessage()
            msg["From"] = f"Carol Customer <{center.address('carol')}>"
            msg["To"] = center.address("support")
            msg["Subject"] = f"Question {n}"
            msg["Message-ID"] = make_msgid("c", domain="customer.test")
            msg.set_content(f"Question number {n}.\n")
            center.send(msg, center.address("support"), center.address("carol"))
            wait_until(f"mail {n} to be taken", lambda n=n: len(dep.interactions()) > n, timeout=30, engine=first)

        def all_sent() -> bool:
            rows = dep.outgoing()
            return len(rows) == MAILS and {r["state"] for r in rows} == {"sent"}

        wait_until("every auto-response to be sent", all_sent, timeout=120, engine=first)
        assert second.poll() is None, second.tail()
        assert first.stop(signal.SIGTERM) == 0, first.tail()
        assert second.stop(signal.SIGTERM) == 0, second.tail()

        rows = dep.outgoing()
        assert len(rows) == MAILS and all(r["kind"] == "auto_response" for r in rows)
        assert {r["claimed_by"] for r in rows} == {""}  # settled rows hold no claim
        # Both engines were sending (each keeps one SMTP connection of its own).
        assert len({t.client for t in proxy.log}) >= 2, [(t.client, t.message_id) for t in proxy.log]
        ids = [r["message_id"] for r in rows]
        assert {mid: proxy.delivered(mid) for mid in ids} == {mid: 1 for mid in ids}
        carol = center.wait_for("carol", MAILS)
        assert sorted(str(m["Message-ID"]).strip() for m in carol) == sorted(ids)
    finally:
        dep.cleanup()
