"""B-12: wrong merges and thread hijacking.

In the field (zammad#5064, #4965; freescout#2120, #4958): anyone who put `Ticket#n` in a
subject appended to someone else's ticket; a forward without "Fwd" merged into an old
ticket; unrelated mail merged through reused body markers.

Postroom attaches nothing on a bare marker: a reply token counts only with a MAC that
verifies for the agent the mail comes from, and a customer's mail joins an earlier thread
only when it comes from that thread's customer. Shown on the real stack: a stranger
replaying a leaked token to the outbound box, a stranger's mail to the support box with
the token in its subject and the thread in its References, and a "WG:"/"TR:" forward.
"""

from __future__ import annotations

import pytest

from postroom.store.models import Interaction, OutboundMessage
from tests.field_bugs.helpers import customer_mail, forwards, replies, run_until, send

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]


def test_b12_a_leaked_token_replayed_by_a_stranger_sends_nothing_to_the_customer(center) -> None:
    center.ready("alice")
    send(center, customer_mail(center))
    run_until(center, "the forward", lambda: len(forwards(center)) == 1)
    (forward,) = forwards(center)
    # The stranger got hold of the forward (its Reply-To, Message-ID and subject tag) and
    # answers it from their own address, through the MX like anyone on the internet.
    fake = customer_mail(center, who="stranger", subject=f"Re: {forward['Subject']}")
    del fake["To"]
    fake["To"] = str(forward["Reply-To"])
    fake["In-Reply-To"] = str(forward["Message-ID"])
    fake["References"] = str(forward["Message-ID"])
    center.send(fake, str(forward["Reply-To"].addresses[0].addr_spec), center.address("stranger"))
    run_until(center, "the stranger's mail in the ledger", lambda: OutboundMessage.objects.exists())

    (row,) = OutboundMessage.objects.all()
    assert row.outcome == OutboundMessage.DEAD
    assert replies(center) == []  # carol got no reply: only her auto-response
    assert center.messages("stranger") == []  # and the stranger not even a notice
    assert Interaction.objects.get().state.value in ("delivered", "answered")


@pytest.mark.parametrize("prefix", ["WG:", "TR:", ""])
def test_b12_a_strangers_mail_carrying_someone_elses_thread_is_a_new_interaction(center, prefix) -> None:
    center.ready("alice")
    first = customer_mail(center)
    send(center, first)
    run_until(center, "the forward", lambda: len(forwards(center)) == 1)
    tag = str(forwards(center)[0]["Subject"]).rsplit("[PR:", 1)[1].split("]")[0]
    hijack = customer_mail(center, who="stranger", subject=f"{prefix} Re: {first['Subject']} [PR:{tag}]".strip())
    hijack["References"] = first["Message-ID"]
    hijack["In-Reply-To"] = first["Message-ID"]
    send(center, hijack, sender="stranger")
    run_until(center, "the stranger's mail", lambda: Interaction.objects.count() == 2)

    theirs = Interaction.objects.get(message_id=hijack["Message-ID"])
    assert theirs.follows is None and theirs.preferred_agent is None
    assert theirs.customer == center.address("stranger")
    carols = Interaction.objects.get(message_id=first["Message-ID"])
    assert carols.customer == center.address("carol") and carols.copies == []
