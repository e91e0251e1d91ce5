"""Kill the engine at any instant, start it again: nothing lost, nothing doubled.

The engine runs as the operator runs it, `postroom engine CONFIG` in a subprocess with a
database of its own (a SQLite file, or a fresh PostgreSQL database in the PostgreSQL pass);
`POSTROOM_CRASH_AT=<checkpoint>` makes it `os._exit(137)` there, exactly like SIGKILL at
that instant. It is then started again without the variable and the interaction is carried
to its end. The verdict is read where people would look: the real IMAP mailboxes of the
customer, the agent and the contact center, plus the engine's database, read-only.

No checkpoint may double anything (docs/decisions/0007). The `sent-<kind>` checkpoints are
the hard ones: the server has said 250 and the engine dies before committing it. The row
is left `sending` under the dead engine's claim; the restarted engine ends that claim (the
process is gone), and once the journal grace has passed it finds the copy in the journal
box and records the row as sent, with its consequence, instead of sending it again. The
claims' lease is the default five minutes, longer than the test waits: a restart must not
wait it out.
"""

from __future__ import annotations

import signal
import time
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import pytest

from postroom_sim.agents import compose_reply
from tests.e2e.enginerun import Deployment, accepted_by_postfix, make_deployment, wait_until

pytestmark = pytest.mark.mailstack

CHECKPOINTS = [
    # Inside reception's batch transaction (decision 0039): nothing of the batch is kept.
    "receiving",
    "received",
    "forward-queued",
    "sent-auto_response",
    "sent-forward",
    "sent-reply",
    "sent-notice",
    # Claimed under a lease, then killed before a byte was sent: once the lease is over,
    # the journal box shows nothing, and the reply is sent (once).
    "sending-reply",
    "reply-accepted",
    "reply-committed",
    "cleanup-reply-removed",
    "cleanup-original-removed",
]
# Which outgoing kind a crash at a checkpoint may send twice: none, at any checkpoint
# (it was every `sent-<kind>` under docs/decisions/0002, at-least-once).
MAY_DOUBLE: dict[str, str] = {}
REPLY_TEXT = "Hello Carol, your kettle left our warehouse this morning. Regards, Alice"



def copy_rule(values: dict[str, Any]) -> str:
    """Every mail also sends the supervisor a copy: a notice, so `sent-notice` is reached
    and notices are checked for doubles at every checkpoint."""
    return (
        "\n[[rules]]\n"
        'name = "Copy to the supervisor"\n'
        f'actions = [{{ action = "forward_copy", value = "{values["sam"]}" }}]\n'
    )


def customer_mail(dep: Deployment, subject: str, **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Carol Customer <{dep.center.address('carol')}>"
    msg["To"] = dep.center.address("support")
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid("c", domain="customer.test")
    msg["Date"] = "Wed, 25 Nov 2026 09:00:00 +0000"
    for name, value in headers.items():
        msg[name] = value
    msg.set_content("Hello,\n\nI ordered a kettle two weeks ago and it has not arrived.\n\nCarol\n")
    return msg


def send_to_support(dep: Deployment, msg: EmailMessage, count: int) -> None:
    center = dep.center
    center.send(msg, center.address("support"), center.address("carol"))
    assert len(center.wait_for("support", count)) == count


class AgentAtHerDesk:
    """Alice, in her mail client: once her forwarded copy is there she replies to it,
    once (a second copy with the same Message-ID is the same mail to her client)."""

    def __init__(self, dep: Deployment) -> None:
        self.dep = dep
        self.sent: EmailMessage | None = None

    def __call__(self) -> None:
        if self.sent is not None:
            return
        center = self.dep.center
        forwards = [m for m in center.messages("alice") if m["Reply-To"]]
        if not forwards:
            return
        reply = compose_reply(
            forwards[0], agent_addr=center.address("alice"), agent_name="Alice Agent", style="thunderbird", text=REPLY_TEXT
        )
        center.submit(reply, "alice")
        self.sent = reply


def copies_by_message_id(mails: list[EmailMessage], kind: str, expected_id: str) -> int:
    """How many copies beyond the first: all must carry the outbox row's Message-ID."""
    ids = [str(m["Message-ID"]).strip() for m in mails]
    assert ids, f"no {kind} arrived"
    assert set(ids) == {expected_id}, f"{kind} copies differ in Message-ID: {ids} (outbox row: {expected_id})"
    return len(ids) - 1


@pytest.fixture
def deployment(mailstack, new_user, tmp_path):
    made: list[Deployment] = []

    def make(**kwargs: Any) -> Deployment:
        dep = make_deployment(mailstack, new_user, tmp_path, **kwargs)
        made.append(dep)
        return dep

    yield make
    for dep in made:
        dep.cleanup()


@pytest.mark.parametrize("checkpoint", CHECKPOINTS)
def test_killed_at_any_checkpoint_one_auto_response_and_one_reply(deployment, checkpoint) -> None:
    dep: Deployment = deployment(alice_auto=True, extra=copy_rule)
    center = dep.center
    dep.load()
    dep.ready("alice")
    original = customer_mail(dep, "Where is my order #4711?")
    send_to_support(dep, original, 1)
    alice = AgentAtHerDesk(dep)

    crashing = dep.start_engine(crash_at=checkpoint)
    wait_until(f"the engine to reach {checkpoint}", lambda: crashing.poll() is not None, timeout=40, engine=crashing, step=alice)
    assert crashing.poll() == 137, f"exit {crashing.poll()} instead of the crash at {checkpoint}\n{crashing.tail()}"
    crashing.close()
    if checkpoint not in ("receiving", "received"):
        # Already routed to alice when it died: with bob Ready too, anything re-routed
        # rather than carried on could go to him (and, not auto-answer, never close).
        dep.ready("bob")

    engine = dep.start_engine()
    # Closed, and every row settled: a notice left `sending` by the crash is settled once
    # the dead engine's lease has run out, whatever the interaction does meanwhile.
    wait_until(
        "the interaction to close and the outbox to settle",
        lambda: dep.statuses() == ["closed"] and {r["state"] for r in dep.outgoing()} == {"sent"},
        timeout=60,
        engine=engine,
        step=alice,
    )
    assert engine.stop(signal.SIGTERM) == 0, engine.tail()
    assert alice.sent is not None

    # -- the database: one of everything ----------------------------------------------
    (ix,) = dep.interactions()
    assert ix["message_id"] == original["Message-ID"]
    assert ix["outcome"] == "replied"
    assert ix["agent_id"] == dep.scalar("SELECT id FROM store_agent WHERE address = ?", (center.address("alice"),))
    outgoing = {row["kind"]: row for row in dep.outgoing()}
    assert sorted(r["kind"] for r in dep.outgoing()) == ["auto_response", "forward", "notice", "reply"]
    assert {r["state"] for r in outgoing.values()} == {"sent"}, [dict(r) for r in dep.outgoing()]
    # A row may be tried again after a transaction that certainly failed (a slow machine:
    # the SMTP budget is 4 s here), never after one that may have delivered.
    assert all(row["attempts"] <= 3 for row in outgoing.values()), [dict(r) for r in outgoing.values()]
    ledger = dep.rows("SELECT outcome, removed_at FROM store_outboundmessage")
    assert [r["outcome"] for r in ledger] == ["accepted"] and ledger[0]["removed_at"]
    kinds = dep.journal_kinds()
    for kind in ("received", "auto_responded", "reply_accepted", "reply_sent", "cleaned_up"):
        assert kinds.count(kind) == 1, (kind, kinds)

    # -- the mailboxes ----------------------------------------------------------------
    # Delivery into them is asynchronous: wait for every copy Postfix accepted (its log
    # says how many; a transaction killed before its final dot left none), then count.
    ids = {kind: row["message_id"] for kind, row in outgoing.items()}
    wait_until("Postfix to log every mail", lambda: all(accepted_by_postfix(center.stack, i) for i in ids.values()), timeout=30)
    accepted = {kind: accepted_by_postfix(center.stack, i) for kind, i in ids.items()}
    carol = center.wait_for("carol", accepted["auto_response"] + accepted["reply"])
    forwards = center.wait_for("alice", accepted["forward"])
    notices = center.wait_for("sam", accepted["notice"])
    auto = [m for m in carol if m["Auto-Submitted"] == "auto-replied"]
    replies = [m for m in carol if m["Auto-Submitted"] is None]
    assert len(auto) + len(replies) == len(carol)
    doubled = {
        "auto_response": copies_by_message_id(auto, "auto-response", outgoing["auto_response"]["message_id"]),
        "forward": copies_by_message_id(forwards, "forwarded copy", outgoing["forward"]["message_id"]),
        "reply": copies_by_message_id(replies, "reply", outgoing["reply"]["message_id"]),
        "notice": copies_by_message_id(notices, "copy notice", outgoing["notice"]["message_id"]),
    }
    print(f"{checkpoint}: duplicates {doubled}")
    expected = {kind: int(MAY_DOUBLE.get(checkpoint) == kind) for kind in doubled}
    assert doubled == expected

    reply = replies[0]
    assert REPLY_TEXT in reply.get_body(("plain",)).get_content()
    assert reply["In-Reply-To"] == original["Message-ID"]
    assert reply["From"].addresses[0].addr_spec == center.address("support")
    assert center.messages("bob") == []
    assert center.messages("support") == []
    assert center.messages("outbound") == []
    assert center.messages("dead") == []


def test_a_killed_engine_keeps_the_offer_its_timer_and_its_priority(deployment) -> None:
    """SIGKILL while an interaction is offered to a (not auto-answer) agent; on restart the
    offer is the same one, to the same agent, due at the same time, with the priority it
    was given. The restart reads a changed configuration (other offer timeout, other box
    priority), so anything recomputed rather than read would show."""
    routing = '\n[routing]\noffer_timeout = "10m"\n'
    dep: Deployment = deployment(alice_auto=False, extra=lambda values: routing)
    center = dep.center
    dep.load()
    dep.ready("alice")
    send_to_support(dep, customer_mail(dep, "Urgent: broken kettle", Importance="high"), 1)

    first = dep.start_engine()
    wait_until(
        "the offer to alice",
        lambda: dep.statuses() == ["routed"] and dep.interactions()[0]["auto_response_sent_at"] is not None,
        timeout=40,
        engine=first,
    )
    before = dep.interactions()[0]
    alice = dep.rows("SELECT id, routed_count FROM store_agent WHERE address = ?", (center.address("alice"),))[0]
    assert before["agent_id"] == alice["id"] and before["offer_due_at"] and before["priority"] == 10
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL

    text = dep.config.read_text()
    dep.config.write_text(
        text.replace('offer_timeout = "10m"', 'offer_timeout = "5m"').replace(
            'name = "Example Support"', 'name = "Example Support"\ndefault_priority = 7'
        )
    )
    again = dep.start_engine()
    # A second mail, after the restart: when its auto-response is out, the restarted worker
    # has been through timers, routing and the outbox at least once with the first one there.
    send_to_support(dep, customer_mail(dep, "And another thing"), 2)
    wait_until(
        "the second mail's auto-response",
        lambda: len(dep.interactions()) == 2 and dep.interactions()[1]["auto_response_sent_at"] is not None,
        timeout=40,
        engine=again,
    )
    wait_until("a routing round after the restart", lambda: again.log_has("routing index built"), timeout=10, engine=again)
    # The second mail may have come in between that round's routing and its outbox step:
    # give the worker (awake at least once a second) another round to route it wrongly.
    time.sleep(2.0)
    after, second = dep.interactions()
    assert again.stop(signal.SIGTERM) == 0, again.tail()

    for name in ("status", "agent_id", "offer_due_at", "routed_at", "priority", "priority_reasons", "version", "deliveries"):
        assert after[name] == before[name], (name, before[name], after[name])
    assert second["priority"] == 7  # the new configuration was in force: the first was not recomputed
    # alice's one slot is still taken by the offer in flight: the second mail waits.
    assert second["status"] == "queued" and second["agent_id"] is None
    routed = dep.rows("SELECT interaction_id FROM store_journalevent WHERE kind = 'routed'")
    assert [r["interaction_id"] for r in routed] == [before["id"]]
    assert dep.scalar("SELECT routed_count FROM store_agent WHERE id = ?", (alice["id"],)) == alice["routed_count"]
    assert center.messages("alice") == []  # never answered, so never forwarded
    auto = center.wait_for("carol", 2)
    assert [m["Auto-Submitted"] for m in auto] == ["auto-replied", "auto-replied"]


def test_a_kill_inside_a_fetch_batch_keeps_none_of_it(deployment) -> None:
    """Reception takes a FETCH batch in one transaction (decision 0039): killed after the
    first of three mails, nothing of the batch is in the database, the cursor has not
    moved, and the restarted engine takes all three, one auto-response each."""
    dep: Deployment = deployment(alice_auto=True)
    center = dep.center
    dep.load()
    for n in range(3):
        send_to_support(dep, customer_mail(dep, f"Order #{4711 + n}"), n + 1)

    crashing = dep.start_engine(crash_at="receiving")
    wait_until("the engine to die inside the batch", lambda: crashing.poll() is not None, timeout=40, engine=crashing)
    assert crashing.poll() == 137, crashing.tail()
    crashing.close()
    assert dep.interactions() == []
    assert dep.outgoing() == []
    assert dep.scalar("SELECT last_uid FROM store_mailbox WHERE address = ?", (center.address("support"),)) == 0

    engine = dep.start_engine()
    wait_until(
        "three auto-responses sent",
        lambda: len(dep.outgoing()) == 3 and {r["state"] for r in dep.outgoing()} == {"sent"},
        timeout=60,
        engine=engine,
    )
    assert engine.stop(signal.SIGTERM) == 0, engine.tail()
    assert sorted(r["subject"] for r in dep.interactions()) == [f"Order #{4711 + n}" for n in range(3)]
    assert [r["kind"] for r in dep.outgoing()] == ["auto_response"] * 3
    assert dep.journal_kinds().count("received") == 3
