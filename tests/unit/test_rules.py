"""postroom.core.rules: every field and op, the chain's semantics, and validation with paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from postroom.core.rules import (
    MAX_TEXT,
    Action,
    Condition,
    MessageFacts,
    RuleInvalid,
    RuleSpec,
    evaluate,
    rule_from_dict,
    rules_from_dicts,
    validate,
)
from postroom.mail.facts import facts_from_mail
from postroom.mail.message import parse

SAMPLES = Path(__file__).resolve().parents[2] / "postroom_sim" / "samples"

FACTS = MessageFacts(
    to=("Support@Example.test", "team@example.test"),
    cc=("boss@customer.test",),
    from_addr="Ann@Sub.VIP.Customer.test",
    subject="Refund for order 40117",
    body_text="Hello,\nplease send a quote for 45 seats.\nAnn",
    headers={"X-Shop-Event": ["Order-Complaint"], "Received": ["from a", "from b"]},
)


def rule(name: str, *conditions: Condition, match: str = "all", **kw: Any) -> RuleSpec:
    actions = tuple(Action(k, v) for k, v in kw.pop("actions", {}).items())
    return RuleSpec(name, match, conditions, actions, **kw)


# -- every field × op -----------------------------------------------------------------------

CASES = [
    # (field, op, value, expected)
    ("to", "contains", "SUPPORT@", True),
    ("to", "contains", "sales@", False),
    ("to", "equals", "team@EXAMPLE.test", True),
    ("to", "equals", "example.test", False),
    ("to", "regex", r"^team@", True),
    ("to", "regex", r"^sales@", False),
    ("to", "not_contains", "sales@", True),
    # any address containing it is enough to fail not_contains
    ("to", "not_contains", "team", False),
    ("cc", "contains", "boss", True),
    ("cc", "equals", "boss@customer.test", True),
    ("cc", "regex", r"@customer\.test$", True),
    ("cc", "not_contains", "boss", False),
    ("from", "contains", "vip.customer", True),
    ("from", "equals", "ann@sub.vip.customer.test", True),
    ("from", "equals", "ann", False),
    ("from", "regex", r"^ann@.*\.test$", True),
    ("from", "not_contains", "spam", True),
    ("from_domain", "equals", "sub.vip.customer.test", True),
    ("from_domain", "equals", "vip.customer.test", False),
    ("from_domain", "contains", "vip.customer.test", True),
    ("from_domain", "regex", r"(^|\.)vip\.customer\.test$", True),
    ("from_domain", "not_contains", "vip", False),
    ("subject", "contains", "REFUND", True),
    ("subject", "contains", "invoice", False),
    ("subject", "equals", "  refund for ORDER 40117 ", True),
    ("subject", "equals", "refund", False),
    ("subject", "regex", r"order \d+$", True),
    ("subject", "not_contains", "refund", False),
    ("subject", "not_contains", "invoice", True),
    ("body", "contains", "QUOTE", True),
    ("body", "equals", "quote", False),
    ("body", "regex", r"\b(quote|pricing|invoice)\b", True),
    ("body", "regex", r"\bquot\b", False),
    ("body", "not_contains", "pricing", True),
    ("header:X-Shop-Event", "contains", "complaint", True),
    ("header:x-shop-event", "equals", "order-complaint", True),
    ("HEADER:X-SHOP-EVENT", "regex", r"^order-", True),
    ("header:X-Shop-Event", "not_contains", "complaint", False),
    ("header:Received", "equals", "from b", True),  # any value of a repeated header
    ("header:X-Missing", "contains", "x", False),
    ("header:X-Missing", "not_contains", "x", True),  # an absent header contains nothing
    ("header:X-Missing", "equals", "", False),
]


@pytest.mark.parametrize(("field", "op", "value", "expected"), CASES)
def test_each_field_and_op(field: str, op: str, value: str, expected: bool) -> None:
    assert Condition(field, op, value).test(FACTS) is expected


def test_a_mail_without_sender_has_no_from_or_domain() -> None:
    facts = MessageFacts(subject="x")
    assert Condition("from", "contains", "a").test(facts) is False
    assert Condition("from_domain", "not_contains", "a").test(facts) is True


# -- all / any ------------------------------------------------------------------------------

YES = Condition("subject", "contains", "refund")
NO = Condition("subject", "contains", "invoice")
YES2 = Condition("body", "contains", "quote")


@pytest.mark.parametrize(
    ("match", "conditions", "matched", "why"),
    [
        ("all", (YES, YES2), True, "all 2 conditions matched"),
        ("all", (YES, NO, YES2), False, 'subject contains "invoice" did not match'),
        ("all", (YES,), True, 'subject contains "refund" matched'),
        ("any", (NO, YES2, YES), True, 'body contains "quote" matched'),
        ("any", (NO,), False, 'subject contains "invoice" did not match'),
        ("any", (NO, NO), False, "no condition matched"),
        ("all", (), True, "no conditions: always matches"),
        ("any", (), True, "no conditions: always matches"),
    ],
)
def test_all_and_any_say_which_condition_decided(
    match: str, conditions: tuple[Condition, ...], matched: bool, why: str
) -> None:
    assert rule("r", *conditions, match=match).test(FACTS) == (matched, why)


# -- the chain ------------------------------------------------------------------------------


def test_no_rule_matching_leaves_every_decision_to_the_caller() -> None:
    verdict = evaluate([rule("a", NO, actions={"queue": "sales"})], FACTS)
    assert verdict.queue is None and verdict.agent is None and verdict.priority_set is None
    assert (verdict.priority_add, verdict.require_approval, verdict.delete) == (0, False, None)
    assert verdict.hits == () and verdict.misses == ("a",)
    assert verdict.trace == (("a", False, 'subject contains "invoice" did not match'),)


def test_an_empty_chain_decides_nothing() -> None:
    assert evaluate([], FACTS) == evaluate((), FACTS)
    assert evaluate([], FACTS).trace == ()


def test_the_first_matching_rule_wins_and_ends_the_chain() -> None:
    rules = [
        rule("miss", NO, actions={"queue": "billing"}),
        rule("first", YES, actions={"queue": "support", "add_priority": 5}),
        rule("second", YES2, actions={"queue": "sales", "add_priority": 7}),
    ]
    verdict = evaluate(rules, FACTS)
    assert verdict.queue == "support" and verdict.priority_add == 5
    assert verdict.hits == ("first",) and verdict.misses == ("miss",)
    assert verdict.trace[2] == ("second", False, "not evaluated: the chain ended at 'first'")
    assert verdict.set_by("queue") == "first"


def test_continue_combines_first_setter_wins_adds_accumulate_approval_ors() -> None:
    rules = [
        rule(
            "a",
            YES,
            actions={"queue": "support", "add_priority": 5, "require_approval": True},
            continue_after=True,
        ),
        rule("b", NO, actions={"queue": "billing"}, continue_after=True),
        rule(
            "c",
            YES2,
            actions={
                "queue": "sales",
                "agent": "Bob@Example.test",
                "set_priority": 40,
                "add_priority": 3,
                "require_approval": False,
                "forward_copy": "legal@example.test",
            },
            continue_after=True,
        ),
        rule(
            "d",
            actions={
                "agent": "alice@example.test",
                "set_priority": 99,
                "auto_response": "off",
                "forward_copy": "legal@example.test",
                "delete": "spam",
            },
        ),
        rule("e", actions={"queue": "never"}),
    ]
    verdict = evaluate(rules, FACTS)
    assert verdict.queue == "support"
    assert verdict.agent == "bob@example.test"  # a separate slot from queue; lower-cased
    assert verdict.priority_set == 40
    assert verdict.priority_add == 8
    assert verdict.require_approval is True  # false never undoes an earlier true
    assert verdict.auto_response == "off"
    assert verdict.forward_copies == ("legal@example.test",)
    assert verdict.delete == "spam"
    assert verdict.hits == ("a", "c", "d") and verdict.misses == ("b",)
    assert [t[0] for t in verdict.trace] == ["a", "b", "c", "d", "e"]
    assert verdict.trace[4][2] == "not evaluated: the chain ended at 'd'"
    assert ("c", "queue", "sales") in verdict.overridden
    assert ("d", "agent", "alice@example.test") in verdict.overridden
    assert ("d", "set_priority", 99) in verdict.overridden
    assert ("d", "forward_copy", "legal@example.test") in verdict.overridden
    assert verdict.set_by("agent") == "c" and verdict.set_by("delete") == "d"
    json.dumps(verdict.as_record())  # storable as is in Interaction.rules


def test_forward_copies_collect_in_order_once_each() -> None:
    rules = [
        RuleSpec(
            "a",
            actions=(
                Action("forward_copy", "x@example.test"),
                Action("forward_copy", "y@example.test"),
            ),
            continue_after=True,
        ),
        RuleSpec("b", actions=(Action("forward_copy", "X@example.test"),)),
    ]
    assert evaluate(rules, FACTS).forward_copies == ("x@example.test", "y@example.test")


def test_disabled_rules_are_skipped_and_recorded() -> None:
    rules = [
        rule("off", YES, actions={"queue": "billing"}, enabled=False),
        rule("on", YES, actions={"queue": "support"}),
    ]
    verdict = evaluate(rules, FACTS)
    assert verdict.queue == "support"
    assert verdict.trace[0] == ("off", False, "disabled")
    assert verdict.hits == ("on",) and verdict.misses == ()


def test_a_rule_without_actions_just_ends_the_chain() -> None:
    verdict = evaluate([rule("stop", YES), rule("later", actions={"queue": "x"})], FACTS)
    assert verdict.queue is None and verdict.hits == ("stop",)


# -- the size cap ---------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["contains", "regex"])
def test_only_the_first_100_kb_of_the_body_is_looked_at(op: str) -> None:
    head = MessageFacts(body_text="needle " + "x" * MAX_TEXT)
    tail = MessageFacts(body_text="x" * MAX_TEXT + " needle")
    cond = Condition("body", op, "needle")
    assert cond.test(head) is True
    assert cond.test(tail) is False
    assert Condition("body", "not_contains", "needle").test(tail) is True


def test_every_text_a_condition_sees_is_capped() -> None:
    facts = MessageFacts(
        subject="s" * (2 * MAX_TEXT),
        body_text="b" * (10 * MAX_TEXT),
        headers={"X-Long": ["h" * (2 * MAX_TEXT)]},
    )
    for field in ("subject", "body", "header:X-Long"):
        assert [len(t) for t in facts.texts(field)] == [MAX_TEXT]


# -- validation -----------------------------------------------------------------------------


def good() -> dict[str, Any]:
    return {
        "name": "Refunds",
        "match": "all",
        "conditions": [{"field": "subject", "op": "contains", "value": "refund"}],
        "actions": [{"action": "require_approval", "value": True}],
        "continue": False,
        "enabled": True,
    }


def broken(path: str, value: Any) -> list[dict[str, Any]]:
    rule_ = good()
    node: Any = rule_
    *parents, last = path.replace("]", "").replace("[", ".").split(".")
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is DEL:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return [rule_]


DEL = object()

INVALID = [
    ("conditions.0.field", "subj", "rules[0].conditions[0].field", 'unknown field "subj"'),
    ("conditions.0.field", "header:", "rules[0].conditions[0].field", "header name"),
    ("conditions.0.field", "header:X Bad", "rules[0].conditions[0].field", "header name"),
    ("conditions.0.field", 3, "rules[0].conditions[0].field", "expected a string, got 3"),
    ("conditions.0.op", "contain", "rules[0].conditions[0].op", 'unknown op "contain"'),
    ("conditions.0.op", DEL, "rules[0].conditions[0].op", "required"),
    ("conditions.0.value", 5, "rules[0].conditions[0].value", "expected a string, got 5"),
    ("conditions.0.value", "", "rules[0].conditions[0].value", "must not be empty"),
    ("conditions.0.opp", "x", "rules[0].conditions[0].opp", 'did you mean "op"'),
    ("conditions.0", "subject", "rules[0].conditions[0]", "expected a table"),
    ("conditions", {"field": "x"}, "rules[0].conditions", "expected an array of tables"),
    ("actions.0.action", "route", "rules[0].actions[0].action", 'unknown action "route"'),
    ("actions.0.value", "yes", "rules[0].actions[0].value", "expected true or false"),
    ("actions.0.value", DEL, "rules[0].actions[0].value", "required"),
    ("name", DEL, "rules[0].name", "required"),
    ("name", " ", "rules[0].name", "non-empty string"),
    ("match", "most", "rules[0].match", '"all", "any"'),
    ("continue", "yes", "rules[0].continue", "true or false"),
    ("enabled", 1, "rules[0].enabled", "true or false"),
    ("colour", "red", "rules[0].colour", "unknown key"),
]


@pytest.mark.parametrize(("where", "value", "path", "fragment"), INVALID)
def test_invalid_rules_name_the_key_path(where: str, value: Any, path: str, fragment: str) -> None:
    errors = validate(broken(where, value))
    assert len(errors) == 1, errors
    assert errors[0].startswith(path + ": "), errors
    assert fragment in errors[0]


def _with_condition(op: str, value: str) -> list[dict[str, Any]]:
    rule_ = good()
    rule_["conditions"] = [{"field": "body", "op": op, "value": value}]
    return [rule_]


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ("[unclosed", "invalid regular expression"),
        ("(?P<x>a", "invalid regular expression"),
        (r"(a+)+$", "nested repetition"),
        (r"(\w+\s?)*$", "nested repetition"),
        (r"^(.*,)*x", "nested repetition"),
    ],
)
def test_bad_regexes_are_validation_errors(pattern: str, fragment: str) -> None:
    errors = validate(_with_condition("regex", pattern))
    assert len(errors) == 1 and errors[0].startswith("rules[0].conditions[0].value: ")
    assert fragment in errors[0]
    with pytest.raises(RuleInvalid):
        Condition("body", "regex", pattern)


@pytest.mark.parametrize(
    "pattern", [r"\b(quote|pricing|invoice)\b", r"(\d{3}-)+\d", r"(?>\w+\s?)+$", r"(a++)+"]
)
def test_safe_regexes_pass(pattern: str) -> None:
    assert validate(_with_condition("regex", pattern)) == []


ACTION_VALUES = [
    ("queue", "", "must not be empty"),
    ("queue", 3, "expected a string"),
    ("agent", "bob", "email address"),
    ("forward_copy", "legal at example", "email address"),
    ("set_priority", "high", "expected an integer"),
    ("add_priority", True, "expected an integer, got true"),
    ("add_priority", 10**9, "between"),
    ("require_approval", "true", "expected true or false"),
    ("auto_response", "Dear {nmae}", "unknown placeholder {nmae}"),
    ("delete", "", "must not be empty"),
]


@pytest.mark.parametrize(("action", "value", "fragment"), ACTION_VALUES)
def test_bad_action_values(action: str, value: Any, fragment: str) -> None:
    rule_ = good()
    rule_["actions"] = [{"action": action, "value": value}]
    errors = validate([rule_])
    assert len(errors) == 1 and errors[0].startswith("rules[0].actions[0].value: "), errors
    assert fragment in errors[0]
    with pytest.raises(RuleInvalid):
        Action(action, value)


def test_a_set_once_action_twice_in_one_rule_is_an_error() -> None:
    rule_ = good()
    rule_["actions"] = [
        {"action": "queue", "value": "a"},
        {"action": "add_priority", "value": 1},
        {"action": "add_priority", "value": 2},
        {"action": "queue", "value": "b"},
    ]
    assert validate([rule_]) == ["rules[0].actions[3].action: queue is given twice in one rule"]


def test_duplicate_names_and_non_lists() -> None:
    second = good() | {"name": "REFUNDS"}
    assert validate([good(), second]) == [
        'rules[1].name: duplicate rule name "REFUNDS" (also rules[0])'
    ]
    assert validate({"name": "x"}) == [
        "rules: expected an array of tables ([[rules]]), got a table"
    ]
    assert validate([3], path="r") == ["r[0]: expected a table, got 3"]


def test_every_problem_is_reported() -> None:
    rule_ = good()
    rule_["conditions"] = [
        {"field": "subj", "op": "contains", "value": "x"},
        {"field": "body", "op": "regex", "value": "("},
    ]
    rule_["actions"] = [{"action": "nope", "value": 1}]
    paths = [e.split(": ")[0] for e in validate([rule_, {"name": "b", "matc": "all"}])]
    assert paths == [
        "rules[0].conditions[0].field",
        "rules[0].conditions[1].value",
        "rules[0].actions[0].action",
        "rules[1].matc",
    ]


def test_a_valid_dict_round_trips() -> None:
    spec = rule_from_dict(good())
    assert spec.to_dict() == good()
    assert rules_from_dicts([good()]) == (spec,)
    with pytest.raises(RuleInvalid) as caught:
        rules_from_dicts(broken("conditions.0.op", "contain"))
    assert caught.value.problems[0][0] == "rules[0].conditions[0].op"


def test_defaults_of_a_minimal_rule() -> None:
    spec = rule_from_dict({"name": "catch-all"})
    assert (spec.match, spec.conditions, spec.actions) == ("all", (), ())
    assert (spec.continue_after, spec.enabled) == (False, True)


def test_constructors_refuse_what_validate_refuses() -> None:
    with pytest.raises(RuleInvalid):
        Condition("subject", "like", "x")
    with pytest.raises(RuleInvalid):
        RuleSpec("r", match="some")
    with pytest.raises(RuleInvalid):
        RuleSpec("r", actions=(Action("queue", "a"), Action("queue", "b")))
    with pytest.raises(RuleInvalid):
        RuleSpec("")


# -- facts from a real mail -----------------------------------------------------------------


def test_facts_from_a_parsed_mail() -> None:
    mail = parse((SAMPLES / "04-refund-request-de.eml").read_bytes())
    facts = facts_from_mail(mail)
    assert facts.to == ("support@example.test",)
    assert facts.from_addr == "juergen.weiss@customer.test"
    assert facts.from_domain == "customer.test"
    assert facts.subject.startswith("Rückerstattung")
    # Header values are decoded, names lower-cased.
    assert facts.headers["subject"] == (facts.subject,)
    assert facts.headers["from"][0].startswith("Jürgen Weiß")
    assert Condition("header:From", "contains", "jürgen").test(facts)
    assert Condition("subject", "contains", "RÜCKERSTATTUNG").test(facts)


def test_facts_cap_a_huge_body() -> None:
    body = b"x" * (3 * MAX_TEXT)
    raw = b"From: a@customer.test\r\nSubject: big\r\nMessage-ID: <1@x>\r\n\r\n" + body
    facts = facts_from_mail(parse(raw))
    assert len(facts.body_text) == MAX_TEXT
