"""B-5: silent loss: mail marked read or deleted, but no ticket.

In the field (freescout#4888, zammad#5192, zammad#243, odoo PR#125202): most mails were
marked read but never became tickets; intermittent loss with no log entry; a setup
deleted a hundred mails although the import failed.

Postroom never sets \\Seen, moves or expunges before a durable commit; what it cannot
take is quarantined: a record with the reason, the message moved whole to a folder beside
the inbox, unread. Supervisors are alerted, and each cycle compares the box with the
ledger and alerts on mail nothing accounts for (alerts: branch mailboxes).
"""

from __future__ import annotations

import signal

import pytest

from postroom.store.models import Interaction, Quarantined
from tests.chaos.corpus import QUARANTINE_FOLDER
from tests.e2e.databases import execute
from tests.e2e.enginerun import make_deployment, wait_until
from tests.field_bugs.helpers import auto_responses, customer_mail, mail_to_support, run_until, send

pytestmark = pytest.mark.mailstack

UNREADABLE = b"this is not a mail at all\r\njust two lines of text\r\n"
ALERTS = "\n[health]\nreconcile_interval = \"1s\"\nalert_mail_interval = \"1s\"\n"


def alerts_to(center, who: str = "sam") -> list:
    return [m for m in center.messages(who) if "alert" in str(m["Subject"]).lower()]


@pytest.mark.django_db(transaction=True)
def test_b05_unreadable_mail_is_quarantined_whole_unread_and_the_rest_goes_on(center) -> None:
    center.append("support", UNREADABLE)
    send(center, customer_mail(center))
    center.engine.run_until_idle()

    (q,) = Quarantined.objects.all()
    assert q.reason.startswith("unreadable"), q.reason
    assert Interaction.objects.count() == 1 and len(auto_responses(center)) <= 1
    client = center.imap("support")
    try:
        client.select_folder(QUARANTINE_FOLDER, readonly=True)
        (uid,) = client.search(["ALL"])
        data = client.fetch([uid], ["FLAGS", "BODY.PEEK[]"])[uid]
        assert data[b"BODY[]"] == UNREADABLE  # byte for byte, nothing lost
        assert b"\\Seen" not in data[b"FLAGS"]
    finally:
        client.logout()
    run_until(center, "the auto-response", lambda: len(auto_responses(center)) == 1)


@pytest.mark.django_db(transaction=True)
def test_b05_a_quarantined_mail_alerts_the_supervisors(make_center) -> None:
    center = make_center(ALERTS)
    center.append("support", UNREADABLE)
    run_until(center, "an alert in a supervisor's mailbox", lambda: bool(alerts_to(center)), timeout=15)


def test_b05_mail_the_ledger_cannot_account_for_alerts_the_supervisors(mailstack, new_user, tmp_path) -> None:
    dep = make_deployment(mailstack, new_user, tmp_path, extra=lambda values: ALERTS)
    try:
        dep.load()
        engine = dep.start_engine()
        mail_to_support(dep, "Taken")
        wait_until("the first mail to be taken", lambda: dep.statuses() == ["queued"], timeout=60, engine=engine)
        assert engine.stop(signal.SIGTERM) == 0
        # A cursor that ran ahead of the ledger (a lost commit, a half-restored database):
        # the next mail's UID is below it, so nothing will ever take it.
        execute(dep.env()["DATABASE_URL"], "UPDATE store_mailbox SET last_uid = last_uid + 5 WHERE address = ?",
                (dep.center.address("support"),))
        mail_to_support(dep, "Never taken")
        engine = dep.start_engine()
        wait_until(
            "an alert in a supervisor's mailbox",
            lambda: any("alert" in str(m["Subject"]).lower() for m in dep.center.messages("sam")),
            timeout=60,
            engine=engine,
        )
    finally:
        dep.cleanup()
