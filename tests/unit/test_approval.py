from __future__ import annotations

import pytest

from postroom.core.approval import ApprovalPolicy, at_reception, at_reply, read_mail_decision

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
        ("APPROVE\n\nOn Mon, Sam wrote:\n> request", "approve", ""),
        ("ok.", "approve", ""),
        ("REJECT too informal\nplease use the template\n> quoted", "reject", "too informal\nplease use the template"),
        ("Reject: wrong price", "reject", "wrong price"),
        ("Dear customer, it ships today.\n\n-----Original Message-----\nFrom: x", "edit", "Dear customer, it ships today."),
        ("Approve this but say sorry first", "edit", "Approve this but say sorry first"),
    ],
)
def test_mail_decisions(body, decision, text) -> None:
    found = read_mail_decision(body)
    assert found is not None and found.decision == decision and found.text == text


def test_an_empty_answer_decides_nothing() -> None:
    assert read_mail_decision("\n> only the quote\n") is None
