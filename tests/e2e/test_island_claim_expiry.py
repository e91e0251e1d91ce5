"""Claim expiry and re-assertion in the running engine, with short configured times
(issue 10: "Claim expiry and re-assertion with short configured times; a lost claim ends
the agent's interaction with a notice"; decision 0036, engine/claims.py).

A real `postroom engine` process on PostgreSQL works the support box in island mode: it
took the box from a node killed without a clean stop, as a node cut off from the database
looks to the others. `claim_expiry = "10s"`, `claim_reassert = "2s"`. A rival node (a
second `Claimer` driven by the test, with a node id of its own) reads the same real sync
box:

* while the engine can reach the mail server, its claim is re-asserted every few seconds
  and never lapses in anyone's reading, across several re-assert periods; the customer
  has one auto-response and the agent one forward;
* when the engine's SMTP is cut (a loopback relay the test takes down), its re-claims
  cannot arrive: past the expiry the rival's claim wins. The engine reads that loss from
  the sync box (its IMAP still works), closes the agent's interaction, cancels the reply
  the agent wrote meanwhile, and, once SMTP is back, the agent's box has the notice and
  the customer has nothing more from this node.

Judged from the real mailboxes (customer, agent, sync box) and the database the engine
committed. PostgreSQL only (island mode is refused on SQLite).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from datetime import timedelta

import pytest

from postroom.core.island import ChangeKind, EmailKey, SyncKind
from postroom.devstack.netproxy import TcpProxy
from postroom.engine.island import Claimer, IslandSettings
from postroom.mail.imap import ImapAccount
from postroom.mail.smtp import SmtpAccount, SmtpSender
from postroom.mail.syncbox import SyncBox
from postroom_sim.agents import compose_reply
from tests.e2e.enginerun import Deployment, make_deployment, wait_until
from tests.field_bugs.helpers import REPLY_TEXT

pytestmark = [
    pytest.mark.mailstack,
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="island mode needs PostgreSQL"
    ),
]

RIVAL = "node-rival"
EXPIRY, REASSERT = 10, 2


@pytest.fixture
def island(mailstack, new_user, tmp_path) -> Iterator[tuple[Deployment, TcpProxy]]:  # type: ignore[no-untyped-def]
    """A deployment whose engines send through a relay to Postfix (the test can cut it),
    with island mode configured and short claim times."""
    proxy = TcpProxy(mailstack.submission_port)
    sync = new_user("sync")

    def extra(values: dict) -> str:  # type: ignore[type-arg]
        return (
            f'\n[cluster]\nnode_lease = "4s"\nsync_address = "{sync[0]}"\nsync_password = "{sync[1]}"\n'
            f'claim_expiry = "{EXPIRY}s"\nclaim_reassert = "{REASSERT}s"\n'
        )

    dep = make_deployment(mailstack, new_user, tmp_path, extra=extra, smtp_port=proxy.port)
    dep.center.users["sync"] = sync
    try:
        yield dep, proxy
    finally:
        dep.cleanup()
        proxy.stop()


@pytest.fixture
def rival(island, mailstack) -> Iterator[Claimer]:  # type: ignore[no-untyped-def]
    """Another node's claims, straight to the mail server (not through the relay)."""
    dep, _proxy = island
    center = dep.center
    cafile = str(mailstack.cafile)
    box = SyncBox(ImapAccount("127.0.0.1", mailstack.imap_port, "starttls", *center.users["sync"], cafile=cafile)).open()
    smtp = SmtpSender(SmtpAccount("127.0.0.1", mailstack.submission_port, "starttls", *center.users["outbound"], cafile=cafile))
    settings = IslandSettings(
        center.address("sync"), center.address("outbound"), timedelta(seconds=EXPIRY), timedelta(seconds=REASSERT),
        timedelta(seconds=EXPIRY) / 120,
    )
    claimer = Claimer(RIVAL, settings, box, smtp)
    try:
        yield claimer
    finally:
        box.close()
        smtp.close()


def in_island_mode(dep: Deployment):  # type: ignore[no-untyped-def]
    """`node-a` working the support box in island mode: it took it from `node-gone`,
    killed without a clean stop."""
    dep.load()
    dep.ready("alice")
    gone = dep.start_engine(node_id="node-gone")
    wait_until("node-gone to hold the boxes", lambda: holds(dep, "node-gone"), timeout=60, engine=gone)
    gone.stop(signal.SIGKILL)
    engine = dep.start_engine(node_id="node-a")
    wait_until(
        "node-a in island mode", lambda: dep.scalar("SELECT mode FROM store_node WHERE node_id = 'node-a'") == "island",
        timeout=60, engine=engine,
    )
    return engine


def holds(dep: Deployment, node: str) -> bool:
    return bool(dep.scalar("SELECT COUNT(*) FROM store_lease WHERE node_id = %s AND name LIKE 'mailbox:%%'", (node,)))


def interaction(dep: Deployment):  # type: ignore[no-untyped-def]
    (ix,) = dep.interactions()
    return ix


def customer_writes(dep: Deployment) -> None:
    from tests.field_bugs.helpers import customer_mail, send

    send(dep.center, customer_mail(dep.center))


def notices(dep: Deployment) -> list:  # type: ignore[type-arg]
    return [m for m in dep.center.messages("alice") if str(m["Subject"]).startswith("Handled by another node")]


def forwards(dep: Deployment) -> list:  # type: ignore[type-arg]
    return [m for m in dep.center.messages("alice") if m["Reply-To"] and not m["Auto-Submitted"]]


def from_us(dep: Deployment) -> list:  # type: ignore[type-arg]
    return dep.center.messages("carol")


def test_claims_are_reasserted_and_a_claim_lost_behind_a_cut_ends_the_agents_interaction(island, rival) -> None:  # type: ignore[no-untyped-def]
    dep, proxy = island
    engine = in_island_mode(dep)
    customer_writes(dep)
    wait_until(
        "the auto-response and the forward", lambda: len(from_us(dep)) == 1 and len(forwards(dep)) == 1,
        timeout=60, engine=engine,
    )
    ix = interaction(dep)
    assert ix["status"] == "delivered" and ix["claim_node"] == "node-a" and ix["claim_time"] is not None
    key = EmailKey(dep.center.address("support"), ix["message_id"], ix["raw_sha256"])

    # The happy case: across several re-assert periods, node-a's claim never lapses in
    # the rival's reading of the real sync box (the rival only keeps time moving).
    changes: list = []  # type: ignore[type-arg]

    def reclaims() -> int:
        changes.extend(rival.step())
        return sum(1 for m in rival.box.read_after(0).messages if m.kind is SyncKind.RECLAIM and m.node == "node-a")

    wait_until("three re-claims by node-a", lambda: reclaims() >= 3, timeout=40, engine=engine)
    assert rival.book.owner(key) == "node-a"
    assert not [c for c in changes if c.kind is ChangeKind.EXPIRED], changes
    assert len(from_us(dep)) == 1 and len(forwards(dep)) == 1

    # Cut node-a's SMTP: its re-claims cannot arrive. The agent answers meanwhile.
    proxy.down()
    forward = forwards(dep)[-1]
    dep.center.submit(
        compose_reply(forward, agent_addr=dep.center.address("alice"), agent_name="Alice", style="thunderbird", text=REPLY_TEXT),
        "alice",
    )
    wait_until("the reply taken in", lambda: interaction(dep)["status"] == "replying", timeout=60, engine=engine)
    rival.want(key)
    wait_until("the rival's claim", lambda: rival.book.owner(key) == RIVAL, timeout=60, engine=engine,
               step=lambda: changes.extend(rival.step()))
    expired = [c for c in changes if c.kind is ChangeKind.EXPIRED and c.claim.email == key]
    assert expired and expired[0].claim.node == "node-a"

    # node-a reads the loss: the agent's interaction ends here, the reply never leaves.
    wait_until("the interaction closed as claimed elsewhere",
               lambda: interaction(dep)["outcome"] == "claimed_elsewhere", timeout=60, engine=engine,
               step=lambda: changes.extend(rival.step()))
    ix = interaction(dep)
    assert ix["status"] == "closed" and ix["closed_at"] is not None
    rows = {r["kind"]: r["state"] for r in dep.outgoing() if r["kind"] != "notice"}
    assert rows["reply"] == "cancelled", dep.outgoing()
    assert "claimed_elsewhere" in dep.journal_kinds()
    assert engine.log_has("claim lost to node node-rival")

    # SMTP back: the notice reaches the agent; the customer has nothing more from node-a.
    proxy.up()
    wait_until("the agent's notice", lambda: len(notices(dep)) == 1, timeout=60, engine=engine,
               step=lambda: changes.extend(rival.step()))
    assert RIVAL in notices(dep)[0].get_content()
    wait_until("the forward taken back", lambda: forwards(dep) == [], timeout=60, engine=engine)
    wait_until("the outbox settled", lambda: all(
        r["state"] in ("sent", "cancelled") for r in dep.outgoing()), timeout=30, engine=engine)
    (auto_response,) = from_us(dep)
    assert auto_response["Auto-Submitted"] == "auto-replied"
    assert rival.book.owner(key) == RIVAL
