"""The lifecycle table: every legal transition does what the table says, every other
(state, event) pair is refused, and random event sequences keep the invariants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from postroom.core.lifecycle import (
    CLAIMED_ELSEWHERE,
    LIVE,
    TERMINAL,
    TRANSITIONS,
    WITH_AGENT,
    Answered,
    Approved,
    ClaimedElsewhere,
    ClaimReturned,
    CleanedUp,
    Delivered,
    DeliveryFailed,
    Discarded,
    Event,
    HungUp,
    IllegalTransition,
    NoReplyExpired,
    OfferExpired,
    Rejected,
    RejectedToQueue,
    ReplyAccepted,
    ReplyFailed,
    ReplyHeld,
    ReplyRetried,
    ReplySent,
    Routed,
    Snapshot,
    State,
    Timer,
    Timing,
    Transferred,
    Vanished,
    decide,
    event_name,
    mermaid,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TIMING = Timing(offer_timeout=timedelta(minutes=2), no_reply=timedelta(hours=1), no_reply_priority_raise=10)
EVENTS: list[Event] = [
    Routed(agent="alice@example.test"),
    Routed(agent="bob@example.test"),
    Answered(),
    OfferExpired(),
    Delivered(),
    DeliveryFailed(reason="550"),
    NoReplyExpired(),
    ReplyAccepted(),
    ReplyHeld(),
    Approved(),
    Rejected(reason="tone"),
    RejectedToQueue(reason="wrong"),
    ReplySent(),
    ReplyFailed(reason="550 no such user"),
    ReplyRetried(),
    HungUp(code="spam"),
    Transferred(agent="bob@example.test"),
    Discarded(rule="spam"),
    CleanedUp(),
    Vanished(),
    ClaimedElsewhere(),
    ClaimReturned(),
]


def snapshot(state: State) -> Snapshot:
    agent = "alice@example.test" if state not in (State.QUEUED, State.CLOSED) else None
    # The one closed interaction with a way out (ClaimReturned) is one claimed elsewhere.
    outcome = CLAIMED_ELSEWHERE if state is State.CLOSED else ""
    return Snapshot(state=state, agent=agent, outcome=outcome)


@pytest.mark.parametrize(("state", "event_type"), sorted(TRANSITIONS, key=str))
def test_it_follows_every_legal_transition(state: State, event_type: type[Event]) -> None:
    event = next(e for e in EVENTS if type(e) is event_type)
    decision = decide(snapshot(state), event, NOW, TIMING)
    assert decision.state is TRANSITIONS[(state, event_type)]
    assert decision.journal == event_name(event)


ILLEGAL = [(s, e) for s in State for e in EVENTS if (s, type(e)) not in TRANSITIONS]


@pytest.mark.parametrize(("state", "event"), ILLEGAL, ids=lambda v: getattr(v, "value", type(v).__name__))
def test_it_refuses_every_other_transition(state: State, event: Event) -> None:
    with pytest.raises(IllegalTransition):
        decide(snapshot(state), event, NOW, TIMING)


def test_every_event_type_appears_in_the_table() -> None:
    assert {type(e) for e in EVENTS} == {e for (_, e) in TRANSITIONS}


def test_terminal_states_absorb_every_event_but_a_returned_claim() -> None:
    for state in TERMINAL:
        assert [e for (s, e) in TRANSITIONS if s is state] == [ClaimReturned]


@pytest.mark.parametrize("outcome", ["", "replied", "wrapped_up", "discarded", "vanished"])
def test_only_an_interaction_closed_as_claimed_elsewhere_comes_back(outcome: str) -> None:
    with pytest.raises(IllegalTransition):
        decide(Snapshot(State.CLOSED, outcome=outcome), ClaimReturned(), NOW, TIMING)


def test_a_returned_claim_queues_the_interaction_again_as_it_was_before_it_closed() -> None:
    closed = decide(Snapshot(State.DELIVERED, "a@example.test", 7), ClaimedElsewhere(), NOW, TIMING)
    assert closed.state is State.CLOSED and closed.outcome == CLAIMED_ELSEWHERE
    back = decide(Snapshot(closed.state, closed.agent, closed.priority, closed.outcome or ""), ClaimReturned(), NOW, TIMING)
    assert back.state is State.QUEUED and back.agent is None and back.priority == 7
    assert set(back.clears) == {"closed_at", "outcome", "excluded_agents"}
    assert back.journal == "claim_returned" and back.outcome is None


def test_routing_records_the_agent_and_an_expired_offer_forgets_it() -> None:
    routed = decide(Snapshot(State.QUEUED), Routed(agent="bob@example.test"), NOW, TIMING)
    assert routed.agent == "bob@example.test" and routed.stamps == ("routed_at",)
    assert routed.timers[Timer.OFFER] == NOW + timedelta(minutes=2)
    back = decide(Snapshot(State.ROUTED, agent="bob@example.test"), OfferExpired(), NOW, TIMING)
    # Not excluded from it: the engine makes bob Not Ready instead (no one else may be there).
    assert back.state is State.QUEUED and back.agent is None and back.released is None
    assert back.timers[Timer.OFFER] is None


def test_no_reply_reroutes_with_a_higher_priority() -> None:
    delivered = decide(Snapshot(State.ANSWERED, "a@example.test", 5), Delivered(), NOW, TIMING)
    assert delivered.timers[Timer.NO_REPLY] == NOW + timedelta(hours=1)
    expired = decide(Snapshot(State.DELIVERED, "a@example.test", 5), NoReplyExpired(), NOW, TIMING)
    assert expired.state is State.QUEUED and expired.priority == 15
    assert expired.released == "a@example.test" and expired.agent is None


def test_a_rejected_reply_goes_back_to_the_agent_with_a_fresh_no_reply_time() -> None:
    later = NOW + timedelta(minutes=30)
    decision = decide(Snapshot(State.AWAITING_APPROVAL, "a@example.test"), Rejected("no"), later, TIMING)
    assert decision.state is State.DELIVERED and decision.agent == "a@example.test"
    assert decision.timers[Timer.NO_REPLY] == later + timedelta(hours=1)


def test_the_happy_path_stamps_each_time() -> None:
    snap = Snapshot(State.QUEUED)
    stamps: list[str] = []
    for event in (Routed(agent="a@example.test"), Answered(), Delivered(), ReplyAccepted(), ReplySent(), CleanedUp()):
        decision = decide(snap, event, NOW, TIMING)
        stamps += decision.stamps
        snap = Snapshot(decision.state, decision.agent)
    assert snap.state is State.CLOSED
    assert stamps == ["routed_at", "answered_at", "delivered_at", "replied_at", "closed_at"]


def test_a_failed_reply_waits_for_a_supervisor_then_goes_out_or_ends() -> None:
    failed = decide(Snapshot(State.REPLYING, "a@example.test"), ReplyFailed("550"), NOW, TIMING)
    assert failed.state is State.REPLY_FAILED and failed.agent == "a@example.test" and failed.outcome is None
    again = decide(Snapshot(State.REPLY_FAILED, "a@example.test"), ReplyRetried(edited=True), NOW, TIMING)
    assert again.state is State.REPLYING and again.journal == "reply_retried"
    ended = decide(Snapshot(State.REPLY_FAILED, "a@example.test"), HungUp("spam"), NOW, TIMING)
    assert ended.state is State.ENDED and ended.outcome == "wrapped_up" and ended.stamps == ("ended_at",)


def test_the_diagram_is_generated_from_the_table() -> None:
    text = mermaid()
    for (source, event), target in TRANSITIONS.items():
        assert f"{source.value} --> {target.value}: {event.__name__}" in text


class Lifecycle(RuleBasedStateMachine):
    """Random event sequences, legal or not, against the invariants of the method."""

    def __init__(self) -> None:
        super().__init__()
        self.snap = Snapshot(State.QUEUED)
        self.timers: dict[Timer, datetime | None] = {t: None for t in Timer}
        self.now = NOW
        self.replies_sent = 0
        self.closed = False

    @rule(event=st.sampled_from(EVENTS), seconds=st.integers(0, 7200))
    def happen(self, event: Event, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)
        try:
            decision = decide(self.snap, event, self.now, TIMING)
        except IllegalTransition:
            return
        assert not self.closed or (
            isinstance(event, ClaimReturned) and self.snap.outcome == CLAIMED_ELSEWHERE
        ), "nothing happens after CLOSED but the return of a claim lost elsewhere"
        if isinstance(event, ReplySent):
            self.replies_sent += 1
        self.timers.update(decision.timers)
        outcome = "" if decision.clears and "outcome" in decision.clears else self.snap.outcome
        self.snap = Snapshot(decision.state, decision.agent, decision.priority, decision.outcome or outcome)
        self.closed = decision.state is State.CLOSED

    @invariant()
    def at_most_one_reply_is_sent(self) -> None:
        assert self.replies_sent <= 1

    @invariant()
    def an_agent_holds_exactly_the_agent_states(self) -> None:
        if self.snap.state in WITH_AGENT or self.snap.state in (State.REPLYING, State.REPLIED, State.REPLY_FAILED):
            assert self.snap.agent is not None
        if self.snap.state is State.QUEUED:
            assert self.snap.agent is None

    @invariant()
    def one_active_offer_at_most_and_only_while_offered(self) -> None:
        if self.timers[Timer.OFFER] is not None:
            assert self.snap.state is State.ROUTED

    @invariant()
    def no_timer_outlives_its_phase(self) -> None:
        if self.timers[Timer.NO_REPLY] is not None:
            assert self.snap.state is State.DELIVERED
        if self.snap.state not in LIVE:
            assert all(v is None for v in self.timers.values())


Lifecycle.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
test_lifecycle_state_machine = Lifecycle.TestCase


def test_the_readme_shows_the_generated_diagram() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert mermaid() in readme, "README diagram is stale: paste the output of `postroom lifecycle`"
