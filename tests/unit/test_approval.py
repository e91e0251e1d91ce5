from __future__ import annotations

import email
import email.policy

import pytest

from postroom.core.approval import (
    ACCEPTED_FORMS,
    ApprovalPolicy,
    Decision,
    at_reception,
    at_reply,
    read_mail_decision,
)
from postroom.mail.message import parse
from postroom_sim.agents import STYLES, compose_reply

POLICY = ApprovalPolicy(
    probation=frozenset({"new@example.test"}), levels=frozenset({"vip"}), min_priority=80, boxes=frozenset({"legal@example.test"})
)


def reception(**kw):
    base = dict(box="support@example.test", priority=0, contact_level=None, contact_requires=False, rule_requires=False)
    return at_reception(POLICY, **{**base, **kw})


@pytest.mark.parametrize(
    ("facts", "needed"),
    [
        ({}, False),
        ({"contact_level": "VIP"}, True),
        ({"contact_level": "gold"}, False),
        ({"priority": 80}, True),
        ({"priority": 79}, False),
        ({"box": "legal@example.test"}, True),
        ({"rule_requires": True}, True),
        ({"contact_requires": True}, True),
    ],
)
def test_reception_policy(facts, needed) -> None:
    assert (reception(**facts) is not None) is needed


def test_reply_policy_probation_by_flag_or_list() -> None:
    assert at_reply(POLICY, required_at_reception=False, agent="a@example.test", probationary=False) is None
    assert at_reply(POLICY, required_at_reception=False, agent="a@example.test", probationary=True)
    assert at_reply(POLICY, required_at_reception=False, agent="New@example.test", probationary=False)
    assert at_reply(POLICY, required_at_reception=True, agent="a@example.test", probationary=False)


@pytest.mark.parametrize(
    ("body", "decision", "text"),
    [
        ("APPROVE\n\nOn Mon, Sam wrote:\n> request", Decision.APPROVE, ""),
        ("approve.\n", Decision.APPROVE, ""),
        ("APPROVE\n\n-- \nSam Supervisor\nHead of Support", Decision.APPROVE, ""),
        ("APPROVE\nSent from my iPhone", Decision.APPROVE, ""),
        ("REJECT too informal\nplease use the template\n> quoted", Decision.REJECT, "too informal\nplease use the template"),
        ("Reject: wrong price", Decision.REJECT, "wrong price"),
        ("REJECT\nThe price is wrong.\n\n-- \nSam", Decision.REJECT, "The price is wrong."),
        ("EDIT\nDear customer, it ships today.\n\n-----Original Message-----\nFrom: x", Decision.EDIT, "Dear customer, it ships today.\n"),
        ("\n\nEDIT\nLine one\n\nLine two\n--\nSam", Decision.EDIT, "Line one\n\nLine two\n"),
    ],
)
def test_mail_decisions(body, decision, text) -> None:
    found = read_mail_decision(body)
    assert (found.decision, found.text, found.problem) == (decision, text, "")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("Approved, thanks", 'the first line is "Approved, thanks"'),
        ("ok.", 'the first line is "ok."'),
        ("Approve this but say sorry first", "not APPROVE, REJECT <reason> or EDIT"),
        ("APPROVE and send it", "not APPROVE"),
        ("Dear customer, it ships today.", "not APPROVE"),
        ("REJECT\n\n-- \nSam", "REJECT needs a reason"),
        ("EDIT\n> quoted only", "EDIT needs the new reply text"),
        ("\n> only the quote\n", "the answer is empty"),
        ("-- \nSam Supervisor", "the answer is empty"),
    ],
)
def test_anything_else_is_not_understood(body, problem) -> None:
    found = read_mail_decision(body)
    assert found.decision is None and problem in found.problem


def test_accepted_forms_name_every_command() -> None:
    for word in ("APPROVE", "REJECT", "EDIT"):
        assert word in ACCEPTED_FORMS


REQUEST = (
    b"From: Postroom <outbound@example.test>\r\nTo: sam@example.test\r\n"
    b"Reply-To: outbound+t0k3n@example.test\r\nSubject: Approval needed: Where is my order?\r\n"
    b"Date: Mon, 04 Mar 2024 09:12:47 +0000\r\nMessage-ID: <req.1@postroom.example.test>\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    b"Alice wrote a reply that needs your approval.\r\nAPPROVE to send it.\r\n"
)


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize(
    ("answer", "decision", "text"),
    [
        ("APPROVE\n\n-- \nSam Supervisor\nHead of Support", Decision.APPROVE, ""),
        ("EDIT\nDear Carol,\nit ships today.\n\nBest regards\n-- \nSam", Decision.EDIT, "Dear Carol,\nit ships today.\n\nBest regards\n"),
        ("Approved, thanks", None, ""),
    ],
)
def test_what_each_mail_client_sends_is_read_the_same(style, answer, decision, text) -> None:
    request = email.message_from_bytes(REQUEST, policy=email.policy.default)
    sent = compose_reply(request, agent_addr="sam@example.test", agent_name="Sam", style=style, text=answer)
    found = read_mail_decision(parse(sent.as_bytes()).text)
    assert (found.decision, found.text) == (decision, text)
