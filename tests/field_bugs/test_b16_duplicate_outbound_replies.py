"""B-16: duplicate outbound replies (resend storms).

In the field (freescout#3607, #3585; zammad#3825; chatwoot#8813): the same reply re-sent
every 2-3 minutes, 25 times, over Microsoft 365 SMTP; Reply All sent duplicates.

Postroom sends every mail from a keyed outbox row with its Message-ID fixed when the row
is made; a retry reuses it. And the server's 250 that never reached us must not turn into
a second copy (issue 7 window 5, branch outbox: the journal box settles the unknown
outcome). Shown with SMTP answering the end of DATA only after our timeout: the server
took the mail, we never heard it.
"""

from __future__ import annotations

import pytest

from postroom.store.models import Outgoing
from tests.field_bugs.helpers import auto_responses, customer_mail, send, through

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]


def test_b16_smtp_times_out_after_the_server_took_the_data_the_customer_gets_one_copy(center, proxy) -> None:
    slow = proxy(center.stack.smtp_port)  # the MX: clear text, so the proxy sees the end of DATA
    slow.hold_after_dot = 4.0
    engine = through(center, smtp_port=slow.port, tls="none", login="", timeout=2.0)
    send(center, customer_mail(center))
    engine.run_until_idle()  # the auto-response: the server queues it, our client times out
    row = Outgoing.objects.get(kind=Outgoing.AUTO_RESPONSE)
    slow.hold_after_dot = 0.0
    for _ in range(6):  # the retries, as the outbox's back-off makes them due
        center.clock.advance(minutes=10)
        engine.run_until_idle()
    copies = center.wait_for("carol", 2, timeout=10)
    assert {str(m["Message-ID"]) for m in copies} == {row.message_id}  # a retry reuses the Message-ID
    assert len(auto_responses(center)) == 1
