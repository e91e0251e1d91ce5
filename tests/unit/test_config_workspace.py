"""postroom.config: box rights ([[groups]], an agent's boxes), the evaluation form and the
reports' service level."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from postroom.config import (
    DEFAULT_EVALUATION_CRITERIA,
    EvaluationCriterionConfig,
    GroupConfig,
    load_config,
)
from tests.unit.test_config import base, errors_of, write


def doc(**extra: Any) -> dict[str, Any]:
    found = copy.deepcopy(base())
    found.update(extra)
    return found


def test_without_them_nobody_is_granted_a_box_and_the_form_has_its_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, doc()), environ={})
    assert config.groups == ()
    assert all(a.boxes == () for a in config.agents)
    assert config.evaluation_criteria == DEFAULT_EVALUATION_CRITERIA
    assert config.incoming[0].service_level_seconds == 4 * 3600


def test_groups_boxes_criteria_and_service_level_are_read(tmp_path: Path) -> None:
    d = doc(
        groups=[{"name": " Support desk ", "members": ["Alice@Example.test"], "boxes": ["support@example.test"]}],
        evaluation_criteria=[
            {"code": "accuracy", "weight": 3},
            {"code": "tone", "label": "Tone", "max_score": 4, "description": "kind"},
        ],
    )
    d["agents"][0]["boxes"] = ["support@example.test"]
    d["incoming"][0]["service_level"] = "90m"
    config = load_config(write(tmp_path, d), environ={})
    assert config.groups == (
        GroupConfig(name="Support desk", members=(config.agents[0].address,), boxes=("support@example.test",)),
    )
    assert config.agents[0].boxes == ("support@example.test",)
    assert config.incoming[0].service_level_seconds == 5400
    assert config.evaluation_criteria == (
        EvaluationCriterionConfig(code="accuracy", label="Accuracy", weight=3),
        EvaluationCriterionConfig(code="tone", label="Tone", max_score=4, description="kind"),
    )


def test_rights_name_only_agents_and_incoming_boxes_of_the_file(tmp_path: Path) -> None:
    d = doc(
        groups=[
            {"name": "A", "members": ["nobody@example.test"], "boxes": ["outbound@example.test"]},
            {"name": "a"},
            {"members": [], "colour": "red"},
            {"name": "B", "boxes": ["not-an-address"]},
        ],
        evaluation_criteria=[{"code": "x y"}, {"code": "ok", "weight": 0}, {"code": "ok2", "max_score": 101},
                             {"code": "ok3"}, {"code": "ok3"}],
    )
    d["agents"][0]["boxes"] = ["elsewhere@example.test"]
    found = {(e.path, e.message.split(" (")[0]) for e in errors_of(tmp_path, d)}
    assert {
        ("agents[0].boxes[0]", '"elsewhere@example.test" is not an incoming box in this file'),
        ("groups[0].members[0]", '"nobody@example.test" is not an agent in this file'),
        ("groups[0].boxes[0]", '"outbound@example.test" is not an incoming box in this file'),
        ("groups[1].name", 'duplicate group "a"'),
        ("groups[3].boxes[0]", 'expected an email address like user@example.com, got "not-an-address"'),
        ("groups[2].name", "required"),
        ("groups[2].colour", "unknown key"),
        ("evaluation_criteria[0].code", 'expected 1-60 of A-Z a-z 0-9 _ -, got "x y"'),
        ("evaluation_criteria[1].weight", "must be between 1 and 100, got 0"),
        ("evaluation_criteria[2].max_score", "must be between 1 and 100, got 101"),
        ("evaluation_criteria[4].code", 'duplicate code "ok3"'),
    } <= found
