"""postroom.config as pydantic models: what pydantic would do by itself, and must not."""

from __future__ import annotations

from pathlib import Path

from postroom.config import AgentConfig, load_config
from tests.unit.test_config import base, errors_of, write


def test_a_broken_incoming_box_is_not_also_no_box_at_all(tmp_path: Path) -> None:
    doc = base()
    doc["incoming"] = doc["incoming"][:1]
    doc["incoming"][0]["no_reply_time"] = "soon"
    assert [e.path for e in errors_of(tmp_path, doc)] == ["incoming[0].no_reply_time"]


def test_an_attribute_name_is_not_a_second_spelling_of_a_key(tmp_path: Path) -> None:
    doc = base()
    doc["incoming"][0]["no_reply_seconds"] = 60
    errors = errors_of(tmp_path, doc)
    assert [e.path for e in errors] == ["incoming[0].no_reply_seconds"]
    assert errors[0].message.startswith("unknown key")


def test_python_code_builds_tables_by_attribute_name_and_the_models_are_frozen(tmp_path: Path) -> None:
    agent = AgentConfig(name="A", address="A@Example.test", password=None)
    assert agent.address == "a@example.test" and agent.password is None and agent.levels == {}
    config = load_config(write(tmp_path, base()), environ={})
    try:
        config.node_id = "other"  # type: ignore[misc]
    except Exception as e:  # noqa: BLE001 - pydantic's ValidationError for a frozen instance
        assert "frozen" in str(e)
    else:
        raise AssertionError("a configuration must not change under the engine's threads")
    moved = config.model_copy(update={"node_id": "node-2"})
    assert moved.node_id == "node-2" and moved.source == config.source and moved.agents == config.agents


def test_a_table_with_an_error_of_its_own_still_counts_across_tables(tmp_path: Path) -> None:
    doc = base()
    doc["agents"][0] |= {"address": "Support@example.test", "capacity": 0}  # two problems
    doc["incoming"][1] |= {"skills": ["billing"], "default_priority": 1.5}  # two problems
    assert sorted((e.path, e.message) for e in errors_of(tmp_path, doc)) == [
        ("agents[0].address", 'duplicate address "support@example.test" (already used by incoming[0].address)'),
        ("agents[0].capacity", "must be at least 1, got 0"),
        ("incoming[1].default_priority", "expected an integer, got 1.5"),
        ("incoming[1].skills", 'no agent has skill "billing"'),
    ]
