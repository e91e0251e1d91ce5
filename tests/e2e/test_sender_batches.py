"""A sender batch's outcomes are written together (decision 0047), each under its own claim.

One `outbox.send` call sends its rows over one SMTP session and records their outcomes in
one transaction at the end. What must not change: a row is recorded sent only under the
claim it was sent under (a claim lost meanwhile writes nothing for that row and leaves
the others standing), and one row whose consequence fails does not take the others'
records with it. Judged against the real mail server and the database.
"""

from __future__ import annotations

import threading
import time
from email.message import EmailMessage
from email.utils import make_msgid

import pytest
from django.db import connection
from django.utils import timezone

from postroom.core.lifecycle import State
from postroom.engine import outbox
from postroom.engine.connections import Sessions
from postroom.engine.runtime import watched_boxes
from postroom.mail.journalbox import JournalBox
from postroom.mail.smtp import SmtpSender
from postroom.store.models import Agent, Interaction, JournalEvent, Mailbox, Outgoing
from tests.e2e.outbox_rows import notice

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]


def three_auto_responses(center) -> list[Outgoing]:
    """Three customer mails taken in: their three auto-responses, queued, in id order."""
    for n in range(3):
        msg = EmailMessage()
        msg["From"] = f"Carol Customer <{center.address('carol')}>"
        msg["To"] = center.address("support")
        msg["Subject"] = f"Order {n}"
        msg["Message-ID"] = make_msgid("c", domain="customer.test")
        msg.set_content("Where is my order?\n")
        center.send(msg, center.address("support"), center.address("carol"))
    center.wait_for("support", 3)
    sessions = Sessions(center.engine.site)
    try:
        for box in watched_boxes():
            center.engine.ingest_box(box, sessions.get(box, ingesting=True))
    finally:
        sessions.close()
    responses = list(Outgoing.objects.filter(kind=Outgoing.AUTO_RESPONSE).order_by("pk"))
    assert len(responses) == 3
    return responses


class StealsAClaim:
    """The real SMTP sender; after the server accepted `victim`, another engine takes its
    claim (as after a lease that ran out), before this batch writes its outcomes."""

    def __init__(self, sender: SmtpSender, victim: Outgoing) -> None:
        self.sender, self.victim = sender, victim

    def send(self, envelope_from, recipients, raw, **kw):
        outcome = self.sender.send(envelope_from, recipients, raw, **kw)
        if raw == bytes(self.victim.raw):
            Outgoing.objects.filter(pk=self.victim.pk).update(claimed_by="other-engine:1:ffff")
        return outcome


def test_a_claim_lost_mid_batch_writes_nothing_for_its_row_and_the_others_are_recorded(make_center, monkeypatch) -> None:
    monkeypatch.setattr(outbox, "STEP_BUDGET_S", 600.0)  # the batch is not cut short by a slow machine
    center = make_center()
    site = center.engine.site
    rows = [notice(center, n) for n in range(3)]
    sender, box = SmtpSender(site.smtp), JournalBox(site.journal.account)
    try:
        assert outbox.send(site, StealsAClaim(sender, rows[1]), box, "me:1:aaaa", center.clock)
    finally:
        sender.close()
        box.close()
        connection.close()

    first, stolen, last = (Outgoing.objects.get(pk=r.pk) for r in rows)
    assert first.state == Outgoing.SENT and last.state == Outgoing.SENT
    assert stolen.state == Outgoing.SENDING and stolen.claimed_by == "other-engine:1:ffff" and stolen.sent_at is None
    sent = [e.detail["message_id"] for e in JournalEvent.objects.filter(kind="notice_sent")]
    assert sorted(sent) == sorted([first.message_id, last.message_id])
    center.wait_for("sam", 3)  # all three left: the server is not asked to take any back


def test_one_rows_failing_consequence_leaves_the_batchs_other_records(make_center, monkeypatch) -> None:
    monkeypatch.setattr(outbox, "STEP_BUDGET_S", 600.0)  # the batch is not cut short by a slow machine
    # One customer writes all of them: no per-address auto-response limit here.
    center = make_center("\n[auto_response]\nmax_per_address = 0\n")
    site = center.engine.site
    responses = three_auto_responses(center)
    broken = responses[1]
    real_on_sent = outbox.on_sent

    def on_sent(row, *args, **kwargs):
        if row.pk == broken.pk:
            raise RuntimeError("a consequence that fails")
        return real_on_sent(row, *args, **kwargs)

    monkeypatch.setattr(outbox, "on_sent", on_sent)
    # Sent auto-responses are written as one group (decision 0052) unless that write
    # falls back to one row at a time: the row-by-row path is the one under test here.
    monkeypatch.setattr(outbox, "plain_auto_response", lambda done: False)
    sender, box = SmtpSender(site.smtp), JournalBox(site.journal.account)
    try:
        with pytest.raises(RuntimeError, match="a consequence that fails"):
            outbox.send(site, sender, box, "me:1:aaaa", center.clock)
    finally:
        sender.close()
        box.close()
        connection.close()

    states = {r.pk: Outgoing.objects.get(pk=r.pk).state for r in responses}
    assert states == {responses[0].pk: Outgoing.SENT, broken.pk: Outgoing.SENDING, responses[2].pk: Outgoing.SENT}
    stamped = {ix.pk for ix in Interaction.objects.exclude(auto_response_sent_at=None)}
    assert stamped == {responses[0].interaction_id, responses[2].interaction_id}
    assert JournalEvent.objects.filter(kind="auto_responded").count() == 2
    # The row left untouched is claimed still: after its lease the journal box settles it
    # (decision 0007), as for any claimant that died before writing its outcome.


@pytest.fixture
def groups(monkeypatch) -> list[bool]:
    """What each grouped write of sent auto-responses answered (True: the whole group written)."""
    answers: list[bool] = []
    real = outbox.settle_auto_responses

    def spy(group, keys):
        answers.append(real(group, keys))
        return answers[-1]

    monkeypatch.setattr(outbox, "settle_auto_responses", spy)
    return answers


def test_sent_auto_responses_are_written_as_one_group(make_center, monkeypatch, groups) -> None:
    """Decision 0052: the batch's sent auto-responses in one savepoint and two statements
    run for every row; each row's write still fenced by its own claim."""
    monkeypatch.setattr(outbox, "STEP_BUDGET_S", 600.0)  # the batch is not cut short by a slow machine
    center = make_center("\n[auto_response]\nmax_per_address = 0\n")
    site = center.engine.site
    responses = three_auto_responses(center)
    sender, box = SmtpSender(site.smtp), JournalBox(site.journal.account)
    try:
        assert outbox.send(site, sender, box, "me:1:aaaa", center.clock)
    finally:
        sender.close()
        box.close()
        connection.close()

    assert groups == [True]
    rows = [Outgoing.objects.get(pk=r.pk) for r in responses]
    assert [(r.state, r.claimed_by, r.lease_until) for r in rows] == [(Outgoing.SENT, "", None)] * 3
    assert all(r.sent_at is not None and r.last_error.startswith("250") for r in rows)
    ixs = {ix.pk: ix for ix in Interaction.objects.filter(pk__in=[r.interaction_id for r in rows])}
    assert all(ix.auto_response_sent_at is not None for ix in ixs.values())
    events = {e.detail["message_id"]: e for e in JournalEvent.objects.filter(kind="auto_responded")}
    assert sorted(events) == sorted(r.message_id for r in rows)
    for r in rows:
        e, ix = events[r.message_id], ixs[r.interaction_id]
        assert (e.interaction_id, e.agent_id, e.mailbox_id) == (ix.pk, ix.agent_id, ix.mailbox_id)


def test_a_claim_lost_in_a_group_of_auto_responses_writes_nothing_for_its_row(make_center, monkeypatch, groups) -> None:
    """The group's fenced writes count one row short: the group is rolled back and written
    one by one, where the stolen row writes nothing and the others are recorded."""
    monkeypatch.setattr(outbox, "STEP_BUDGET_S", 600.0)  # the batch is not cut short by a slow machine
    center = make_center("\n[auto_response]\nmax_per_address = 0\n")
    site = center.engine.site
    responses = three_auto_responses(center)
    sender, box = SmtpSender(site.smtp), JournalBox(site.journal.account)
    try:
        assert outbox.send(site, StealsAClaim(sender, responses[1]), box, "me:1:aaaa", center.clock)
    finally:
        sender.close()
        box.close()
        connection.close()

    assert groups == [False]  # the group noticed, and left it to the row-by-row write
    first, stolen, last = (Outgoing.objects.get(pk=r.pk) for r in responses)
    assert first.state == Outgoing.SENT and last.state == Outgoing.SENT
    assert stolen.state == Outgoing.SENDING and stolen.claimed_by == "other-engine:1:ffff" and stolen.sent_at is None
    stamped = {ix.pk for ix in Interaction.objects.exclude(auto_response_sent_at=None)}
    assert stamped == {first.interaction_id, last.interaction_id}
    sent = [e.detail["message_id"] for e in JournalEvent.objects.filter(kind="auto_responded")]
    assert sorted(sent) == sorted([first.message_id, last.message_id])


class DeadlocksBeforeTheWrite:
    """The real SMTP sender; once the server accepted the batch's last row, another
    connection (another node's router, say) holds the last interaction's row and then
    asks for the first one, while this batch's write holds the first and waits for the
    last: a deadlock. That connection waits longer before it looks for deadlocks
    (deadlock_timeout 10 s against the default 1 s), so PostgreSQL ends the batch's
    transaction, deterministically."""

    def __init__(self, sender: SmtpSender, last: Outgoing, first_ix: int, last_ix: int) -> None:
        self.sender, self.last, self.first_ix, self.last_ix = sender, last, first_ix, last_ix
        self.other: threading.Thread | None = None
        self.failed: list[BaseException] = []

    def send(self, envelope_from, recipients, raw, **kw):
        outcome = self.sender.send(envelope_from, recipients, raw, **kw)
        if raw == bytes(self.last.raw):
            holding = threading.Event()
            self.other = threading.Thread(target=self._other, args=(holding,))
            self.other.start()
            assert holding.wait(30)
        return outcome

    def _other(self, holding: threading.Event) -> None:
        import psycopg

        settings = connection.settings_dict
        try:
            with psycopg.connect(
                host=settings["HOST"], port=settings["PORT"], user=settings["USER"], dbname=settings["NAME"],
                password=settings["PASSWORD"] or None,
            ) as other, other.cursor() as cur:
                cur.execute("SET deadlock_timeout = '10s'")
                cur.execute("SELECT id FROM store_interaction WHERE id = %s FOR UPDATE", [self.last_ix])
                holding.set()
                # Until the batch's write waits for the row we hold: then ask for its first.
                for _ in range(3000):
                    cur.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
                    if cur.fetchone()[0]:
                        break
                    time.sleep(0.01)
                cur.execute("SELECT id FROM store_interaction WHERE id = %s FOR UPDATE", [self.first_ix])
                other.commit()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.failed.append(exc)
            holding.set()


def test_a_batch_write_ended_by_a_deadlock_is_written_again(make_center) -> None:
    """PostgreSQL breaks a deadlock by ending one of its transactions: the batch's outcome
    write is that one here. Nothing of it was written and every row is still this
    sender's, so it is written again at once; before, its rows stayed `sending` until
    their lease ran out and the journal box settled them (minutes; two nodes under load
    ran at 0.7 interactions/s)."""
    if connection.vendor != "postgresql":
        pytest.skip("a deadlock between two writers needs PostgreSQL's row locks")
    center = make_center("\n[auto_response]\nmax_per_address = 0\n")
    site = center.engine.site
    responses = three_auto_responses(center)
    ids = sorted(r.interaction_id for r in responses)
    sender, box = SmtpSender(site.smtp), JournalBox(site.journal.account)
    deadlocking = DeadlocksBeforeTheWrite(sender, responses[-1], ids[0], ids[-1])
    try:
        assert outbox.send(site, deadlocking, box, "me:1:aaaa", center.clock)
    finally:
        if deadlocking.other is not None:
            deadlocking.other.join(60)
        sender.close()
        box.close()
        connection.close()

    assert not deadlocking.failed, deadlocking.failed
    assert {Outgoing.objects.get(pk=r.pk).state for r in responses} == {Outgoing.SENT}
    assert Interaction.objects.filter(auto_response_sent_at=None).count() == 0
    assert JournalEvent.objects.filter(kind="auto_responded").count() == 3


class Watches:
    """The real SMTP sender; before each send it notes what the database says of `rows`
    (state, claimant, attempts), and after the `n`-th send it runs `then`."""

    def __init__(self, sender: SmtpSender, rows: list[Outgoing], n: int = 0, then=None) -> None:
        self.sender, self.rows, self.n, self.then = sender, rows, n, then
        self.seen: list[dict[int, tuple[str, str, int]]] = []

    def send(self, envelope_from, recipients, raw, **kw):
        self.seen.append(
            {o.pk: (o.state, o.claimed_by, o.attempts) for o in Outgoing.objects.filter(pk__in=[r.pk for r in self.rows])}
        )
        outcome = self.sender.send(envelope_from, recipients, raw, **kw)
        if self.then is not None and len(self.seen) == self.n:
            self.then()
        return outcome


def test_a_batch_claims_its_rows_together_and_gives_back_the_rows_it_did_not_reach(make_center, monkeypatch) -> None:
    """Decision 0049: the batch's rows are claimed (and counted) in one statement before
    the first is sent; the worker's step stops at its budget (here at once, after the
    first mail), and the rows it claimed and never tried go back as they were: pending,
    their attempt given back, due when they were, held by nobody. The next step sends
    them. (Before, each row was claimed in a statement of its own as its turn came.)"""
    center = make_center()
    site = center.engine.site
    rows = [notice(center, n) for n in range(3)]
    monkeypatch.setattr(outbox, "STEP_BUDGET_S", 0.0)
    sender, box = SmtpSender(site.smtp), JournalBox(site.journal.account)
    watching = Watches(sender, rows)
    try:
        assert outbox.send(site, watching, box, "me:1:aaaa", center.clock)
        assert watching.seen == [{r.pk: (Outgoing.SENDING, "me:1:aaaa", 1) for r in rows}]

        first, *rest = (Outgoing.objects.get(pk=r.pk) for r in rows)
        assert (first.state, first.attempts, first.claimed_by, first.lease_until) == (Outgoing.SENT, 1, "", None)
        for was, now in zip(rows[1:], rest, strict=True):
            assert (now.state, now.attempts, now.claimed_by, now.lease_until, now.next_attempt_at) == (
                Outgoing.PENDING, 0, "", None, was.next_attempt_at
            )

        while Outgoing.objects.exclude(state=Outgoing.SENT).exists():
            assert outbox.send(site, sender, box, "me:1:aaaa", center.clock)
    finally:
        sender.close()
        box.close()
        connection.close()
    assert [Outgoing.objects.get(pk=r.pk).attempts for r in rows] == [1, 1, 1]
    assert JournalEvent.objects.filter(kind="notice_sent").count() == 3
    center.wait_for("sam", 3)


def test_a_sender_thread_goes_on_past_its_budget_until_a_reply_is_due(make_center, monkeypatch) -> None:
    """A sender thread (`threaded`) has nothing else to hand back to: past its budget it
    goes on with its batch while no reply or forward is due, and stops at the next notice
    or auto-response once one is, giving back what it claimed and did not reach; the
    reply (queued after the batch was read) goes first in the next batch."""
    center = make_center()
    site = center.engine.site
    rows = [notice(center, n) for n in range(4)]
    reply: list[Outgoing] = []

    def queue_reply() -> None:
        msg = EmailMessage()
        msg["From"] = center.address("support")
        msg["To"] = center.address("carol")
        msg["Subject"] = "Re: your order"
        msg["Message-ID"] = make_msgid("r", domain="example.test")
        msg.set_content("It is on its way.\n")
        reply.append(Outgoing.objects.create(
            key="reply:test:0", kind=Outgoing.REPLY, envelope_from=center.address("support"),
            recipients=[center.address("carol")], message_id=msg["Message-ID"], raw=msg.as_bytes(),
            next_attempt_at=timezone.now(),
        ))

    monkeypatch.setattr(outbox, "STEP_BUDGET_S", 0.0)
    sender, box = SmtpSender(site.smtp), JournalBox(site.journal.account)
    watching = Watches(sender, rows, n=2, then=queue_reply)
    try:
        assert outbox.send(site, watching, box, "me:1:aaaa", center.clock, threaded=True)
        states = [Outgoing.objects.get(pk=r.pk) for r in rows]
        assert [(o.state, o.attempts, o.claimed_by) for o in states] == [
            (Outgoing.SENT, 1, ""), (Outgoing.SENT, 1, ""), (Outgoing.PENDING, 0, ""), (Outgoing.PENDING, 0, ""),
        ]
        assert Outgoing.objects.get(pk=reply[0].pk).state == Outgoing.PENDING
        assert [r.pk for r in outbox.due_rows(center.clock(), site, 50)][0] == reply[0].pk
    finally:
        sender.close()
        box.close()
        connection.close()


class FailsAfter:
    """The real SMTP sender, which raises (a bug, not an SMTP outcome) at its `n`-th send."""

    def __init__(self, sender: SmtpSender, n: int) -> None:
        self.sender, self.n, self.calls = sender, n, 0

    def send(self, envelope_from, recipients, raw, **kw):
        self.calls += 1
        if self.calls == self.n:
            raise RuntimeError("a sender that breaks")
        return self.sender.send(envelope_from, recipients, raw, **kw)


def test_a_send_that_raises_leaves_the_batchs_sent_rows_recorded_and_the_rest_given_back(make_center, monkeypatch) -> None:
    """The second send raises before any byte of it is written: the first row's outcome
    is written, and the rows claimed with the batch and never tried go back; the row
    whose send raised stays claimed (what happened to it is not known here): after its
    lease the journal box settles it (decision 0007)."""
    center = make_center()
    site = center.engine.site
    rows = [notice(center, n) for n in range(4)]
    monkeypatch.setattr(outbox, "STEP_BUDGET_S", 600.0)  # the batch is not cut short by a slow machine
    sender, box = SmtpSender(site.smtp), JournalBox(site.journal.account)
    try:
        with pytest.raises(RuntimeError, match="a sender that breaks"):
            outbox.send(site, FailsAfter(sender, 2), box, "me:1:aaaa", center.clock)
    finally:
        sender.close()
        box.close()
        connection.close()
    states = [Outgoing.objects.get(pk=r.pk) for r in rows]
    assert [(o.state, o.attempts, o.claimed_by) for o in states] == [
        (Outgoing.SENT, 1, ""), (Outgoing.SENDING, 1, "me:1:aaaa"), (Outgoing.PENDING, 0, ""), (Outgoing.PENDING, 0, ""),
    ]
    center.wait_for("sam", 1)


@pytest.fixture
def sent_groups(monkeypatch) -> list[bool]:
    """What each grouped write of sent replies, forwards and notices answered (decision 0065)."""
    answers: list[bool] = []
    real = outbox.settle_sent

    def spy(group, site, locked):
        answers.append(real(group, site, locked))
        return answers[-1]

    monkeypatch.setattr(outbox, "settle_sent", spy)
    return answers


def queued_mail(center, tag: int) -> tuple[list[Interaction], list[Outgoing]]:
    """As delivery and the reply step leave them: two interactions replying with their
    replies queued, two answered with the forwards of their current round queued, one
    delivered with a notice about it, and a notice about no interaction."""
    support = Mailbox.objects.get(address=center.address("support"))
    alice = Agent.objects.get(address=center.address("alice"))
    now = timezone.now()
    ixs, rows = [], []
    for n, (status, kind) in enumerate(
        [(State.REPLYING, Outgoing.REPLY)] * 2 + [(State.ANSWERED, Outgoing.FORWARD)] * 2
        + [(State.DELIVERED, Outgoing.NOTICE)]
    ):
        ix = Interaction.objects.create(
            node_id=center.engine.site.node_id, mailbox=support, uidvalidity=1, uid=100 * tag + n,
            customer=center.address("carol"), subject=f"mail {tag}.{n}", status=status, arrival_time=now,
            agent=alice, deliveries=1,
        )
        msg = EmailMessage()
        msg["From"] = center.address("support")
        msg["To"] = center.address("carol") if kind == Outgoing.REPLY else center.address("alice")
        msg["Subject"] = f"{kind} {tag}.{n}"
        msg["Message-ID"] = make_msgid(f"{kind}{tag}{n}", domain="example.test")
        msg.set_content(f"{kind} {tag}.{n}\n")
        forward = kind == Outgoing.FORWARD
        rows.append(Outgoing.objects.create(
            key=f"{kind}:{tag}:{n}", kind=kind, interaction=ix, envelope_from=center.address("support"),
            recipients=[str(msg["To"])], message_id=msg["Message-ID"], raw=msg.as_bytes(), next_attempt_at=now,
            agent=alice if forward else None, delivery=1 if forward else None,
        ))
        ixs.append(ix)
    rows.append(notice(center, tag))
    return ixs, rows


def final_state(ixs: list[Interaction], rows: list[Outgoing]) -> list[object]:
    """What the outcome write left, comparable between two sets of rows."""
    state: list[object] = []
    for ix in Interaction.objects.filter(pk__in=[i.pk for i in ixs]).order_by("pk"):
        events = JournalEvent.objects.filter(interaction_id=ix.pk).order_by("pk")
        state.append((
            ix.status, ix.version, ix.agent_id, ix.no_reply_due_at is not None, ix.replied_at is not None,
            [(e.kind, e.agent_id, e.mailbox_id, sorted(e.detail)) for e in events],
        ))
    for row in Outgoing.objects.filter(pk__in=[r.pk for r in rows]).order_by("pk"):
        state.append((row.kind, row.state, row.attempts, row.claimed_by, row.lease_until, row.sent_at is not None, row.last_error[:3]))
    return state


def send_all(center, sender) -> None:
    site = center.engine.site
    box = JournalBox(site.journal.account)
    try:
        assert outbox.send(site, sender, box, "me:1:aaaa", center.clock)
    finally:
        box.close()
        connection.close()


def test_sent_replies_forwards_and_notices_are_written_as_one_group_as_one_by_one(make_center, monkeypatch, sent_groups) -> None:
    """Decision 0065: the batch's replies, forwards and notices whose consequence is the
    common one are written in one savepoint (their fenced writes run for every row at
    once, then each transition); the final state is the row-by-row write's."""
    monkeypatch.setattr(outbox, "STEP_BUDGET_S", 600.0)  # the batch is not cut short by a slow machine
    center = make_center()
    sender = SmtpSender(center.engine.site.smtp)
    try:
        grouped = queued_mail(center, 1)
        send_all(center, sender)
        assert sent_groups == [True]
        monkeypatch.setattr(outbox, "settle_sent", lambda group, site, locked: False)  # the row-by-row write
        one_by_one = queued_mail(center, 2)
        send_all(center, sender)
    finally:
        sender.close()
    after = final_state(*grouped)
    assert after == final_state(*one_by_one)
    ixs = Interaction.objects.filter(pk__in=[i.pk for i in grouped[0]]).order_by("pk")
    assert [ix.status for ix in ixs] == [State.REPLIED, State.REPLIED, State.DELIVERED, State.DELIVERED, State.DELIVERED]
    rows = Outgoing.objects.filter(pk__in=[r.pk for r in grouped[1]])
    assert all(r.state == Outgoing.SENT and r.claimed_by == "" and r.sent_at is not None for r in rows)
    assert JournalEvent.objects.filter(kind="notice_sent").count() == 4  # two notices each time


def test_a_claim_lost_in_a_group_of_replies_writes_nothing_for_its_row(make_center, monkeypatch, sent_groups) -> None:
    """One of the group's fenced writes finds its row taken: the group is rolled back (its
    transitions too) and written one by one, where the stolen reply writes nothing and
    its interaction is still replying."""
    monkeypatch.setattr(outbox, "STEP_BUDGET_S", 600.0)  # the batch is not cut short by a slow machine
    center = make_center()
    ixs, rows = queued_mail(center, 1)
    sender = SmtpSender(center.engine.site.smtp)
    try:
        send_all(center, StealsAClaim(sender, rows[1]))
    finally:
        sender.close()
    assert sent_groups == [False]
    stolen = Outgoing.objects.get(pk=rows[1].pk)
    assert stolen.state == Outgoing.SENDING and stolen.claimed_by == "other-engine:1:ffff" and stolen.sent_at is None
    assert Interaction.objects.get(pk=ixs[1].pk).status == State.REPLYING
    others = [r.pk for r in rows if r.pk != stolen.pk]
    assert set(Outgoing.objects.filter(pk__in=others).values_list("state", flat=True)) == {Outgoing.SENT}
    statuses = [Interaction.objects.get(pk=ix.pk).status for ix in ixs]
    assert statuses == [State.REPLIED, State.REPLYING, State.DELIVERED, State.DELIVERED, State.DELIVERED]
    # Each transition once: the group's, rolled back, left no journal row behind.
    assert JournalEvent.objects.filter(interaction_id=ixs[0].pk, kind="reply_sent").count() <= 1
    assert JournalEvent.objects.filter(interaction_id=ixs[1].pk).count() == 0
