"""The cut-off node's own island mode (issue 10, decision 0036; engine/localstore.py,
store/islandmerge.py).

Two `postroom engine` processes on one PostgreSQL under the chaos load (customers and
simulated agents replying), island mode on (`[cluster] sync_address`). The primary
reaches PostgreSQL through a loopback TCP relay (postroom/devstack/netproxy.py) that the
test closes while customer mail flows, then reopens: the primary's lease runs out, the
secondary takes its boxes in island mode, and after `island_after` the primary works on
its local SQLite store, claiming every email it reads in the sync box before it sends
anything. Healed, it merges its records into PostgreSQL and registers again. Judged from
the real mailboxes: every customer exactly one auto-response and one reply; then one
record per interaction, each with its node id, the claims of both sides in the sync box,
and the claim fields of the interactions claimed in island mode filled.

PostgreSQL only (island mode is refused on SQLite: one node only).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
from urllib.parse import urlparse

import pytest

from postroom.devstack.netproxy import TcpProxy
from tests.chaos.harness import Engine, wait_for
from tests.e2e.databases import fresh_database
from tests.e2e.test_failover import PLAN, NodesRun, taken
from tests.e2e.test_island_failover import mode, sync_messages

pytestmark = [
    pytest.mark.mailstack,
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="island mode needs PostgreSQL"
    ),
]


class LinkedRun(NodesRun):
    """NodesRun whose node `node-p` reaches PostgreSQL through `link`, a relay the test
    can cut and heal."""

    link: TcpProxy

    def start_node(self, node_id: str, role: str = "primary", pause_at: str | None = None) -> Engine:
        if node_id != "node-p":
            return super().start_node(node_id, role, pause_at)
        site = self.site
        state = site.workdir / f"state-{node_id}"
        state.mkdir(exist_ok=True)
        url = urlparse(site.database.url)
        linked = url._replace(netloc=f"{url.netloc.rsplit('@', 1)[0]}@127.0.0.1:{self.link.port}").geturl()
        env = {**site.env(), "POSTROOM_STATE_DIR": str(state), "DATABASE_URL": linked}
        cmd = [sys.executable, "-m", "postroom.cli", "engine", str(site.config), "--node-id", node_id, "--role", role]
        engine = Engine(cmd, env, site.workdir, site.workdir / f"{node_id}-{len(site.engines)}.log")
        site.engines.append(engine)
        return engine


def local_sent(run: LinkedRun) -> int:
    """Mail the primary sent while it worked on its local store (its SQLite file)."""
    path = run.site.workdir / "state-node-p" / "island-node-p.sqlite3"
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
        return int(db.execute("SELECT COUNT(*) FROM store_outgoing WHERE state = 'sent'").fetchone()[0])


@pytest.fixture
def linked_run(mailstack, new_user, tmp_path):
    database = fresh_database(tmp_path, "islandlocal")
    link = TcpProxy(urlparse(database.url).port or 5432)
    try:
        run = LinkedRun(mailstack, new_user, tmp_path, database)
        run.link = link
        sync, password = new_user("sync")
        run.site.users["sync"] = (sync, password)
        text = run.site.config.read_text()
        island = (
            f'sync_address = "{sync}"\nsync_password = "{password}"\nisland_after = "5s"\n'
            'claim_expiry = "1m"\nclaim_reassert = "10s"\n'
        )
        run.site.config.write_text(text.replace('node_lease = "4s"\n', 'node_lease = "4s"\n' + island, 1))
        yield run
    finally:
        link.stop()
        database.drop()


def test_the_cut_off_node_works_on_its_own_store_and_merges_back(linked_run: LinkedRun) -> None:
    run = linked_run
    seen: dict[str, int] = {}

    def steer(customers) -> Engine:  # type: ignore[no-untyped-def]
        # Half the customers write only once the primary works on its local store: their
        # mail is raced for by both islands, so both claim in the sync box. (Without the
        # hold, on a loaded machine the secondary could claim every email before the
        # primary's island read one, and the primary would have nothing to claim.)
        customers.hold_after = PLAN.customers // 2
        primary = run.start_node("node-p", "primary")
        wait_for("the primary to hold every box", lambda: run.held_by("node-p"), timeout=60, engine=primary)
        # Cut while most customers are still to write: both sides take that mail in.
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
        wait_for(
            "the primary to claim in the sync box",
            lambda: any(m["node"] == "node-p" and m["kind"] == "claim" for m in sync_messages(run)),
            timeout=90, engine=primary,
        )
        customers.join()
        wait_for("all mail to be taken", lambda: taken(run) == PLAN.customers, timeout=120, engine=secondary)
        seen["island_sent"] = local_sent(run)
        run.link.up()
        wait_for("the merge", lambda: "island merge:" in primary.log.read_text(errors="replace"), timeout=60, engine=primary)
        wait_for("both nodes in normal mode", lambda: mode(run, "node-p") == mode(run, "node-s") == "normal",
                 timeout=60, engine=secondary)
        # Back on the database, the primary releases the claims it won on its own store
        # (they would otherwise stand until claim_expiry).
        wait_for(
            "the primary to release its island claims",
            lambda: any(m["node"] == "node-p" and m["kind"] == "release" for m in sync_messages(run)),
            timeout=60, engine=primary,
        )
        return secondary

    run.run_with(steer)
    print(f"sent by the primary on its local store: {seen.get('island_sent')}")
    run.assert_exactly_once()
    # One record per interaction, each with the node id of a node that took it.
    rows = run.site.database.rows(
        "SELECT mailbox_id, message_id, node_id, claim_node, claim_time, outcome FROM store_interaction"
    )
    assert len(rows) == PLAN.customers, rows
    # None left closed as claimed elsewhere: what the secondary closed because the cut-off
    # primary won it was reopened by the merge and answered (every customer has a reply).
    assert not [r for r in rows if r["outcome"] == "claimed_elsewhere"], rows
    reopened = run.site.database.scalar("SELECT COUNT(*) FROM store_journalevent WHERE kind = 'claim_returned'")
    print(f"reopened by the merge: {reopened}")
    assert len({(r["mailbox_id"], r["message_id"]) for r in rows}) == PLAN.customers
    assert {r["node_id"] for r in rows} <= {"node-p", "node-s"}
    # Both sides claimed through the real sync box; every claim recorded names a claimant
    # and its claim time.
    claimants = {m["node"] for m in sync_messages(run) if m["kind"] == "claim"}
    assert claimants == {"node-p", "node-s"}, claimants
    claimed = [r for r in rows if r["claim_node"]]
    assert claimed and all(r["claim_node"] in {"node-p", "node-s"} and r["claim_time"] for r in claimed), claimed
