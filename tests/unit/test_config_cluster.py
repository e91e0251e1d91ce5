"""postroom.config: [cluster] (the keys of branch redundancy)."""

from __future__ import annotations

from pathlib import Path

from postroom.config import ClusterConfig, load_config, valid_node_id
from tests.unit.test_config import base, errors_of, write


def test_a_node_is_a_primary_with_a_six_second_lease_unless_the_file_says_otherwise(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, base()), environ={}).cluster == ClusterConfig()
    assert ClusterConfig() == ClusterConfig(role="primary", node_lease_seconds=6)
    doc = base() | {"cluster": {"role": "secondary", "node_lease": "10s"}}
    assert load_config(write(tmp_path, doc), environ={}).cluster == ClusterConfig(role="secondary", node_lease_seconds=10)


def test_bad_cluster_keys_and_the_moved_engine_lease_name_their_key(tmp_path: Path) -> None:
    doc = base() | {"cluster": {"role": "leader", "node_lease": "1s"}, "health": {"engine_lease": "60s"}}
    found = {(e.path, e.message) for e in errors_of(tmp_path, doc)}
    assert found == {
        ("cluster.role", 'expected one of "primary", "secondary", got "leader"'),
        ("cluster.node_lease", "must be between 2 seconds and 5 minutes, got 1 s"),
        ("health.engine_lease", "moved: the node's lease is [cluster] node_lease now (docs/redundancy.md)"),
    }
    doc["cluster"] = {"node_lease": "6m", "roll": "primary"}
    assert {e.path: e.message for e in errors_of(tmp_path, doc)} == {
        "cluster.node_lease": "must be between 2 seconds and 5 minutes, got 360 s",
        "cluster.roll": 'unknown key (did you mean "role"?)',
        "health.engine_lease": "moved: the node's lease is [cluster] node_lease now (docs/redundancy.md)",
    }


def test_valid_node_id() -> None:
    assert valid_node_id("node-1") and valid_node_id("n" * 64)
    assert not valid_node_id("node 1") and not valid_node_id("n" * 65) and not valid_node_id("")
