"""Starting nodes (decision 0030): one process per node id; SQLite holds one node.

A second `postroom engine` under a node id that is running refuses to start (exit 3,
naming the holder); a node SIGKILLed and started again on the same host takes over at
once (the holder's pid is gone). On SQLite a second node under another id refuses too
(one node per SQLite database, as one engine per database before); on PostgreSQL it
joins (tests/e2e/test_nodes.py). An engine whose node id was taken over by another
process stops.
"""

from __future__ import annotations

import signal
import time

import pytest
from django.utils import timezone

from tests.e2e.enginerun import make_deployment, wait_until

pytestmark = pytest.mark.mailstack


@pytest.fixture
def deployment(mailstack, new_user, tmp_path):
    dep = make_deployment(mailstack, new_user, tmp_path)
    yield dep
    dep.cleanup()


def test_a_node_id_runs_once_and_a_killed_node_is_replaced_at_once(deployment) -> None:
    dep = deployment
    dep.load()
    first = dep.start_engine()
    wait_until("the first node to watch its boxes", lambda: first.log_has("watching"), timeout=30, engine=first)

    second = dep.start_engine()  # the same configuration: the same node id
    wait_until("the second process to give up", lambda: second.poll() is not None, timeout=30)
    assert second.poll() == 3, second.tail()
    assert "node 'test-node' is already running" in second.tail()
    if dep.db.kind != "postgres":
        other = dep.start_engine(node_id="other-node")
        wait_until("the other node to give up", lambda: other.poll() is not None, timeout=30)
        assert other.poll() == 3, other.tail()
        assert "SQLite holds one node only" in other.tail()
    assert first.poll() is None  # the first one runs on

    first.stop(signal.SIGKILL)
    third = dep.start_engine()  # in place of the killed one, at once
    wait_until("the replacement to watch its boxes", lambda: third.log_has("watching"), timeout=30, engine=third)
    assert third.stop(signal.SIGTERM) == 0, third.tail()
    node = dep.rows("SELECT * FROM store_node WHERE node_id = ?", ("test-node",))[0]
    assert node["epoch"] == 2 and node["mode"] == "stopped"


@pytest.mark.django_db(transaction=True)
def test_an_engine_whose_node_id_was_taken_over_stops(center) -> None:
    from postroom.store.models import Node

    center.engine.start()
    try:
        wait_until("the node to hold its boxes", lambda: bool(center.engine.membership.boxes()), timeout=30)
        # Another process registered under this node id (as a restart elsewhere would).
        Node.objects.filter(node_id="test-node").update(pid=1, hostname="elsewhere.example", epoch=99, lease_until=timezone.now())
        deadline = time.monotonic() + 30
        while not center.engine.stopping.is_set() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert center.engine.stopping.is_set()
        assert "taken over by pid 1 on elsewhere.example" in (center.engine.failure or "")
    finally:
        center.engine.stop()
