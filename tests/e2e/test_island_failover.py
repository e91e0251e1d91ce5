"""Island mode on the nodes still on PostgreSQL (issue 10, decision 0036; engine/claims.py).

With `[cluster] sync_address` set, a node that takes a mailbox from a node that lost it
without a clean stop (here: SIGKILL, as a node cut off from the database looks to the
others) works that box in island mode until that node is live again: it claims every
unclosed interaction's email in the sync box and sends nothing for it before the claim is
won. Two `postroom engine` processes under the chaos load (tests/chaos/harness.py), judged
from the real mailboxes: every customer exactly one auto-response and one reply; the
claims are in the real sync box; the interactions the survivor carried in island mode
have their claim fields filled; when the killed node is back, the survivor releases its
claims and is back in normal mode.

PostgreSQL only (island mode is refused on SQLite: one node only).
"""

from __future__ import annotations

import json
import os
import signal
from email import message_from_bytes
from email import policy as email_policy

import pytest

from tests.chaos.harness import Engine, wait_for
from tests.e2e.databases import fresh_database
from tests.e2e.test_failover import PLAN, NodesRun, taken

pytestmark = [
    pytest.mark.mailstack,
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="island mode needs PostgreSQL"
    ),
]


@pytest.fixture
def island_run(mailstack, new_user, tmp_path):
    database = fresh_database(tmp_path, "island")
    try:
        run = NodesRun(mailstack, new_user, tmp_path, database)
        sync, password = new_user("sync")
        run.site.users["sync"] = (sync, password)
        text = run.site.config.read_text()
        island = f'sync_address = "{sync}"\nsync_password = "{password}"\nclaim_expiry = "1m"\nclaim_reassert = "10s"\n'
        run.site.config.write_text(text.replace('node_lease = "4s"\n', 'node_lease = "4s"\n' + island, 1))
        yield run
    finally:
        database.drop()


def mode(run: NodesRun, node_id: str) -> str:
    return str(run.site.database.scalar(f"SELECT mode FROM store_node WHERE node_id = '{node_id}'") or "")


def sync_messages(run: NodesRun) -> list[dict]:
    """The sync box's messages, as the nodes wrote them (expunged ones aside)."""
    client = run.site.imap("sync")
    try:
        client.select_folder("INBOX", readonly=True)
        uids = client.search(["ALL"])
        raw = [data[b"BODY[]"] for data in client.fetch(uids, ["BODY.PEEK[]"]).values()] if uids else []
    finally:
        client.logout()
    return [json.loads(message_from_bytes(r, policy=email_policy.default).get_content()) for r in raw]


def test_the_survivor_works_the_lost_nodes_boxes_in_island_mode_until_it_is_back(island_run: NodesRun) -> None:
    run = island_run
    seen: dict[str, object] = {}

    def steer(customers) -> Engine:  # type: ignore[no-untyped-def]
        primary, survivor = run.primary_then_secondary()
        assert mode(run, "node-s") == "normal"
        primary.stop(signal.SIGKILL)
        wait_for("the survivor to hold everything", lambda: run.held_by("node-s"), timeout=60, engine=survivor)
        wait_for("the survivor in island mode", lambda: mode(run, "node-s") == "island", timeout=30, engine=survivor)
        wait_for("more mail to be taken", lambda: taken(run) >= PLAN.customers // 2, timeout=120, engine=survivor)
        seen["island_detail"] = run.site.database.scalar("SELECT detail FROM store_node WHERE node_id = 'node-s'")
        back = run.start_node("node-p", "primary")
        wait_for("the survivor back in normal mode", lambda: mode(run, "node-s") == "normal", timeout=60, engine=survivor)
        # A primary is live again: the secondary gives everything back to it (fig. 4).
        wait_for("the primary holding every box again", lambda: run.held_by("node-p"), timeout=60, engine=back)
        return back

    run.run_with(steer)
    run.assert_exactly_once()
    detail = seen["island_detail"]
    detail = json.loads(detail) if isinstance(detail, str) else detail
    assert detail["island_boxes"] and isinstance(detail["claims"], list), detail  # type: ignore[index]
    # Claims went through the real sync box, by the survivor only (the killed node never
    # claims: it was on the database), and every one it won is on its interaction.
    messages = sync_messages(run)
    claims = [m for m in messages if m["kind"] == "claim"]
    assert claims and {m["node"] for m in messages} == {"node-s"}, messages
    claimed = run.site.database.rows("SELECT claim_node, claim_time, raw_sha256 FROM store_interaction WHERE claim_node <> ''")
    assert claimed and {r["claim_node"] for r in claimed} == {"node-s"} and all(r["claim_time"] for r in claimed)
    assert {r["raw_sha256"] for r in claimed} <= {m["email"]["sha256"] for m in claims}
    # Back in normal mode (or done with the email), the survivor released what it held.
    assert any(m["kind"] == "release" for m in messages), messages
