"""B-9: one failing account blocks the others.

In the field (zammad#3294, chatwoot#4532): a failed OAuth refresh on one channel stopped
fetching for every channel after it; an inbox was disabled after one transient timeout.

Postroom must isolate each box: one that cannot log in backs off alone while the other
boxes' mail is acknowledged, delivered and answered. Shown with five incoming boxes and
the engine as in production; one box's password is changed on the server after a mail in
it was taken, so every later login to it fails.
"""

from __future__ import annotations

import signal
import smtplib
from email.message import EmailMessage
from email.utils import make_msgid

import pytest

from tests.chaos.harness import build_site, wait_for
from tests.e2e.databases import fresh_database

pytestmark = pytest.mark.mailstack

BOXES = ("box1", "box2", "box3", "box4", "box5")


def write(site, customer: str, box: str, subject: str) -> None:
    msg = EmailMessage()
    msg["From"] = customer
    msg["To"] = site.address(box)
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid("b09", domain="customer.test")
    msg.set_content("Hello.")
    with smtplib.SMTP("127.0.0.1", site.stack.smtp_port) as smtp:
        smtp.send_message(msg)


def test_b09_a_box_that_cannot_log_in_does_not_hold_up_the_other_four(mailstack, new_user, tmp_path) -> None:
    database = fresh_database(tmp_path, "b09")
    site = build_site(mailstack, new_user, tmp_path, database, boxes=BOXES, agents=1, capacity=10)
    # A customer of their own per box: a per-address cap on auto-responses must not
    # look like a blocked box.
    customers = {box: new_user(f"cust-{box}", "customer.test") for box in BOXES}
    site.users.update({f"customer-{box}": c for box, c in customers.items()})
    try:
        site.cli("load", str(site.config))
        engine = site.start_engine()
        write(site, customers["box5"][0], "box5", "Taken before the box broke")
        wait_for("the box5 mail to be taken", lambda: database.scalar("SELECT COUNT(*) FROM store_interaction") == 1, timeout=60, engine=engine)
        mailstack.add_user(site.address("box5"), "a-password-postroom-does-not-know")  # every new login now fails
        site.cli("agent", "ready", site.address("agent0"))  # box5's mail goes to the agent: its box must be read
        for box in BOXES[:4]:
            write(site, customers[box][0], box, f"Mail to {box}")
        wait_for(
            "the four healthy boxes' mail to be acknowledged and forwarded",
            lambda: all(site.count(f"customer-{box}") for box in BOXES[:4]) and site.count("agent0") >= 4,
            timeout=25,
            engine=engine,
        )
        assert engine.poll() is None
        engine.stop(signal.SIGTERM)
    finally:
        for engine in site.engines:
            if engine.poll() is None:
                engine.stop(signal.SIGKILL)
        database.drop()
