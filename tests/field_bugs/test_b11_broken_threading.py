"""B-11: broken threading when replies lose headers or subject tokens.

In the field (zammad#799, #3022, #5716; chatwoot#10028, #10750; freescout#5310): a proper
In-Reply-To was ignored, ServiceNow and Salesforce stripped References, and every answer
from Outlook opened a new conversation.

Postroom reads several signals, in order of trust: the reply address's plus-token, then
In-Reply-To, then References, then the subject tag; each must still verify for the agent.
Shown on the real stack with the reply of each mail client style, and with replies that
lost all but one signal (a client that drops the plus-address, one that sends no
References, a ServiceNow-style forward that keeps only the subject, top-posting with the
quote removed), and with the customer's own follow-ups.
"""

from __future__ import annotations

import re

import pytest

from postroom.core.lifecycle import State
from postroom.sim.agents import compose_reply
from postroom.store.models import Interaction
from tests.field_bugs.helpers import customer_mail, forwards, replies, run_until, send

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]


def plain_outbound(center) -> str:
    return center.address("outbound")


def keep_only(signal: str):
    """Strip every correlation signal from a reply but `signal`."""

    def mutate(center, reply) -> None:
        if signal != "plus-address":
            del reply["To"]
            reply["To"] = plain_outbound(center)
        if signal != "in-reply-to":
            del reply["In-Reply-To"]
        if signal != "references":
            del reply["References"]
        if signal != "subject-tag":
            subject = re.sub(r"\s*\[PR:[^\]]+\]", "", str(reply["Subject"]))
            del reply["Subject"]
            reply["Subject"] = subject

    return mutate


def servicenow_forward(center, reply) -> None:
    """A ticketing tool forwards the agent's answer as a new mail: "FW:" and the subject
    (with its tag) are all that is left."""
    subject = "FW: " + re.sub(r"^\s*(re|aw)\s*:\s*", "", str(reply["Subject"]), flags=re.I)
    for name in ("To", "In-Reply-To", "References", "Subject", "Thread-Index", "Thread-Topic"):
        del reply[name]
    reply["To"] = plain_outbound(center)
    reply["Subject"] = subject


CASES = {
    "thunderbird, every signal": ("thunderbird", None),
    "outlook: no References, Thread-Index": ("outlook", None),
    "gmail": ("gmail", None),
    "apple mail": ("apple", None),
    "only the plus-address": ("thunderbird", keep_only("plus-address")),
    "only In-Reply-To (plus-address dropped)": ("apple", keep_only("in-reply-to")),
    "only References": ("gmail", keep_only("references")),
    "only the subject tag": ("outlook", keep_only("subject-tag")),
    "a ServiceNow-style forward": ("thunderbird", servicenow_forward),
}


def test_b11_a_reply_is_found_by_whichever_signal_survived(center) -> None:
    center.ready("alice")
    lost = []
    for n, (case, (style, mutate)) in enumerate(CASES.items()):
        msg = customer_mail(center, subject=f"Case {n}: where is my order?")
        send(center, msg)
        run_until(center, "the forward", lambda n=n: len(forwards(center)) == n + 1)
        forward = forwards(center)[-1]
        reply = compose_reply(forward, agent_addr=center.address("alice"), agent_name="Alice", style=style,
                              text=f"Answer {n}: it ships today.", top_post=True)
        if mutate is not None:
            mutate(center, reply)
        center.submit(reply, "alice")
        try:
            run_until(center, "the reply to be sent", lambda m=msg: Interaction.objects.get(message_id=m["Message-ID"]).state
                      in (State.REPLIED, State.CLOSED), timeout=15)
        except AssertionError:
            lost.append(case)
            Interaction.objects.filter(message_id=msg["Message-ID"]).update(status=State.CLOSED)  # free alice
    assert lost == []
    got = {str(m["In-Reply-To"]) for m in replies(center)}
    assert len(got) == len(CASES)


def test_b11_the_customers_follow_up_joins_the_thread_by_in_reply_to_or_references(center) -> None:
    center.ready("alice")
    first = customer_mail(center)
    send(center, first)
    run_until(center, "the forward", lambda: len(forwards(center)) == 1)
    center.submit(compose_reply(forwards(center)[0], agent_addr=center.address("alice"), agent_name="Alice",
                                style="gmail", text="It ships today."), "alice")
    run_until(center, "our reply", lambda: len(replies(center)) == 1)
    (ours,) = replies(center)
    for n, header in enumerate(("In-Reply-To", "References")):
        follow_up = customer_mail(center, subject=f"Re: {first['Subject']}" if n == 0 else "one more question")
        follow_up[header] = str(ours["Message-ID"])
        send(center, follow_up)
        run_until(center, "the follow-up", lambda f=follow_up: Interaction.objects.filter(message_id=f["Message-ID"]).exists())
        ix = Interaction.objects.get(message_id=follow_up["Message-ID"])
        assert ix.follows is not None and ix.follows.message_id == first["Message-ID"], header
