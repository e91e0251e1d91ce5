"""engine/localstore.py `left_unmerged`, on real SQLite files (decision 0036, "A node
killed while on its local store"): at start-up, a local store this node went island on
(its own row there) is kept for the merge; one merely prepared, or whose preparing was
cut short, is not; one that cannot be read is kept aside, never deleted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connections
from django.utils import timezone

from postroom.config import load_config
from postroom.engine.localstore import LOCAL, LocalStore
from postroom.store.models import Node

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.toml"


@pytest.fixture
def store(tmp_path: Path, django_db_blocker) -> Iterator[LocalStore]:  # type: ignore[no-untyped-def]
    """A local store in `tmp_path` (the alias the engine names is removed afterwards)."""
    with django_db_blocker.unblock():
        try:
            yield LocalStore("node-x", load_config(DEMO, environ={}), state_dir=tmp_path)
        finally:
            if LOCAL in connections.settings:
                connections[LOCAL].close()
                del connections[LOCAL]
                del connections.settings[LOCAL]


def test_a_store_the_node_went_island_on_is_kept_one_merely_prepared_is_not(store: LocalStore) -> None:
    store.prepare()
    assert not store.left_unmerged()  # prepared, never worked on: prepared afresh

    # What `_go_island` writes before any thread works on the file: the node's own row.
    now = timezone.now()
    Node.objects.using(LOCAL).create(
        node_id="node-x", hostname="h", pid=1, started_at=now, heartbeat_at=now, lease_until=now
    )
    connections[LOCAL].close()
    assert store.left_unmerged()
    assert Node.objects.using(LOCAL).filter(node_id="node-x").exists()  # kept, readable for the merge


def test_a_store_whose_preparing_was_cut_short_holds_nothing(store: LocalStore) -> None:
    store.path.write_bytes(b"")  # killed before the first migration committed
    assert not store.left_unmerged()


def test_an_unreadable_store_is_kept_aside_not_deleted(store: LocalStore) -> None:
    garbage = b"not a database" * 100
    store.path.write_bytes(garbage)

    assert not store.left_unmerged()

    assert not store.path.exists()
    (aside,) = store.path.parent.glob(f"{store.path.name}.unreadable-*")
    assert aside.read_bytes() == garbage
