"""B-3: one mail sent to several system addresses (To + Cc, aliases, lists).

In the field (freescout#4748, #5284, #2807; zammad#1578; osTicket PR#866): duplicate
conversations and two auto-replies, or the second department silently dropped.

Postroom's policy: one interaction per message (its copies in the other boxes are kept
with it and leave the server with it), at most one auto-response per message. Shown
with the MTA expanding one transaction to two of our boxes with a colleague in Cc, and
with both boxes' watchers taking the same mails at the same moment (the race the
cross-box dedupe must win on PostgreSQL too).
"""

from __future__ import annotations

import os
import signal
import smtplib
from collections import Counter
from email.utils import make_msgid

import pytest

from postroom.store.models import Interaction, Outgoing
from tests.chaos.harness import build_site, wait_for
from tests.e2e.databases import fresh_database
from tests.field_bugs.helpers import answer, auto_responses, customer_mail, replies

pytestmark = pytest.mark.mailstack

SALES = """
[[incoming]]
address = "{sales}"
password = "{sales_pw}"
skills = ["support"]
"""
ON_POSTGRES = os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))


@pytest.mark.django_db(transaction=True)
def test_b03_to_and_cc_two_of_our_boxes_is_one_interaction_and_one_auto_response(make_center) -> None:
    center = make_center(SALES)
    center.ready("alice")
    msg = customer_mail(center)
    msg["Cc"] = f"{center.address('sales')}, Stan Colleague <{center.address('stranger')}>"
    # One SMTP transaction, three recipients: what an alias or a list expansion hands on.
    with smtplib.SMTP("127.0.0.1", center.stack.smtp_port) as smtp:
        smtp.sendmail(center.address("carol"), [center.address(b) for b in ("support", "sales", "stranger")], msg.as_bytes())
    center.wait_for("support", 1)
    center.wait_for("sales", 1)
    center.engine.run_until_idle()

    (ix,) = Interaction.objects.all()
    assert len(ix.copies) == 1
    assert Outgoing.objects.filter(kind=Outgoing.AUTO_RESPONSE).count() == 1
    answer(center, "alice")
    center.wait_for("outbound", 1)
    center.engine.run_until_idle()
    assert len(auto_responses(center)) == 1 and len(replies(center)) == 1
    assert center.messages("support") == [] and center.messages("sales") == []


def test_b03_two_watchers_taking_the_same_mails_at_once_make_one_interaction_each(mailstack, new_user, tmp_path) -> None:
    database = fresh_database(tmp_path, "b03")
    site = build_site(mailstack, new_user, tmp_path, database, boxes=("support", "sales"), agents=1)
    try:
        site.cli("load", str(site.config))
        customer = new_user("cust", "customer.test")
        site.users["customer"] = customer
        # While the engine is down, 30 mails each reach both boxes (one transaction, two
        # recipients); started, its two watchers take them in the same order, side by side.
        mids = []
        with smtplib.SMTP("127.0.0.1", mailstack.smtp_port) as smtp:
            for n in range(30):
                mid = make_msgid(f"twin{n}", domain="customer.test")
                raw = (
                    f"From: Customer <{customer[0]}>\r\nTo: {site.address('support')}\r\n"
                    f"Cc: {site.address('sales')}\r\nSubject: Two boxes {n}\r\nMessage-ID: {mid}\r\n"
                    "Date: Wed, 25 Nov 2026 09:00:00 +0000\r\n\r\nHello both.\r\n"
                ).encode()
                smtp.sendmail(customer[0], [site.address("support"), site.address("sales")], raw)
                mids.append(mid)
        wait_for("both boxes to hold all 30", lambda: site.count("support") == site.count("sales") == 30, timeout=60)
        engine = site.start_engine()
        finished = lambda: database.scalar(  # noqa: E731
            "SELECT COUNT(*) FROM store_outgoing WHERE kind = 'auto_response' AND state NOT IN ('sent', 'dead')"
        )
        wait_for(
            "every mail taken in both boxes and its auto-responses sent",
            lambda: database.scalar("SELECT last_uid FROM store_mailbox WHERE address = ?", (site.address("sales"),)) == 30
            and database.scalar("SELECT last_uid FROM store_mailbox WHERE address = ?", (site.address("support"),)) == 30
            and finished() == 0,
            timeout=120,
            engine=engine,
        )
        engine.stop(signal.SIGTERM)

        per_mail = Counter(r["message_id"] for r in database.rows("SELECT message_id FROM store_interaction"))
        assert {mid: per_mail[mid] for mid in mids if per_mail[mid] != 1} == {}
        wait_for("the auto-responses to be delivered", site.mail_queue_empty, timeout=60)
        got = Counter(str(h["In-Reply-To"]) for h in site.headers("customer") if h["Auto-Submitted"])
        assert got and {mid: got[mid] for mid in mids if got[mid] > 1} == {}  # never two for one mail
    finally:
        for engine in site.engines:
            if engine.poll() is None:
                engine.stop(signal.SIGKILL)
        database.drop()
