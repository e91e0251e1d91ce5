"""The outbox step: claim each due row, send it (or settle it), record what that means.

Exactly once per row (docs/decisions/0007-exactly-once-sending.md), with the decisions in
`postroom.core.outbox` and every write a compare-and-set:

* a row is claimed with a lease (`claimed_by`, `lease_until`); nobody else claims it while
  the lease is live, and every SMTP transaction under it ends before half of it is over;
* its SMTP transaction carries the journal box as one more envelope recipient, so the
  server's 250 covers the journal copy too;
* the outcome is written, fenced by the claim, in the same transaction as its consequence
  (auto-response sent, delivered, replied, reply failed ...);
* a row whose outcome is unknown (no answer after the final dot, or a claimant that died
  holding it) is looked up in the journal box after the grace period: found, it is sent
  and its consequence applied; not found, it is sent again;
* attempts are capped: a reply past its cap or refused for good goes to `reply_failed`
  where a supervisor acts on it; other mail goes dead with an alert.

A forward belongs to its delivery round and agent: only the current round's forward may
complete or fail the delivery; a stale one is cancelled before sending, and one that was
sent anyway is withdrawn from the agent's mailbox.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from typing import Any

from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Case, F, IntegerField, Q, Value, When
from django.utils.dateparse import parse_datetime

from postroom.core.alerts import AlertKind
from postroom.core.headers import POLICY
from postroom.core.lifecycle import Delivered, DeliveryFailed, ReplyFailed, ReplySent, State
from postroom.core.outbox import (
    DUE_STATES,
    Claim,
    OutboxState,
    Row,
    after_check,
    after_send,
    before_send,
    check_failed,
    claim,
    due_for,
    expired_before,
    release,
    wait_for_claim,
)
from postroom.engine.alerts import raise_alert
from postroom.engine.faults import checkpoint
from postroom.engine.notices import queue_notice
from postroom.engine.site import Site
from postroom.mail.imap import MailboxUnavailable
from postroom.mail.journalbox import JournalBox
from postroom.mail.smtp import SmtpSender
from postroom.store import journal
from postroom.store.compiled import CompiledAt, CompiledIn, CompiledUpdates
from postroom.store.fence import is_fence_error
from postroom.store.models import Agent, Interaction, JournalEvent, Outgoing, Withdrawal
from postroom.store.transitions import StaleInteraction, apply

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# Island mode's send gate (engine/claims.py): may this row leave now? None: normal mode.
Gate = Callable[[Outgoing], bool]
# Told, by a session's read of the due rows, which other sessions have rows in it (their
# shares) and whether the most urgent row is a reply or a forward (decision 0062).
HandOut = Callable[[set[int], bool], None]


# How soon a row held back by the gate is looked at again: about one claim round trip.
CLAIM_WAIT = timedelta(seconds=1)


def claimant(node_id: str) -> str:
    """This process's name in `claimed_by`: the node and a token of its own, so two
    engines of one node (or one restarted) never take each other's claims for theirs."""
    return f"{node_id}:{os.getpid()}:{secrets.token_hex(4)}"


def due(now: datetime, site: Site) -> Q:
    """The rows `core.outbox.due_for` would claim at `now`, as a query."""
    return _due(now, expired_before(now, site.outbox))


def _due(now: datetime, expired: datetime) -> Q:
    """Due at `now`, or claimed under a lease that ran out before `expired`."""
    return Q(state__in=list(DUE_STATES), next_attempt_at__lte=now) | Q(state=OutboxState.SENDING, lease_until__lte=expired)


# Which due mail leaves first: a customer waiting for an answer, then an agent waiting for
# work, then notices, then the auto-responses (a backlog of thousands of those must not
# hold back the first forward: issue 9). Within a kind, oldest first. Order only: every
# row is still claimed, fenced and journalled one by one (decision 0007).
SEND_ORDER = Case(
    When(kind=Outgoing.REPLY, then=Value(0)),
    When(kind=Outgoing.FORWARD, then=Value(1)),
    When(kind=Outgoing.NOTICE, then=Value(2)),
    default=Value(3),
    output_field=IntegerField(),
)


# How long one outbox step may send auto-responses and notices before it hands the worker
# back to the other steps (routing, delivery): a burst of auto-responses must not hold a new
# mail's routing and forward for the seconds fifty sends take (issue 9). Replies and
# forwards, which people wait for, are sent without a budget. Rows not reached are given
# back unclaimed for the next round (`release`). A sender thread has no other step to
# hand back to: once its budget is spent it stops only when mail people wait for is due
# (`urgent_due`), so that a reply or forward never waits behind a batch of auto-responses.
STEP_BUDGET_S = 0.25
YIELDING_KINDS = (Outgoing.AUTO_RESPONSE, Outgoing.NOTICE)
URGENT_KINDS = (Outgoing.REPLY, Outgoing.FORWARD)


def send(
    site: Site,
    sender: SmtpSender,
    box: JournalBox | None,
    holder: str,
    clock: Clock,
    limit: int = 50,
    *,
    share: int = 0,
    shares: int = 1,
    gate: Gate | None = None,
    ask_journal: Gate | None = None,
    threaded: bool = False,
    steal: bool = False,
    sending: threading.Event | None = None,
    hand_out: HandOut | None = None,
) -> bool:
    """Send (or settle) up to `limit` due rows, by `SEND_ORDER`, stopping at the first
    auto-response or notice once the step has sent for `STEP_BUDGET_S` (`threaded`, a
    sender thread: only if a reply or forward is due by then); True if there were any.

    The rows that are simply due for sending are claimed `CLAIM_CHUNK` at a time, one
    compare-and-set statement each (`claim_batch`, decision 0049); the others (a journal
    check, a forward whose round is over, a row out of attempts) one by one, as before.
    Claimed rows the batch does not reach are given back with their attempt in the
    outcome write.

    With `shares` sessions sending at once (decision 0039), this one takes every
    `shares`-th row from `share` on: each session starts at the most urgent row not
    another's, and they seldom race for one claim (a lost race is harmless: the claim is
    a compare-and-set). `steal`: session 1 may ask for session 0's urgent row (`with_urgent_row`,
    decision 0060); `sending` is set while this call has mail on the wire (what session 1
    looks at to know session 0 is busy); `hand_out`: see `due_rows`."""
    start = time.monotonic()  # before `now`: every deadline counts from before the claim
    now = clock()
    rows = due_rows(now, site, limit, share=share, shares=shares, steal=steal, hand_out=hand_out)
    if not rows:
        return False
    wanted = forwards_wanted(rows)
    outcomes = Outcomes(site)
    batch = Batch({}, set())
    until = time.monotonic() + STEP_BUDGET_S
    try:
        for n, row in enumerate(rows):
            if n and row.kind in YIELDING_KINDS and time.monotonic() >= until:
                if not threaded or urgent_due(clock(), site):
                    break
                # Going on: what was sent so far is written now, as at a batch's end, so
                # the outcomes lag their mail no more than when the batch stopped here.
                outcomes.write()
                until = time.monotonic() + STEP_BUDGET_S
            if outcomes.overdue():
                outcomes.write()
            if row.pk not in batch.asked:
                if n:
                    start, now = time.monotonic(), clock()
                if claimable(row, wanted, now, site) is not None:
                    # This row and the next few not asked for yet, in one claim.
                    chunk = [r for r in rows[n:] if r.pk not in batch.asked][:CLAIM_CHUNK]
                    batch.add(claim_batch(chunk, wanted, site, holder, now, start))
            held = batch.held.get(row.pk)
            if held is not None:
                if time.monotonic() >= held.deadline:
                    break  # no SMTP byte after half the lease: it and the rest are given back
                del batch.held[row.pk]
                if sending is not None:
                    sending.set()
                go(held, site, sender, box, clock, gate, ask_journal, outcomes)
            elif row.pk not in batch.asked:
                if sending is not None:
                    sending.set()
                send_one(row, site, sender, box, holder, clock, gate, ask_journal, wanted=wanted.get(row.pk), outcomes=outcomes)
    finally:
        if sending is not None:
            sending.clear()
        # Also when a send raised: what the server accepted before it is recorded now,
        # not left to the journal box after the lease (decision 0047), and the rows the
        # batch claimed and never tried are given back.
        outcomes.release(batch.held.values())
        outcomes.write()
    return True


def urgent_due(now: datetime, site: Site) -> bool:
    """Is a reply or a forward due (mail a customer or an agent waits for)?"""
    return bool(URGENT_DUE.rows(now, expired_before(now, site.outbox)))


def urgent_ids(now: datetime, expired: datetime) -> Any:
    """The first due reply or forward (`_due`'s condition), as its id."""
    return Outgoing.objects.filter(_due(now, expired), kind__in=URGENT_KINDS).values_list("id")[:1]


# `urgent_ids`, read with SQL compiled once per thread (decision 0065: a sender past its
# budget asks it before every further auto-response or notice).
URGENT_DUE = CompiledAt(urgent_ids, Outgoing._meta.get_field("next_attempt_at"))


def due_rows(
    now: datetime, site: Site, limit: int, *, share: int = 0, shares: int = 1, steal: bool = False,
    hand_out: HandOut | None = None,
) -> list[Outgoing]:
    """The first `limit` rows due at `now`, by `SEND_ORDER`, then oldest first; with
    `shares`, the first `limit` of every `shares`-th row from `share` on (and, `steal`,
    session 1 asks for the most urgent row too: `with_urgent_row`). `hand_out` is told
    which other shares have rows in what was read (the running engine wakes their
    senders: one sender reads for all when mail is queued, decision 0062)."""
    if shares == 1:
        return list(Outgoing.objects.filter(due(now, site)).order_by(SEND_ORDER, "next_attempt_at", "id")[:limit])
    # Ids first: the other sessions' rows are not loaded (each carries its whole message).
    due_now = DUE_IDS.rows(now, expired_before(now, site.outbox), count=limit * shares)
    if hand_out is not None and due_now:
        # Every session that has a row in this read is told to look (decision 0062).
        hand_out({n for n in range(min(len(due_now), shares)) if n != share}, due_now[0][1] in URGENT_KINDS)
    mine = with_urgent_row(due_now, share, shares) if steal else [pk for pk, _ in due_now[share::shares]]
    if not mine:
        return []
    by_id = {row.pk: row for row in ROWS.objects(padded(mine))}
    return [by_id[i] for i in mine if i in by_id]


# The rows of these ids, read with SQL compiled once per thread and number of ids
# (decision 0065: what `in_bulk` built and compiled at every read was most of what was left
# of it); more than a sender's batch is read the ordinary way. The ids are padded to a few
# sizes (`padded`) so that each thread compiles a handful of statements, not one per count.
ROWS = CompiledIn(lambda ids: Outgoing.objects.filter(pk__in=ids), Outgoing._meta.get_field("id"), up_to=64)
ROW_COUNTS = (4, 16, 64)


def padded(ids: list[int]) -> list[int]:
    """`ids` and, up to the next of `ROW_COUNTS`, ids no row has (negative, each once)."""
    size = next((n for n in ROW_COUNTS if n >= len(ids)), len(ids))
    return ids + [-1 - n for n in range(size - len(ids))]


def due_ids(now: datetime, expired: datetime) -> Any:
    """The due rows' (id, kind), in `SEND_ORDER`, then oldest first."""
    return Outgoing.objects.filter(_due(now, expired)).order_by(SEND_ORDER, "next_attempt_at", "id").values_list("id", "kind")


# `due_ids`, read with SQL compiled once per thread and count (decision 0062: building and
# compiling it was most of a sender's read, and a sender reads at every wake-up).
DUE_IDS = CompiledAt(due_ids, Outgoing._meta.get_field("next_attempt_at"))


def with_urgent_row(due_now: list[tuple[int, str]], share: int, shares: int) -> list[int]:
    """The ids `share` of `shares` sends from `due_now` ((id, kind), in `SEND_ORDER`): every
    `shares`-th from `share` on; and session 1, when none of its rows is a reply or a
    forward, asks for the most urgent row (session 0's, the first) before its own
    (decision 0060).

    With a few rows due, the static split gives the most urgent row to session 0 alone:
    a forward queued while session 0 sent its interaction's auto-response waited for that
    send although the other sessions were idle. Session 1 now asks for it too while
    session 0 has mail on the wire (the caller says so: `send(steal=...)`); should both
    claim it, one claim wins (a compare-and-set, decision 0049) and the other claims
    nothing for it and goes on with its own rows. One session only, and only while
    session 0 is busy: each claim lost costs its reads and a statement under SQLite's one
    write lock."""
    mine = [pk for pk, _ in due_now[share::shares]]
    if share != 1 or not due_now or due_now[0][1] not in URGENT_KINDS:
        return mine
    if any(kind in URGENT_KINDS for _, kind in due_now[share::shares]):
        return mine
    return [due_now[0][0], *mine]


def snapshot(row: Outgoing) -> Row:
    return Row(
        state=row.outbox_state,
        attempts=row.attempts,
        due=row.next_attempt_at,
        lease_until=row.lease_until,
        holder=row.claimed_by,
    )


class Held:
    """A row claimed under `fence` and its attempt counted (`held`), not yet tried; `seen`
    is the row as it was before the claim, what `release` gives back."""

    def __init__(self, row: Outgoing, seen: Row, held: Row, fence: Fence, deadline: float) -> None:
        self.row, self.seen, self.held, self.fence, self.deadline = row, seen, held, fence, deadline


class Batch:
    """What `claim_batch` claimed: `held`, by id, until each is tried (what is left when the
    batch ends is given back); `asked`, every row a claim asked for, won or not."""

    def __init__(self, held: dict[int, Held], asked: set[int]) -> None:
        self.held, self.asked = held, asked

    def add(self, other: Batch) -> None:
        self.held.update(other.held)
        self.asked |= other.asked


# How many rows one claim statement takes (`claim_batch`): a tenth of the statements and
# write transactions of a claim per row, while the rest of a batch stays claimable by the
# other sessions (a slow relay holds a session's next ten rows, not its fifty).
CLAIM_CHUNK = 10


def claimable(row: Outgoing, wanted: dict[int, bool], now: datetime, site: Site) -> OutboxState | None:
    """The state `row` was read in, if a batch claim may take it: simply due for sending
    (not a journal check), under its attempt cap, and a forward only while its round is on
    (`wanted`, read for the batch). Anything else is claimed alone (`send_one`)."""
    policy = site.outbox
    seen = snapshot(row)
    if due_for(seen, now, policy) is not Claim.SEND or seen.attempts >= policy.max_attempts:
        return None
    if row.kind == Outgoing.FORWARD and wanted.get(row.pk) is not True:
        return None
    return seen.state


def claim_batch(
    rows: list[Outgoing], wanted: dict[int, bool], site: Site, holder: str, now: datetime, start: float
) -> Batch:
    """Claim, and count an attempt of, every row of `rows` simply due for sending, in one
    compare-and-set statement per state they were read in (decision 0049): nobody holds a
    row in a due state (SENDING is the one held state), so "still in the state read, due,
    under its cap" is the whole condition, as `due_for` says; a row another sender took
    meanwhile is not in it. The claimed rows are then read back (ids only): one that moved
    between the read and the claim (sent, failed, resent by a person) is loaded again, and
    what is sent is what the row holds under this claim.

    Every SMTP transaction under these claims ends before half the lease counted from
    `start`, taken before `now` (decision 0007): one deadline for the batch. Left one by
    one (`send_one`): rows to check in the journal box, forwards whose round is over (claimed
    only to be cancelled), rows out of attempts."""
    policy = site.outbox
    groups: dict[OutboxState, list[Outgoing]] = {}
    for row in rows:
        if (state := claimable(row, wanted, now, site)) is not None:
            groups.setdefault(state, []).append(row)
    asked = [row for group in groups.values() for row in group]
    if not asked:
        return Batch({}, set())
    lease_until = now + policy.lease
    won: dict[int, tuple[int, datetime | None]] = {}
    try:
        with transaction.atomic() if len(groups) > 1 else contextlib.nullcontext():
            for state, group in groups.items():
                # What it won, as this very statement wrote it (RETURNING, decision 0062):
                # the rows it updated are the rows claimed under this holder and lease.
                claimed = CLAIMS.returned(
                    len(group), claim_fields(len(group)), claim_rows, claim_values,
                    OutboxState.SENDING.value, holder, lease_until, *(r.pk for r in group),
                    state.value, now, policy.max_attempts,
                )
                won.update((pk, (attempts, as_datetime(due_at))) for pk, attempts, due_at in claimed)
    except OperationalError as exc:
        # Two senders' claims crossing on PostgreSQL's row locks: this one was ended and
        # claimed nothing; its rows are due again for the next batch (anyone's).
        if not is_deadlock(exc):
            raise
        log.info("a batch's claim of %d rows ended by the database (%s); taken again later", len(asked),
                 str(exc).splitlines()[0])
        return Batch({}, {r.pk for r in asked})
    deadline = start + policy.lease.total_seconds() / 2
    held: dict[int, Held] = {}
    for row in asked:
        if row.pk not in won:
            continue  # another sender took it first
        seen = snapshot(row)
        if won[row.pk] != (seen.attempts + 1, seen.due):
            # It moved between the read and the claim: send what it holds now.
            state, row = seen.state, Outgoing.objects.get(pk=row.pk)
            seen = Row(state=state, attempts=row.attempts - 1, due=row.next_attempt_at)
        claimed = before_send(claim(seen, now, holder, policy), policy)
        held[row.pk] = Held(row, seen, claimed, Fence(row.pk, holder, lease_until), deadline)
    return Batch(held, {r.pk for r in asked})


def claim_rows(_sending: str, _holder: str, _lease: datetime, *rest: Any) -> Any:
    """`claim_batch`'s rows (ids, then the state read, now, the attempt cap): still in
    that state, due, under their cap."""
    *pks, state, now, cap = rest
    return Outgoing.objects.filter(pk__in=pks, state=state, next_attempt_at__lte=now, attempts__lt=cap)


def claim_values(sending: str, holder: str, lease: datetime, *_rest: Any) -> dict[str, Any]:
    """What `claim_batch` writes: SENDING under this holder and lease, an attempt counted."""
    return {"state": sending, "claimed_by": holder, "lease_until": lease, "attempts": F("attempts") + 1}


def claim_fields(n: int) -> tuple[Any, ...]:
    """The fields that prepare `claim_rows`' and `claim_values`' arguments for n rows."""
    field = Outgoing._meta.get_field
    return (field("state"), field("claimed_by"), field("lease_until"), *(field("id"),) * n,
            field("state"), field("next_attempt_at"), field("attempts"))


# `claim_batch`'s compare-and-set, compiled by Django once per count of rows (decision
# 0062's statement, in store/compiled's shape since decision 0068), RETURNING each won
# row's id, attempts and due time (SQLite ≥ 3.35 and PostgreSQL): the read-back that
# followed the UPDATE is gone with the query building of both.
CLAIMS = CompiledUpdates("id", "attempts", "next_attempt_at")


def as_datetime(value: datetime | str | None) -> datetime | None:
    """A DateTimeField's value as the database cursor gave it (SQLite: text, in UTC), as
    the ORM reads it."""
    if isinstance(value, str):
        value = parse_datetime(value)
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def send_one(
    row: Outgoing, site: Site, sender: SmtpSender, box: JournalBox | None, holder: str, clock: Clock,
    gate: Gate | None = None,
    ask_journal: Gate | None = None,
    *,
    wanted: bool | None = None,
    outcomes: Outcomes | None = None,
) -> None:
    """Claim, send and settle one row. With `outcomes`, the outcome of its SMTP
    transaction is kept there and written with the batch's (`Outcomes.write`); `wanted`
    is what `forwards_wanted` found for a forward."""
    policy = site.outbox
    now = clock()
    seen = snapshot(row)
    kind = due_for(seen, now, policy)
    if kind is None:
        return
    # A forward is looked at before its claim: one whose round is already over is then
    # claimed only to be cancelled (below); one cancelled after this look is no longer
    # pending, so the claim's compare-and-set fails. (A forward found stale stays stale: a
    # round, once over, never comes back; so the look may be the batch's, made earlier.)
    if kind is Claim.SEND and row.kind == Outgoing.FORWARD:
        wanted = forward_wanted(row) if wanted is None else wanted
    else:
        wanted = None
    held = claim(seen, now, holder, policy)
    # A fresh row is claimed and its attempt counted in one write (issue 9: one fenced
    # write fewer per mail). A kill after it is a kill after counting, as before: the lease
    # runs out and the journal box says whether it left (decision 0007).
    counted = False
    if kind is Claim.SEND and wanted is not False:
        ahead = before_send(held, policy)
        if ahead.state is not OutboxState.DEAD:
            held, counted = ahead, True
    won = Outgoing.objects.filter(
        pk=row.pk,
        state=row.state,
        attempts=row.attempts,
        claimed_by=row.claimed_by,
        lease_until=row.lease_until,
        next_attempt_at=row.next_attempt_at,
    ).update(state=held.state, claimed_by=holder, lease_until=held.lease_until, attempts=held.attempts)
    if won != 1:
        return  # another engine took it first
    # Every SMTP byte under this claim is written before half the lease is over; the
    # other half absorbs clock skew between engines (docs/decisions/0007).
    deadline = time.monotonic() + policy.lease.total_seconds() / 2
    fence = Fence(row.pk, holder, held.lease_until)

    if kind is Claim.CHECK:
        try:
            found = box.holds(row.message_id) if box is not None else False
        except MailboxUnavailable as exc:
            box.close()  # type: ignore[union-attr]
            with transaction.atomic():
                fence.write(check_failed(held, clock(), policy), last_error=f"journal box: {exc}"[:2000])
                alert("journal_box_unavailable", clock(), interaction=row.interaction, error=str(exc)[:500])
            return
        held = after_check(held, found)
        with transaction.atomic():
            if found:
                if fence.write(held, sent_at=clock()):
                    journal.record("unknown_settled", clock(), interaction=row.interaction, message_id=row.message_id, found=True)
                    on_sent(row, site, clock())
                return
            journal.record(
                "unknown_settled", clock(), interaction=row.interaction, message_id=row.message_id, found=False,
                journal_box=box is not None,
            )

    if row.kind == Outgoing.FORWARD and not (forward_wanted(row) if wanted is None else wanted):
        # Its round ended (transfer, no reply, hang-up ...) while it waited: not sent.
        with transaction.atomic():
            if fence.write(replace(held, state=OutboxState.CANCELLED, holder="", lease_until=None)):
                # Unknown and no journal box to ask: a copy may be in the agent's mailbox.
                stale_forward(row, clock(), possibly_sent=kind is Claim.CHECK and box is None)
        return

    go(Held(row, seen, held, fence, deadline), site, sender, box, clock, gate, ask_journal, outcomes,
       counted=counted, kind=kind)


def go(
    h: Held, site: Site, sender: SmtpSender, box: JournalBox | None, clock: Clock,
    gate: Gate | None = None,
    ask_journal: Gate | None = None,
    outcomes: Outcomes | None = None,
    *,
    counted: bool = True,
    kind: Claim = Claim.SEND,
) -> None:
    """The rest of a claimed row's way: island mode's gate and journal look, its attempt
    counted (if the claim did not), its SMTP transaction, its outcome (kept in `outcomes`,
    or written at once)."""
    policy = site.outbox
    row, seen, held, fence = h.row, h.seen, h.held, h.fence
    if gate is not None and not gate(row):
        # Island mode: nothing leaves for an email before this node has won its claim
        # (decision 0036). Asked as late as possible before the send; the attempt a fresh
        # row's claim counted is given back (nothing was tried). The journal box settles a
        # send made by a node paused past its claim.
        fence.write(wait_for_claim(replace(held, attempts=seen.attempts), clock(), CLAIM_WAIT))
        return
    if kind is Claim.SEND and box is not None and ask_journal is not None and ask_journal(row):
        # Island mode: the other side (or this node before it lost the database) may have
        # sent this very mail already; its Message-ID is derived from the email's name
        # (core/islandlocal.py), so the journal box says so (decision 0036).
        try:
            found = box.holds(row.message_id)
        except MailboxUnavailable:
            box.close()
            fence.write(wait_for_claim(replace(held, attempts=seen.attempts), clock(), CLAIM_WAIT))
            return
        if found:
            with transaction.atomic():
                if fence.write(after_check(held, True), sent_at=clock()):
                    journal.record(
                        "unknown_settled",
                        clock(),
                        interaction=row.interaction,
                        message_id=row.message_id,
                        found=True,
                        island=True,
                    )
                    on_sent(row, site, clock())
            return
    if not counted:
        held = before_send(held, policy)
        if held.state is OutboxState.DEAD:
            with transaction.atomic():
                if fence.write(held):
                    on_dead(row, site, f"no attempts left after {row.attempts}", clock())
            return
        if not fence.write(held):
            return

    checkpoint(f"sending-{row.kind}")  # claimed and counted; nothing of it sent yet
    journal_address = site.journal.address if site.journal else None
    outcome = sender.send(row.envelope_from, row.recipients, bytes(row.raw), journal=journal_address, deadline=h.deadline)
    checkpoint(f"sent-{row.kind}")
    now = clock()
    done = Sent(row, fence, after_send(held, outcome.result, now, policy), outcome.detail, outcome.sent, now)
    if outcomes is not None:
        outcomes.keep(done)
        return
    with transaction.atomic():
        settle(done, site, {})


class Sent:
    """What one SMTP transaction under a claim ended with, to be written under that claim."""

    def __init__(self, row: Outgoing, fence: Fence, settled: Row, detail: str, sent: bool, now: datetime) -> None:
        self.row, self.fence, self.settled, self.detail, self.sent, self.now = row, fence, settled, detail, sent, now
        self.at = time.monotonic()


def settle(
    done: Sent, site: Site, locked: dict[int, Interaction], keys: dict[int, tuple[int | None, int | None]] | None = None
) -> None:
    """Inside the caller's transaction: the row's outcome, fenced by its claim, and its
    consequence (`locked`: interactions already read under lock in this transaction;
    `keys`: the auto-responses' journal keys, `interaction_keys`)."""
    row, settled, now, detail = done.row, done.settled, done.now, done.detail
    if not done.fence.write(settled, last_error=detail[:2000], sent_at=now if done.sent else None):
        log.error("outgoing %s: the claim was lost while sending (%s)", row.key, settled.state.value)
        return
    match settled.state:
        case OutboxState.SENT:
            on_sent(row, site, now, locked.get(row.interaction_id or 0), keys)
        case OutboxState.DEAD:
            on_dead(row, site, detail, now)
        case OutboxState.UNKNOWN:
            log.warning("outgoing %s: outcome unknown (%s); settled from the journal box", row.key, detail)
            journal.record("send_unknown", now, interaction=row.interaction, mail=row.kind, error=detail[:500])
        case _:
            journal.record("send_deferred", now, interaction=row.interaction, mail=row.kind, error=detail[:500])


class Outcomes:
    """The outcomes of one sender batch's SMTP transactions, written together (decision
    0047): one transaction, the interactions their consequences change read under lock in
    one query (in id order, so two senders never wait on each other crosswise), the
    journal rows in one INSERT. Each row keeps its own fenced compare-and-set, in a
    savepoint of its own, so a row whose claim was lost, or whose consequence fails,
    writes nothing and leaves the others' standing.

    Exactly once is unchanged (decision 0007): a row is recorded sent only after the
    server's 250, and only under its claim; a kill before the write leaves its rows
    claimed, and after the lease the journal box says which of them left, as it did for
    one row. The write comes at the batch's end, or sooner once the oldest kept outcome
    is `HOLD` old, far inside the lease.

    The rows the batch claimed together and never tried (`release`: the batch stopped
    early, or a send raised) are given back in the same transaction (decision 0049).
    If that write fails they stay claimed: after the lease the journal box finds nothing
    of them and they are sent, as after a kill."""

    # How long a kept outcome may wait for its write: a lease is minutes (OutboxPolicy),
    # and the interaction's state should not lag its mail by more than a moment.
    HOLD = 2.0

    def __init__(self, site: Site) -> None:
        self.site = site
        self.kept: list[Sent] = []
        self.released: list[Held] = []

    def keep(self, done: Sent) -> None:
        self.kept.append(done)

    def release(self, held: Iterable[Held]) -> None:
        self.released.extend(held)

    def overdue(self) -> bool:
        return bool(self.kept) and time.monotonic() - self.kept[0].at >= self.HOLD

    # A deadlock (PostgreSQL picks one of the transactions that lock the same rows in
    # different orders: another node's routing round, its delivery) rolls the write back
    # whole; nothing of it reached the database and every row is still ours, so it is
    # written again at once. Without that, the batch's sent mail waited for its lease to
    # run out and for the journal box (minutes): 2 nodes ran at 0.7 interactions/s.
    RETRIES = 3

    def write(self) -> None:
        kept, self.kept = self.kept, []
        released, self.released = self.released, []
        if not kept and not released:
            return
        for attempt in range(1, self.RETRIES + 1):
            try:
                self._write(kept, released)
                return
            except OperationalError as exc:
                if attempt == self.RETRIES or not is_deadlock(exc):
                    raise
                log.info("outcomes of %d sent rows: %s; written again", len(kept), str(exc).splitlines()[0])

    def _write(self, kept: list[Sent], released: list[Held]) -> None:
        settling = [d for d in kept if d.row.interaction_id is not None and d.settled.state is OutboxState.SENT]
        changed = {d.row.interaction_id for d in settling if d.row.kind != Outgoing.AUTO_RESPONSE}
        touched = sorted({d.row.interaction_id for d in kept if d.row.interaction_id is not None})
        failed: Exception | None = None
        with transaction.atomic(), journal.batched():
            # Every interaction the batch writes to is locked here, in id order, before any
            # write (an auto-response's stamp too): two senders then never wait on each
            # other crosswise. Read whole only where a consequence needs its state; a batch
            # of auto-responses alone reads ids (its journal rows' keys), no model at all.
            locked: dict[int, Interaction] = {}
            keys: dict[int, tuple[int | None, int | None]] = {}
            if touched and changed:
                for ix in (
                    Interaction.objects.select_for_update(of=("self",))
                    .select_related("agent", "mailbox")
                    .filter(pk__in=touched)
                    .order_by("pk")
                ):
                    if ix.pk in changed:
                        locked[ix.pk] = ix
                    keys[ix.pk] = (ix.agent_id, ix.mailbox_id)
            elif touched:
                keys = {
                    pk: (agent, box)
                    for pk, agent, box in Interaction.objects.select_for_update()
                    .filter(pk__in=touched)
                    .order_by("pk")
                    .values_list("pk", "agent_id", "mailbox_id")
                }
            give_back(released)
            if len(kept) == 1 and not released:
                settle(kept[0], self.site, locked, keys)  # fails whole, as one row always did
                return
            rest = kept
            plain = [d for d in kept if plain_auto_response(d)]
            if len(plain) > 1 and settle_auto_responses(plain, keys):
                rest = [d for d in kept if not plain_auto_response(d)]
            common = common_sent(rest, locked)
            if len(common) > 1 and settle_sent(common, self.site, locked):
                grouped = {id(d) for d in common}
                rest = [d for d in rest if id(d) not in grouped]
            for done in rest:
                if done.settled.state is OutboxState.DEAD:
                    # on_dead reads its interaction afresh and may change it.
                    locked.pop(done.row.interaction_id or 0, None)
                try:
                    with journal.savepoint():
                        settle(done, self.site, locked, keys)
                except (OperationalError, InterfaceError):
                    raise  # the database is away: the whole batch waits for its lease
                except Exception as exc:
                    if is_fence_error(exc):
                        raise  # this node is fenced out: nothing of it is kept
                    log.exception("outgoing %s: recording its outcome failed", done.row.key)
                    # Its interaction may have changed in memory before the rollback.
                    locked.pop(done.row.interaction_id or 0, None)
                    failed = failed or exc
        if failed is not None:
            raise failed


def plain_auto_response(done: Sent) -> bool:
    """An auto-response the server took: its consequence is a stamp and a journal row,
    nothing that depends on its interaction's state (`on_sent`)."""
    return done.row.kind == Outgoing.AUTO_RESPONSE and done.row.interaction_id is not None and done.sent and (
        done.settled.state is OutboxState.SENT
    )


def common_sent(kept: list[Sent], locked: dict[int, Interaction]) -> list[Sent]:
    """The replies, forwards and notices of `kept` the server took whose consequence is the
    common one (`on_sent`): a reply of an interaction still replying (ReplySent), the
    forward of the current round of one still answered (Delivered), a notice (a journal
    row). Each with its interaction read under lock (`locked`) and the only row of `kept`
    for it, so that no row's consequence depends on another's."""
    per_interaction: dict[int, int] = {}
    for d in kept:
        if d.row.interaction_id is not None:
            per_interaction[d.row.interaction_id] = per_interaction.get(d.row.interaction_id, 0) + 1

    def common(d: Sent) -> bool:
        row = d.row
        if not d.sent or d.settled.state is not OutboxState.SENT or row.kind not in COMMON_KINDS:
            return False
        if row.interaction_id is None:
            return row.kind == Outgoing.NOTICE
        ix = locked.get(row.interaction_id)
        if ix is None or per_interaction[row.interaction_id] != 1:
            return False
        if row.kind == Outgoing.REPLY:
            return ix.state is State.REPLYING
        if row.kind == Outgoing.FORWARD:
            return ix.state is State.ANSWERED and current_forward(row, ix)
        return True

    return [d for d in kept if common(d)]


COMMON_KINDS = (Outgoing.REPLY, Outgoing.FORWARD, Outgoing.NOTICE)


def settle_sent(group: list[Sent], site: Site, locked: dict[int, Interaction]) -> bool:
    """Inside the caller's transaction: `settle` for the sent rows of `common_sent`, all in
    one savepoint: their fenced compare-and-sets as `settle_auto_responses` writes them
    (one prepared statement run for every row), then each one's consequence (`on_sent`:
    its transition or journal row), instead of a savepoint and a fenced UPDATE each
    (decision 0065). Unless every row was still ours and every consequence went through,
    the savepoint is rolled back, their interactions are dropped from `locked` (a
    transition may have changed one in memory: read again under lock) and False says so:
    the caller then writes them one by one, each in its own savepoint, as before. A fence
    error and a database error propagate, as there."""
    try:
        with journal.savepoint():
            with connection.cursor() as cur:
                write_fenced(cur, group)
            for d in group:
                on_sent(d.row, site, d.now, locked.get(d.row.interaction_id or 0))
    except (OperationalError, InterfaceError):
        raise  # the database is away: the whole batch waits for its lease
    except Exception as exc:
        if is_fence_error(exc):
            raise  # this node is fenced out: nothing of it is kept
        if not isinstance(exc, _ClaimLost):
            log.exception("outcomes of %d sent rows: the group write failed; written one by one", len(group))
        for d in group:
            locked.pop(d.row.interaction_id or 0, None)
        return False
    return True


class _ClaimLost(Exception):
    """One of a group's fenced writes found its row no longer claimed as it was."""


def write_fenced(cur: Any, group: list[Sent]) -> None:
    """The fenced compare-and-set of `Fence.write` for every row of `group` (sent rows: each
    with its `sent_at`), as one prepared statement per set of columns run for every row
    (`executemany`); raises `_ClaimLost` unless every row was still ours."""
    out = Outgoing._meta
    col = {f: out.get_field(f).column for f in (
        "state", "attempts", "claimed_by", "lease_until", "last_error", "sent_at", "next_attempt_at", "id"
    )}
    adapt = connection.ops.adapt_datetimefield_value
    by_due: dict[bool, list[Sent]] = {}
    for d in group:
        by_due.setdefault(d.settled.due is not None, []).append(d)
    for with_due, rows in by_due.items():
        sets = ["state", "attempts", "claimed_by", "lease_until", "last_error", "sent_at"]
        if with_due:
            sets.append("next_attempt_at")
        sql = (
            f"UPDATE {out.db_table} SET {', '.join(f'{col[f]} = %s' for f in sets)} "
            f"WHERE {col['id']} = %s AND {col['state']} = %s AND {col['claimed_by']} = %s "
            f"AND {col['lease_until']} {{}}"
        )
        params = []
        for d in rows:
            new, fence = d.settled, d.fence
            values = [new.state.value, new.attempts, new.holder, adapt(new.lease_until), d.detail[:2000], adapt(d.now)]
            if with_due:
                values.append(adapt(new.due))
            values += [fence.pk, OutboxState.SENDING.value, fence.holder]
            params.append(values + [adapt(fence.lease_until)] if fence.lease_until is not None else values)
        # A claim always has a lease; "IS NULL" only for a fence without one (as the ORM writes it).
        with_lease = [p for p, d in zip(params, rows, strict=True) if d.fence.lease_until is not None]
        without = [p for p, d in zip(params, rows, strict=True) if d.fence.lease_until is None]
        for clause, batch in (("= %s", with_lease), ("IS NULL", without)):
            if not batch:
                continue
            cur.executemany(sql.format(clause), batch)
            if cur.rowcount != len(batch):
                raise _ClaimLost


def settle_auto_responses(group: list[Sent], keys: dict[int, tuple[int | None, int | None]]) -> bool:
    """Inside the caller's transaction: `settle` for sent auto-responses (`plain_auto_response`),
    all of them in one savepoint and two prepared statements run for every row
    (`executemany`) instead of a savepoint and two UPDATEs each (issue 9: the outcome
    write was ~40 % of a sender). The same fenced compare-and-set per row as `Fence.write`
    (its own holder and lease); its row counts are added up, and unless every row was
    still ours the savepoint is rolled back and False says so: the caller then writes them
    one by one, each in its own savepoint, where the row whose claim was lost (or whose
    write fails) is told apart. A fence error (this node fenced out) and a database error
    propagate, as there."""
    ix = Interaction._meta
    adapt = connection.ops.adapt_datetimefield_value
    try:
        with transaction.atomic(), connection.cursor() as cur:
            write_fenced(cur, group)
            stamps = [(adapt(d.now), d.row.interaction_id) for d in group]
            cur.executemany(
                f"UPDATE {ix.db_table} SET {ix.get_field('auto_response_sent_at').column} = %s "
                f"WHERE {ix.get_field('id').column} = %s",
                stamps,
            )
    except _ClaimLost:
        return False
    except (OperationalError, InterfaceError):
        raise  # the database is away: the whole batch waits for its lease
    except Exception as exc:
        if is_fence_error(exc):
            raise  # this node is fenced out: nothing of it is kept
        log.exception("outcomes of %d auto-responses: the group write failed; written one by one", len(group))
        return False
    missing = [d.row.interaction_id for d in group if d.row.interaction_id not in keys]
    if missing:
        keys = {**keys, **interaction_keys(missing)}
    for d in group:
        agent_id, mailbox_id = keys[d.row.interaction_id]
        journal.defer(
            JournalEvent(
                at=d.now, kind="auto_responded", interaction_id=d.row.interaction_id, agent_id=agent_id,
                mailbox_id=mailbox_id, detail={"message_id": d.row.message_id},
            )
        )
    return True


def give_back(released: list[Held]) -> None:
    """Inside the caller's transaction: claimed rows never tried go back as they were
    before their claim (`core.outbox.release`): its state, its attempt given back (the
    claim counted one), due when it was; fenced by the claim, one statement per state."""
    groups: dict[tuple[OutboxState, str, datetime | None], list[int]] = {}
    for h in released:
        back = release(h.seen)  # due when it was: the claim left next_attempt_at alone
        groups.setdefault((back.state, h.fence.holder, h.fence.lease_until), []).append(h.row.pk)
    for (state, holder, lease_until), pks in groups.items():
        Outgoing.objects.filter(
            pk__in=pks, state=OutboxState.SENDING, claimed_by=holder, lease_until=lease_until
        ).update(state=state, claimed_by="", lease_until=None, attempts=F("attempts") - 1)


def is_deadlock(exc: BaseException | None) -> bool:
    """Whether `exc` (or what caused it) is PostgreSQL ending a transaction to break a
    deadlock (40P01) or a serialization failure (40001): nothing of it was written."""
    seen = 0
    while exc is not None and seen < 10:
        if getattr(exc, "sqlstate", None) in ("40P01", "40001"):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


class Fence:
    """Writes to a claimed row, only while the claim is still ours."""

    def __init__(self, pk: int, holder: str, lease_until: datetime | None) -> None:
        self.pk, self.holder, self.lease_until = pk, holder, lease_until

    def write(self, new: Row, **extra: Any) -> bool:
        changes: dict[str, Any] = {
            "state": new.state.value,
            "attempts": new.attempts,
            "claimed_by": new.holder,
            "lease_until": new.lease_until,
            **{k: v for k, v in extra.items() if v is not None},
        }
        if new.due is not None:
            changes["next_attempt_at"] = new.due
        # The ORM's UPDATE, compiled once per set of columns (and of those written NULL)
        # and lease or none (decisions 0062, 0068): its values prepared by their fields as
        # the ORM prepares them.
        given = tuple(name for name, value in changes.items() if value is not None)
        args = [changes[name] for name in given] + [self.pk, OutboxState.SENDING.value, self.holder]
        if self.lease_until is not None:
            args.append(self.lease_until)
        key = (tuple(changes), given, self.lease_until is None)
        updated = FENCED.run(key, fence_fields(given, self.lease_until is None), *fenced(key), *args)
        if updated == 1 and new.state is OutboxState.SENDING:
            self.lease_until = new.lease_until
        return updated == 1


def fence_fields(given: tuple[str, ...], no_lease: bool) -> tuple[Any, ...]:
    """The fields that prepare `Fence.write`'s arguments: the columns written (but NULLs),
    then the row's id, SENDING, the holder and the lease (none for a fence without one)."""
    field = Outgoing._meta.get_field
    return (*(field(name) for name in given), field("id"), field("state"), field("claimed_by"),
            *(() if no_lease else (field("lease_until"),)))


def fenced(key: tuple[tuple[str, ...], tuple[str, ...], bool]) -> tuple[Callable[..., Any], Callable[..., dict[str, Any]]]:
    """`Fence.write`'s compare-and-set for its key (columns, those not NULL, no lease):
    the row, still SENDING under this holder and lease ("IS NULL" for a fence without
    one, as the ORM writes it), and what is written to it."""
    columns, given, _no_lease = key

    def rows(*args: Any) -> Any:
        pk, state, holder, *lease = args[len(given):]
        return Outgoing.objects.filter(pk=pk, state=state, claimed_by=holder, lease_until=lease[0] if lease else None)

    def values(*args: Any) -> dict[str, Any]:
        written = dict(zip(given, args, strict=False))
        return {name: written.get(name) for name in columns}

    return rows, values


FENCED = CompiledUpdates()


# -- consequences ----------------------------------------------------------------------------


def interaction_keys(ids: list[int]) -> dict[int, tuple[int | None, int | None]]:
    """The agent and box ids of these interactions (what an auto-response's journal row
    carries), in one read."""
    return {pk: (agent, box) for pk, agent, box in Interaction.objects.filter(pk__in=ids).values_list("pk", "agent_id", "mailbox_id")}


def locked_interaction(row: Outgoing) -> Interaction | None:
    if row.interaction_id is None:
        return None
    return Interaction.objects.select_for_update(of=("self",)).select_related("agent", "mailbox").get(pk=row.interaction_id)


def current_forward(row: Outgoing, ix: Interaction) -> bool:
    """The forward of the interaction's current delivery round and agent (rows from before
    forwards were bound to a round have no round: taken as current)."""
    if row.delivery is None:
        return True
    return row.delivery == ix.deliveries and row.agent_id == ix.agent_id


def forward_wanted(row: Outgoing) -> bool:
    ix = Interaction.objects.filter(pk=row.interaction_id).only("status", "deliveries", "agent_id").first()
    return ix is not None and ix.state is State.ANSWERED and current_forward(row, ix)


def forwards_wanted(rows: list[Outgoing]) -> dict[int, bool]:
    """`forward_wanted` for every forward among `rows`, in one read."""
    forwards = [r for r in rows if r.kind == Outgoing.FORWARD and r.interaction_id is not None]
    if not forwards:
        return {}
    found = Interaction.objects.only("status", "deliveries", "agent_id").in_bulk({r.interaction_id for r in forwards})
    return {
        r.pk: (ix := found.get(r.interaction_id)) is not None and ix.state is State.ANSWERED and current_forward(r, ix)
        for r in forwards
    }


def stale_forward(row: Outgoing, now: datetime, *, possibly_sent: bool) -> None:
    """A forward of a delivery round that is over: journaled, and where a copy may be in
    the agent's mailbox, taken back out (the agent no longer holds that round)."""
    journal.record("stale_forward", now, interaction=row.interaction, message_id=row.message_id, sent=possibly_sent)
    if possibly_sent and row.agent_id is not None:
        Withdrawal.objects.create(
            interaction_id=row.interaction_id, agent_id=row.agent_id, message_id=row.message_id, reason="stale_forward"
        )


def on_sent(
    row: Outgoing, site: Site, now: datetime, ix: Interaction | None = None,
    keys: dict[int, tuple[int | None, int | None]] | None = None,
) -> None:
    # Locked (PostgreSQL) / serialised (SQLite IMMEDIATE) so the state we decide on is the
    # state we write over: a failed CAS here would roll back the SENT mark. `ix`: the
    # interaction, read under lock by the caller in this transaction; `keys`: what
    # `interaction_keys` read for the batch's auto-responses.
    if row.kind == Outgoing.AUTO_RESPONSE and row.interaction_id is not None:
        # Nothing here depends on the interaction's state: a stamp and a journal row, so
        # no locking read of the whole interaction (issue 9: 15-19 % of a sender), only
        # the keys its journal row carries (as ids: no read at all).
        Interaction.objects.filter(pk=row.interaction_id).update(auto_response_sent_at=now)
        agent_id, mailbox_id = (keys or interaction_keys([row.interaction_id]))[row.interaction_id]
        journal.defer(
            JournalEvent(
                at=now, kind="auto_responded", interaction_id=row.interaction_id, agent_id=agent_id,
                mailbox_id=mailbox_id, detail={"message_id": row.message_id},
            )
        )
        return
    ix = ix or locked_interaction(row)
    if ix is None:
        journal.record("notice_sent", now, message_id=row.message_id, to=row.recipients)
        return
    if row.kind == Outgoing.FORWARD:
        if not current_forward(row, ix):
            stale_forward(row, now, possibly_sent=True)
        elif ix.state is State.ANSWERED:
            apply(ix, Delivered(), now, message_id=row.message_id)
        else:
            # A fast agent replied before this 250 was recorded (answered → replying).
            journal.record("delivered", now, interaction=ix, message_id=row.message_id, late=True)
    elif row.kind == Outgoing.REPLY:
        # Guarded: an exception here would roll back the SENT mark.
        if ix.state is State.REPLYING:
            apply(ix, ReplySent(), now, message_id=row.message_id)
        else:
            journal.record("reply_sent", now, interaction=ix, message_id=row.message_id, anomaly=ix.status)
    else:
        journal.record("notice_sent", now, interaction=ix, message_id=row.message_id, to=row.recipients)


def on_dead(row: Outgoing, site: Site, reason: str, now: datetime) -> None:
    log.error("outgoing %s (%s) failed for good: %s", row.key, row.kind, reason)
    ix = locked_interaction(row)
    journal.record("send_failed", now, interaction=ix, mail=row.kind, error=reason[:500])
    if ix is None:
        alert("notice_failed", now, key=row.key, to=row.recipients, error=reason[:500])
    elif row.kind == Outgoing.FORWARD:
        if current_forward(row, ix) and ix.state is State.ANSWERED:
            try:
                apply(ix, DeliveryFailed(reason=reason[:200]), now)
            except StaleInteraction:
                log.info("interaction %s changed while its forward failed", ix.guid)
        alert("forward_failed", now, interaction=ix, key=row.key, to=row.recipients, error=reason[:500])
    elif row.kind == Outgoing.REPLY:
        if ix.state is State.REPLYING:
            apply(ix, ReplyFailed(reason=reason[:200]), now, message_id=row.message_id)
            tell_reply_failed(ix, row, reason, site, now)
        alert("reply_failed", now, interaction=ix, key=row.key, to=row.recipients, error=reason[:500])
    else:
        alert(f"{row.kind}_failed", now, interaction=ix, key=row.key, to=row.recipients, error=reason[:500])


def tell_reply_failed(ix: Interaction, row: Outgoing, reason: str, site: Site, now: datetime) -> None:
    """The agent and the supervisors learn that the customer has nothing (fig. 9 with the
    mail server saying no), and where to act on it."""
    agent: Agent | None = ix.agent
    people = ([agent.address] if agent else []) + (agent.approvers() if agent else [])
    attach = message_from_bytes(bytes(row.raw), policy=POLICY)
    for to in dict.fromkeys(people):
        queue_notice(
            site,
            now,
            key=f"notice:reply_failed:{ix.guid}:{ix.version}:{to}",
            to=to,
            subject=f"Reply not sent: {ix.subject}",
            text=(
                f"Postroom could not send the reply to {ix.customer}; the customer has not received it.\n\n"
                f"Reason: {reason}\n\n"
                "A supervisor can resend it, edit it and send that, or end the interaction with a "
                "wrap-up code, in the supervisor console. The reply is attached.\n"
            ),
            interaction=ix,
            attach=attach if isinstance(attach, EmailMessage) else None,
        )


def alert(kind: str, now: datetime, *, interaction: Interaction | None = None, **detail: Any) -> None:
    """Something people must act on: a journal event, an error in the log, and an alert on
    the console, mailed to the supervisors (engine/alerts.py)."""
    log.error("alert %s: %s", kind, detail)
    journal.record("alert", now, interaction=interaction, alert=kind, **detail)
    what = kind.replace("_", " ")
    if kind == "journal_box_unavailable":
        message = f"{what}: mails whose outcome is unknown wait until it can be read ({detail.get('error', '')})"
        raise_alert(AlertKind.JOURNAL_UNAVAILABLE, "journal", message, now)
        return
    about = f" (interaction {interaction.guid})" if interaction is not None else ""
    message = f"{what}{about}: to {', '.join(detail.get('to') or [])}: {detail.get('error', '')}"
    raise_alert(AlertKind.SEND_FAILED, str(detail.get("key") or kind), message, now)


# -- the journal box's retention --------------------------------------------------------------


def expire_copies(site: Site, box: JournalBox, now: datetime) -> int:
    """Expunge journal copies past their retention, in bulk (SEARCH BEFORE, chunked STORE
    and EXPUNGE); the engine runs this about once an hour."""
    assert site.journal is not None
    removed = box.expunge_before((now - site.journal.retention).date())
    if removed:
        log.info("journal box: %d copies past retention expunged", removed)
    return removed
