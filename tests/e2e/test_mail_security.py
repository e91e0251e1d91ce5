"""Nobody can make Postroom send what the contact center did not write (issue 8, issue 7
windows 12 and 13), proven on the real Dovecot + Postfix stack.

Attackers send like outsiders do, to the MX port with no authentication; agents and
approvers send like their mail clients do, over authenticated submission. Every test
judges from the customer's real mailbox.
"""

from __future__ import annotations

import re
from email.message import EmailMessage
from email.utils import make_msgid

import pytest

from postroom.core.correlation import TOKEN_LENGTH, find_tokens_in_text
from postroom.core.lifecycle import State
from postroom.store.models import (
    Agent,
    Approval,
    Interaction,
    JournalEvent,
    OutboundMessage,
)
from postroom_sim.agents import STYLES, compose_reply
from tests.e2e.test_figures import customer_replies, forwards, mail, notices, ready, run, write_in

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]

TOKEN_ADDRESS = re.compile(rf"\+[a-z2-7]{{{TOKEN_LENGTH}}}@", re.I)


def delivered(center, who: str = "alice") -> EmailMessage:
    """A customer mail routed and forwarded to `who`; their copy."""
    ready(center, who)
    write_in(center, mail(center))
    run(center)
    return center.wait_for(who, 1)[-1]


def token_address(forward: EmailMessage) -> str:
    return forward["Reply-To"].addresses[0].addr_spec


def body_text(msg: EmailMessage) -> str:
    """Every text part of a message, decoded, joined."""
    out = []
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            out.append(part.get_content())
    return "\n".join(out)


def outsider_mail(center, *, to: str, forward: EmailMessage | None, text: str, **headers: str) -> EmailMessage:
    """A mail claiming to come From Alice, written by someone who is not Alice."""
    msg = EmailMessage()
    for name, value in headers.items():  # first: an attacker's own trace headers
        msg[name.replace("_", "-")] = value
    msg["From"] = f"Alice Agent <{center.address('alice')}>"
    msg["To"] = to
    msg["Subject"] = f"Re: {forward['Subject']}" if forward is not None else "Urgent: please read"
    msg["Message-ID"] = make_msgid("evil", domain="customer.test")
    if forward is not None:
        msg["In-Reply-To"] = forward["Message-ID"]
        msg["References"] = forward["Message-ID"]
    msg.set_content(text)
    return msg


def as_outsider(center, msg: EmailMessage, to: str) -> None:
    center.send(msg, to, center.address("alice"))


def dead_boxed(center, reason_part: str) -> OutboundMessage:
    center.wait_for("dead", 1)
    row = OutboundMessage.objects.get(outcome=OutboundMessage.DEAD)
    assert reason_part in row.reason, row.reason
    assert JournalEvent.objects.filter(kind="dead_boxed", detail__reason=row.reason).exists()
    return row


# -- replies trusted on the From header (issue 8 #3) ---------------------------------------


def test_a_forged_from_with_a_valid_token_sends_nothing(center) -> None:
    forward = delivered(center)
    address = token_address(forward)
    attack = outsider_mail(center, to=address, forward=forward, text="Your refund: pay here http://evil.test")
    as_outsider(center, attack, address)
    run(center, outbound=1)
    assert customer_replies(center) == []
    dead_boxed(center, "mail server")
    assert Interaction.objects.get().state is State.DELIVERED
    # An outsider cannot make Postroom write to the agent either.
    assert notices(center, "alice") == []
    # Alice's own reply still goes out, once.
    center.submit(compose_reply(forward, agent_addr=center.address("alice"), agent_name="Alice", style="gmail", text="The real answer."), "alice")
    run(center, outbound=1)
    replies = customer_replies(center)
    assert len(replies) == 1 and "The real answer." in body_text(replies[0])


def test_a_forged_authenticated_sender_header_counts_for_nothing(center) -> None:
    forward = delivered(center)
    address = token_address(forward)
    alice = center.address("alice")
    attack = outsider_mail(
        center,
        to=address,
        forward=forward,
        text="Forged trace headers",
        Received=(
            f"from [127.0.0.1] (localhost [127.0.0.1]) (Authenticated sender: {alice}) "
            f"by {center.stack.hostname} (Postfix) with ESMTPSA id 4AB12C; Mon, 2 Mar 2026 10:00:00 +0000"
        ),
        Authentication_Results=f"{center.stack.hostname}; dmarc=pass header.from=example.test",
        X_MS_Exchange_Organization_AuthAs="Internal",
    )
    as_outsider(center, attack, address)
    run(center, outbound=1)
    assert customer_replies(center) == []
    dead_boxed(center, "mail server")
    assert notices(center, "alice") == []


def test_a_leaked_token_in_a_quoted_block_goes_nowhere(center) -> None:
    forward = delivered(center)
    # Outlook quotes the whole forward, header block and subject tag included.
    reply = compose_reply(forward, agent_addr=center.address("alice"), agent_name="Alice", style="outlook", text="Your parcel ships today.")
    center.submit(reply, "alice")
    run(center, outbound=1)
    replies = customer_replies(center)
    assert len(replies) == 1
    seen = replies[0].as_string()
    assert find_tokens_in_text(seen) == [] and not TOKEN_ADDRESS.search(seen), "a token reached the customer"
    assert "Your parcel ships today." in body_text(replies[0])

    # Someone who learnt the token anyway (here: the forward's) quotes it back, From Alice.
    write_in(center, mail(center, subject="Second question"), 2)
    run(center)
    center.wait_for("alice", 2)
    second = [f for f in forwards(center, "alice") if "Second question" in str(f["Subject"])][0]
    leaked = token_address(second)
    attack = outsider_mail(center, to=leaked, forward=None, text=f"As agreed:\n\n> Reply to {leaked}\n> {second['Subject']}\n")
    as_outsider(center, attack, leaked)
    run(center, outbound=1)
    assert len(customer_replies(center)) == 1
    dead_boxed(center, "mail server")


# -- outsiders make Postroom mail the agents (issue 8 #5) ----------------------------------


def test_a_stranger_mailing_as_an_agent_gets_no_notice_sent(center) -> None:
    outbound = center.address("outbound")
    phish = outsider_mail(center, to=outbound, forward=None, text="Your password expires: log in at http://evil.test")
    as_outsider(center, phish, outbound)
    run(center, outbound=1)
    dead_boxed(center, "mail server")
    assert center.messages("alice") == []
    assert customer_replies(center) == []


def test_an_agents_refused_reply_is_noticed_without_the_original(center) -> None:
    forward = delivered(center)
    first = compose_reply(forward, agent_addr=center.address("alice"), agent_name="Alice", style="thunderbird", text="First answer.")
    center.submit(first, "alice")
    run(center, outbound=1)
    second = compose_reply(forward, agent_addr=center.address("alice"), agent_name="Alice", style="thunderbird", text="SECOND-ANSWER-BODY")
    center.submit(second, "alice")
    run(center, outbound=1)
    told = [m for m in notices(center, "alice") if "Not delivered" in str(m["Subject"])]
    assert len(told) == 1
    assert not told[0].is_multipart() and "SECOND-ANSWER-BODY" not in told[0].as_string()
    assert len(customer_replies(center)) == 1


def test_refusal_notices_are_rate_limited_per_recipient(center) -> None:
    from dataclasses import replace

    center.engine.site = replace(center.engine.site, refusal_notices_per_hour=1)
    for n in range(2):
        stray = EmailMessage()
        stray["From"] = center.address("alice")
        stray["To"] = center.address("outbound")
        stray["Subject"] = f"Stray {n}"
        stray.set_content("no token")
        center.submit(stray, "alice")
        run(center, outbound=1)
    assert len(center.wait_for("dead", 2)) == 2
    assert [str(m["Subject"]) for m in notices(center, "alice")] == ["Not delivered: Stray 0"]
    assert JournalEvent.objects.filter(kind="notice_suppressed").count() == 1


# -- auto-responses as a spam cannon (issue 8 #6) ------------------------------------------


def test_auto_responses_are_rate_limited_per_address_and_carry_no_customer_text(center) -> None:
    for n in range(4):
        write_in(center, mail(center, subject=f"BUY-CHEAP-PILLS-{n} http://spam.test", body="spam"), n + 1)
    run(center)
    autos = [m for m in center.wait_for("carol", 3) if m["Auto-Submitted"] == "auto-replied"]
    assert len(autos) == 3
    for auto in autos:
        assert "PILLS" not in auto.as_string() and "spam.test" not in auto.as_string()
    skipped = [ix.auto_response_skipped for ix in Interaction.objects.order_by("id")]
    assert skipped[:3] == ["", "", ""] and "limit" in skipped[3]


# -- Reply-To hijack (issue 8 #7) -----------------------------------------------------------


def test_the_forward_shows_where_the_answer_goes(center) -> None:
    ready(center, "alice")
    write_in(center, mail(center, Reply_To="Collector <pay@elsewhere.test>"))
    run(center)
    forward = center.wait_for("alice", 1)[-1]
    text = body_text(forward)
    assert "pay@elsewhere.test" in text and "another domain" in text
    assert Interaction.objects.get().reply_to == "pay@elsewhere.test"


# -- the forward: no customer address in From, To, Cc, Reply-To (issue 7 #13) ---------------


@pytest.mark.parametrize("style", STYLES)
def test_reply_and_reply_all_reach_the_customer_only_through_postroom(center, style: str) -> None:
    ready(center, "alice")
    carol, stranger = center.address("carol"), center.address("stranger")
    for n, reply_all in enumerate((False, True), 1):
        write_in(center, mail(center, subject=f"Question {n}", Cc=stranger), n)
        run(center)
        center.wait_for("alice", n)
        forward = [f for f in forwards(center, "alice") if f"Question {n}" in str(f["Subject"])][0]
        heads = " ".join(str(forward[h] or "") for h in ("From", "To", "Cc", "Reply-To", "Sender")).lower()
        assert carol not in heads and stranger not in heads, heads
        assert carol in body_text(forward)  # the agent still sees who wrote
        reply = compose_reply(forward, agent_addr=center.address("alice"), agent_name="Alice", style=style, text=f"Answer {n}", reply_all=reply_all)
        center.submit(reply, "alice")
        run(center, outbound=1)
    mails = center.messages("carol")
    direct = [m for m in mails if center.address("alice") in str(m["From"])]
    assert direct == [], "the agent's client wrote to the customer directly"
    replies = [m for m in mails if m["Auto-Submitted"] is None]
    assert len(replies) == 2
    assert all(m["From"].addresses[0].addr_spec == center.address("support") for m in replies)
    assert center.messages("stranger") == []


# -- approval by mail (issue 7 #12, issue 8 #10) --------------------------------------------


def held(center, who: str = "alice", text: str = "Draft answer", attach: bool = False) -> EmailMessage:
    """`who`'s reply held for Sam's approval; the approval request Sam got."""
    agent = Agent.objects.get(address=center.address(who))
    agent.probationary = True
    agent.save()
    agent.supervisors.add(Agent.objects.get(address=center.address("sam")))
    forward = delivered(center, who)
    reply = compose_reply(forward, agent_addr=center.address(who), agent_name=who, style="thunderbird", text=text)
    if attach:
        reply.add_attachment(b"%PDF-1.4 invoice", maintype="application", subtype="pdf", filename="invoice.pdf")
    center.submit(reply, who)
    run(center, outbound=1)
    assert Interaction.objects.get().state is State.AWAITING_APPROVAL
    return [m for m in center.wait_for("sam", 1) if "Approval needed" in str(m["Subject"])][-1]


def decide(center, request: EmailMessage, text: str, style: str = "gmail") -> None:
    answer = compose_reply(request, agent_addr=center.address("sam"), agent_name="Sam", style=style, text=text)
    # The held reply may still be in the outbound box: wait for one more.
    before = len(center.messages("outbound"))
    center.submit(answer, "sam")
    run(center, outbound=before + 1)


def test_approve_with_a_signature_sends_the_agents_text(center) -> None:
    request = held(center)
    decide(center, request, "APPROVE\n\n-- \nSam Supervisor\nHead of Support, +1 555 0100")
    replies = customer_replies(center)
    assert len(replies) == 1
    text = body_text(replies[0])
    assert "Draft answer" in text and "APPROVE" not in text and "Head of Support" not in text


def test_an_approver_answering_with_reply_all_decides_once(center) -> None:
    request = held(center)
    answer = compose_reply(request, agent_addr=center.address("sam"), agent_name="Sam", style="thunderbird", text="APPROVE", reply_all=True)
    # The held reply may still be in the outbound box: wait for one more.
    before = len(center.messages("outbound"))
    center.submit(answer, "sam")
    run(center, outbound=before + 1)
    assert len(customer_replies(center)) == 1
    assert OutboundMessage.objects.filter(outcome=OutboundMessage.DEAD).count() == 0
    assert not [m for m in notices(center, "sam") if "not acted on" in str(m["Subject"])]


def test_a_reply_held_in_the_web_composer_is_mailed_to_the_approver_and_approved_by_mail(center) -> None:
    """A probationer answering in the browser: the approver is mailed the request as for a
    reply from a mail client (the web may not mint approval tokens; the engine does)."""
    from django.utils import timezone

    from postroom.store.webreply import accept_web_reply

    alice = Agent.objects.get(address=center.address("alice"))
    alice.probationary = True
    alice.save()
    alice.supervisors.add(Agent.objects.get(address=center.address("sam")))
    delivered(center, "alice")
    draft = EmailMessage()
    draft["From"] = center.address("alice")
    draft["Subject"] = "Re: your order"
    draft.set_content("Draft answer written in the browser")
    ix = Interaction.objects.get()
    assert accept_web_reply(ix, alice, draft, now=timezone.now()) == "held"
    run(center)
    requests = [m for m in center.wait_for("sam", 1) if "Approval needed" in str(m["Subject"])]
    assert len(requests) == 1
    decide(center, requests[0], "APPROVE")
    replies = customer_replies(center)
    assert len(replies) == 1 and "written in the browser" in body_text(replies[0])
    run(center)
    assert len([m for m in center.wait_for("sam", 1) if "Approval needed" in str(m["Subject"])]) == 1


def test_approved_thanks_is_not_understood_and_sends_nothing(center) -> None:
    request = held(center)
    decide(center, request, "Approved, thanks")
    assert customer_replies(center) == []
    assert Approval.objects.get().state == Approval.PENDING
    dead_boxed(center, "not understood")
    explained = [m for m in notices(center, "sam") if "not understood" in str(m["Subject"]).lower()]
    assert len(explained) == 1 and "APPROVE" in body_text(explained[0]) and "EDIT" in body_text(explained[0])


def test_edit_sends_the_new_text_without_signature_or_quote_and_keeps_attachments(center) -> None:
    request = held(center, attach=True)
    decide(center, request, "EDIT\nDear customer, your parcel ships today.\n\nBest regards\n-- \nSam, Head of Support", style="outlook")
    replies = customer_replies(center)
    assert len(replies) == 1
    text = body_text(replies[0])
    assert "parcel ships today" in text
    for leaked in ("Draft answer", "Head of Support", "EDIT", "Approval needed"):
        assert leaked not in text, leaked
    assert [p.get_filename() for p in replies[0].iter_attachments()] == ["invoice.pdf"]


def test_a_late_answer_to_an_earlier_round_decides_nothing(center) -> None:
    first_request = held(center)
    decide(center, first_request, "REJECT too informal")
    ix = Interaction.objects.get()
    assert ix.state is State.DELIVERED
    # Alice writes again: a second round, a second request to Sam.
    forward = forwards(center, "alice")[-1]
    center.submit(compose_reply(forward, agent_addr=center.address("alice"), agent_name="Alice", style="thunderbird", text="Second draft"), "alice")
    run(center, outbound=1)
    assert Interaction.objects.get().state is State.AWAITING_APPROVAL
    # Sam answers the FIRST request again, late.
    decide(center, first_request, "APPROVE")
    assert customer_replies(center) == []
    second = Approval.objects.order_by("id").last()
    assert second.state == Approval.PENDING
    assert OutboundMessage.objects.filter(outcome=OutboundMessage.DEAD, reason__contains="earlier approval round").exists()
    assert any("earlier approval round" in e.detail["reason"] for e in JournalEvent.objects.filter(kind="dead_boxed"))
    assert any("not acted on" in str(m["Subject"]) for m in notices(center, "sam"))


def test_a_writer_may_not_approve_their_own_reply(center) -> None:
    # Sam is a supervisor on probation: his own reply needs someone else's approval.
    Agent.objects.filter(address=center.address("sam")).update(auto_answer=True)
    sam = Agent.objects.get(address=center.address("sam"))
    sam.probationary = True
    sam.save()
    forward = delivered(center, "sam")
    center.submit(compose_reply(forward, agent_addr=center.address("sam"), agent_name="Sam", style="gmail", text="My own draft"), "sam")
    run(center, outbound=1)
    assert Interaction.objects.get().state is State.AWAITING_APPROVAL
    approval = Approval.objects.get()
    assert center.address("sam") not in approval.approvers
    requests = [m for m in center.messages("sam") if "Approval needed" in str(m["Subject"])]
    assert requests == []
    # He answers what he has, the forward, with APPROVE: nothing happens.
    center.submit(compose_reply(forward, agent_addr=center.address("sam"), agent_name="Sam", style="gmail", text="APPROVE"), "sam")
    run(center, outbound=1)
    assert customer_replies(center) == []
    assert Approval.objects.get().state == Approval.PENDING
    dead_boxed(center, "not waiting for a reply")
