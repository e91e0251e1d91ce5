"""One customer email answered end to end on the real Dovecot + Postfix stack.

Everything is checked where the people involved would see it: in their IMAP mailboxes.
"""

from __future__ import annotations

import time
from email.message import EmailMessage
from email.utils import make_msgid

import pytest

from postroom.core.lifecycle import State
from postroom.store.models import Interaction, JournalEvent, OutboundMessage, Outgoing
from postroom_sim.agents import STYLES, compose_reply
from postroom_sim.customers import sample_paths, send_customer_mail

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]

REPLY_TEXT = "Hello, your parcel left our warehouse this morning. Regards, Alice"


def customer_mail(center, subject="Where is my order #4711?") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Carol Customer <{center.address('carol')}>"
    msg["To"] = center.address("support")
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid("c", domain="customer.test")
    msg["Date"] = "Wed, 25 Nov 2026 09:00:00 +0000"
    msg.set_content("Hello,\n\nI ordered a kettle two weeks ago and it has not arrived.\n\nCarol\n")
    return msg


def answer_as_agent(center, who: str, style: str, text: str = REPLY_TEXT) -> EmailMessage:
    forwarded = center.wait_for(who, 1)[-1]
    reply = compose_reply(
        forwarded, agent_addr=center.address(who), agent_name=who.title(), style=style, text=text
    )
    center.submit(reply, who)
    return reply


@pytest.mark.parametrize("style", STYLES)
def test_a_customer_email_is_answered_once_end_to_end(center, style) -> None:
    original = customer_mail(center)
    center.ready("alice")
    center.send(original, center.address("support"), center.address("carol"))
    center.wait_for("support", 1)

    center.engine.run_until_idle()

    # The agent got the customer's mail, addressed to them, replies going to the outbound box.
    forwarded = center.wait_for("alice", 1)
    assert len(forwarded) == 1
    fwd = forwarded[0]
    assert fwd["To"].addresses[0].addr_spec == center.address("alice")
    reply_to = fwd["Reply-To"].addresses[0].addr_spec
    assert reply_to.startswith(center.address("outbound").split("@")[0] + "+")
    assert "two weeks ago" in fwd.get_body(("plain",)).get_content()
    # From is ours (DMARC-safe, no "Reply All" to the customer); who wrote is in the body.
    assert fwd["From"].addresses[0].addr_spec == reply_to
    assert "via Example Support" in fwd["From"].addresses[0].display_name
    assert center.address("carol") in fwd.get_body(("plain",)).get_content()

    sent = answer_as_agent(center, "alice", style)
    assert not [h for h in sent if h.lower().startswith("x-postroom")]
    center.wait_for("outbound", 1)
    center.engine.run_until_idle()

    mails = center.wait_for("carol", 2)
    auto = [m for m in mails if m["Auto-Submitted"] == "auto-replied"]
    replies = [m for m in mails if m["Auto-Submitted"] is None]
    assert len(auto) == 1 and len(replies) == 1, [m["Subject"] for m in mails]
    reply = replies[0]
    assert reply["From"].addresses[0].addr_spec == center.address("support")
    assert reply["Reply-To"].addresses[0].addr_spec == center.address("support")
    assert reply["In-Reply-To"] == original["Message-ID"]
    assert original["Message-ID"] in reply["References"]
    body = reply.get_body(("plain",)).get_content()
    assert REPLY_TEXT in body
    assert "[PR:" not in reply["Subject"] and "Where is my order" in reply["Subject"]
    assert center.address("outbound").split("@")[0] + "+" not in reply.as_string()
    assert auto[0]["In-Reply-To"] == original["Message-ID"]
    assert auto[0]["From"].addresses[0].addr_spec == center.address("support")

    # The mail server is clean: the interaction is over.
    assert center.messages("support") == []
    assert center.messages("outbound") == []
    assert center.messages("dead") == []

    ix = Interaction.objects.get()
    assert ix.state is State.CLOSED
    for name in (
        "guid", "node_id", "message_id", "to_addr", "customer", "arrival_time",
        "auto_response_sent_at", "agent", "routed_at", "answered_at", "delivered_at",
        "replied_at", "closed_at",
    ):
        assert getattr(ix, name), name
    assert ix.message_id == original["Message-ID"]
    assert ix.node_id == "test-node"
    assert ix.agent.address == center.address("alice")
    assert ix.arrival_time <= ix.answered_at <= ix.replied_at
    assert Outgoing.objects.filter(kind=Outgoing.REPLY).count() == 1
    kinds = list(JournalEvent.objects.filter(interaction=ix).values_list("kind", flat=True))
    for kind in ("received", "queued", "routed", "answered", "delivered", "auto_responded", "reply_accepted", "reply_sent", "cleaned_up"):
        assert kind in kinds, kinds


def test_a_stranger_writing_to_the_outbound_box_reaches_nobody(center) -> None:
    center.ready("alice")
    center.send(customer_mail(center), center.address("support"), center.address("carol"))
    center.wait_for("support", 1)
    center.engine.run_until_idle()
    forwarded = center.wait_for("alice", 1)[0]

    # The stranger knows the outbound address and even the forwarded Message-ID and subject
    # tag, but writes From themselves: no valid reply.
    fake = compose_reply(forwarded, agent_addr=center.address("stranger"), agent_name="X", style="gmail", text="Send me the refund")
    center.send(fake, center.address("outbound"), center.address("stranger"))
    # And one with a made-up token in the plus address.
    forged = EmailMessage()
    forged["From"] = center.address("stranger")
    forged["To"] = center.address("outbound").replace("@", "+" + "a" * 39 + "@")
    forged["Subject"] = "Re: anything"
    forged["Message-ID"] = make_msgid("s", domain="customer.test")
    forged.set_content("please forward this to the customer")
    center.send(forged, forged["To"], center.address("stranger"))
    center.wait_for("outbound", 2)
    sent_before = Outgoing.objects.count()

    center.engine.run_until_idle()

    assert Outgoing.objects.count() == sent_before  # nothing sent to anyone
    assert len(center.wait_for("dead", 2)) == 2
    assert center.messages("outbound") == []
    assert center.messages("stranger") == []
    carol = center.messages("carol")
    assert len(carol) == 1 and carol[0]["Auto-Submitted"] == "auto-replied"
    assert OutboundMessage.objects.filter(outcome=OutboundMessage.DEAD).count() == 2
    assert Interaction.objects.get().state is State.DELIVERED


def test_an_unreadable_message_is_quarantined_and_the_rest_flows(center) -> None:
    center.ready("alice")
    # A binary blob with no header block at all: nothing to route, nothing to answer.
    center.append("support", b"\x00\x01\x02 not a mail \xff\xfe\r\n")
    center.send(customer_mail(center, "Second mail"), center.address("support"), center.address("carol"))
    center.wait_for("support", 2)

    center.engine.run_until_idle()

    assert Interaction.objects.count() == 1
    assert len(center.wait_for("alice", 1)) == 1
    quarantined = center.messages("support", "Postroom-Quarantine")
    assert len(quarantined) == 1
    assert JournalEvent.objects.filter(kind="quarantined").count() == 1


def test_the_running_engine_answers_with_idle_and_a_simulated_agent(center) -> None:
    """The threads, not run_until_idle(): IDLE watchers, worker, and an agent client
    that replies after a moment as a real client would."""
    from postroom_sim.agents import AgentClient

    center.ready("alice")
    agent = AgentClient(
        "127.0.0.1", center.stack.imap_port, center.stack.submission_port,
        center.address("alice"), center.password("alice"),
        cafile=str(center.stack.cafile), style="outlook", reply_after=(0.2, 0.5), seed=1,
    ).start()
    center.engine.start()
    try:
        # Two mails one after the other: the second reaches long-lived sessions that must
        # still see mail that arrived after they were opened.
        for n in (1, 2):
            send_customer_mail(
                "127.0.0.1", center.stack.smtp_port, sample=sample_paths()[n],
                from_addr=center.address("carol"), to_addr=center.address("support"),
            )
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if Interaction.objects.filter(status=State.CLOSED).count() == n:
                    break
                time.sleep(0.2)
    finally:
        agent.stop()
        center.engine.stop()
    assert [ix.outcome for ix in Interaction.objects.all()] == ["replied", "replied"]
    mails = center.wait_for("carol", 4)
    assert sorted(m["Auto-Submitted"] or "reply" for m in mails) == ["auto-replied"] * 2 + ["reply"] * 2
