"""Several nodes on one PostgreSQL under load (issue 10; decisions 0030, 0031).

Each test runs the chaos harness's contact center (tests/chaos/harness.py: two incoming
boxes, four agents at simulated mail clients replying to every forward, customers with
mailboxes of their own writing at a steady pace) with two `postroom engine` processes,
each under its own `--node-id`, on one throwaway PostgreSQL database, and judges from the
real mailboxes: every customer holds exactly one auto-response and exactly one reply, no
mailbox holds a second copy of anything, the boxes are emptied, every interaction closed.

* two primaries share the work: each watches one of the two boxes, both send;
* three primaries share the three watched boxes, one each, all three sending;
* a primary and a secondary: the secondary holds nothing while the primary lives, and
  owns every box within 10 s (by the database's clock) of the primary's SIGKILL;
* a node frozen (SIGSTOP: at the instant between the SMTP server's 250 for an
  auto-response and the commit that records it, or wherever it is if it never gets
  there) past its lease and then resumed: the other node fenced it out and took its box;
  the frozen one's writes are refused, it stands down (by whichever path it notices
  first: a refused write or heartbeat, or its own clock saying its lease ran out while
  its ended database sessions failed), registers again and takes its share back, and
  nothing is doubled.

PostgreSQL only: SQLite holds one node (tests/e2e/test_lease.py).
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.chaos.harness import ChaosRun, Engine, Plan, wait_for
from tests.e2e.databases import Database, fresh_database

pytestmark = [
    pytest.mark.mailstack,
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="several nodes need PostgreSQL"
    ),
]

# A short node lease, so that a test waits seconds, not minutes, for a failover; short
# outbox claims too: a row a frozen node left `sending` is settled from the journal box
# only once its claim has run out (that node may be alive: decision 0007). A killed
# node's claims end at once (its pid is gone: engine/nodes.py, end_claims_of_dead).
CLUSTER = '\n[cluster]\nnode_lease = "4s"\n\n[outbox]\nsend_timeout = "4s"\nlease = "10s"\n'
# About 16 s of customers writing: the kill and the takeover fall while mail still comes.
# The boxes the nodes share out: the two incoming boxes and the outbound box.
WATCHED = 3
PLAN = Plan(seed=10, customers=24, kills=0, capacity=10, mails_per_s=1.5, settle_timeout_s=180.0)


class NodesRun(ChaosRun):
    """The chaos contact center, run by named nodes instead of one engine killed again
    and again: `start_node` starts one; the test steers them while the customers write."""

    def __init__(self, stack, new_user, workdir: Path, database: Database) -> None:  # type: ignore[no-untyped-def]
        super().__init__(stack, new_user, workdir, database, PLAN)
        self.site.config.write_text(self.site.config.read_text() + CLUSTER)

    def start_node(self, node_id: str, role: str = "primary", pause_at: str | None = None) -> Engine:
        site = self.site
        state = site.workdir / f"state-{node_id}"
        state.mkdir(exist_ok=True)
        env = {**site.env(), "POSTROOM_STATE_DIR": str(state)}
        if pause_at:
            env["POSTROOM_PAUSE_AT"] = pause_at
        cmd = [sys.executable, "-m", "postroom.cli", "engine", str(site.config), "--node-id", node_id, "--role", role]
        engine = Engine(cmd, env, site.workdir, site.workdir / f"{node_id}-{len(site.engines)}.log")
        site.engines.append(engine)
        return engine

    def primary_then_secondary(self) -> tuple[Engine, Engine]:
        """A primary that holds every box, then a secondary that has joined, once some
        customer mail has been taken: the start of every kill-the-primary test."""
        primary = self.start_node("node-p", "primary")
        wait_for("the primary to hold every box", lambda: self.held_by("node-p"), timeout=60, engine=primary)
        secondary = self.start_node("node-s", "secondary")
        wait_for("the secondary to join", lambda: "secondary" in secondary.log.read_text(errors="replace"), timeout=60, engine=secondary)
        wait_for("some mail to be taken", lambda: taken(self) >= PLAN.customers // 4, timeout=120, engine=primary)
        return primary, secondary

    def holders(self) -> dict[str, str]:
        """Each live lease (router, mailbox:<pk>) and the node holding it."""
        rows = self.site.database.rows(
            "SELECT l.name, l.node_id FROM store_lease l JOIN store_node n ON n.node_id = l.node_id "
            "AND n.epoch = l.epoch WHERE n.stopped_at IS NULL AND n.lease_until > now()"
        )
        return {r["name"]: r["node_id"] for r in rows}

    def box_holders(self) -> list[str]:
        """The holders of the watched boxes' leases (two incoming, one outbound), sorted."""
        return sorted(node for name, node in self.holders().items() if name.startswith("mailbox:"))

    def held_by(self, *node_ids: str) -> bool:
        """Every watched box is held, by exactly these nodes."""
        held = self.box_holders()
        return len(held) == WATCHED and set(held) == set(node_ids)

    def run_with(self, steer) -> None:  # type: ignore[no-untyped-def]
        """Customers write and agents answer while `steer(customers)` works the nodes;
        then wait until everything has settled on the nodes still running, stop them
        and judge."""
        site, v = self.site, self.verdict
        started = time.monotonic()
        site.cli("load", str(site.config))
        for address, _ in self.agents:
            site.cli("agent", "ready", address)
        from tests.chaos.harness import Customers, start_agents

        customers = Customers(site.stack, [c for c, _ in self.customers], [site.address("support"), site.address("sales")], PLAN)
        agents = start_agents(site.stack, self.agents, PLAN.seed)
        try:
            customers.start()
            last = steer(customers)
            customers.join()
            v.settled = self._settle(last, customers)
            v.sent = dict(customers.sent)
            for engine in site.engines:
                if engine.poll() is None and (code := engine.stop(signal.SIGTERM)) != 0:
                    v.surprises.append(f"a node exited {code} on SIGTERM:\n{engine.tail()}")
        finally:
            customers.halt.set()
            for agent in agents:
                agent.stop()
            for engine in site.engines:
                if engine.poll() is None:
                    engine.stop(signal.SIGKILL)
        self._judge()
        v.seconds = time.monotonic() - started

    def assert_exactly_once(self) -> None:
        print(self.verdict.report())
        self.verdict.assert_nothing_lost_or_stuck()
        self.verdict.assert_exactly_once()


@pytest.fixture
def nodes_run(mailstack, new_user, tmp_path):
    database = fresh_database(tmp_path, "nodes")
    try:
        yield NodesRun(mailstack, new_user, tmp_path, database)
    finally:
        database.drop()


def taken(run: NodesRun) -> int:
    return int(run.site.database.scalar("SELECT COUNT(*) FROM store_interaction") or 0)


def test_two_primaries_share_the_boxes_and_answer_everyone_once(nodes_run: NodesRun) -> None:
    run = nodes_run

    shares: dict[str, str] = {}

    def steer(customers) -> Engine:  # type: ignore[no-untyped-def]
        a = run.start_node("node-a")
        run.start_node("node-b")
        wait_for("each node to watch a share of the boxes", lambda: run.held_by("node-a", "node-b"), timeout=60, engine=a)
        shares.update(run.holders())
        return a

    run.run_with(steer)
    run.assert_exactly_once()
    # Every interaction was taken by one of the two nodes, which shared the three boxes
    # while both ran: one held two, the other one.
    # (A node whose heartbeat lapses on a starved machine is fenced out and comes back
    # with another share, so who took which mail is not judged box by box.)
    rows = run.site.database.rows("SELECT node_id FROM store_interaction")
    assert len(rows) == PLAN.customers and {r["node_id"] for r in rows} <= {"node-a", "node-b"}
    boxes = [node for name, node in shares.items() if name.startswith("mailbox:")]
    assert sorted(boxes.count(n) for n in ("node-a", "node-b")) == [1, 2], shares


def test_three_primaries_take_a_box_each_and_answer_everyone_once(nodes_run: NodesRun) -> None:
    run = nodes_run
    names = ("node-a", "node-b", "node-c")
    shares: dict[str, str] = {}

    def steer(customers) -> Engine:  # type: ignore[no-untyped-def]
        a = run.start_node(names[0])
        for name in names[1:]:
            run.start_node(name)
        wait_for("each of the three nodes to watch one box", lambda: run.held_by(*names), timeout=90, engine=a)
        shares.update(run.holders())
        return a

    run.run_with(steer)
    run.assert_exactly_once()
    # One interaction per customer mail, each taken by one node (the unique key on the
    # mailbox's message is the database's; this names who took it), and the three boxes
    # were shared one each while all three ran.
    rows = run.site.database.rows("SELECT mailbox_id, message_id, node_id FROM store_interaction")
    assert len(rows) == PLAN.customers and {r["node_id"] for r in rows} <= set(names)
    assert len({(r["mailbox_id"], r["message_id"]) for r in rows}) == PLAN.customers
    boxes = [node for name, node in shares.items() if name.startswith("mailbox:")]
    assert sorted(boxes) == sorted(names), shares
    # Every row that went out went out once and holds no claim any more: no two nodes
    # sent one row (the mailboxes' verdict above counts the copies that arrived).
    states = run.site.database.rows("SELECT state, claimed_by FROM store_outgoing")
    assert states and {r["state"] for r in states} <= {"sent", "cancelled"} and {r["claimed_by"] for r in states} == {""}


def test_the_secondary_takes_every_box_within_10_s_of_the_primarys_sigkill(nodes_run: NodesRun) -> None:
    run = nodes_run
    measured: dict[str, float] = {}

    def steer(customers) -> Engine:  # type: ignore[no-untyped-def]
        # Half the customers write only after the kill, so the secondary is sure to take
        # mail of its own (on a loaded machine the primary had taken all 24 before it).
        customers.hold_after = PLAN.customers // 2
        primary, secondary = run.primary_then_secondary()
        assert "node-s" not in run.holders().values()  # stands by while the primary lives
        primary.stop(signal.SIGKILL)
        killed = time.monotonic()
        customers.resume.set()
        wait_for("the secondary to hold everything", lambda: set(run.holders().values()) == {"node-s"} and run.held_by("node-s"), timeout=60, engine=secondary)
        measured["seen_s"] = time.monotonic() - killed
        return secondary

    run.run_with(steer)
    run.assert_exactly_once()
    # By the database's clock: the primary's last heartbeat → the secondary's last lease taken.
    gap = run.site.database.scalar(
        "SELECT EXTRACT(EPOCH FROM (SELECT max(acquired_at) FROM store_lease WHERE node_id = 'node-s') - "
        "(SELECT heartbeat_at FROM store_node WHERE node_id = 'node-p'))"
    )
    print(f"failover: every box held by the secondary {float(gap):.1f} s after the primary's last heartbeat "
          f"(seen by the test {measured['seen_s']:.1f} s after the SIGKILL)")
    assert float(gap) < 10.0
    # Mail that came after the kill was taken by the secondary, and what the primary had
    # taken was carried to its end (the verdict above) by the secondary.
    by_node = {r["node_id"] for r in run.site.database.rows("SELECT DISTINCT node_id FROM store_interaction")}
    assert by_node == {"node-p", "node-s"}, by_node


def paused(engine: Engine) -> bool:
    """The process is stopped (state T in /proc)."""
    try:
        stat = Path(f"/proc/{engine.proc.pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")


def test_a_node_frozen_past_its_lease_is_fenced_out_and_doubles_nothing(nodes_run: NodesRun) -> None:
    run = nodes_run
    first_epoch: dict[str, int] = {}

    def steer(customers) -> Engine:  # type: ignore[no-untyped-def]
        frozen = run.start_node("node-a", pause_at="sent-auto_response")
        wait_for("node-a to hold every box", lambda: run.held_by("node-a"), timeout=60, engine=frozen)
        first_epoch["a"] = int(run.site.database.scalar("SELECT epoch FROM store_node WHERE node_id = 'node-a'"))
        other = run.start_node("node-b")
        try:
            wait_for("node-a to freeze after an SMTP 250", lambda: paused(frozen), timeout=40, engine=frozen)
        except AssertionError:
            frozen.proc.send_signal(signal.SIGSTOP)  # it never got there: freeze it wherever it is
            wait_for("node-a to freeze", lambda: paused(frozen), timeout=10)
        wait_for("node-b to hold everything", lambda: set(run.holders().values()) == {"node-b"} and run.held_by("node-b"), timeout=60, engine=other)
        epoch = int(run.site.database.scalar("SELECT epoch FROM store_node WHERE node_id = 'node-a'"))
        assert epoch > first_epoch["a"], "node-a was not fenced out"
        frozen.proc.send_signal(signal.SIGCONT)
        wait_for("node-a to notice and step down", lambda: stood_down(frozen.log.read_text(errors="replace")), timeout=60, engine=frozen)
        wait_for("node-a to take a box again", lambda: run.held_by("node-a", "node-b"), timeout=60, engine=frozen)
        return other

    run.run_with(steer)
    run.assert_exactly_once()
    log = run.site.engines[0].log.read_text(errors="replace")
    print("\n".join(line for line in log.splitlines() if any(w in line for w in ("fence", "registers again", "database", "took", "registered"))))
    assert stood_down(log)
    # Judged by outcomes, whichever path it stood down by: fenced out (one epoch up), then
    # registered anew under a later epoch than the one it was frozen with, holding a box
    # again (above), and every customer answered once (assert_exactly_once).
    epoch = int(run.site.database.scalar("SELECT epoch FROM store_node WHERE node_id = 'node-a'"))
    assert epoch >= first_epoch["a"] + 2
    assert registered_epochs(log)[0] == first_epoch["a"] and max(registered_epochs(log)) >= first_epoch["a"] + 2


# The ways a resumed stale node stands down (engine/runtime.py, _supervise): a write or its
# heartbeat refused (Fenced), or, when its database sessions were ended by the node that
# fenced it out, the supervisor's next statement fails and its own clock says its lease
# ran out meanwhile. Both stop all its work and register it again under a new epoch.
STOOD_DOWN = ("this node stops its work and registers again", "this node's lease ran out while the database was away")


def stood_down(log: str) -> bool:
    return any(line in log for line in STOOD_DOWN)


def registered_epochs(log: str, node_id: str = "node-a") -> list[int]:
    """The epochs a node registered under, in order ("node … registered (role, epoch N)")."""
    return [int(m) for m in re.findall(rf"node {re.escape(node_id)} registered \(\w+, epoch (\d+)\)", log)]
