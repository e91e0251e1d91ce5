"""Issue 10 in the benchmark: several `postroom engine` nodes on one PostgreSQL.

* failover: a primary and a secondary node (`--role`) share one site; once both run and a
  first mail has been routed, the primary gets SIGKILL and one customer mail goes to the
  MX at once; `failover_s` = SIGKILL → that mail routed to the Ready agent (its
  `routed_at` set, by the secondary: the taker's `node_id` is recorded). The secondary
  first has to see the primary's lease run out (`[cluster] node_lease`, the default 6 s),
  fence it out and take its boxes, so the figure is about the lease plus a second or two
  (decision 0031). Also reported: the same gap by the database's clock (the primary's
  last heartbeat → the secondary's last lease taken).
* throughput with one node and with two: the throughput phase's shape (N mails pushed at
  once, simulated agents answering at once; first mail → every auto-response and reply
  recorded sent and in the customers' boxes) on PostgreSQL, run by one node and then by two
  primaries, in turn, `nodes_reps` times; `throughput_2_nodes_vs_1` is the median of the
  turns' two-node ÷ one-node rates. Two incoming boxes, the mails split evenly between
  them, so that the second node has an incoming box to watch (three watched boxes with
  the outbound one: the last node starts first and keeps `support`, node-1 takes `sales`
  and the outbound box; `watched` records it); both nodes send from the outbox (decision
  0030). On a machine of two shared cores a second process mostly competes for the same
  CPU.

Each run gets a database of its own on the benchmark's throwaway PostgreSQL (CREATE
DATABASE), fresh mailboxes and a state directory per node; the nodes are stopped by pid.
"""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path

from bench.common import (
    CUSTOMERS,
    POSTROOM,
    DbWatch,
    Process,
    Stack,
    agents_ready,
    envelope_from,
    log,
    make_messages,
    make_site,
    postroom_load,
    wait_until,
)
from bench.postroom_runs import Counts, complete, start_agents


def fresh_database(server_url: str, name: str) -> str:
    """A new, empty database `name` on the server of `server_url`; its URL."""
    import psycopg

    base, _, _ = server_url.rpartition("/")
    with psycopg.connect(server_url.replace("postgres://", "postgresql://", 1), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{base}/{name}"


def start_node(site, node_id: str, role: str = "primary") -> Process:
    """`postroom engine CONFIG --node-id ID --role ROLE` with a state directory of its own."""
    state = site.workdir / f"state-{node_id}"
    state.mkdir(exist_ok=True)
    env = {**site.env(), "POSTROOM_STATE_DIR": str(state)}
    cmd = [POSTROOM, "engine", str(site.config), "--node-id", node_id, "--role", role]
    return Process(cmd, env, site.workdir / f"{node_id}.log")


LIVE_HOLDER = (
    "SELECT l.node_id FROM store_lease l JOIN store_node n ON n.node_id = l.node_id AND n.epoch = l.epoch "
    "JOIN store_mailbox m ON l.name = 'mailbox:' || m.id "
    "WHERE m.address = ? AND n.stopped_at IS NULL AND n.lease_until > now()"
)


def wait_holder(db: DbWatch, box: str, node_id: str, alive: Process, timeout: float = 60) -> None:
    if wait_until(lambda: db.scalar(LIVE_HOLDER, (box,)) == node_id, timeout, 0.05, alive=alive) is None:
        raise RuntimeError(f"{node_id} never held {box}:\n{alive.tail()}")


def routed(db: DbWatch, marker: str) -> bool:
    sql = "SELECT COUNT(*) FROM store_interaction WHERE routed_at IS NOT NULL AND subject LIKE ?"
    return bool(db.scalar(sql, (f"%[bench {marker}]%",)))


def failover_run(stack: Stack, workdir: Path, rep: int, server_url: str, timeout: float = 120) -> dict:
    url = fresh_database(server_url, f"failover{rep}")
    site = make_site(stack, workdir, f"fo{rep}", agents=1, capacity=100, database_url=url)
    postroom_load(site)
    agents_ready(site)
    msgs = make_messages(2, site.support, f"F{rep}")
    db = DbWatch(url)
    primary = start_node(site, "node-p", "primary")
    secondary = None
    try:
        wait_holder(db, site.support, "node-p", primary)
        secondary = start_node(site, "node-s", "secondary")
        if wait_until(lambda: db.count("node_id = 'node-s' AND lease_until > now()", "store_node"), 60, 0.05,
                      alive=secondary) is None:
            raise RuntimeError(f"the secondary never registered:\n{secondary.tail()}")
        smtp = stack.smtp()
        (warm, raw), (marker, raw2) = msgs
        smtp.sendmail(envelope_from(raw), [site.support], raw)
        if wait_until(lambda: routed(db, warm), 60, 0.05, alive=primary) is None:
            raise RuntimeError(f"the first mail was never routed:\n{primary.tail()}")
        primary.stop(sig=signal.SIGKILL)
        killed = time.monotonic()
        smtp.sendmail(envelope_from(raw2), [site.support], raw2)
        with contextlib.suppress(Exception):
            smtp.quit()
        t = wait_until(lambda: routed(db, marker), timeout, 0.05, alive=secondary)
        seconds = None if t is None else t - killed
        by = db.scalar("SELECT node_id FROM store_interaction WHERE subject LIKE ?", (f"%[bench {marker}]%",))
        db_gap = db.scalar(
            "SELECT EXTRACT(EPOCH FROM (SELECT max(acquired_at) FROM store_lease WHERE node_id = 'node-s') - "
            "(SELECT heartbeat_at FROM store_node WHERE node_id = 'node-p'))"
        )
    finally:
        for node in (secondary, primary):
            if node is not None:
                node.stop()
        db.close()
    log(f"failover rep {rep + 1}: SIGKILL → mail routed by {by} in "
        f"{'—' if seconds is None else f'{seconds:.2f} s'} (leases taken {float(db_gap or 0):.2f} s after the "
        "primary's last heartbeat, database clock)")
    return {"seconds": seconds, "routed_by": by, "leases_after_heartbeat_s": None if db_gap is None else float(db_gap)}


SECOND_BOX = """
[[incoming]]
address = "{address}"
name = "Bench Sales"
password = "{password}"
skills = ["support"]
auto_response = true
"""

WATCHED = (
    "SELECT l.node_id, m.address FROM store_lease l JOIN store_mailbox m ON l.name = 'mailbox:' || m.id "
    "JOIN store_node n ON n.node_id = l.node_id AND n.epoch = l.epoch WHERE n.lease_until > now() ORDER BY m.address"
)


def nodes_throughput_run(
    stack: Stack, workdir: Path, rep: int, n: int, agents: int, nodes: int, server_url: str, timeout: float = 900
) -> dict:
    url = fresh_database(server_url, f"nodes{nodes}_{rep}")
    prefix = f"nt{nodes}r{rep}"
    sales = f"{prefix}-sales@example.test"
    extra = SECOND_BOX.format(address=sales, password=stack.user(sales)[1])
    site = make_site(stack, workdir, prefix, agents=agents, capacity=max(1, n), database_url=url, extra=extra)
    boxes = (site.support, sales)
    postroom_load(site)
    agents_ready(site)
    sim = start_agents(stack, site)
    db = DbWatch(url)
    assert db.conn is not None  # PostgreSQL
    # The last node first: once it holds every box, the others join and take their share.
    # The first node ids take the rounding of the shares and each node keeps its lowest
    # boxes (core/cluster.py), so the last node keeps `support` and node-1 takes `sales`
    # and the outbound box: each node watches an incoming box.
    engines = [start_node(site, f"node-{nodes}")]
    counts = None
    try:
        if nodes > 1:
            if wait_until(lambda: len(db.conn.execute(WATCHED).fetchall()) >= 3, 90, 0.1, alive=engines[0]) is None:
                raise RuntimeError(f"node-{nodes} never held the boxes:\n{engines[0].tail()}")
            engines += [start_node(site, f"node-{i}") for i in range(1, nodes)]

        # Every node registered, every watched box (support, sales, outbound) held by a
        # live node, and with two nodes, each holding an incoming box.
        def settled() -> bool:
            live = db.count("lease_until > now() AND stopped_at IS NULL", "store_node")
            rows = db.conn.execute(WATCHED).fetchall()
            incoming = {node for node, address in rows if address in boxes}
            return live == nodes and len(rows) >= 3 and len(incoming) == nodes

        if wait_until(settled, 90, 0.1, alive=engines[0]) is None:
            raise RuntimeError("the nodes never shared the boxes:\n" + "\n".join(e.tail() for e in engines))
        time.sleep(1.0)
        watched: dict[str, list[str]] = {}
        for node, address in db.conn.execute(WATCHED).fetchall():
            watched.setdefault(node, []).append(address.split("@")[0].removeprefix(f"{prefix}-"))
        counts = Counts(stack, list(CUSTOMERS))
        # Alternating boxes, each half with markers of its own.
        halves = [make_messages(n // 2 + (n % 2) * (i == 0), box, f"N{nodes}{rep}{'ab'[i]}") for i, box in enumerate(boxes)]
        msgs = [(box, raw) for pair in zip(*halves, strict=False) for box, (_m, raw) in zip(boxes, pair, strict=True)]
        msgs += [(boxes[0], raw) for _m, raw in halves[0][len(halves[1]):]]
        cpu0 = sum(e.cpu_seconds() for e in engines)
        t0 = time.monotonic()
        smtp = stack.smtp()
        for box, raw in msgs:
            smtp.sendmail(envelope_from(raw), [box], raw)
        with contextlib.suppress(Exception):
            smtp.quit()

        def delivered() -> bool:
            return complete(db) >= n and sum(counts.gained(b) for b in CUSTOMERS) >= 2 * n

        t1 = wait_until(delivered, timeout, 0.1, alive=engines[0])
        elapsed = (t1 if t1 is not None else time.monotonic()) - t0
        cpu = sum(e.cpu_seconds() for e in engines) - cpu0
        done = complete(db)
        takers = {
            node: int(db.scalar("SELECT COUNT(*) FROM store_interaction WHERE node_id = ?", (node,)) or 0)
            for node in (f"node-{i}" for i in range(1, nodes + 1))
        }
    finally:
        if counts is not None:
            counts.close()
        for e in engines:
            e.stop()
        sim.stop()
        db.close()
    rate = done / elapsed if elapsed > 0 else None
    log(f"{nodes}-node throughput rep {rep + 1}: {done}/{n} complete in {elapsed:.1f} s = {rate:.2f}/s; "
        f"engines' CPU {1000 * cpu / max(1, n):.1f} ms per interaction; taken by {takers}; watched {watched}")
    return {"nodes": nodes, "n": n, "boxes": len(boxes), "completed": done, "finished": t1 is not None,
            "seconds": elapsed, "interactions_per_s": rate, "engines_cpu_s": cpu, "taken_by": takers,
            "watched": watched}
