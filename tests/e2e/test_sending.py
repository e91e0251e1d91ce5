"""Sending exactly once, judged from the real mailboxes, with SMTP lying in between.

The engine sends through `tests/faults/smtp_proxy.py`, a loopback proxy in front of the
real Postfix submission port that delays the final reply, drops the connection after
the final dot (the server said 250, nobody heard it), passes the 250 and then resets, or
refuses. Copies are counted where the customer would count them: in their IMAP mailbox,
after every message Postfix accepted (the proxy saw each 250) has been delivered.

Waiting is real time (the journal box's grace is a real-time assumption about Postfix),
except where a test says it moves the engine's clock past a retry backoff.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import make_msgid

import pytest
from django.db import connection

from postroom.core.lifecycle import State
from postroom.engine.runtime import Engine
from postroom.store.commands import transfer
from postroom.store.models import Agent, Interaction, JournalEvent, Outgoing, Withdrawal, WrapUpCode
from postroom_sim.agents import compose_reply
from tests.faults.smtp_proxy import Fault, Rule, SmtpFaultProxy, proxy_for

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]

REPLY_TEXT = "Hello Carol, your kettle is on its way. Alice"


@pytest.fixture
def proxy(mailstack):
    p = proxy_for(mailstack)
    yield p
    p.stop()


@pytest.fixture
def center(make_center, proxy: SmtpFaultProxy):
    """A contact center whose engine sends through the fault proxy, with a short SMTP
    time budget so that a held-back reply outlasts it."""
    center = make_center()
    site = center.engine.site
    center.engine = Engine(replace(site, smtp=replace(site.smtp, port=proxy.port, timeout=2.0)), now=center.clock)
    return center


def mail(center, subject: str = "Where is my order?") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Carol Customer <{center.address('carol')}>"
    msg["To"] = center.address("support")
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid("c", domain="customer.test")
    msg.set_content("It has not arrived.")
    return msg


def write_in(center, count: int = 1) -> None:
    center.send(mail(center), center.address("support"), center.address("carol"))
    center.wait_for("support", count)


def reply_as(center, who: str, text: str = REPLY_TEXT) -> None:
    forwarded = [m for m in center.wait_for(who, 1) if m["Reply-To"] is not None][-1]
    reply = compose_reply(forwarded, agent_addr=center.address(who), agent_name=who, style="thunderbird", text=text)
    center.submit(reply, who)
    center.wait_for("outbound", 1)


def settle(center, done: Callable[[], bool], *, timeout: float = 60.0, clock_step: dict | None = None) -> None:
    """Run the engine until `done()`; real time passes (and the engine's clock moves on by
    `clock_step` each round, for tests that skip retry backoffs)."""
    deadline = time.monotonic() + timeout
    while True:
        center.engine.run_until_idle()
        if done():
            return
        if time.monotonic() > deadline:
            rows = list(Outgoing.objects.values("key", "state", "attempts", "last_error"))
            raise AssertionError(f"not settled after {timeout:.0f} s; outbox: {rows}")
        if clock_step:
            center.clock.advance(**clock_step)
        time.sleep(0.2)


def interaction() -> Interaction:
    return Interaction.objects.select_related("agent").get()


def is_auto(data: bytes | None) -> bool:
    return data is not None and b"auto-submitted: auto-replied" in data.lower()


def is_reply(data: bytes | None) -> bool:
    return data is not None and b"auto-submitted:" not in data.lower()


def copies(center, proxy: SmtpFaultProxy, who: str, message_id: str) -> int:
    """How many copies of `message_id` are in `who`'s mailbox, once every copy Postfix
    accepted for anyone has been delivered."""
    accepted = sum(1 for t in proxy.log if t.upstream_reply.startswith("250") and any(
        center.address(who) == r for r in t.rcpts))
    found = center.wait_for(who, accepted)
    return sum(1 for m in found if str(m["Message-ID"]).strip() == message_id)


def forwards(center, who: str) -> list[EmailMessage]:
    return [m for m in center.messages(who) if m["Reply-To"] is not None and m["Auto-Submitted"] is None]


def notices(center, who: str) -> list[EmailMessage]:
    return [m for m in center.messages(who) if m["Auto-Submitted"] == "auto-generated"]


def customer_replies(center) -> list[EmailMessage]:
    return [m for m in center.messages("carol") if m["Auto-Submitted"] is None]


def row(kind: str, **filters) -> Outgoing:
    return Outgoing.objects.get(kind=kind, **filters)


# -- window 1: a forward belongs to its delivery round and its agent -------------------------


def test_a_transfer_cancels_the_old_agents_pending_forward(center, proxy) -> None:
    alice, bob = center.address("alice"), center.address("bob")
    proxy.add(Rule(Fault.REFUSE_RCPT, match=alice, code=451, times=None))
    center.ready("alice")
    write_in(center)
    center.engine.run_until_idle()
    ix = interaction()
    assert ix.state is State.ANSWERED and ix.agent.address == alice
    center.ready("bob")
    transfer(ix, by_user=ix.agent.user, to_agent=bob, now=center.clock())
    proxy.clear()  # alice's mailbox takes mail again
    settle(center, lambda: interaction().state is State.DELIVERED, clock_step={"minutes": 5})
    ix = interaction()
    assert ix.agent.address == bob and bob not in ix.excluded_agents
    assert len(forwards(center, "bob")) == 1
    assert forwards(center, "alice") == []
    old = Outgoing.objects.get(kind=Outgoing.FORWARD, recipients=[alice])
    assert old.state == "cancelled"


def test_a_stale_forward_refused_for_good_does_not_requeue_the_new_agents_delivery(center, proxy) -> None:
    alice, bob = center.address("alice"), center.address("bob")
    temporary = proxy.add(Rule(Fault.REFUSE_RCPT, match=alice, code=451, times=None))
    center.ready("alice")
    write_in(center)
    center.engine.run_until_idle()
    ix = interaction()
    center.ready("bob")
    transfer(ix, by_user=ix.agent.user, to_agent=bob, now=center.clock())
    # Alice's mailbox is gone for good now: the old forward would die with a 550.
    proxy.rules.remove(temporary)
    proxy.add(Rule(Fault.REFUSE_RCPT, match=alice, code=550, times=None))
    settle(center, lambda: interaction().state is State.DELIVERED, clock_step={"minutes": 5}, timeout=30)
    ix = interaction()
    assert ix.agent.address == bob and bob not in ix.excluded_agents
    assert len(forwards(center, "bob")) == 1
    kinds = list(JournalEvent.objects.filter(interaction=ix).values_list("kind", flat=True))
    assert "delivery_failed" not in kinds


def test_a_forward_sent_after_its_round_ended_is_ignored_and_withdrawn(center, proxy) -> None:
    """The transfer lands while alice's forward is in the middle of its SMTP transaction;
    the 250 that follows must not complete bob's delivery."""
    alice, bob = center.address("alice"), center.address("bob")
    held = proxy.add(Rule(Fault.DELAY_REPLY, match=alice, delay=1.5))
    center.ready("alice")
    write_in(center)
    transferred = threading.Event()

    def transfer_during_the_smtp_transaction() -> None:
        try:
            deadline = time.monotonic() + 30
            while not any(alice in t.rcpts for t in proxy.log) and time.monotonic() < deadline:
                time.sleep(0.02)  # the forward's DATA has reached the proxy
            ix = interaction()
            center.ready("bob")
            transfer(ix, by_user=ix.agent.user, to_agent=bob, now=center.clock())
            transferred.set()
        finally:
            connection.close()

    side = threading.Thread(target=transfer_during_the_smtp_transaction)
    side.start()
    center.engine.run_until_idle()
    side.join(30)
    assert transferred.is_set() and held.used == 1
    settle(center, lambda: interaction().state is State.DELIVERED and interaction().agent.address == bob)
    settle(center, lambda: forwards(center, "alice") == [])  # withdrawn from alice's mailbox
    assert len(forwards(center, "bob")) == 1
    assert Withdrawal.objects.filter(agent__address=alice, done_at__isnull=False).exists()


# -- window 2: a reply refused for good is visible and can be acted on -----------------------


def reply_fails_for_good(center, proxy) -> Interaction:
    center.ready("alice")
    write_in(center)
    center.engine.run_until_idle()
    proxy.add(Rule(Fault.REFUSE_RCPT, match=center.address("carol"), code=550, times=None))
    reply_as(center, "alice")
    center.engine.run_until_idle()
    return interaction()


def sam(center):
    return Agent.objects.get(address=center.address("sam")).user


def test_a_reply_refused_for_good_goes_to_reply_failed_and_people_are_told(center, proxy) -> None:
    ix = reply_fails_for_good(center, proxy)
    assert ix.status == "reply_failed"
    assert Outgoing.objects.get(kind=Outgoing.REPLY).state == Outgoing.DEAD
    for who in ("alice", "sam"):
        told = [m for m in notices(center, who) if "not sent" in str(m["Subject"]).lower()]
        assert len(told) == 1, [m["Subject"] for m in notices(center, who)]
    assert customer_replies(center) == []


def test_a_failed_reply_is_resent_by_a_supervisor_once(center, proxy) -> None:
    from postroom.store.commands import resend_reply

    ix = reply_fails_for_good(center, proxy)
    proxy.clear()
    resend_reply(ix, by_user=sam(center), now=center.clock())
    settle(center, lambda: interaction().state is State.CLOSED)
    (reply,) = customer_replies(center)
    assert REPLY_TEXT in reply.get_body(("plain",)).get_content()
    assert copies(center, proxy, "carol", Outgoing.objects.get(kind=Outgoing.REPLY).message_id) == 1


def test_a_failed_reply_is_edited_then_sent(center, proxy) -> None:
    from postroom.store.commands import edit_reply

    ix = reply_fails_for_good(center, proxy)
    proxy.clear()
    edit_reply(ix, by_user=sam(center), text="Dear Carol, a corrected answer.", now=center.clock())
    settle(center, lambda: interaction().state is State.CLOSED)
    (reply,) = customer_replies(center)
    assert "a corrected answer" in reply.get_body(("plain",)).get_content()
    assert REPLY_TEXT not in reply.get_body(("plain",)).get_content()


def test_a_failed_reply_is_ended_with_a_wrap_up_code(center, proxy) -> None:
    from postroom.store.commands import end_failed_reply

    WrapUpCode.objects.get_or_create(code="escalated_by_phone", defaults={"label": "Escalated by phone"})
    ix = reply_fails_for_good(center, proxy)
    end_failed_reply(ix, by_user=sam(center), code="escalated_by_phone", now=center.clock())
    settle(center, lambda: interaction().state is State.CLOSED)
    ix = interaction()
    assert ix.outcome == "wrapped_up" and ix.wrapup_code == "escalated_by_phone"
    assert customer_replies(center) == []
    assert center.messages("support") == [] and center.messages("outbound") == []


def test_a_reply_past_its_retry_cap_goes_to_reply_failed(make_center, proxy) -> None:
    center = make_center("\n[outbox]\nmax_attempts = 3\n")
    site = center.engine.site
    center.engine = Engine(replace(site, smtp=replace(site.smtp, port=proxy.port)), now=center.clock)
    center.ready("alice")
    write_in(center)
    center.engine.run_until_idle()
    proxy.add(Rule(Fault.REFUSE_RCPT, match=center.address("carol"), code=451, times=None))
    reply_as(center, "alice")
    settle(center, lambda: interaction().status == "reply_failed", clock_step={"hours": 2}, timeout=30)
    assert Outgoing.objects.get(kind=Outgoing.REPLY).attempts == 3
    assert len([m for m in notices(center, "sam") if "not sent" in str(m["Subject"]).lower()]) == 1


# -- window 3: the server said 250 and nobody heard it ---------------------------------------


@pytest.mark.parametrize(
    ("fault", "delay"),
    [(Fault.DROP_AFTER_DOT, 0.0), (Fault.DELAY_REPLY, 4.0), (Fault.PASS_THEN_RESET, 0.0), (Fault.REFUSE_DATA, 0.0)],
    ids=lambda v: v.value if isinstance(v, Fault) else None,
)
def test_one_auto_response_and_one_reply_whatever_the_smtp_server_does(center, proxy, fault, delay) -> None:
    carol = center.address("carol")
    proxy.add(Rule(fault, match=lambda rcpts, data: carol in rcpts and is_auto(data), delay=delay))
    center.ready("alice")
    write_in(center)
    settle(center, lambda: interaction().auto_response_sent_at is not None)
    proxy.add(Rule(fault, match=lambda rcpts, data: carol in rcpts and is_reply(data), delay=delay))
    reply_as(center, "alice")
    settle(center, lambda: interaction().state is State.CLOSED)
    assert [r.used for r in proxy.rules] == [1, 1]
    auto, reply = row(Outgoing.AUTO_RESPONSE), row(Outgoing.REPLY)
    assert copies(center, proxy, "carol", auto.message_id) == 1
    assert copies(center, proxy, "carol", reply.message_id) == 1
    assert len(center.messages("carol")) == 2


# -- automatic mail: Date, and an envelope sender relays accept ------------------------------


def test_automatic_mail_is_dated_and_has_a_null_envelope_sender_by_default(make_center) -> None:
    center = make_center('\n[[rules]]\nname = "copy"\nactions = [{{ action = "forward_copy", value = "{sam}" }}]\n')
    write_in(center)
    center.engine.run_until_idle()
    for kind in (Outgoing.AUTO_RESPONSE, Outgoing.NOTICE):
        built = message_from_bytes(bytes(row(kind).raw), policy=policy.default)
        assert built["Date"] is not None, f"the {kind} Postroom built has no Date"
        assert row(kind).envelope_from == ""
    (auto,) = center.wait_for("carol", 1)
    assert auto["Return-Path"] == "<>"


def test_the_envelope_sender_of_automatic_mail_can_be_the_box(make_center) -> None:
    center = make_center('\n[outbox]\nautomatic_envelope_from = "box"\n')
    write_in(center)
    center.engine.run_until_idle()
    (auto,) = center.wait_for("carol", 1)
    assert auto["Return-Path"] == f"<{center.address('support')}>"


# -- the journal box -----------------------------------------------------------------------


def test_an_unknown_outcome_waits_while_the_journal_box_cannot_be_read(center, proxy) -> None:
    """Never resent blindly: with the journal box unreadable the row stays unknown and an
    alert is raised; once it can be read, the copy there settles the row as sent."""
    site = center.engine.site
    good = site.journal
    broken = replace(good, account=replace(good.account, password="wrong"))
    center.engine = Engine(replace(site, journal=broken), now=center.clock)
    carol = center.address("carol")
    proxy.add(Rule(Fault.DROP_AFTER_DOT, match=lambda rcpts, data: carol in rcpts and is_auto(data)))
    write_in(center)
    settle(center, lambda: JournalEvent.objects.filter(kind="alert", detail__alert="journal_box_unavailable").exists())
    auto = row(Outgoing.AUTO_RESPONSE)
    assert auto.state == Outgoing.UNKNOWN and auto.attempts == 1
    center.engine.close()
    center.engine = Engine(replace(site, journal=good), now=center.clock)
    settle(center, lambda: row(Outgoing.AUTO_RESPONSE).state == Outgoing.SENT, clock_step={"minutes": 1})
    assert row(Outgoing.AUTO_RESPONSE).attempts == 1
    assert interaction().auto_response_sent_at is not None
    assert copies(center, proxy, "carol", auto.message_id) == 1


def test_journal_copies_past_their_retention_are_expunged(center) -> None:
    from datetime import timedelta

    from postroom.engine.outbox import expire_copies
    from postroom.mail.journalbox import JournalBox

    site = center.engine.site
    now = center.clock()
    old, recent = mail(center, "old"), mail(center, "recent")
    center.append("journal", recent.as_bytes())
    box = JournalBox(site.journal.account)
    try:
        box.open()
        # Arrived (INTERNALDATE) two days before the retention ran out.
        box.client.append("INBOX", old.as_bytes(), (), now - site.journal.retention - timedelta(days=2))
        assert box.holds(old["Message-ID"]) and box.holds(recent["Message-ID"])
        assert expire_copies(site, box, now) == 1
        assert not box.holds(old["Message-ID"]) and box.holds(recent["Message-ID"])
    finally:
        box.close()
    assert [m["Subject"] for m in center.messages("journal")] == ["recent"]
