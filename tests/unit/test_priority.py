"""postroom.core.priority: the default policy, its reasons, and the importance headers."""

from __future__ import annotations

import pytest

from postroom.core.priority import (
    PriorityInput,
    PriorityPolicy,
    PriorityResult,
    default_policy,
    importance,
)


def test_the_box_default_alone() -> None:
    result = default_policy(PriorityInput(box_default=10))
    assert result == PriorityResult(10, (("box default", 10),))


@pytest.mark.parametrize(
    ("data", "value", "reasons"),
    [
        (
            PriorityInput(box_default=0, contact_level="vip", contact_priority=50),
            50,
            (("box default", 0), ("contact vip", 50)),
        ),
        (
            PriorityInput(box_default=5, importance_header="high"),
            15,
            (("box default", 5), ("marked important", 10)),
        ),
        (
            PriorityInput(box_default=5, importance_header="low"),
            0,
            (("box default", 5), ("marked unimportant", -5)),
        ),
        (PriorityInput(box_default=5, importance_header="normal"), 5, (("box default", 5),)),
        (
            # A contact known by level only still shows in the reasons.
            PriorityInput(box_default=0, contact_level="standard"),
            0,
            (("box default", 0), ("contact standard", 0)),
        ),
        (
            PriorityInput(
                box_default=10,
                contact_level="gold",
                contact_priority=20,
                importance_header="high",
                rules_add=5,
            ),
            45,
            (("box default", 10), ("contact gold", 20), ("marked important", 10), ("rules add", 5)),
        ),
    ],
)
def test_the_default_policy_adds_up(
    data: PriorityInput, value: int, reasons: tuple[tuple[str, int], ...]
) -> None:
    assert default_policy(data) == PriorityResult(value, reasons)


def test_a_rule_setting_the_priority_overrides_everything_before_then_adds() -> None:
    data = PriorityInput(
        box_default=10,
        contact_level="vip",
        contact_priority=50,
        importance_header="high",
        rules_set=5,
        rules_add=3,
    )
    result = default_policy(data)
    assert result.value == 8
    assert result.reasons == (
        ("box default", 10),
        ("contact vip", 50),
        ("marked important", 10),
        ("rule sets priority 5", -65),
        ("rules add", 3),
    )


@pytest.mark.parametrize(
    "data",
    [
        PriorityInput(box_default=0),
        PriorityInput(box_default=-3, contact_priority=7, importance_header="low", rules_add=-2),
        PriorityInput(box_default=4, contact_level="vip", contact_priority=50, rules_set=0),
    ],
)
def test_the_reasons_always_sum_to_the_value(data: PriorityInput) -> None:
    result = default_policy(data)
    assert sum(n for _, n in result.reasons) == result.value


def test_a_site_policy_is_any_callable_of_the_same_shape() -> None:
    def flat(data: PriorityInput) -> PriorityResult:
        return PriorityResult(1, (("flat", 1),))

    policy: PriorityPolicy = flat
    assert policy(PriorityInput(box_default=99)).value == 1


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"importance": ["High"]}, "high"),
        ({"importance": [" low "]}, "low"),
        ({"importance": ["normal"]}, "normal"),
        ({"importance": ["whatever"]}, None),
        ({"x-priority": ["1 (Highest)"]}, "high"),
        ({"x-priority": ["2"]}, "high"),
        ({"x-priority": ["3"]}, "normal"),
        ({"x-priority": ["4"]}, "low"),
        ({"x-priority": ["5 (Lowest)"]}, "low"),
        ({"x-priority": ["9"]}, None),
        ({"priority": ["urgent"]}, "high"),
        ({"priority": ["non-urgent"]}, "low"),
        ({"priority": ["Normal"]}, "normal"),
        # Importance decides before X-Priority, X-Priority before Priority.
        ({"importance": ["low"], "x-priority": ["1"]}, "low"),
        ({"x-priority": ["5"], "priority": ["urgent"]}, "low"),
        # An unreadable one does not hide a readable one further down.
        ({"importance": ["???"], "priority": ["urgent"]}, "high"),
    ],
)
def test_importance_from_headers(headers: dict[str, list[str]], expected: str | None) -> None:
    assert importance(headers) == expected
