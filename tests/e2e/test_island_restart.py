"""A node killed while it works on its local store loses nothing (issue 10, decision 0036;
engine/localstore.py, the start-up of engine/runtime.py, store/islandmerge.py).

The set-up of test_island_local: two `postroom engine` processes on one PostgreSQL under
the chaos load, island mode on; the primary reaches PostgreSQL through a loopback TCP
relay (postroom/devstack/netproxy.py) that the test closes. The primary islands on its
local SQLite store, wins claims in the sync box and sends auto-responses there; the
secondary, on PostgreSQL, closes what the primary won as claimed elsewhere. Then the
primary is SIGKILLed (by pid) while on its local store, the link is healed and the
primary is started again with the same node id and state directory. Its local store must
survive the kill and be merged before it registers, as a live return would: every
customer exactly one auto-response and one reply, one record per interaction with the
claim fields filled, nothing left closed as claimed elsewhere, and the claims it won on
the island released in the sync box by the restarted process.

PostgreSQL only (island mode is refused on SQLite: one node only).
"""

from __future__ import annotations

import os
import signal
from datetime import datetime

import pytest

from tests.chaos.harness import Engine, wait_for
from tests.e2e.test_failover import PLAN, taken
from tests.e2e.test_island_failover import mode, sync_messages
from tests.e2e.test_island_local import LinkedRun, linked_run, local_sent

pytestmark = [
    pytest.mark.mailstack,
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="island mode needs PostgreSQL"
    ),
]

__all__ = ["linked_run"]  # the fixture, shared with test_island_local


def lost_to_the_primary(run: LinkedRun) -> int:
    """Records the secondary closed because the cut-off primary won their claims."""
    return int(
        run.site.database.scalar(
            "SELECT COUNT(*) FROM store_interaction WHERE outcome = 'claimed_elsewhere' AND claim_node = 'node-p'"
        )
        or 0
    )


def test_a_node_killed_on_its_local_store_merges_it_when_it_starts_again(linked_run: LinkedRun) -> None:
    run = linked_run
    seen: dict[str, object] = {}

    def steer(customers) -> Engine:  # type: ignore[no-untyped-def]
        customers.hold_after = PLAN.customers // 2
        primary = run.start_node("node-p", "primary")
        wait_for("the primary to hold every box", lambda: run.held_by("node-p"), timeout=60, engine=primary)
        secondary = run.start_node("node-s", "secondary")
        run.link.down()
        wait_for("the secondary to hold everything", lambda: run.held_by("node-s"), timeout=60, engine=secondary)
        wait_for("the secondary in island mode", lambda: mode(run, "node-s") == "island", timeout=30, engine=secondary)
        wait_for(
            "the primary on its local store",
            lambda: "island mode on the local store" in primary.log.read_text(errors="replace"),
            timeout=60, engine=primary,
        )
        customers.resume.set()
        customers.join()
        wait_for("all mail to be taken", lambda: taken(run) == PLAN.customers, timeout=120, engine=secondary)
        # The case the kill must not lose: mail the primary won and answered on its own,
        # which the secondary closed as claimed elsewhere.
        wait_for("the primary to send on its local store", lambda: local_sent(run) > 0, timeout=90, engine=primary)
        wait_for("the secondary to close what the primary won", lambda: lost_to_the_primary(run) > 0,
                 timeout=90, engine=secondary)
        seen["island_sent"] = local_sent(run)
        seen["lost_to_the_primary"] = lost_to_the_primary(run)
        primary.stop(signal.SIGKILL)
        run.link.up()
        seen["restarted_at"] = datetime.now().astimezone()
        restarted = run.start_node("node-p", "primary")
        wait_for("the restarted primary to be live", lambda: mode(run, "node-p") == "normal"
                 and "node-p" in run.box_holders(), timeout=90, engine=restarted)
        wait_for("both nodes in normal mode", lambda: mode(run, "node-s") == "normal", timeout=60, engine=secondary)
        return restarted

    run.run_with(steer)
    print(f"sent on the local store before the kill: {seen.get('island_sent')}; "
          f"closed by the secondary as claimed elsewhere: {seen.get('lost_to_the_primary')}")
    # Judged from the real mailboxes: those closed as claimed elsewhere were answered too.
    run.assert_exactly_once()
    rows = run.site.database.rows(
        "SELECT mailbox_id, message_id, node_id, claim_node, claim_time, outcome FROM store_interaction"
    )
    assert len(rows) == PLAN.customers, rows
    assert len({(r["mailbox_id"], r["message_id"]) for r in rows}) == PLAN.customers
    # The restarted primary's merge reopened what it had won (and the secondary closed).
    assert not [r for r in rows if r["outcome"] == "claimed_elsewhere"], rows
    reopened = run.site.database.scalar("SELECT COUNT(*) FROM store_journalevent WHERE kind = 'claim_returned'")
    assert reopened, "nothing reopened by a merge"
    mine = [r for r in rows if r["claim_node"] == "node-p"]
    assert mine and all(r["node_id"] == "node-p" and r["claim_time"] for r in mine), mine
    # The restarted process released the claims its killed island had won (rather than
    # leaving them to lapse after claim_expiry).
    restarted_at = seen["restarted_at"]
    assert isinstance(restarted_at, datetime)
    released = [
        m for m in sync_messages(run)
        if m["node"] == "node-p" and m["kind"] == "release" and datetime.fromisoformat(m["local_time"]) >= restarted_at
    ]
    assert released, "the restarted primary released none of its island claims"
