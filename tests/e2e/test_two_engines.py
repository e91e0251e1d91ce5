"""Two engines on one database: every outgoing row is sent once, because a row is claimed
under a lease and never sent while another sender's lease on it is live.

On PostgreSQL they are two `postroom engine` processes, two nodes (`--node-id node-a`,
`node-b`; decision 0030), both running the outbox step; on SQLite, which holds one node
only (tests/e2e/test_lease.py), two sending workers run the outbox step side by side in
two threads, each with its own database connection, SMTP session and claimant name, as
two processes would. They send through the SMTP fault proxy, which holds each final reply
back for two seconds: while one sender's transaction is in flight, the other one finds
that row due and must leave it alone. The verdict: every row's Message-ID was accepted by
Postfix once (the proxy saw each 250) and is in the customer's real mailbox once.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from dataclasses import replace
from email.message import EmailMessage
from email.utils import make_msgid

import pytest
from django.db import connection

from postroom.engine import outbox
from postroom.engine.connections import Sessions
from postroom.engine.runtime import watched_boxes
from postroom.engine.site import Site
from postroom.mail.journalbox import JournalBox
from postroom.mail.smtp import SmtpSender
from postroom.store.models import Outgoing
from tests.e2e.enginerun import make_deployment, wait_until
from tests.faults.smtp_proxy import Fault, Rule, proxy_for

pytestmark = pytest.mark.mailstack
POSTGRES = os.environ.get("DATABASE_URL", "").startswith("postgres")

MAILS = 8


def ask(center, n: int) -> None:
    """Carol's question number `n`, to the support box."""
    msg = EmailMessage()
    msg["From"] = f"Carol Customer <{center.address('carol')}>"
    msg["To"] = center.address("support")
    msg["Subject"] = f"Question {n}"
    msg["Message-ID"] = make_msgid("c", domain="customer.test")
    msg.set_content(f"Question number {n}.\n")
    center.send(msg, center.address("support"), center.address("carol"))


def through(center, proxy, timeout: float) -> Site:
    """The center's site, sending through the fault proxy, `timeout` s per SMTP reply."""
    site = center.engine.site
    return replace(site, smtp=replace(site.smtp, port=proxy.port, timeout=timeout))


def ask_and_take_in(center, site: Site, mails: int) -> None:
    """Carol's first `mails` questions, taken in by the engine (their auto-responses queued;
    the senders are the test's)."""
    for n in range(mails):
        ask(center, n)
    center.wait_for("support", mails)
    sessions = Sessions(site)
    try:
        for box in watched_boxes():
            center.engine.ingest_box(box, sessions.get(box, ingesting=True))
    finally:
        sessions.close()


def in_session(site, errors: list[BaseException], work: Callable[[SmtpSender, JournalBox], object]) -> None:
    """`work(sender, journal)` on an SMTP session and journal box of its own, as one of the
    engine's sender threads runs: what it raises is kept in `errors` (the test's thread
    reports it), and the sessions and this thread's database connection are closed after."""
    sender, journal = SmtpSender(site.smtp), JournalBox(site.journal.account)
    try:
        work(sender, journal)
    except BaseException as exc:  # reported in the test's thread
        errors.append(exc)
    finally:
        sender.close()
        journal.close()
        connection.close()


def run_in_threads(target: Callable[[int], None], numbers, errors: list[BaseException]) -> None:
    """`target(n)` for each of `numbers`, each in a thread of its own, all at once; the test
    fails on what any of them raised, or on one still running after three minutes."""
    threads = [threading.Thread(target=target, args=(n,)) for n in numbers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)


@pytest.fixture
def proxy(mailstack):
    p = proxy_for(mailstack)
    yield p
    p.stop()


@pytest.mark.skipif(not POSTGRES, reason="SQLite holds one node: see the threaded test below")
def test_two_nodes_send_each_row_once(mailstack, new_user, tmp_path, proxy) -> None:
    # Every final reply comes 2 s late: long transactions, inside the 4 s budget.
    proxy.add(Rule(Fault.DELAY_REPLY, delay=2.0, times=None))
    # One customer writes all of them: no per-address auto-response limit here.
    dep = make_deployment(
        mailstack, new_user, tmp_path, smtp_port=proxy.port, extra=lambda v: "\n[auto_response]\nmax_per_address = 0\n"
    )
    center = dep.center
    try:
        dep.load()
        first, second = dep.start_engine(node_id="node-a"), dep.start_engine(node_id="node-b")
        for n in range(MAILS):
            ask(center, n)
            wait_until(f"mail {n} to be taken", lambda n=n: len(dep.interactions()) > n, timeout=30, engine=first)

        def all_sent() -> bool:
            rows = dep.outgoing()
            return len(rows) == MAILS and {r["state"] for r in rows} == {"sent"}

        wait_until("every auto-response to be sent", all_sent, timeout=120, engine=first)
        assert second.poll() is None, second.tail()
        assert first.stop(signal.SIGTERM) == 0, first.tail()
        assert second.stop(signal.SIGTERM) == 0, second.tail()

        rows = dep.outgoing()
        assert len(rows) == MAILS and all(r["kind"] == "auto_response" for r in rows)
        assert {r["claimed_by"] for r in rows} == {""}  # settled rows hold no claim
        # Both nodes were sending (each keeps one SMTP connection of its own).
        assert len({t.client for t in proxy.log}) >= 2, [(t.client, t.message_id) for t in proxy.log]
        ids = [r["message_id"] for r in rows]
        assert {mid: proxy.delivered(mid) for mid in ids} == {mid: 1 for mid in ids}
        carol = center.wait_for("carol", MAILS)
        assert sorted(str(m["Message-ID"]).strip() for m in carol) == sorted(ids)
    finally:
        dep.cleanup()


@pytest.mark.skipif(POSTGRES, reason="PostgreSQL: two real nodes, above")
@pytest.mark.django_db(transaction=True)
def test_two_senders_send_each_row_once(make_center, proxy) -> None:
    # A sender claims its due rows CLAIM_CHUNK at a time (decision 0049): with fewer rows
    # than that the first to claim takes them all and the second never sends. More than
    # two chunks, so that both must claim while the other is sending.
    mails = 2 * outbox.CLAIM_CHUNK + 4
    # Every final reply comes 1 s late: long transactions, inside the 4 s budget.
    proxy.add(Rule(Fault.DELAY_REPLY, delay=1.0, times=None))
    # One customer writes all of them: no per-address auto-response limit here.
    center = make_center("\n[auto_response]\nmax_per_address = 0\n")
    site = through(center, proxy, timeout=4.0)
    ask_and_take_in(center, site, mails)
    assert Outgoing.objects.filter(kind=Outgoing.AUTO_RESPONSE).count() == mails

    errors: list[BaseException] = []

    def worker(n: int) -> None:
        holder = outbox.claimant(f"{site.node_id}-{n}")

        def work(sender: SmtpSender, journal: JournalBox) -> None:
            while Outgoing.objects.exclude(state=Outgoing.SENT).exists():
                if not outbox.send(site, sender, journal, holder, center.clock):
                    threading.Event().wait(0.05)

        in_session(site, errors, work)

    run_in_threads(worker, (1, 2), errors)

    rows = list(Outgoing.objects.all())
    assert len(rows) == mails and {r.state for r in rows} == {Outgoing.SENT}
    assert {r.claimed_by for r in rows} == {""}  # settled rows hold no claim
    # Both workers were sending (each keeps one SMTP connection of its own).
    assert len({t.client for t in proxy.log}) >= 2, [(t.client, t.message_id) for t in proxy.log]
    ids = [r.message_id for r in rows]
    assert {mid: proxy.delivered(mid) for mid in ids} == {mid: 1 for mid in ids}
    carol = center.wait_for("carol", mails)
    assert sorted(str(m["Message-ID"]).strip() for m in carol) == sorted(ids)


@pytest.mark.django_db(transaction=True)
def test_two_sessions_that_ask_for_the_same_forward_send_it_once(make_center, proxy) -> None:
    """Decision 0060: sender session 1, with no reply or forward of its own in the split,
    asks for the most urgent one too (session 0's), so the two claim the same forward at
    once. One claim wins: the forward and each auto-response are sent once, with one
    attempt counted."""
    shares = 4
    # Every final reply comes late: while one session's transaction is in flight, the
    # others read that row's neighbours due and claim them.
    proxy.add(Rule(Fault.DELAY_REPLY, delay=0.3, times=None))
    center = make_center("\n[auto_response]\nmax_per_address = 0\n")
    site = through(center, proxy, timeout=4.0)
    mails = 3
    ask_and_take_in(center, site, mails)
    center.ready("alice")
    steps = dict(center.engine.steps())
    for _ in range(5):  # routing and delivery only: the senders are the test's
        steps["routing"]()
        steps["delivery"]()
    # Alice takes one: one forward, three auto-responses due.
    forwards = list(Outgoing.objects.filter(kind=Outgoing.FORWARD))
    assert len(forwards) == 1
    assert Outgoing.objects.filter(kind=Outgoing.AUTO_RESPONSE).count() == mails
    split = [[r.pk for r in outbox.due_rows(center.clock(), site, 50, share=s, shares=shares, steal=True)] for s in range(shares)]
    assert split[0][0] == split[1][0] == forwards[0].pk

    errors: list[BaseException] = []
    start = threading.Barrier(shares)

    def session(share: int) -> None:
        holder = outbox.claimant(f"{site.node_id}-{share}")

        def work(sender: SmtpSender, journal: JournalBox) -> None:
            start.wait()
            while Outgoing.objects.exclude(state=Outgoing.SENT).exists():
                # Session 1 asks for session 0's row whether session 0 is busy or not.
                if not outbox.send(site, sender, journal, holder, center.clock, share=share, shares=shares, threaded=True, steal=True):
                    threading.Event().wait(0.05)

        in_session(site, errors, work)

    run_in_threads(session, range(shares), errors)

    rows = list(Outgoing.objects.all())
    assert {r.state for r in rows} == {Outgoing.SENT}
    assert {r.attempts for r in rows} == {1}  # one claim won each row
    assert {r.claimed_by for r in rows} == {""}
    ids = [r.message_id for r in rows]
    assert {mid: proxy.delivered(mid) for mid in ids} == {mid: 1 for mid in ids}
    to_agents = [r.message_id for r in forwards]
    wait_until("the forwards in the agents' boxes",
               lambda: len(center.messages("alice")) >= len(forwards), timeout=30)
    got = center.messages("alice")
    assert sorted(str(m["Message-ID"]).strip() for m in got if str(m["Message-ID"]).strip() in to_agents) == sorted(to_agents)


@pytest.mark.django_db(transaction=True)
def test_a_forward_leaves_while_session_0_sends_its_auto_response(make_center, proxy) -> None:
    """Decision 0060: the auto-response is the first due row, so session 0's; the forward,
    queued while session 0 is still sending it, is the first due row again. Session 1
    sends it meanwhile (before, it was session 0's alone and waited for that send).
    Session 0 makes one `send` call only, read before the forward existed: the forward
    can only have been sent by session 1."""
    shares = 4
    # Session 0's auto-response is held at the server's final reply.
    proxy.add(Rule(Fault.DELAY_REPLY, match=lambda rcpts, data: data is not None and b"auto-submitted: auto-replied" in data.lower(), delay=3.0))
    center = make_center()
    site = through(center, proxy, timeout=10.0)
    ask_and_take_in(center, site, 1)
    response = Outgoing.objects.get(kind=Outgoing.AUTO_RESPONSE)
    errors: list[BaseException] = []
    sending = {0: threading.Event(), 1: threading.Event()}

    def session(share: int) -> None:
        # As the engine's sender threads do (`Engine._sender_loop`).
        in_session(site, errors, lambda sender, journal: outbox.send(
            site, sender, journal, outbox.claimant(f"{site.node_id}-{share}"), center.clock,
            share=share, shares=shares, threaded=True, steal=share == 1 and sending[0].is_set(), sending=sending[share]))

    zero = threading.Thread(target=session, args=(0,))
    zero.start()
    try:
        wait_until("session 0 sends the auto-response",
                   lambda: sending[0].is_set() and Outgoing.objects.get(pk=response.pk).state == Outgoing.SENDING, timeout=30)
        center.ready("alice")
        steps = dict(center.engine.steps())
        steps["routing"]()
        steps["delivery"]()
        forward = Outgoing.objects.get(kind=Outgoing.FORWARD)
        session(1)
        assert not errors, errors
        forward.refresh_from_db()
        assert forward.state == Outgoing.SENT and forward.attempts == 1
    finally:
        zero.join(60)
    assert not errors, errors
    assert not sending[0].is_set() and not sending[1].is_set()
    response.refresh_from_db()
    assert response.state == Outgoing.SENT and response.attempts == 1
    assert proxy.delivered(forward.message_id) == proxy.delivered(response.message_id) == 1
    assert [str(m["Message-ID"]).strip() for m in center.wait_for("alice", 1)] == [forward.message_id]
