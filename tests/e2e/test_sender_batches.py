"""A sender batch's outcomes are written together (decision 0047), each under its own claim.

One `outbox.send` call sends its rows over one SMTP session and records their outcomes in
one transaction at the end. What must not change: a row is recorded sent only under the
claim it was sent under (a claim lost meanwhile writes nothing for that row and leaves
the others standing), and one row whose consequence fails does not take the others'
records with it. Judged against the real mail server and the database.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid

import pytest
from django.db import connection
from django.utils import timezone

from postroom.engine import outbox
from postroom.engine.connections import Sessions
from postroom.engine.runtime import watched_boxes
from postroom.mail.journalbox import JournalBox
from postroom.mail.smtp import SmtpSender
from postroom.store.models import Interaction, JournalEvent, Outgoing

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]


def notice(center, n: int) -> Outgoing:
    msg = EmailMessage()
    msg["From"] = center.address("support")
    msg["To"] = center.address("sam")
    msg["Subject"] = f"notice {n}"
    msg["Message-ID"] = make_msgid(f"n{n}", domain="example.test")
    msg.set_content(f"notice {n}\n")
    return Outgoing.objects.create(
        key=f"notice:test:{n}", kind=Outgoing.NOTICE, envelope_from=center.address("support"),
        recipients=[center.address("sam")], message_id=msg["Message-ID"], raw=msg.as_bytes(),
        next_attempt_at=timezone.now(),
    )


class StealsAClaim:
    """The real SMTP sender; after the server accepted `victim`, another engine takes its
    claim (as after a lease that ran out), before this batch writes its outcomes."""

    def __init__(self, sender: SmtpSender, victim: Outgoing) -> None:
        self.sender, self.victim = sender, victim

    def send(self, envelope_from, recipients, raw, **kw):
        outcome = self.sender.send(envelope_from, recipients, raw, **kw)
        if raw == bytes(self.victim.raw):
            Outgoing.objects.filter(pk=self.victim.pk).update(claimed_by="other-engine:1:ffff")
        return outcome


def test_a_claim_lost_mid_batch_writes_nothing_for_its_row_and_the_others_are_recorded(make_center) -> None:
    center = make_center()
    site = center.engine.site
    rows = [notice(center, n) for n in range(3)]
    sender, box = SmtpSender(site.smtp), JournalBox(site.journal.account)
    try:
        assert outbox.send(site, StealsAClaim(sender, rows[1]), box, "me:1:aaaa", center.clock)
    finally:
        sender.close()
        box.close()
        connection.close()

    first, stolen, last = (Outgoing.objects.get(pk=r.pk) for r in rows)
    assert first.state == Outgoing.SENT and last.state == Outgoing.SENT
    assert stolen.state == Outgoing.SENDING and stolen.claimed_by == "other-engine:1:ffff" and stolen.sent_at is None
    sent = [e.detail["message_id"] for e in JournalEvent.objects.filter(kind="notice_sent")]
    assert sorted(sent) == sorted([first.message_id, last.message_id])
    center.wait_for("sam", 3)  # all three left: the server is not asked to take any back


def test_one_rows_failing_consequence_leaves_the_batchs_other_records(make_center, monkeypatch) -> None:
    # One customer writes all of them: no per-address auto-response limit here.
    center = make_center("\n[auto_response]\nmax_per_address = 0\n")
    site = center.engine.site
    for n in range(3):
        msg = EmailMessage()
        msg["From"] = f"Carol Customer <{center.address('carol')}>"
        msg["To"] = center.address("support")
        msg["Subject"] = f"Order {n}"
        msg["Message-ID"] = make_msgid("c", domain="customer.test")
        msg.set_content("Where is my order?\n")
        center.send(msg, center.address("support"), center.address("carol"))
    center.wait_for("support", 3)
    sessions = Sessions(site)
    try:
        for box in watched_boxes():
            center.engine.ingest_box(box, sessions.get(box, ingesting=True))
    finally:
        sessions.close()
    responses = list(Outgoing.objects.filter(kind=Outgoing.AUTO_RESPONSE).order_by("pk"))
    assert len(responses) == 3
    broken = responses[1]
    real_on_sent = outbox.on_sent

    def on_sent(row, *args, **kwargs):
        if row.pk == broken.pk:
            raise RuntimeError("a consequence that fails")
        return real_on_sent(row, *args, **kwargs)

    monkeypatch.setattr(outbox, "on_sent", on_sent)
    sender, box = SmtpSender(site.smtp), JournalBox(site.journal.account)
    try:
        with pytest.raises(RuntimeError, match="a consequence that fails"):
            outbox.send(site, sender, box, "me:1:aaaa", center.clock)
    finally:
        sender.close()
        box.close()
        connection.close()

    states = {r.pk: Outgoing.objects.get(pk=r.pk).state for r in responses}
    assert states == {responses[0].pk: Outgoing.SENT, broken.pk: Outgoing.SENDING, responses[2].pk: Outgoing.SENT}
    stamped = {ix.pk for ix in Interaction.objects.exclude(auto_response_sent_at=None)}
    assert stamped == {responses[0].interaction_id, responses[2].interaction_id}
    assert JournalEvent.objects.filter(kind="auto_responded").count() == 2
    # The row left untouched is claimed still: after its lease the journal box settles it
    # (decision 0007), as for any claimant that died before writing its outcome.
