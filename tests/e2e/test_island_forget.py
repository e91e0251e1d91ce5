"""Forgetting a node (`postroom node forget`, docs/redundancy.md; decision 0036).

A box taken from a node that lost its lease without a clean stop is an island box of the
node that took it (claims through the sync box, one round trip per email) until that
node is back. The operator who knows it is down for good says so; the boxes return to
normal mode and their claims are released. Refused while the node's heartbeat is live.

Here the lost node is frozen (SIGSTOP), not killed: to the others it looks the same as a
node cut off from the database, and it comes back after it was forgotten (SIGCONT), the
case the operator's promise is about. Its old incarnation's writes are refused, it
registers again under a new epoch and takes its share back (a primary), and nothing is
sent twice: two `postroom engine` processes under the chaos load on PostgreSQL, judged
from the real mailboxes.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.chaos.harness import Engine, wait_for
from tests.e2e.test_failover import PLAN, NodesRun, registered_epochs, stood_down, taken
from tests.e2e.test_island_failover import island_run, mode, sync_messages

pytestmark = [
    pytest.mark.mailstack,
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="island mode needs PostgreSQL"
    ),
]

__all__ = ["island_run"]  # the fixture, shared


def detail(run: NodesRun, node_id: str) -> dict:  # type: ignore[type-arg]
    value = run.site.database.scalar(f"SELECT detail FROM store_node WHERE node_id = '{node_id}'")
    return json.loads(value) if isinstance(value, str) else dict(value or {})


def epoch(run: NodesRun, node_id: str) -> int:
    return int(run.site.database.scalar(f"SELECT epoch FROM store_node WHERE node_id = '{node_id}'"))


def test_a_forgotten_node_s_boxes_leave_island_mode_and_it_sends_nothing_twice_when_back(island_run: NodesRun) -> None:
    run = island_run
    seen: dict[str, object] = {}

    def steer(customers) -> Engine:  # type: ignore[no-untyped-def]
        primary, survivor = run.primary_then_secondary()
        with pytest.raises(RuntimeError, match="is live"):
            run.site.cli("node", "forget", "node-p")
        assert mode(run, "node-p") == "normal"
        primary.proc.send_signal(signal.SIGSTOP)
        wait_for("the survivor to hold everything", lambda: run.held_by("node-s"), timeout=60, engine=survivor)
        wait_for("the survivor in island mode", lambda: mode(run, "node-s") == "island", timeout=30, engine=survivor)
        wait_for("more mail to be taken", lambda: taken(run) >= PLAN.customers // 2, timeout=120, engine=survivor)
        assert detail(run, "node-s").get("island_boxes")

        before = epoch(run, "node-p")
        out = run.site.cli("node", "forget", "node-p")
        assert "forgotten" in out
        assert epoch(run, "node-p") == before + 1 and mode(run, "node-p") == "stopped"
        assert "already stopped" in run.site.cli("node", "forget", "node-p")
        wait_for("the survivor back in normal mode", lambda: mode(run, "node-s") == "normal", timeout=30, engine=survivor)
        assert "island_boxes" not in detail(run, "node-s") and run.held_by("node-s")
        seen["forgotten_epoch"] = before

        # It was not dead after all: it comes back, finds its registration gone, stands
        # down and registers again (a new epoch), and as the primary takes its boxes back.
        primary.proc.send_signal(signal.SIGCONT)
        wait_for("node-p to stand down", lambda: stood_down(primary.log.read_text(errors="replace")), timeout=60, engine=primary)
        wait_for("node-p to hold every box again", lambda: run.held_by("node-p"), timeout=60, engine=primary)
        assert mode(run, "node-s") == "normal"  # not an island again: node-p is live
        return primary

    run.run_with(steer)
    run.assert_exactly_once()
    log = run.site.engines[0].log.read_text(errors="replace")
    forgotten = int(seen["forgotten_epoch"])  # type: ignore[call-overload]
    assert max(registered_epochs(log, "node-p")) > forgotten + 1, registered_epochs(log, "node-p")
    # The survivor's claims went through the sync box and it released them once the
    # boxes were back in normal mode.
    messages = sync_messages(run)
    assert any(m["kind"] == "claim" for m in messages) and any(m["kind"] == "release" for m in messages), messages
    assert {m["node"] for m in messages} == {"node-s"}, messages
