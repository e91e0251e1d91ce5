"""B-23: folders, Gmail labels, All Mail.

In the field (freescout#4888 `[Gmail]/Important`, osTicket#6407, YetiForce#2246): mail
scanned in both INBOX and All Mail made duplicates; an archive-label move left mail unread
and errored.

On Gmail a label is a folder and one message shows in every folder it is labelled with.
Postroom watches only the folders it is told to, and one message in two watched folders
is one interaction (decided on Message-ID across boxes). Dovecot stands in for Gmail here:
one account, two folders holding the same message. Gmail's own id (X-GM-MSGID, for mail
without a Message-ID) is a feature nobody is building; the last test says what it must do.
"""

from __future__ import annotations

import pytest

from postroom.store.models import Interaction, Outgoing
from tests.field_bugs.helpers import customer_mail

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]

# A second box on the same account as the support box, watching its "Sales" label.
LABELS = """
[[incoming]]
address = "{sales}"
login = "{support}"
password = "{support_pw}"
folder = "Sales"
skills = ["support"]
"""


def labelled(center, raw: bytes) -> None:
    """One message with two labels: in the account's INBOX and in its Sales folder; and in
    an All-Mail-like folder Postroom does not watch."""
    client = center.imap("support")
    try:
        for folder in ("INBOX", "Sales", "All Mail"):
            if not client.folder_exists(folder):
                client.create_folder(folder)
            client.append(folder, raw)
    finally:
        client.logout()


def test_b23_one_message_under_two_labels_is_one_interaction(make_center) -> None:
    center = make_center(LABELS)
    labelled(center, customer_mail(center).as_bytes())
    center.engine.run_until_idle()
    (ix,) = Interaction.objects.all()
    assert len(ix.copies) == 1
    assert Outgoing.objects.filter(kind=Outgoing.AUTO_RESPONSE).count() == 1


@pytest.mark.xfail(strict=True, reason="needs dedupe of mail without a Message-ID across folders of one account (Gmail: X-GM-MSGID), a feature nobody is building")
def test_b23_a_message_without_message_id_under_two_labels_is_one_interaction(make_center) -> None:
    center = make_center(LABELS)
    msg = customer_mail(center)
    del msg["Message-ID"]
    labelled(center, msg.as_bytes())
    center.engine.run_until_idle()
    assert Interaction.objects.count() == 1
