"""Window 3 of issue 7: a size limit must never truncate what is sent.

Above `max_message_bytes` only a message's header is fetched at ingest (so a huge mail
cannot exhaust memory, B-19). A header must never pass for the message: an agent's
oversize reply is refused to the dead box whole, with a notice to the agent, and the
customer gets nothing truncated; an oversize customer mail is quarantined with its reason
and an alert.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from postroom.core.lifecycle import State
from postroom.store.models import Alert, Interaction, OutboundMessage, Quarantined
from tests.e2e.boxes import auto_responses, customer_replies, mail, notices, reply_as, run, write_in

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]

LIMIT = 40_000


def limited(center):
    center.engine.site = dataclasses.replace(center.engine.site, max_message_bytes=LIMIT)
    center.engine.desk.site = center.engine.site
    return center


def test_an_oversize_reply_is_refused_whole_never_sent_as_a_header(center) -> None:
    limited(center)
    center.ready("alice")
    write_in(center, mail(center))
    run(center)
    assert Interaction.objects.get().state is State.DELIVERED

    reply_as(center, "alice", "The manual is attached.", attach=os.urandom(3 * LIMIT))
    run(center, outbound=1)

    # Nothing went to the customer: no empty reply, no header-only reply.
    assert customer_replies(center) == []
    assert len(auto_responses(center)) == 1
    # The reply is kept whole in the dead box and the agent is told why.
    (dead,) = center.wait_for("dead", 1)
    attachment = next(p for p in dead.iter_attachments() if p.get_filename() == "manual.bin")
    assert len(attachment.get_content()) == 3 * LIMIT
    told = [m for m in notices(center, "alice") if "Not delivered" in str(m["Subject"])]
    assert told and "too large" in told[0].get_body(("plain",)).get_content()
    assert center.messages("outbound") == []
    row = OutboundMessage.objects.get()
    assert row.outcome == OutboundMessage.DEAD and "too large" in row.reason
    # The interaction still waits for a reply the agent can send smaller.
    assert Interaction.objects.get().state is State.DELIVERED


def test_an_oversize_customer_mail_is_quarantined_with_its_reason_and_an_alert(center) -> None:
    limited(center)
    big = mail(center, subject="Photos of the damage")
    big.add_attachment(os.urandom(2 * LIMIT), maintype="image", subtype="jpeg", filename="damage.jpg")
    write_in(center, big)
    write_in(center, mail(center, subject="Second, small"), count=2)
    run(center)

    (row,) = Quarantined.objects.all()
    assert "over the limit" in row.reason and row.moved_at is not None
    assert Interaction.objects.get().subject == "Second, small"
    (quarantined,) = center.messages("support", "Postroom-Quarantine")
    assert quarantined["Subject"] == "Photos of the damage"
    assert Alert.objects.filter(kind="quarantined", cleared_at=None).exists()
