"""The outbox row's lifecycle (postroom.core.outbox): classification, backoff, and a model
of engines, a mail server and a journal box in which no key is ever delivered twice."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from postroom.core.outbox import (
    Claim,
    OutboxState,
    Phase,
    Policy,
    Result,
    Row,
    after_check,
    after_failure,
    after_send,
    backoff,
    before_send,
    cancel,
    check_failed,
    claim,
    classify_codes,
    due_for,
    may_retry_fresh,
    release,
    resend,
    wait_for_claim,
)

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
POLICY = Policy(max_attempts=4, lease=timedelta(seconds=60), grace=timedelta(seconds=10))


# -- classification --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "result"),
    [
        (Phase.CONNECT, Result.TEMPORARY),
        (Phase.ENVELOPE, Result.TEMPORARY),
        (Phase.BODY, Result.TEMPORARY),
        (Phase.FINAL_DOT, Result.UNKNOWN),
    ],
)
def test_a_broken_connection_is_unknown_only_from_the_final_dot_on(phase, result) -> None:
    assert after_failure(phase) is result


def test_only_a_reused_session_broken_before_the_message_is_retried_at_once() -> None:
    assert may_retry_fresh(Phase.ENVELOPE, reused=True)
    assert not may_retry_fresh(Phase.ENVELOPE, reused=False)
    assert not may_retry_fresh(Phase.BODY, reused=True)
    assert not may_retry_fresh(Phase.FINAL_DOT, reused=True)


@pytest.mark.parametrize(
    ("codes", "after_dot", "result"),
    [
        ([550], False, Result.PERMANENT),
        ([550, 552], False, Result.PERMANENT),
        ([550, 451], False, Result.TEMPORARY),
        ([421], False, Result.TEMPORARY),
        ([], False, Result.TEMPORARY),
        ([250], True, Result.SENT),
        ([451], True, Result.TEMPORARY),
        ([554], True, Result.PERMANENT),
        ([354], True, Result.UNKNOWN),
        ([], True, Result.UNKNOWN),
    ],
)
def test_reply_codes(codes, after_dot, result) -> None:
    assert classify_codes(codes, after_dot=after_dot) is result


def test_backoff_doubles_up_to_its_cap() -> None:
    waits = [backoff(n, Policy()) for n in range(1, 14)]
    assert waits[:3] == [timedelta(seconds=5), timedelta(seconds=10), timedelta(seconds=20)]
    assert waits[-1] == timedelta(hours=1) and waits == sorted(waits)
    assert backoff(10**6, Policy()) == timedelta(hours=1)


# -- single steps -----------------------------------------------------------------------------


def test_a_live_lease_is_not_claimable_an_expired_one_only_after_the_grace() -> None:
    held = claim(Row(OutboxState.PENDING, due=T0), T0, "a", POLICY)
    assert held.state is OutboxState.SENDING and held.lease_until == T0 + POLICY.lease
    assert due_for(held, T0 + POLICY.lease - timedelta(seconds=1), POLICY) is None
    assert due_for(held, T0 + POLICY.lease, POLICY) is None
    assert due_for(held, T0 + POLICY.lease + POLICY.grace, POLICY) is Claim.CHECK


def test_unknown_waits_for_the_grace_then_is_checked_never_sent_blind() -> None:
    row = before_send(claim(Row(OutboxState.PENDING, due=T0), T0, "a", POLICY), POLICY)
    unknown = after_send(row, Result.UNKNOWN, T0, POLICY)
    assert unknown.state is OutboxState.UNKNOWN and unknown.holder == ""
    assert due_for(unknown, T0 + POLICY.grace - timedelta(microseconds=1), POLICY) is None
    assert due_for(unknown, T0 + POLICY.grace, POLICY) is Claim.CHECK


def test_the_cap_makes_a_row_dead_but_never_while_it_may_have_left() -> None:
    row = Row(OutboxState.SENDING, attempts=POLICY.max_attempts, lease_until=T0, holder="a")
    assert after_send(row, Result.TEMPORARY, T0, POLICY).state is OutboxState.DEAD
    assert after_send(row, Result.UNKNOWN, T0, POLICY).state is OutboxState.UNKNOWN
    assert before_send(row, POLICY).state is OutboxState.DEAD
    assert after_check(row, found=True).state is OutboxState.SENT


def test_a_temporary_failure_waits_its_backoff() -> None:
    row = Row(OutboxState.SENDING, attempts=2, lease_until=T0, holder="a")
    waiting = after_send(row, Result.TEMPORARY, T0, POLICY)
    assert waiting.state is OutboxState.RETRY_WAIT and waiting.due == T0 + backoff(2, POLICY)
    assert check_failed(row, T0, POLICY).state is OutboxState.UNKNOWN


def test_cancel_and_resend() -> None:
    for state in (OutboxState.PENDING, OutboxState.RETRY_WAIT, OutboxState.UNKNOWN):
        assert cancel(Row(state)).state is OutboxState.CANCELLED  # type: ignore[union-attr]
    for state in (OutboxState.SENDING, OutboxState.SENT, OutboxState.DEAD, OutboxState.CANCELLED):
        assert cancel(Row(state)) is None
    again = resend(Row(OutboxState.DEAD, attempts=4), T0)
    assert again == Row(OutboxState.PENDING, attempts=0, due=T0)
    assert resend(Row(OutboxState.SENT), T0) is None


@given(st.integers(min_value=0, max_value=10**9))
def test_backoff_is_never_negative_nor_beyond_the_cap(attempts: int) -> None:
    assert timedelta(0) < backoff(attempts, POLICY) <= POLICY.backoff_max


# -- the model --------------------------------------------------------------------------------


# What the server did with one transaction, and what the client could tell from it. The
# first two queue a copy (its journal copy is searchable 0-10 s later: within the grace).
SERVER = {
    "250": Result.SENT,
    "250 lost": Result.UNKNOWN,
    "queued nothing, answer lost": Result.UNKNOWN,
    "4xx": Result.TEMPORARY,
    "5xx": Result.PERMANENT,
    "broken before dot": Result.TEMPORARY,
}
SERVER_CHOICES = ["250", "250 lost", "250 lost", "queued nothing, answer lost", "4xx", "4xx", "5xx", "broken before dot"]


@dataclass
class Engine:
    """One engine process as the outbox step runs it; `crash()` forgets everything."""

    name: str
    holding: Claim | None = None
    lease_until: datetime | None = None
    checked: bool = False  # searched the journal under this claim and found nothing
    began: bool = False  # before_send recorded, transaction not yet made
    outcome: Result | None = None  # transaction made, outcome not yet recorded
    seen: Row | None = None  # the row as it was before this engine's claim


@dataclass
class World:
    now: datetime = T0
    row: Row = field(default_factory=lambda: Row(OutboxState.PENDING, due=T0))
    # When the server queued a copy, and when its journal copy becomes searchable.
    deliveries: list[tuple[datetime, datetime]] = field(default_factory=list)


class OutboxModel(RuleBasedStateMachine):
    """Two engines claim, check, send and record one row; the server may queue a copy and
    lose its answer, engines may crash at any step, the clock moves, someone cancels or
    resends. Assumption (docs/decisions/0007): a queued copy is searchable in the journal
    box within the grace period."""

    def __init__(self) -> None:
        super().__init__()
        self.w = World()
        self.engines = {"a": Engine("a"), "b": Engine("b")}

    # -- helpers ------------------------------------------------------------------------
    def fenced(self, e: Engine) -> bool:
        """The row is still this engine's (the engine's UPDATEs carry this condition)."""
        return self.w.row.state is OutboxState.SENDING and self.w.row.holder == e.name

    def live(self, e: Engine) -> bool:
        # Every SMTP and IMAP operation ends before the lease does (mail/smtp.py deadlines):
        # an engine past its lease does nothing more but record, and only if still fenced.
        return e.lease_until is not None and self.w.now < e.lease_until

    # -- one move at a time -------------------------------------------------------------
    # One rule with weighted choices rather than many rules: the interesting histories are
    # long (claim, begin, transmit, record, wait, claim again, ...) and uniform choice
    # among many rules would rarely build them.
    @rule(
        name=st.sampled_from(["a", "b"]),
        fate=st.sampled_from(["go"] * 16 + ["crash", "cancel", "release"]),
        wait=st.sampled_from([0, 0, 0, 1, 5, 9, 10, 30, 59, 60, 61, 90]),
        server=st.sampled_from(SERVER_CHOICES),
        delay=st.sampled_from([0, 1, 5, 9, 10]),
    )
    def step(self, name: str, fate: str, wait: int, server: str, delay: int) -> None:
        """Time passes; then the engine makes its next move (claim, search the journal,
        begin, transmit or record), or crashes, or gives back a row its batch did not
        reach, or someone cancels the row."""
        self.w.now += timedelta(seconds=wait)
        e = self.engines[name]
        if fate == "crash":
            self.engines[name] = Engine(name)
        elif fate == "release":
            self.release_row(e)
        elif fate == "cancel":
            self.w.row = cancel(self.w.row) or self.w.row
        elif e.outcome is not None:
            self.record(e)
        elif e.began:
            self.transmit(e, server, delay)
        elif e.holding is Claim.CHECK and not e.checked:
            self.check_journal(e)
        elif e.holding is not None:
            self.begin_send(e)
        else:
            self.claim_row(e)

    def claim_row(self, e: Engine) -> None:
        kind = due_for(self.w.row, self.w.now, POLICY)
        if kind is None:
            return
        for other in self.engines.values():
            assert not (other is not e and self.fenced(other) and self.live(other)), "claimed under a live lease"
        e.seen = self.w.row
        self.w.row = claim(self.w.row, self.w.now, e.name, POLICY)
        e.holding, e.lease_until, e.checked, e.began, e.outcome = kind, self.w.row.lease_until, False, False, None

    def release_row(self, e: Engine) -> None:
        """A sender batch stopped before this row (decision 0049): claimed and counted, no
        SMTP byte of it written; given back as it was, if still this engine's."""
        if e.holding is not Claim.SEND or not e.began or e.outcome is not None:
            return
        assert e.seen is not None
        if self.fenced(e):
            self.w.row = release(e.seen)
        self.engines[e.name] = Engine(e.name)

    def check_journal(self, e: Engine) -> None:
        if not self.live(e) or not self.fenced(e):
            self.engines[e.name] = Engine(e.name)  # gave up: its lease is over
            return
        found = any(visible <= self.w.now for _, visible in self.w.deliveries)
        self.w.row = after_check(self.w.row, found)
        if found:
            self.engines[e.name] = Engine(e.name)
        else:
            e.checked = True

    def begin_send(self, e: Engine) -> None:
        if not self.live(e) or not self.fenced(e):
            self.engines[e.name] = Engine(e.name)
            return
        self.w.row = before_send(self.w.row, POLICY)
        if self.w.row.state is OutboxState.DEAD:
            self.engines[e.name] = Engine(e.name)
        else:
            e.began = True

    def transmit(self, e: Engine, server: str, delay: int) -> None:
        if not self.live(e):
            # The SMTP deadline is inside the lease: past it, the transaction never started.
            e.outcome = Result.TEMPORARY
            return
        if server.startswith("250"):
            self.w.deliveries.append((self.w.now, self.w.now + timedelta(seconds=delay)))
        e.outcome = SERVER[server]

    def record(self, e: Engine) -> None:
        assert e.outcome is not None
        if self.fenced(e):
            self.w.row = after_send(self.w.row, e.outcome, self.w.now, POLICY)
        self.engines[e.name] = Engine(e.name)

    # -- people -------------------------------------------------------------------------
    @precondition(lambda self: self.w.row.state is OutboxState.DEAD)
    @rule()
    def resend_dead_row(self) -> None:
        self.w.row = resend(self.w.row, self.w.now) or self.w.row

    # -- what must always hold ----------------------------------------------------------
    @invariant()
    def never_delivered_twice(self) -> None:
        assert len(self.w.deliveries) <= 1, self.w.deliveries

    @invariant()
    def sent_means_delivered_and_dead_means_not(self) -> None:
        if self.w.row.state is OutboxState.SENT:
            assert len(self.w.deliveries) == 1
        if self.w.row.state is OutboxState.DEAD:
            assert self.w.deliveries == []

    @invariant()
    def attempts_stay_within_the_cap(self) -> None:
        assert 0 <= self.w.row.attempts <= POLICY.max_attempts


OutboxModel.TestCase.settings = settings(max_examples=400, stateful_step_count=50, deadline=None)
TestOutboxModel = OutboxModel.TestCase


def test_a_row_held_back_for_its_claim_is_not_an_attempt_and_comes_back_due() -> None:
    # Island mode (decision 0036): claimed, then held back by the gate before any SMTP.
    held = claim(Row(OutboxState.RETRY_WAIT, attempts=2, due=T0), T0, "a", POLICY)
    back = wait_for_claim(held, T0, timedelta(seconds=1))
    assert back == Row(OutboxState.RETRY_WAIT, attempts=2, due=T0 + timedelta(seconds=1))
    assert due_for(back, T0, POLICY) is None
    assert due_for(back, T0 + timedelta(seconds=1), POLICY) is Claim.SEND


def test_a_row_its_batch_did_not_reach_goes_back_as_it_was() -> None:
    # Decision 0049: claimed and counted with its batch, never tried.
    seen = Row(OutboxState.RETRY_WAIT, attempts=2, due=T0)
    held = before_send(claim(seen, T0, "a", POLICY), POLICY)
    assert held.attempts == 3 and held.state is OutboxState.SENDING
    back = release(seen)
    assert back == Row(OutboxState.RETRY_WAIT, attempts=2, due=T0)
    assert due_for(back, T0, POLICY) is Claim.SEND
