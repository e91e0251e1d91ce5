"""The cut-off node as an independent master on its local store (issue 10, decision 0045).

As in test_island_local: two `postroom engine` processes on one PostgreSQL under the
chaos load (customers, simulated agent clients answering what reaches their mailboxes),
island mode on; the primary reaches PostgreSQL through a loopback relay the test cuts.
Here every customer writes only once the primary works on its local store, so each mail
is raced for in the sync box by both sides. While the link is still cut, at least one
email the primary won must have been routed, forwarded to its agent AND answered by the
primary alone: its local store says so (forward and reply sent, the claim its own), the
agent's mailbox holds the forward and the customer's the reply, all before the heal.
Healed, the merge carries that state: every customer exactly one auto-response and one
reply, one record per interaction (the island's in the state it reached, with its agent),
claim fields filled, no reply in the dead box and none left waiting.

On main (before decision 0045) this fails at "the primary to forward and answer an email
on its own": the cut-off node sent auto-responses only.

PostgreSQL only (island mode is refused on SQLite: one node only).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import uuid

import pytest

from tests.chaos.harness import Engine, _msgid, wait_for
from tests.e2e.test_failover import PLAN, taken
from tests.e2e.test_island_failover import mode
from tests.e2e.test_island_local import LinkedRun, linked_run  # noqa: F401 (the fixture)

pytestmark = [
    pytest.mark.mailstack,
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="island mode needs PostgreSQL"
    ),
]


def island_answered(run: LinkedRun) -> list[dict[str, str]]:
    """The emails the primary won, forwarded and answered on its local store: the
    interaction, its customer and agent, and the Message-IDs of the forward and reply."""
    path = run.site.workdir / "state-node-p" / "island-node-p.sqlite3"
    if not path.exists():
        return []
    query = """
        SELECT i.guid, i.customer, a.address AS agent, f.message_id AS forward, r.message_id AS reply
        FROM store_interaction i
        JOIN store_agent a ON a.id = i.agent_id
        JOIN store_outgoing f ON f.interaction_id = i.id AND f.kind = 'forward' AND f.state = 'sent'
        JOIN store_outgoing r ON r.interaction_id = i.id AND r.kind = 'reply' AND r.state = 'sent'
        WHERE i.claim_node = 'node-p'
    """
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
            db.row_factory = sqlite3.Row
            found = [dict(row) for row in db.execute(query)]
    except sqlite3.OperationalError:  # not migrated yet
        return []
    for one in found:  # SQLite keeps a UUID as 32 hex digits
        one["guid"] = str(uuid.UUID(one["guid"]))
    return found


def island_watching(engine: Engine, boxes: list[str]) -> bool:
    """Whether `engine` has gone to its local store and, since, watches every one of `boxes`."""
    text = engine.log.read_text(errors="replace")
    _before, island, after = text.partition("island mode on the local store")
    return bool(island) and all(f"watching {box} (" in after for box in boxes)


def message_ids(run: LinkedRun, who: str) -> set[str]:
    return {_msgid(h["Message-ID"]) for h in run.site.headers(who)}


def test_the_cut_off_node_routes_forwards_and_answers_on_its_own(linked_run: LinkedRun) -> None:  # noqa: F811
    run = linked_run
    before_heal: list[dict[str, str]] = []

    def steer(customers) -> Engine:  # type: ignore[no-untyped-def]
        # Nobody writes before the primary works on its local store: every email is one
        # both sides take in and claim.
        customers.hold_after = 0
        primary = run.start_node("node-p", "primary")
        wait_for("the primary to hold every box", lambda: run.held_by("node-p"), timeout=60, engine=primary)
        secondary = run.start_node("node-s", "secondary")
        run.link.down()
        wait_for("the secondary to hold everything", lambda: run.held_by("node-s"), timeout=60, engine=secondary)
        wait_for("the secondary in island mode", lambda: mode(run, "node-s") == "island", timeout=30, engine=secondary)
        # On its local store AND watching the customers' boxes there: the log line of
        # island mode comes before the island's watchers start (the supervisor's next
        # round). Mail written in between was the secondary's alone, which had watched all
        # along: under load the primary lost every race (stop 22, "Noticed").
        wait_for(
            "the primary to watch the customers' boxes on its local store",
            lambda: island_watching(primary, [run.site.address(b) for b in ("support", "sales")]),
            timeout=60, engine=primary,
        )
        customers.resume.set()
        # Still cut: the primary routes on the agents it last saw ready, forwards, takes
        # the agent's reply from the outbound box and sends it, all on its own.
        wait_for("the primary to forward and answer an email on its own", lambda: bool(island_answered(run)),
                 timeout=180, engine=primary)
        done = island_answered(run)
        # The mailboxes agree, read while the link is still cut.
        for one in done:
            assert one["forward"] in message_ids(run, one["agent"]), one
            assert one["reply"] in message_ids(run, one["customer"]), one
        before_heal.extend(done)
        # The secondary, holding the outbound box, read that reply too: its token names
        # an interaction only the primary's local store knows, so it left it waiting
        # rather than dead-box it (and read it again after the merge, below).
        wait_for("the secondary to leave the primary's reply for later",
                 lambda: "left for later" in secondary.log.read_text(errors="replace"), timeout=60, engine=secondary)
        customers.join()
        wait_for("all mail to be taken", lambda: taken(run) == PLAN.customers, timeout=120, engine=secondary)
        run.link.up()
        wait_for("the merge", lambda: "island merge:" in primary.log.read_text(errors="replace"), timeout=60, engine=primary)
        wait_for("both nodes in normal mode", lambda: mode(run, "node-p") == mode(run, "node-s") == "normal",
                 timeout=60, engine=secondary)
        return secondary

    run.run_with(steer)
    print(f"forwarded and answered by the primary before the heal: {len(before_heal)}")
    assert before_heal
    # Every customer exactly one auto-response and one reply; every interaction closed.
    run.assert_exactly_once()
    db = run.site.database
    rows = db.rows("SELECT guid, mailbox_id, message_id, node_id, claim_node, claim_time, agent_id, outcome "
                   "FROM store_interaction")
    assert len(rows) == PLAN.customers, rows
    assert len({(r["mailbox_id"], r["message_id"]) for r in rows}) == PLAN.customers
    assert not [r for r in rows if r["outcome"] == "claimed_elsewhere"], rows
    claimed = [r for r in rows if r["claim_node"]]
    assert claimed and all(r["claim_node"] in {"node-p", "node-s"} and r["claim_time"] for r in claimed), claimed
    # What the island answered arrived in that state: one record each, the primary's
    # claim, the island's agent, replied; its reply the one the customer got.
    agents = {r["id"]: r["address"] for r in db.rows("SELECT id, address FROM store_agent")}
    for one in before_heal:
        # Its own GUID (inserted) or the shared record's of the same email, which names the
        # island's GUID in its merge event (the tokens the island gave out still match).
        into = {str(r["guid"]) for r in db.rows(
            "SELECT i.guid FROM store_journalevent j JOIN store_interaction i ON i.id = j.interaction_id "
            "WHERE j.kind = 'island_merged' AND j.detail->>'island_guid' = %s", (one["guid"],),
        )}
        merged = [r for r in rows if str(r["guid"]) in into | {one["guid"]}]
        assert len(merged) == 1, (one, merged)
        (record,) = merged
        assert record["claim_node"] == "node-p" and record["outcome"] == "replied", record
        assert agents[record["agent_id"]] == one["agent"], record
        assert run.verdict.replies[one["customer"]] == [one["reply"]]
    # No reply in the dead box, none left waiting: the secondary left the island's
    # replies alone while the primary was away, and read them again after the merge.
    ledger = db.rows("SELECT uid, outcome, reason FROM store_outboundmessage WHERE outcome != 'accepted'")
    assert not ledger, ledger
    assert run.site.count("dead") == 0
