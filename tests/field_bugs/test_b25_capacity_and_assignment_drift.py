"""B-25: capacity and assignment state drift.

In the field (Dynamics: capacity must be released explicitly; chatwoot#5672: only online
agents, so unassigned mail piles up; Salesforce: a single agent's decline stalls the
item): work sits "assigned" with no owner acting, or capacity leaks.

Postroom derives capacity from the interactions' states (no counters to leak) and acts on
time: an offer not answered returns to the queue, and mail held without a reply is taken
back, raised in priority and routed again (patent fig. 8). Shown on the real stack with
the engine's clock moved on: an agent who goes Not Ready holding mail, an offer that
expires while its agent is the only one online, and a slot that frees when mail closes.
"""

from __future__ import annotations

import pytest

from postroom.core.lifecycle import State
from postroom.store.agents import answer as accept
from postroom.store.models import Agent, Interaction
from tests.field_bugs.helpers import answer, customer_mail, forwards, replies, run_until, send

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]


def test_b25_an_agent_who_goes_not_ready_holding_mail_does_not_keep_it(center) -> None:
    center.ready("alice")
    send(center, customer_mail(center))
    run_until(center, "the forward to alice", lambda: len(forwards(center, "alice")) == 1)
    center.ready("alice", False)  # she logs off; the mail is still hers
    center.ready("bob")
    center.clock.advance(hours=4, minutes=5)  # past the box's no-reply time
    run_until(center, "the forward to bob", lambda: len(forwards(center, "bob")) == 1)
    ix = Interaction.objects.get()
    assert ix.agent.address == center.address("bob") and ix.priority == 10
    assert forwards(center, "alice") == []  # withdrawn from her mailbox
    answer(center, "bob")
    run_until(center, "the reply", lambda: len(replies(center)) == 1)


def test_b25_an_offer_that_expires_with_only_its_agent_online_is_offered_again(make_center) -> None:
    center = make_center('\n[routing]\noffer_timeout = "2m"\n', alice_auto=False, bob_auto=False)
    center.ready("alice")
    send(center, customer_mail(center))
    center.engine.run_until_idle()
    ix = Interaction.objects.get()
    assert ix.state is State.ROUTED and ix.agent.address == center.address("alice")
    center.clock.advance(minutes=3)  # she did not take it: the offer expires
    center.engine.run_until_idle()
    ix.refresh_from_db()
    # Redirect on no answer: she is made Not Ready (she is evidently not at her desk), and
    # the mail waits in the queue instead of going round and round to an empty chair...
    assert ix.state is State.QUEUED and ix.agent is None
    assert not Agent.objects.get(address=center.address("alice")).ready
    assert center.address("alice") not in (ix.excluded_agents or [])
    # ...until she is back: the only agent there, she is offered it again, never stalled.
    center.ready("alice")
    center.clock.advance(seconds=1)
    center.engine.run_until_idle()
    ix.refresh_from_db()
    assert ix.state is State.ROUTED and ix.agent.address == center.address("alice"), (ix.state, ix.excluded_agents)
    assert accept(ix, ix.agent, now=center.clock())
    run_until(center, "the forward", lambda: len(forwards(center, "alice")) == 1)


def test_b25_a_slot_frees_when_the_mail_in_it_closes(center) -> None:
    center.ready("alice")  # capacity 1
    send(center, customer_mail(center, subject="First"))
    send(center, customer_mail(center, subject="Second"))
    run_until(center, "the first forward", lambda: len(forwards(center)) == 1)
    assert Interaction.objects.filter(status=State.QUEUED).count() == 1  # the second waits for her
    answer(center, "alice")
    run_until(center, "the second forward", lambda: len(forwards(center)) == 2)
    answer(center, "alice")
    run_until(center, "both replies", lambda: len(replies(center)) == 2)
    assert set(Interaction.objects.values_list("status", flat=True)) == {State.CLOSED}
