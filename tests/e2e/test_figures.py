"""The patent's method, figure by figure, on the real Dovecot + Postfix stack.

Clock-dependent steps move the engine's clock (`center.clock.advance`) instead of
sleeping; mail delivery is waited for in the real mailboxes.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid

import pytest
from django.utils import timezone

from postroom.core.lifecycle import State
from postroom.mail.smtp import SmtpSender
from postroom.store.agents import answer
from postroom.store.commands import decide_approval
from postroom.store.models import (
    Agent,
    Approval,
    Interaction,
    JournalEvent,
    Outgoing,
    Withdrawal,
)
from postroom_sim.agents import compose_reply

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]


def mail(center, subject="Where is my order?", body="It has not arrived.", sender="carol", **headers) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Customer <{center.address(sender)}>"
    msg["To"] = center.address("support")
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid("c", domain="customer.test")
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


def write_in(center, msg: EmailMessage, count: int = 1) -> None:
    center.send(msg, center.address("support"), center.address("carol"))
    center.wait_for("support", count)


def reply_as(center, who: str, text: str = "Here is your answer.", forwarded: EmailMessage | None = None, style="thunderbird") -> None:
    forwarded = forwarded or center.wait_for(who, 1)[-1]
    reply = compose_reply(forwarded, agent_addr=center.address(who), agent_name=who, style=style, text=text)
    center.submit(reply, who)


def run(center, outbound: int | None = None) -> None:
    if outbound is not None:
        center.wait_for("outbound", outbound)
    center.engine.run_until_idle()


def forwards(center, who: str) -> list[EmailMessage]:
    return [m for m in center.messages(who) if m["Reply-To"] is not None and m["Auto-Submitted"] is None]


def notices(center, who: str) -> list[EmailMessage]:
    return [m for m in center.messages(who) if m["Auto-Submitted"] == "auto-generated"]


def customer_replies(center) -> list[EmailMessage]:
    return [m for m in center.messages("carol") if m["Auto-Submitted"] is None]


def ready(center, *who: str) -> None:
    for name in who:
        center.ready(name)


# -- fig. 5: reception ---------------------------------------------------------------------


def test_fig5_one_auto_response_even_when_the_mail_is_seen_again(center) -> None:
    write_in(center, mail(center))
    run(center)
    # A restart that lost its cursor, or a second IDLE notice: the same UID again.
    from postroom.store.models import Mailbox

    Mailbox.objects.filter(address=center.address("support")).update(last_uid=0)
    run(center)
    assert Interaction.objects.count() == 1
    autos = [m for m in center.messages("carol") if m["Auto-Submitted"] == "auto-replied"]
    assert len(autos) == 1
    ix = Interaction.objects.get()
    assert ix.auto_response_sent_at is not None
    assert Outgoing.objects.filter(kind=Outgoing.AUTO_RESPONSE).count() == 1


def test_fig5_priority_comes_from_the_customer_database_and_is_kept(make_center) -> None:
    center = make_center(
        """
[[contacts]]
domain = "customer.test"
name = "Customer Corp"
level = "vip"
priority = 50
"""
    )
    write_in(center, mail(center, Importance="high"))
    run(center)
    ix = Interaction.objects.get()
    assert ix.priority == 60  # box 0 + vip 50 + high importance 10
    reasons = dict((name, value) for name, value in ix.priority_reasons)
    assert any("vip" in name or "contact" in name for name in reasons), ix.priority_reasons
    assert ix.arrival_time <= timezone.now()


def test_fig5_one_mail_to_two_boxes_is_one_interaction(make_center) -> None:
    center = make_center(
        """
[[incoming]]
address = "{sales}"
password = "{sales_pw}"
skills = ["support"]
"""
    )
    ready(center, "alice")
    msg = mail(center)
    msg["Cc"] = center.address("sales")
    center.send(msg, center.address("support"), center.address("carol"))
    center.send(msg, center.address("sales"), center.address("carol"))
    center.wait_for("support", 1)
    center.wait_for("sales", 1)
    run(center)
    assert Interaction.objects.count() == 1
    reply_as(center, "alice")
    run(center, outbound=1)
    mails = center.messages("carol")
    assert sorted(m["Auto-Submitted"] or "reply" for m in mails) == ["auto-replied", "reply"]
    assert center.messages("support") == [] and center.messages("sales") == []


# -- fig. 6: rules and routing --------------------------------------------------------------


def test_fig6_rules_route_delete_and_record_why(make_center) -> None:
    center = make_center(
        """
[[rules]]
name = "Spam"
conditions = [{{field = "subject", op = "contains", value = "WIN A PRIZE"}}]
actions = [{{action = "delete", value = "spam"}}]

[[rules]]
name = "Refunds"
conditions = [{{field = "subject", op = "contains", value = "refund"}}]
actions = [{{action = "add_priority", value = 5}}, {{action = "queue", value = "billing"}}]
""",
        bob_skills='{support = 1, billing = 3}',
    )
    ready(center, "alice", "bob")
    write_in(center, mail(center, subject="WIN A PRIZE now"), 1)
    write_in(center, mail(center, subject="I want a refund"), 2)
    write_in(center, mail(center, subject="Plain question"), 3)
    run(center)

    spam = Interaction.objects.get(subject__startswith="WIN")
    assert spam.state is State.CLOSED and spam.outcome == "discarded"
    assert "Spam" in spam.rules["hits"]
    assert len(center.messages("support", "Trash")) == 1  # moved, never destroyed

    refund = Interaction.objects.get(subject__contains="refund")
    assert refund.queue == "billing" and refund.priority == 5
    assert refund.agent.address == center.address("bob")  # the only billing agent
    assert refund.rules["hits"] == ["Refunds"] and "Spam" in refund.rules["misses"]

    plain = Interaction.objects.get(subject="Plain question")
    assert plain.queue == "support" and plain.agent is not None


def test_fig6_no_rule_and_no_box_skill_goes_to_unassigned(make_center) -> None:
    center = make_center()
    from postroom.store.models import Mailbox

    Mailbox.objects.filter(address=center.address("support")).update(skills=[])
    ready(center, "alice", "bob")
    write_in(center, mail(center))
    run(center)
    ix = Interaction.objects.get()
    assert ix.queue == "unassigned" and ix.state is State.QUEUED


def test_fig6_best_skill_level_wins(make_center) -> None:
    center = make_center(alice_skills="{support = 1}", bob_skills="{support = 5}")
    ready(center, "alice", "bob")
    write_in(center, mail(center))
    run(center)
    assert Interaction.objects.get().agent.address == center.address("bob")


def test_fig6_a_follow_up_goes_to_the_agent_who_answered(center) -> None:
    ready(center, "alice")
    first = mail(center)
    write_in(center, first)
    run(center)
    reply_as(center, "alice")
    run(center, outbound=1)
    answer_mail = customer_replies(center)[0]
    # Bob is now Ready and idle longer than Alice; the customer answers our reply.
    ready(center, "bob")
    Agent.objects.filter(address=center.address("bob")).update(state_changed_at=timezone.now() - timezone.timedelta(hours=1))
    follow = mail(center, subject="Re: Where is my order?", body="Thanks, one more question.")
    follow["In-Reply-To"] = answer_mail["Message-ID"]
    follow["References"] = f"{first['Message-ID']} {answer_mail['Message-ID']}"
    write_in(center, follow)
    run(center)
    second = Interaction.objects.get(subject__startswith="Re:")
    assert second.follows.message_id == first["Message-ID"]
    assert second.agent.address == center.address("alice")


# -- fig. 7: offer, answer, delivery --------------------------------------------------------


def test_fig7_an_unanswered_offer_goes_to_another_agent(make_center) -> None:
    center = make_center(
        """
[routing]
offer_timeout = "2m"
""",
        alice_auto=False,
        bob_auto=False,
    )
    ready(center, "alice")
    write_in(center, mail(center))
    run(center)
    ix = Interaction.objects.get()
    assert ix.state is State.ROUTED and ix.agent.address == center.address("alice")
    assert ix.offer_due_at is not None
    ready(center, "bob")
    center.clock.advance(minutes=3)
    run(center)
    ix.refresh_from_db()
    assert ix.state is State.ROUTED and ix.agent.address == center.address("bob")
    # Redirect on no answer: alice is made Not Ready, not excluded from this mail.
    assert not Agent.objects.get(address=center.address("alice")).ready
    # Bob answers on the API path: the mail reaches his mailbox.
    assert answer(ix, ix.agent, now=center.clock())
    run(center)
    assert len(forwards(center, "bob")) == 1
    assert forwards(center, "alice") == []
    kinds = list(JournalEvent.objects.filter(interaction=ix).values_list("kind", flat=True))
    assert kinds.count("routed") == 2 and "offer_expired" in kinds and "answered" in kinds


def test_fig7_delivery_waits_for_smtp_and_retries(center) -> None:
    ready(center, "alice")
    good = center.engine._sender_for_worker()
    site = center.engine.site
    from dataclasses import replace

    # SMTP is down: a closed port on loopback refuses the connection.
    center.engine._sender = SmtpSender(replace(site.smtp, port=center.stack.base_port + 9))
    write_in(center, mail(center))
    run(center)
    ix = Interaction.objects.get()
    assert ix.state is State.ANSWERED
    pending = Outgoing.objects.get(kind=Outgoing.FORWARD)
    assert pending.state == Outgoing.RETRY_WAIT and pending.attempts >= 1 and pending.last_error
    # SMTP is back; the retry time comes.
    center.engine._sender = good
    center.clock.advance(minutes=5)
    run(center)
    ix.refresh_from_db()
    assert ix.state is State.DELIVERED
    assert len(forwards(center, "alice")) == 1


def test_fig7_a_permanent_delivery_failure_reroutes(center) -> None:
    ready(center, "alice", "bob")
    # Alice's mailbox does not exist any more: the server refuses her with a 5xx.
    Agent.objects.filter(address=center.address("alice")).update(address="gone-" + center.address("alice"))
    Agent.objects.filter(address=center.address("bob")).update(ready=False)
    write_in(center, mail(center))
    run(center)
    ix = Interaction.objects.get()
    assert ix.state is State.QUEUED and ix.excluded_agents
    assert Outgoing.objects.get(kind=Outgoing.FORWARD).state == Outgoing.DEAD
    ready(center, "bob")
    run(center)
    ix.refresh_from_db()
    assert ix.state is State.DELIVERED and ix.agent.address == center.address("bob")
    kinds = list(JournalEvent.objects.filter(interaction=ix).values_list("kind", flat=True))
    assert "send_failed" in kinds and "delivery_failed" in kinds


# -- fig. 8: no reply -----------------------------------------------------------------------


def test_fig8_no_reply_reroutes_withdraws_and_refuses_the_late_reply(center) -> None:
    ready(center, "alice")
    write_in(center, mail(center))
    run(center)
    ix = Interaction.objects.get()
    assert ix.state is State.DELIVERED and ix.no_reply_due_at is not None
    alice_copy = center.wait_for("alice", 1)[-1]
    ready(center, "bob")
    center.clock.advance(hours=5)  # past the box's no-reply time (default 4 h)
    run(center)
    ix.refresh_from_db()
    assert ix.agent.address == center.address("bob") and ix.state is State.DELIVERED
    assert ix.priority == 10
    assert JournalEvent.objects.filter(interaction=ix, kind="no_reply_expired").exists()
    assert Withdrawal.objects.get().done_at is not None
    assert forwards(center, "alice") == []  # withdrawn from her mailbox
    assert any("Reassigned" in str(m["Subject"]) for m in notices(center, "alice"))
    assert len(forwards(center, "bob")) == 1

    # Alice replies late from the copy she still had open.
    reply_as(center, "alice", "Late answer", forwarded=alice_copy)
    run(center, outbound=1)
    assert customer_replies(center) == []
    assert len(center.wait_for("dead", 1)) == 1
    assert any("Not delivered" in str(m["Subject"]) for m in notices(center, "alice"))
    # Bob's reply still goes out, once.
    reply_as(center, "bob", "Bob's answer")
    run(center, outbound=1)
    assert len(customer_replies(center)) == 1


# -- fig. 9: reply handling ----------------------------------------------------------------


def test_fig9_a_reply_from_another_agent_is_refused_and_both_are_told(center) -> None:
    ready(center, "alice")
    write_in(center, mail(center))
    run(center)
    alice_copy = center.wait_for("alice", 1)[-1]
    # Alice forwarded it to Bob, who answers it himself.
    reply_as(center, "bob", "I'll take this", forwarded=alice_copy)
    run(center, outbound=1)
    assert customer_replies(center) == []
    assert len(center.wait_for("dead", 1)) == 1
    assert notices(center, "bob") and notices(center, "alice")
    assert Interaction.objects.get().state is State.DELIVERED


def test_fig9_a_second_reply_is_refused(center) -> None:
    ready(center, "alice")
    write_in(center, mail(center))
    run(center)
    copy = center.wait_for("alice", 1)[-1]
    reply_as(center, "alice", "First answer", forwarded=copy)
    run(center, outbound=1)
    reply_as(center, "alice", "Second answer", forwarded=copy)
    run(center, outbound=1)
    replies = customer_replies(center)
    assert len(replies) == 1 and "First answer" in replies[0].get_body(("plain",)).get_content()
    assert len(center.wait_for("dead", 1)) == 1


# -- fig. 10: approval -----------------------------------------------------------------------


def probation(center, who: str = "alice") -> None:
    agent = Agent.objects.get(address=center.address(who))
    agent.probationary = True
    agent.save()
    agent.supervisors.add(Agent.objects.get(address=center.address("sam")))


def test_fig10_approved_on_the_web(center) -> None:
    probation(center)
    ready(center, "alice")
    write_in(center, mail(center))
    run(center)
    reply_as(center, "alice", "Draft answer")
    run(center, outbound=1)
    ix = Interaction.objects.get()
    assert ix.state is State.AWAITING_APPROVAL
    request = center.wait_for("sam", 1)[-1]
    assert "Approval needed" in str(request["Subject"])
    assert customer_replies(center) == []
    approval = Approval.objects.get()
    sam = Agent.objects.get(address=center.address("sam"))
    decide_approval(approval, by_user=sam.user, decision="approve", now=center.clock())
    run(center)
    replies = customer_replies(center)
    assert len(replies) == 1 and "Draft answer" in replies[0].get_body(("plain",)).get_content()
    assert Interaction.objects.get().state is State.CLOSED


def test_fig10_rejected_by_mail_goes_back_to_the_agent(center) -> None:
    probation(center)
    ready(center, "alice")
    write_in(center, mail(center))
    run(center)
    reply_as(center, "alice", "Rude answer")
    run(center, outbound=1)
    request = center.wait_for("sam", 1)[-1]
    decision = compose_reply(request, agent_addr=center.address("sam"), agent_name="Sam", style="gmail", text="REJECT too informal")
    # The held reply may still be in the outbound box: wait for one more.
    before = len(center.messages("outbound"))
    center.submit(decision, "sam")
    run(center, outbound=before + 1)
    ix = Interaction.objects.get()
    assert ix.state is State.DELIVERED and ix.agent.address == center.address("alice")
    assert Approval.objects.get().state == Approval.REJECTED
    assert "too informal" in Approval.objects.get().rejection_reason
    assert any("not approved" in str(m["Subject"]) for m in notices(center, "alice"))
    assert customer_replies(center) == []
    assert len(center.wait_for("dead", 1)) == 1
    assert center.messages("outbound") == []


def test_fig10_edited_by_mail_sends_the_edit(center) -> None:
    probation(center)
    ready(center, "alice")
    write_in(center, mail(center))
    run(center)
    reply_as(center, "alice", "Draft answer")
    run(center, outbound=1)
    request = center.wait_for("sam", 1)[-1]
    decision = compose_reply(request, agent_addr=center.address("sam"), agent_name="Sam", style="gmail", text="EDIT\nDear customer, your parcel ships today.")
    # The held reply may still be in the outbound box: wait for one more.
    before = len(center.messages("outbound"))
    center.submit(decision, "sam")
    run(center, outbound=before + 1)
    replies = customer_replies(center)
    assert len(replies) == 1
    body = replies[0].get_body(("plain",)).get_content()
    assert "parcel ships today" in body and "Draft answer" not in body
    assert replies[0]["From"].addresses[0].addr_spec == center.address("support")
    assert any("edited" in str(m["Subject"]) for m in notices(center, "alice"))


# -- hang-up and transfer ---------------------------------------------------------------------


def test_hang_up_ends_without_a_reply(center) -> None:
    from postroom.store.commands import hang_up
    from postroom.store.models import WrapUpCode

    WrapUpCode.objects.get_or_create(code="no_action_needed", defaults={"label": "No action needed"})
    ready(center, "alice")
    write_in(center, mail(center))
    run(center)
    ix = Interaction.objects.get()
    hang_up(ix, by_user=ix.agent.user, code="no_action_needed", now=center.clock())
    run(center)
    ix.refresh_from_db()
    assert ix.state is State.CLOSED and ix.outcome == "wrapped_up" and ix.wrapup_code == "no_action_needed"
    assert center.messages("support") == []
    assert customer_replies(center) == []


def test_transfer_to_another_agent(center) -> None:
    from postroom.store.commands import transfer

    ready(center, "alice")
    write_in(center, mail(center))
    run(center)
    ix = Interaction.objects.get()
    assert ix.agent.address == center.address("alice")
    ready(center, "bob")
    transfer(ix, by_user=ix.agent.user, to_agent=center.address("bob"), to_queue=None, now=center.clock())
    run(center)
    ix.refresh_from_db()
    assert ix.agent.address == center.address("bob") and ix.state is State.DELIVERED
    assert forwards(center, "alice") == []
    reply_as(center, "bob", "Bob answers")
    run(center, outbound=1)
    assert len(customer_replies(center)) == 1
