"""postroom.config: rules, contacts, routing, approval, wrap-up codes and the priority policy."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from postroom.config import (
    DEFAULT_WRAPUP_CODES,
    ApprovalConfig,
    ContactConfig,
    RoutingConfig,
    WrapUpCodeConfig,
    load_config,
)
from postroom.core.approval import ApprovalPolicy
from postroom.core.priority import PriorityInput, default_policy
from postroom.core.rules import Action, Condition
from tests.unit.test_config import EXAMPLES, _set, base, errors_of, write


def site(**extra: Any) -> dict[str, Any]:
    """The minimal base plus a supervisor, and whatever the test adds."""
    doc = copy.deepcopy(base())
    doc["agents"].append(
        {"name": "Sam", "address": "sam@example.test", "skills": ["support"], "supervisor": True}
    )
    doc.update(extra)
    return doc


def a_rule(**kw: Any) -> dict[str, Any]:
    return {
        "name": "Refunds",
        "conditions": [{"field": "subject", "op": "contains", "value": "refund"}],
        "actions": [{"action": "require_approval", "value": True}],
    } | kw


# -- the shipped demo -----------------------------------------------------------------------


def test_the_demo_has_rules_contacts_routing_and_a_probationary_agent() -> None:
    config = load_config(EXAMPLES / "demo.toml", environ={})
    assert [r.name for r in config.rules] == ["Refunds need approval", "Sales words", "Spam"]
    refunds, sales, spam = config.rules
    assert refunds.conditions == (Condition("subject", "contains", "refund"),)
    assert refunds.actions == (Action("require_approval", True), Action("add_priority", 5))
    assert not refunds.continue_after
    assert sales.conditions == (Condition("body", "regex", r"\b(quote|pricing|invoice)\b"),)
    assert sales.actions == (Action("queue", "sales"),) and sales.continue_after
    assert spam.actions == (Action("delete", "spam"),)
    assert config.contacts == (
        ContactConfig(
            address=None,
            domain="vip.customer.test",
            name="VIP Customer Ltd",
            level="vip",
            priority=50,
        ),
        ContactConfig(
            address="erin@customer.test",
            domain=None,
            name="Erin Example",
            level="gold",
            priority=20,
        ),
    )
    assert config.routing.offer_timeout_seconds == 120
    dan = config.agent("dan@example.test")
    assert dan is not None and dan.probationary and dan.supervisors == ("sam@example.test",)
    assert config.approval.probation == ("dan@example.test",)
    assert config.wrapup_codes == DEFAULT_WRAPUP_CODES


# -- defaults -------------------------------------------------------------------------------


def test_everything_new_is_optional_with_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, base()), environ={})
    assert config.rules == () and config.contacts == ()
    assert config.routing == RoutingConfig(
        offer_timeout_seconds=None,
        follow_up_wait_seconds=900,
        no_reply_priority_raise=10,
        unassigned_queue="unassigned",
    )
    assert config.approval == ApprovalConfig(
        probation=(), levels=("vip",), min_priority=None, boxes=(), reroute_on_reject=False
    )
    assert [c.code for c in config.wrapup_codes] == [
        "resolved",
        "no_action_needed",
        "spam",
        "duplicate",
        "escalated_by_phone",
    ]
    assert config.priority.policy is default_policy and config.priority.policy_path is None
    box = config.incoming[0]
    assert box.no_reply_bands == () and box.trash_folder == "Trash"
    agent = config.agents[0]
    assert agent.skill_levels is None and agent.levels == {"support": 1, "sales": 1}
    assert (agent.supervisors, agent.probationary, agent.notify_offers) == ((), False, False)


# -- good values ----------------------------------------------------------------------------


def test_every_new_key_is_read(tmp_path: Path) -> None:
    doc = site(
        rules=[
            a_rule(
                match="any",
                actions=[
                    {"action": "queue", "value": "sales"},
                    {"action": "add_priority", "value": 5},
                ],
                enabled=False,
            ),
            a_rule(
                name="Nowhere",
                actions=[{"action": "queue", "value": "triage"}],
                **{"continue": True},
            ),
        ],
        contacts=[
            {"domain": "@VIP.Customer.test", "level": "vip", "priority": 50},
            {"address": "Erin@Customer.test", "name": "Erin", "requires_approval": True},
        ],
        routing={
            "offer_timeout": "90s",
            "follow_up_wait": "off",
            "no_reply_priority_raise": 0,
            "unassigned_queue": "triage",
        },
        approval={
            "probation": ["Alice@example.test"],
            "levels": ["VIP", "gold", "vip"],
            "min_priority": 80,
            "boxes": ["sales@example.test"],
            "reroute_on_reject": True,
        },
        wrapup_codes=[{"code": "solved", "label": "Solved it"}, {"code": "called_back"}],
        priority={"policy": "postroom.core.priority:default_policy"},
    )
    doc["incoming"][0] |= {"no_reply_bands": [[50, "30m"], [20, "2h"]], "trash_folder": "Deleted"}
    doc["agents"][0] |= {
        "skills": {"support": 3, "sales": 1},
        "supervisors": ["SAM@example.test"],
        "notify_offers": True,
    }
    config = load_config(write(tmp_path, doc), environ={})

    first, second = config.rules
    assert (first.match, first.enabled, first.continue_after) == ("any", False, False)
    assert first.actions == (Action("queue", "sales"), Action("add_priority", 5))
    assert second.continue_after and second.actions == (Action("queue", "triage"),)
    assert config.contacts == (
        ContactConfig(address=None, domain="vip.customer.test", level="vip", priority=50),
        ContactConfig(
            address="erin@customer.test", domain=None, name="Erin", requires_approval=True
        ),
    )
    assert config.routing == RoutingConfig(
        offer_timeout_seconds=90,
        follow_up_wait_seconds=0,
        no_reply_priority_raise=0,
        unassigned_queue="triage",
    )
    assert config.approval == ApprovalConfig(
        probation=("alice@example.test",),
        levels=("vip", "gold"),
        min_priority=80,
        boxes=("sales@example.test",),
        reroute_on_reject=True,
    )
    assert config.wrapup_codes == (
        WrapUpCodeConfig(code="solved", label="Solved it"),
        WrapUpCodeConfig(code="called_back", label="Called back"),
    )
    assert config.approval.as_policy() == ApprovalPolicy(
        probation=frozenset({"alice@example.test"}),
        levels=frozenset({"vip", "gold"}),
        min_priority=80,
        boxes=frozenset({"sales@example.test"}),
        reroute_on_reject=True,
    )
    assert config.priority.policy_path == "postroom.core.priority:default_policy"
    box = config.incoming[0]
    assert box.no_reply_bands == ((20, 7200), (50, 1800)) and box.trash_folder == "Deleted"
    alice = config.agent("alice@example.test")
    assert alice is not None
    assert alice.skills == ("support", "sales") and alice.skill_levels == (
        ("support", 3),
        ("sales", 1),
    )
    assert alice.levels == {"support": 3, "sales": 1}
    assert alice.supervisors == ("sam@example.test",) and alice.notify_offers
    # [approval] probation makes the agent probationary too: one truth for the engine.
    assert alice.probationary


def test_an_agents_own_probationary_flag_joins_the_approval_list(tmp_path: Path) -> None:
    doc = site()
    doc["agents"][0]["probationary"] = True
    config = load_config(write(tmp_path, doc), environ={})
    assert config.approval.probation == ("alice@example.test",)


def test_a_skills_table_counts_for_the_box_skill_check(tmp_path: Path) -> None:
    doc = base()
    doc["agents"][0]["skills"] = {"support": 2, "sales": 1}
    assert errors_of(tmp_path, doc) == []
    doc["agents"][0]["skills"] = {"support": 2}
    errors = errors_of(tmp_path, doc)
    assert [(e.path, e.message) for e in errors] == [
        ("incoming[1].skills", 'no agent has skill "sales"')
    ]


def test_offer_timeout_none_waits_and_a_rule_may_route_to_the_unassigned_queue(
    tmp_path: Path,
) -> None:
    doc = site(
        routing={"offer_timeout": "none"},
        rules=[a_rule(actions=[{"action": "queue", "value": "unassigned"}])],
    )
    config = load_config(write(tmp_path, doc), environ={})
    assert config.routing.offer_timeout_seconds is None
    assert config.rules[0].actions == (Action("queue", "unassigned"),)


def test_an_empty_wrapup_list_means_no_codes(tmp_path: Path) -> None:
    path = write(tmp_path, base())
    path.write_text(path.read_text().replace("\n[server]", "wrapup_codes = []\n\n[server]", 1))
    assert load_config(path, environ={}).wrapup_codes == ()


def test_a_site_priority_policy_is_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "site_policy_for_test.py").write_text(
        "from postroom.core.priority import PriorityResult\n"
        "def flat(data):\n"
        "    return PriorityResult(7, (('flat', 7),))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    doc = site(priority={"policy": "site_policy_for_test:flat"})
    config = load_config(write(tmp_path, doc), environ={})
    assert config.priority.policy(PriorityInput(box_default=0)).value == 7


# -- broken files ---------------------------------------------------------------------------

BROKEN: list[tuple[Callable[[dict[str, Any]], None], str, str]] = [
    # rules: validated by core.rules, paths below rules[i]
    (_set("rules", {"name": "x"}), "rules", "expected an array of tables ([[rules]])"),
    (
        _set("rules", [a_rule(conditions=[{"field": "subject", "op": "like", "value": "x"}])]),
        "rules[0].conditions[0].op",
        'unknown op "like"',
    ),
    (
        _set("rules", [a_rule(conditions=[{"field": "body", "op": "regex", "value": "(a"}])]),
        "rules[0].conditions[0].value",
        "invalid regular expression",
    ),
    (
        _set("rules", [a_rule(conditions=[{"field": "sender", "op": "equals", "value": "x"}])]),
        "rules[0].conditions[0].field",
        'unknown field "sender"',
    ),
    (
        _set("rules", [a_rule(actions=[{"action": "route", "value": "x"}])]),
        "rules[0].actions[0].action",
        'unknown action "route"',
    ),
    (
        _set("rules", [a_rule(), a_rule(actions=[{"action": "queue", "value": "billing"}])]),
        "rules[1].name",
        "duplicate rule name",
    ),
    (
        _set("rules", [a_rule(actions=[{"action": "queue", "value": "billing"}])]),
        "rules[0].actions[0].value",
        'no agent has skill "billing"',
    ),
    (
        _set("rules", [a_rule(actions=[{"action": "agent", "value": "zed@example.test"}])]),
        "rules[0].actions[0].value",
        '"zed@example.test" is not an agent in this file',
    ),
    (_set("rules", [a_rule(contine=True)]), "rules[0].contine", 'did you mean "continue"'),
    # contacts
    (_set("contacts", [{"name": "Nobody"}]), "contacts[0]", "give address"),
    (
        _set("contacts", [{"address": "a@customer.test", "domain": "customer.test"}]),
        "contacts[0].domain",
        "not both",
    ),
    (_set("contacts", [{"domain": "com"}]), "contacts[0].domain", "at least two labels"),
    (_set("contacts", [{"domain": "a b.test"}]), "contacts[0].domain", "at least two labels"),
    (_set("contacts", [{"address": "erin"}]), "contacts[0].address", "email address"),
    (
        _set("contacts", [{"domain": "customer.test"}, {"domain": "Customer.TEST"}]),
        "contacts[1].domain",
        'duplicate contact "customer.test" (already contacts[0])',
    ),
    (
        _set("contacts", [{"domain": "customer.test", "priority": "high"}]),
        "contacts[0].priority",
        "expected an integer",
    ),
    (
        _set("contacts", [{"domain": "customer.test", "requires_approval": "yes"}]),
        "contacts[0].requires_approval",
        "true or false",
    ),
    (
        _set("contacts", [{"domain": "customer.test", "levle": "vip"}]),
        "contacts[0].levle",
        'did you mean "level"',
    ),
    # routing
    (_set("routing", {"offer_timeout": "soon"}), "routing.offer_timeout", "duration"),
    (_set("routing", {"follow_up_wait": 0}), "routing.follow_up_wait", "at least one second"),
    (
        _set("routing", {"no_reply_priority_raise": -1}),
        "routing.no_reply_priority_raise",
        "between 0 and",
    ),
    (_set("routing", {"unassigned_queue": ""}), "routing.unassigned_queue", "must not be empty"),
    (
        _set("routing", {"offer_timeuot": "2m"}),
        "routing.offer_timeuot",
        'did you mean "offer_timeout"',
    ),
    (_set("routing", "fast"), "routing", "expected a table"),
    # approval
    (
        _set("approval", {"probation": ["zed@example.test"]}),
        "approval.probation[0]",
        "is not an agent in this file",
    ),
    (_set("approval", {"probation": ["zed"]}), "approval.probation[0]", "email address"),
    (
        _set("approval", {"boxes": ["alice@example.test"]}),
        "approval.boxes[0]",
        "is not an incoming box",
    ),
    (_set("approval", {"levels": "vip"}), "approval.levels", "expected an array of strings"),
    (_set("approval", {"levels": ["vip", ""]}), "approval.levels[1]", "non-empty string"),
    (_set("approval", {"min_priority": "high"}), "approval.min_priority", "an integer"),
    (_set("approval", {"reroute_on_reject": 1}), "approval.reroute_on_reject", "true or false"),
    # wrap-up codes
    (_set("wrapup_codes", [{"code": "bad code!"}]), "wrapup_codes[0].code", "A-Z a-z 0-9 _ -"),
    (_set("wrapup_codes", [{"label": "Done"}]), "wrapup_codes[0].code", "required"),
    (
        _set("wrapup_codes", [{"code": "done"}, {"code": "done"}]),
        "wrapup_codes[1].code",
        "duplicate code",
    ),
    (_set("wrapup_codes", [{"code": "done", "label": 3}]), "wrapup_codes[0].label", "a string"),
    # incoming boxes
    (_set("incoming[0].no_reply_bands", "fast"), "incoming[0].no_reply_bands", "pairs"),
    (
        _set("incoming[0].no_reply_bands", [[50]]),
        "incoming[0].no_reply_bands[0]",
        "expected [min_priority, duration]",
    ),
    (
        _set("incoming[0].no_reply_bands", [[50, "soon"]]),
        "incoming[0].no_reply_bands[0][1]",
        "duration",
    ),
    (
        _set("incoming[0].no_reply_bands", [["50", "1h"]]),
        "incoming[0].no_reply_bands[0][0]",
        "an integer priority",
    ),
    (
        _set("incoming[0].no_reply_bands", [[50, "1h"], [50, "2h"]]),
        "incoming[0].no_reply_bands[1][0]",
        "already given",
    ),
    (_set("incoming[0].trash_folder", 3), "incoming[0].trash_folder", "a string"),
    # agents
    (
        _set("agents[0].skills", {"support": 0, "sales": 1}),
        "agents[0].skills.support",
        "at least 1",
    ),
    (
        _set("agents[0].skills", {"support": "high", "sales": 1}),
        "agents[0].skills.support",
        "an integer level",
    ),
    (
        _set("agents[0].supervisors", ["zed@example.test"]),
        "agents[0].supervisors[0]",
        "is not an agent in this file",
    ),
    (
        _set("agents[0].supervisors", ["alice@example.test"]),
        "agents[0].supervisors[0]",
        "cannot supervise itself",
    ),
    (
        _set("agents[1].supervisors", ["alice@example.test"]),
        "agents[1].supervisors[0]",
        "is not a supervisor",
    ),
    (_set("agents[0].supervisors", "sam@example.test"), "agents[0].supervisors", "an array"),
    (_set("agents[0].probationary", "yes"), "agents[0].probationary", "true or false"),
    (_set("agents[0].notify_offers", 1), "agents[0].notify_offers", "true or false"),
    # priority policy
    (_set("priority", {"policy": "nope"}), "priority.policy", 'expected "module:callable"'),
    (
        _set("priority", {"policy": "postroom.no_such_module:policy"}),
        "priority.policy",
        "cannot load",
    ),
    (
        _set("priority", {"policy": "postroom.core.priority:nothing"}),
        "priority.policy",
        "cannot load",
    ),
    (
        _set("priority", {"policy": "postroom.core.priority:HIGH_BONUS"}),
        "priority.policy",
        "not callable",
    ),
    (_set("priority", {"polcy": "x:y"}), "priority.polcy", 'did you mean "policy"'),
]


@pytest.mark.parametrize(
    ("mutate", "path", "fragment"), BROKEN, ids=[f"{p}:{f}" for _, p, f in BROKEN]
)
def test_a_broken_key_names_its_path(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], None], path: str, fragment: str
) -> None:
    doc = site()
    mutate(doc)
    errors = errors_of(tmp_path, doc)
    assert [e.path for e in errors] == [path], errors
    assert fragment in errors[0].message, errors[0].message


def test_every_error_in_the_new_tables_is_reported_at_once(tmp_path: Path) -> None:
    doc = site(
        rules=[a_rule(match="most")],
        contacts=[{"domain": "com"}],
        routing={"offer_timeout": "soon"},
        approval={"boxes": ["x@example.test"]},
        wrapup_codes=[{"code": "a b"}],
    )
    doc["agents"][0]["probationary"] = "yes"
    paths = sorted(e.path for e in errors_of(tmp_path, doc))
    assert paths == sorted(
        [
            "rules[0].match",
            "contacts[0].domain",
            "routing.offer_timeout",
            "approval.boxes[0]",
            "wrapup_codes[0].code",
            "agents[0].probationary",
        ]
    )
