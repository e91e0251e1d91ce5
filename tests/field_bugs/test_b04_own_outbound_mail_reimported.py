"""B-4: Postroom's own outbound mail re-imported.

In the field (freescout#5638, #2977; osTicket's "Email loop detected"): a self-addressed
mail made two conversations; fetching Sent Items made the helpdesk's own replies
reappear.

Postroom recognises its own mail (a Message-ID in a domain only it mints, the
X-Postroom-Interaction header on forwards) and never watches Sent or Drafts. Shown on
the real stack: an auto-response addressed back to the box, our reply bounced back into
the box by the customer (a BCC to the box), and the forward to an agent sent on to the
box by the agent's own forwarding rule: none becomes an interaction or is answered.
"""

from __future__ import annotations

import pytest

from postroom.store.models import Interaction, Outgoing, Quarantined
from tests.field_bugs.helpers import answer, customer_mail, forwards, run_until, send

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]


def test_b04_own_mail_coming_back_is_never_a_new_interaction(center) -> None:
    center.ready("alice")
    # Reply-To the box itself: the auto-response, and later the reply, go to the very box
    # they were written from (a self-addressed mail; our own mail BCC'd to the box).
    send(center, customer_mail(center, Reply_To=center.address("support")))
    run_until(center, "our auto-response to come back", lambda: Quarantined.objects.count() == 1)

    # The forward, sent on to the box by the agent's own forwarding rule.
    (forward,) = forwards(center)
    center.send(forward.as_bytes(), center.address("support"), center.address("alice"))
    run_until(center, "the forward to come back", lambda: Quarantined.objects.count() == 2)

    # The agent's reply, which Postroom sends to the customer's Reply-To: the box.
    answer(center, "alice")
    run_until(center, "our reply to come back", lambda: Quarantined.objects.count() == 3)

    assert Interaction.objects.count() == 1
    assert Outgoing.objects.filter(kind=Outgoing.AUTO_RESPONSE).count() == 1
    assert Outgoing.objects.filter(kind=Outgoing.REPLY).count() == 1
    reasons = list(Quarantined.objects.order_by("uid").values_list("reason", flat=True))
    assert len(reasons) == 3 and all("own mail" in r for r in reasons), reasons
