"""A lost claim ends the agent's interaction and tells the agent (issue 10, decision 0036;
engine/claimloss.py), on the real mail stack.

Another node (a second `Claimer`, driven by the test with a node id of its own) wins the
claim of an email this node has an interaction for: this node closes the interaction as
claimed elsewhere, takes the forward back out of the agent's mailbox, cancels what still
waited to leave for it, and the agent's mailbox receives a notice. The notice is about this
node's handling, to its own agent: the claim of the customer's email, which is the other
node's, does not hold it back. Judged from the real mailboxes (customer, agent, sync box).

The claims' thread's step is run by hand between the engine's steps, as in
test_island_gate.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta

import pytest

from postroom.core.island import EmailKey
from postroom.engine.claims import email_key
from postroom.engine.island import Claimer, IslandSettings
from postroom.engine.runtime import Engine
from postroom.mail.smtp import SmtpSender
from postroom.mail.syncbox import SyncBox
from postroom.store.models import Interaction, JournalEvent, Mailbox, Outgoing
from tests.e2e.conftest import Center
from tests.field_bugs.helpers import answer, auto_responses, customer_mail, forwards, replies, send

pytestmark = pytest.mark.mailstack

RIVAL = "node-rival"


def settings_for(center: Center) -> IslandSettings:
    # Short times, so an unrenewed claim expires within the test.
    return IslandSettings(
        center.address("sync"), center.address("outbound"), claim_expiry=timedelta(seconds=6),
        claim_reassert=timedelta(seconds=2), clock_margin=timedelta(seconds=1),
    )


@pytest.fixture
def island(center: Center, new_user) -> Center:  # type: ignore[no-untyped-def]
    center.users["sync"] = new_user(prefix="sync")
    sync, password = center.users["sync"]
    site = center.engine.site
    site = replace(site, island=settings_for(center), passwords={**site.passwords, sync: password})
    center.engine.close()
    center.engine = Engine(site, now=center.clock)
    assert center.engine.claims is not None
    center.engine.claims.enter(Mailbox.objects.get(address=center.address("support")).pk, "node-gone")
    center.ready("alice")
    return center


@pytest.fixture
def rival(island: Center) -> Iterator[Claimer]:
    site = island.engine.site
    box = SyncBox(site.imap_account(island.address("sync"), island.password("sync"))).open()
    claimer = Claimer(RIVAL, settings_for(island), box, SmtpSender(site.smtp))
    try:
        yield claimer
    finally:
        box.close()
        claimer.smtp.close()


def until(center: Center, what: str, done: Callable[[], bool], *, ours: bool = True, rival: Claimer | None = None,
          timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    claims = center.engine.claims
    assert claims is not None
    while not done():
        if ours:
            claims.step()
        if rival is not None:
            rival.step()
        center.engine.run_until_idle()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def notices(center: Center, agent: str = "alice") -> list:  # type: ignore[type-arg]
    return [m for m in center.messages(agent) if str(m["Subject"]).startswith("Handled by another node")]


def key_of(center: Center) -> EmailKey:
    (ix,) = Interaction.objects.all()
    return email_key(ix, center.address("support"))


@pytest.mark.django_db(transaction=True)
def test_a_claim_lost_while_the_agent_holds_the_mail_ends_it_and_tells_the_agent(island: Center, rival: Claimer) -> None:
    center = island
    send(center, customer_mail(center))
    until(center, "the forward and the auto-response", lambda: len(forwards(center)) == 1 and len(auto_responses(center)) == 1)
    (ix,) = Interaction.objects.all()
    assert ix.status == "delivered" and ix.claim_node == center.engine.site.node_id
    key = key_of(center)

    # This node stops re-asserting (its steps are not run); the rival keeps time moving
    # in the sync box and claims the email as soon as this node's claim has expired.
    rival.want(key)
    until(center, "the rival's claim", lambda: rival.book.owner(key) == RIVAL, ours=False, rival=rival)

    until(center, "the notice", lambda: len(notices(center)) == 1 and forwards(center) == [])
    ix.refresh_from_db()
    assert (ix.status, ix.outcome) == ("closed", "claimed_elsewhere")
    assert ix.closed_at is not None
    (notice,) = notices(center)
    assert RIVAL in notice.get_content() and center.address("carol") in notice.get_content()
    assert JournalEvent.objects.filter(interaction=ix, kind="claimed_elsewhere").count() == 1
    # The customer has the one auto-response sent while this node held the claim, and
    # nothing more from it.
    until(center, "a few more rounds", lambda: True)
    assert len(auto_responses(center)) == 1 and replies(center) == []
    assert Outgoing.objects.filter(interaction=ix, kind=Outgoing.NOTICE, state="sent").count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_notice_leaves_though_the_customers_email_is_another_nodes(island: Center, rival: Claimer) -> None:
    """The rival claimed the email first: the auto-response and the forward wait at the
    gate, are cancelled when the loss is read, and the agent's notice still leaves."""
    center = island
    send(center, customer_mail(center))
    center.engine.run_until_idle()
    key = key_of(center)
    rival.want(key)
    until(center, "the rival's claim", lambda: rival.book.owner(key) == RIVAL, ours=False, rival=rival)
    # Routed to alice meanwhile (routing sends nothing); nothing has left for the email.
    center.engine.run_until_idle()
    (ix,) = Interaction.objects.all()
    assert ix.agent is not None and auto_responses(center) == [] and forwards(center) == []

    until(center, "the notice", lambda: len(notices(center)) == 1)
    ix.refresh_from_db()
    assert (ix.status, ix.outcome) == ("closed", "claimed_elsewhere")
    waiting = Outgoing.objects.filter(interaction=ix).exclude(kind=Outgoing.NOTICE)
    assert waiting.exists() and set(waiting.values_list("state", flat=True)) == {"cancelled"}
    until(center, "a few more rounds", lambda: True)
    time.sleep(1.5)
    until(center, "a few more rounds", lambda: True)
    assert auto_responses(center) == [] and forwards(center) == [] and replies(center) == []


@pytest.mark.django_db(transaction=True)
def test_a_reply_held_at_the_gate_when_the_claim_is_lost_goes_to_the_dead_box_once(island: Center, rival: Claimer) -> None:
    """The agent answered while this node could no longer send for the email (its claim
    unrenewed); the rival wins the claim: the reply is cancelled, and the agent's mail
    leaves the outbound box for the dead box, once, with its reason in the journal
    (0036 "Not yet": it stayed in the outbound box). The agent's notice says so."""
    center = island
    send(center, customer_mail(center))
    until(center, "the forward and the auto-response", lambda: len(forwards(center)) == 1 and len(auto_responses(center)) == 1)
    key = key_of(center)
    rival.want(key)
    until(center, "the rival's claim", lambda: rival.book.owner(key) == RIVAL, ours=False, rival=rival)

    # The agent answers; this node takes the reply, which waits at the gate (its claim ran
    # out by its own clock), until the claims' step reads the loss.
    answer(center)
    center.wait_for("outbound", 1)
    until(center, "the reply taken", lambda: Interaction.objects.get().status == "replying", ours=False, rival=rival)
    until(center, "the notice", lambda: len(notices(center)) == 1, rival=rival)
    (ix,) = Interaction.objects.all()
    assert (ix.status, ix.outcome) == ("closed", "claimed_elsewhere")
    assert Outgoing.objects.get(interaction=ix, kind=Outgoing.REPLY).state == "cancelled"

    until(center, "the reply out of the outbound box", lambda: center.messages("outbound") == [], rival=rival)
    (kept,) = center.messages("dead")
    assert kept["From"] and center.address("alice") in kept["From"]
    dead = JournalEvent.objects.filter(interaction=ix, kind="dead_boxed")
    assert dead.count() == 1 and "claimed" in dead.get().detail["reason"]
    (notice,) = notices(center)
    assert "dead box" in notice.get_content()
    until(center, "a few more rounds", lambda: True, rival=rival)
    assert len(center.messages("dead")) == 1 and center.messages("outbound") == []
    assert replies(center) == [] and len(notices(center)) == 1
