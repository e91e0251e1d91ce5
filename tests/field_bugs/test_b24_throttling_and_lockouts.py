"""B-24: server throttling and lockouts from aggressive polling.

In the field (osTicket#6003; FreeScout's advice to fetch less often; Znuny sleeps 1 s every
20 messages): "LOGIN DENIED -- TOO MANY FAILURES" at random.

Postroom holds one long-lived connection per box and waits in IDLE, so logins do not grow
with the mail; a box whose login fails is retried with back-off, not hammered. Shown with
the engine as in production, its IMAP through a proxy that reads the logins (clear text
on loopback), one healthy box taking thirty mails and one box whose password the server
no longer accepts.
"""

from __future__ import annotations

import re
import signal
import smtplib
import time
from collections import Counter
from email.message import EmailMessage
from email.utils import make_msgid

import pytest

from tests.chaos.harness import build_site, wait_for
from tests.e2e.databases import fresh_database

pytestmark = pytest.mark.mailstack

MAILS = 30
WATCHED_FOR = 15.0  # seconds of failed logins looked at


def logins(relay) -> Counter:
    """LOGIN commands seen, by user."""
    found: Counter = Counter()
    for sent in list(relay.sent):
        for user in re.findall(rb"LOGIN (\S+)", bytes(sent)):
            found[user.strip(b'"').decode()] += 1
    return found


def test_b24_logins_do_not_grow_with_mail_and_a_refused_login_backs_off(mailstack, new_user, tmp_path, proxy) -> None:
    relay = proxy(mailstack.imap_port)
    database = fresh_database(tmp_path, "b24")
    site = build_site(mailstack, new_user, tmp_path, database, boxes=("support", "broken"), agents=1, imap_port=relay.port)
    site.config.write_text(site.config.read_text().replace('imap_tls = "starttls"', 'imap_tls = "none"'))
    customer = new_user("cust", "customer.test")
    site.users["customer"] = customer
    try:
        site.cli("load", str(site.config))
        mailstack.add_user(site.address("broken"), "a-password-postroom-does-not-know")
        engine = site.start_engine()

        def write(n: int) -> None:
            msg = EmailMessage()
            msg["From"], msg["To"] = customer[0], site.address("support")
            msg["Subject"], msg["Message-ID"] = f"Mail {n}", make_msgid("b24", domain="customer.test")
            msg.set_content("Hello.")
            with smtplib.SMTP("127.0.0.1", mailstack.smtp_port) as smtp:
                smtp.send_message(msg)

        def taken() -> int:
            return int(database.scalar("SELECT COUNT(*) FROM store_interaction") or 0)

        write(0)
        wait_for("the first mail to be taken", lambda: taken() == 1, timeout=60, engine=engine)
        started = time.monotonic()
        before = logins(relay)
        for n in range(1, MAILS):
            write(n)
        wait_for(f"all {MAILS} mails to be taken", lambda: taken() == MAILS, timeout=120, engine=engine)
        support = site.address("support")
        assert logins(relay)[support] - before[support] <= 1, logins(relay)  # no new session per mail

        # The broken box, looked at for a fixed while: a failed login is retried with
        # back-off (1, 2, 4 ... s), not every time the loop comes round.
        time.sleep(max(0.0, WATCHED_FOR - (time.monotonic() - started)))  # a span of time to count over
        failed = logins(relay)[site.address("broken")]
        assert 1 <= failed <= 8, f"{failed} failed logins in about {time.monotonic() - started:.0f} s"
        assert engine.stop(signal.SIGTERM) == 0
    finally:
        for engine in site.engines:
            if engine.poll() is None:
                engine.stop(signal.SIGKILL)
        database.drop()
