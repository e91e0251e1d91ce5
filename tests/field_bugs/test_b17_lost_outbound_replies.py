"""B-17: lost outbound replies: no retry, no visibility.

In the field (zammad#1239, #182; freescout#2758, #4276, #3327): with SMTP down, answers
silently went nowhere; 86 failed replies were dropped from the retry queue with no way
to resend.

Postroom keeps every outgoing mail in a durable outbox and retries with exponential
back-off. Shown with the SMTP server unreachable for two hours of the engine's clock
(a proxy that refuses every connection; time moved on by the clock the engine is given,
not slept): on recovery the auto-response, the forward and then the reply each arrive
once, and nothing was given up.
"""

from __future__ import annotations

import pytest

from postroom.store.models import Outgoing
from tests.field_bugs.helpers import (
    answer,
    auto_responses,
    customer_mail,
    forwards,
    replies,
    run_until,
    send,
    through,
)

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]


def test_b17_smtp_down_for_two_hours_everything_arrives_once_on_recovery(center, proxy) -> None:
    relay = proxy(center.stack.smtp_port)
    engine = through(center, smtp_port=relay.port, tls="none", login="")
    center.ready("alice")
    relay.down()
    send(center, customer_mail(center))
    engine.run_until_idle()
    for _ in range(24):  # two hours, five minutes at a time
        center.clock.advance(minutes=5)
        engine.run_until_idle()
    assert relay.refused > 0 and auto_responses(center) == [] and forwards(center) == []
    assert not Outgoing.objects.filter(state=Outgoing.DEAD).exists()

    relay.up()
    for _ in range(24):  # the next attempt may be up to an hour away (the back-off's cap)
        if len(forwards(center)) and len(auto_responses(center)):
            break
        center.clock.advance(minutes=5)
        engine.run_until_idle()
    run_until(center, "the auto-response and the forward", lambda: len(auto_responses(center)) == 1 and len(forwards(center)) == 1)
    answer(center, "alice")
    run_until(center, "the reply", lambda: len(replies(center)) == 1)
    assert len(auto_responses(center)) == 1 and len(forwards(center)) == 1 and len(replies(center)) == 1
    assert not Outgoing.objects.filter(state=Outgoing.DEAD).exists()
