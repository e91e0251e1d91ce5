"""B-19: big mailboxes and big attachments: memory and timeouts.

In the field (freescout#4343, #2198; zammad#2591): a 50 GB unread mailbox exhausted a 2 GB
memory limit; a 6 GB inbox stopped after about 200 mails.

Postroom reads a box in bounded UID batches, fetches only the header of a mail over its
size limit (25 MB) and quarantines it with the reason rather than skipping it, and keeps
its memory flat. Shown with the engine as in production facing a backlog of 300
mails, a 30 MB mail and a mail with 200 attachments, all there before it starts; and
(branch mailboxes) the supervisors told about the oversize mail.
"""

from __future__ import annotations

import signal
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest

from tests.chaos.harness import build_site, wait_for
from tests.e2e.databases import fresh_database
from tests.field_bugs.helpers import customer_mail, run_until

pytestmark = pytest.mark.mailstack

BACKLOG = 300


def mail(to: str, subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Carol Customer <carol@customer.test>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid("b19", domain="customer.test")
    msg.set_content("Hello,\n\nplease have a look.\n")
    return msg


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_b19_a_backlog_a_30_mb_mail_and_200_attachments_all_taken_in_flat_memory(mailstack, new_user, tmp_path) -> None:
    database = fresh_database(tmp_path, "b19")
    site = build_site(mailstack, new_user, tmp_path, database, boxes=("support",), agents=1, auto_response=False)
    try:
        site.cli("load", str(site.config))
        to = site.address("support")
        big = mail(to, "Scans")
        big.add_attachment(b"\x89PNG" + b"\x00\xff" * (15 * 1024 * 1024), maintype="image", subtype="png", filename="scan.png")
        many = mail(to, "200 attachments")
        for i in range(200):
            many.add_attachment(bytes(range(256)) * 20, maintype="application", subtype="octet-stream", filename=f"part-{i}.bin")
        client = site.imap("support")
        try:
            client.append("INBOX", big.as_bytes())
            client.append("INBOX", many.as_bytes())
            for n in range(BACKLOG):
                client.append("INBOX", mail(to, f"Backlog {n}").as_bytes())
        finally:
            client.logout()

        engine = site.start_engine()
        total = BACKLOG + 2
        wait_for(
            f"all {total} mails to be taken",
            lambda: (database.scalar("SELECT COUNT(*) FROM store_interaction") or 0)
            + (database.scalar("SELECT COUNT(*) FROM store_quarantined") or 0) == total,
            timeout=240,
            engine=engine,
        )
        rss = peak_rss_mb(engine.proc.pid)
        assert engine.stop(signal.SIGTERM) == 0
        (reason,) = [r["reason"] for r in database.rows("SELECT reason FROM store_quarantined")]
        assert "over the limit" in reason
        assert database.scalar("SELECT COUNT(*) FROM store_interaction WHERE subject = '200 attachments'") == 1
        assert rss < 300, f"engine peak RSS {rss:.0f} MB"
    finally:
        for engine in site.engines:
            if engine.poll() is None:
                engine.stop(signal.SIGKILL)
        database.drop()


@pytest.mark.django_db(transaction=True)
def test_b19_an_oversize_mail_is_not_skipped_silently_the_supervisors_are_told(make_center) -> None:
    center = make_center('\n[health]\nalert_mail_interval = "1s"\n')
    big = customer_mail(center, subject="Scans")  # over the 25 MB the engine reads whole
    big.add_attachment(b"\x00\xff" * (13 * 1024 * 1024), maintype="application", subtype="octet-stream", filename="scan.bin")
    center.append("support", big.as_bytes())
    run_until(center, "an alert in a supervisor's mailbox",
              lambda: any("alert" in str(m["Subject"]).lower() for m in center.messages("sam")), timeout=15)
