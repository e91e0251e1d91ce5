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


# -- island mode (decision 0036) ----------------------------------------------------------------

PG = {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postroom"}


def test_island_mode_is_off_unless_a_sync_address_is_given(tmp_path: Path) -> None:
    cluster = load_config(write(tmp_path, base()), environ=PG).cluster
    assert not cluster.island
    assert (cluster.island_after_seconds, cluster.claim_expiry_seconds, cluster.claim_reassert_seconds) == (
        30, 3600, 1200  # the patent's 60 minutes of expiry, re-asserted three times within
    )
    doc = base() | {"cluster": {"sync_address": "Sync@Example.test", "sync_password": "pw",
                                "island_after": "10s", "claim_expiry": "1m", "claim_reassert": "20s"}}
    cluster = load_config(write(tmp_path, doc), environ=PG).cluster
    assert cluster.island and cluster.sync_address == "sync@example.test" and cluster.sync_password == "pw"
    assert (cluster.island_after_seconds, cluster.claim_expiry_seconds, cluster.claim_reassert_seconds) == (10, 60, 20)


def test_island_keys_are_refused_on_sqlite_and_without_a_sync_address(tmp_path: Path) -> None:
    doc = base() | {"cluster": {"sync_address": "sync@example.test", "sync_password": "pw"}}
    for environ in ({}, {"DATABASE_URL": "sqlite:///tmp/x.sqlite3"}):
        assert {e.path: e.message for e in errors_of(tmp_path, doc, environ=environ)} == {
            "cluster.sync_address": "island mode needs nodes sharing a PostgreSQL database "
            "(DATABASE_URL=postgres://...); this site runs on SQLite",
        }
    doc = base() | {"cluster": {"claim_expiry": "2h"}}
    assert [e.path for e in errors_of(tmp_path, doc, environ=PG)] == ["cluster.sync_address"]
    doc = base() | {"cluster": {"sync_address": "sync@example.test"}}
    assert [e.path for e in errors_of(tmp_path, doc, environ=PG)] == ["cluster.sync_password"]


def test_island_times_have_sane_bounds_and_reassert_fits_twice_in_an_expiry(tmp_path: Path) -> None:
    cluster = {"sync_address": "sync@example.test", "sync_password": "pw"}
    doc = base() | {"cluster": cluster | {"island_after": "1s", "claim_expiry": "2d", "claim_reassert": 0}}
    assert {e.path: e.message for e in errors_of(tmp_path, doc, environ=PG)} == {
        "cluster.island_after": "must be between 5 s and 3600 s, got 1 s",
        "cluster.claim_expiry": "must be between 10 s and 86400 s, got 172800 s",
        "cluster.claim_reassert": "must be at least one second, got 0",
    }
    doc = base() | {"cluster": cluster | {"claim_expiry": "1m", "claim_reassert": "31s"}}
    assert {e.path: e.message for e in errors_of(tmp_path, doc, environ=PG)} == {
        "cluster.claim_reassert": "must be at most half of claim_expiry (30 s), got 31 s",
    }
