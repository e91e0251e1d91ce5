"""B-22: destructive ingest: mail deleted from the company's server.

In the field (django-helpdesk#654, #341; Zammad's setup warning): the import deletes the
mail, so there is no audit copy and nothing to replay after a crash.

Postroom leaves customer mail on the server until its interaction is finished (decision
0001), so the server is the record to replay from. Shown with the engine as in
production taking a batch of mails, then started on an empty database (a restore from a
backup older than the mails): every mail is still there and becomes its interaction again.
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

MAILS = 5


def test_b22_a_database_restored_from_before_the_mail_is_rebuilt_from_the_server(mailstack, new_user, tmp_path) -> None:
    first = fresh_database(tmp_path, "b22")
    site = build_site(mailstack, new_user, tmp_path, first, boxes=("support",), agents=1)
    restored = None
    try:
        site.cli("load", str(site.config))
        engine = site.start_engine()
        sent = []
        with smtplib.SMTP("127.0.0.1", mailstack.smtp_port) as smtp:
            for n in range(MAILS):
                msg = EmailMessage()
                msg["From"] = f"Customer {n} <customer{n}@example.org>"
                msg["To"] = site.address("support")
                msg["Subject"] = f"Question {n}"
                msg["Message-ID"] = make_msgid(f"b22-{n}", domain="example.org")
                msg.set_content("Hello.")
                smtp.send_message(msg)
                sent.append(msg["Message-ID"])

        def taken(db) -> set[str]:
            return {r["message_id"] for r in db.rows("SELECT message_id FROM store_interaction")}

        wait_for("every mail to be taken", lambda: taken(first) == set(sent), timeout=60, engine=engine)
        assert engine.stop(signal.SIGTERM) == 0
        assert site.count("support") == MAILS  # taken, and still on the server

        restored = fresh_database(tmp_path, "b22r")
        site.database = restored  # the engine now finds a database that never saw them
        site.cli("load", str(site.config))
        engine = site.start_engine()
        wait_for("every mail to be taken again", lambda: taken(restored) == set(sent), timeout=60, engine=engine)
        assert engine.stop(signal.SIGTERM) == 0, engine.tail()
        assert restored.scalar("SELECT COUNT(*) FROM store_interaction") == MAILS
        assert site.count("support") == MAILS
    finally:
        for engine in site.engines:
            if engine.poll() is None:
                engine.stop(signal.SIGKILL)
        first.drop()
        if restored is not None:
            restored.drop()
