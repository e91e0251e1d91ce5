"""B-7: a poison message blocks the whole mailbox.

In the field (zammad#2754, osTicket#6441, zammad#2591; Zammad re-raises too-large errors
on every fetch): one unparseable mail, a banned sender or a mail with 70 PDF attachments
stopped all fetching.

Postroom isolates every message: whatever one does, the rest of the batch is taken.
Shown with one batch holding, between two ordinary mails: a mail with 70 attachments, a
30 MB mail (over the 25 MB the engine reads whole), a binary Outlook .msg, MIME nested
thousands deep, and mail from a sender a rule deletes. (A malformed IMAP literal is the
server's to produce; Dovecot does not.)
"""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from postroom.store.models import Interaction, Outgoing, Quarantined
from tests.chaos.corpus import FIXTURES
from tests.field_bugs.helpers import customer_mail

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]

BANNED = """
[[rules]]
name = "Banned sender"
conditions = [{{field = "from", op = "contains", value = "spammer@"}}]
actions = [{{action = "delete", value = "banned sender"}}]
"""


def with_attachments(center, n: int) -> bytes:
    msg = customer_mail(center, subject=f"{n} invoices attached")
    for i in range(n):
        msg.add_attachment(b"%PDF-1.4\n" + bytes(range(256)) * 40, maintype="application", subtype="pdf", filename=f"invoice-{i}.pdf")
    return msg.as_bytes()


def huge(center, megabytes: int) -> bytes:
    msg = customer_mail(center, subject="Scans of everything")
    msg.add_attachment(b"\x89PNG" + b"\x00\xff" * (megabytes * 512 * 1024), maintype="image", subtype="png", filename="scan.png")
    return msg.as_bytes()


def test_b07_one_batch_with_poison_in_it_every_other_mail_is_taken(make_center) -> None:
    center = make_center(BANNED)
    first, last = customer_mail(center, subject="First"), customer_mail(center, subject="Last")
    banned = EmailMessage()
    banned["From"] = "spammer@example.org"
    banned["To"] = center.address("support")
    banned["Subject"] = "Cheap watches"
    banned["Message-ID"] = "<banned-1@example.org>"
    banned.set_content("Buy now.")
    batch = [
        first.as_bytes(),
        with_attachments(center, 70),
        huge(center, 30),
        (FIXTURES / "malformed" / "spamscope-mail_outlook_1.msg").read_bytes(),
        (FIXTURES / "malformed" / "mimekit-stack-overflow.txt").read_bytes(),
        banned.as_bytes(),
        last.as_bytes(),
    ]
    for raw in batch:
        center.append("support", raw)
    center.engine.run_until_idle()  # one pass takes the whole batch; nothing raises

    taken = {i.subject: i for i in Interaction.objects.all()}
    assert {"First", "Last", "70 invoices attached"} <= set(taken)
    assert taken["Cheap watches"].outcome == "discarded" or taken["Cheap watches"].status in ("ended", "closed")
    reasons = sorted(Quarantined.objects.values_list("reason", flat=True))
    assert any("over the limit" in r for r in reasons), reasons
    assert any("unreadable" in r for r in reasons), reasons
    # Every message is accounted for: an interaction or a quarantine row.
    assert Interaction.objects.count() + len(reasons) == len(batch)
    answered = set(Outgoing.objects.filter(kind=Outgoing.AUTO_RESPONSE).values_list("interaction__subject", flat=True))
    assert {"First", "Last"} <= answered


def test_b07_a_banned_sender_a_rule_deletes_gets_no_auto_response(make_center) -> None:
    center = make_center(BANNED)
    banned = EmailMessage()
    banned["From"] = f"spammer@{center.address('stranger').split('@')[1]}"
    banned["To"] = center.address("support")
    banned["Subject"] = "Cheap watches"
    banned["Message-ID"] = "<banned-2@example.org>"
    banned.set_content("Buy now.")
    center.append("support", banned.as_bytes())
    center.engine.run_until_idle()
    (ix,) = Interaction.objects.all()
    assert ix.outcome == "discarded"
    assert not Outgoing.objects.filter(kind=Outgoing.AUTO_RESPONSE).exists()
