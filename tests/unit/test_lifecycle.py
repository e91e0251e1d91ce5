"""The lifecycle table: every legal transition does what the table says, every other
(state, event) pair is refused, and random event sequences keep the invariants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postroom.core.lifecycle import (
    TERMINAL,
    TRANSITIONS,
    WITH_AGENT,
    Answered,
    CleanedUp,
    Delivered,
    DeliveryFailed,
    Event,
    IllegalTransition,
    OfferExpired,
    ReplyAccepted,
    ReplySent,
    Routed,
    Snapshot,
    State,
    Vanished,
    decide,
    event_name,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
EVENTS: list[Event] = [
    Routed(agent="alice@example.test"),
    Answered(),
    OfferExpired(),
    Delivered(),
    DeliveryFailed(reason="550"),
    ReplyAccepted(),
    ReplySent(),
    CleanedUp(),
    Vanished(),
]


def snapshot(state: State) -> Snapshot:
    agent = "alice@example.test" if state not in (State.QUEUED, State.CLOSED) else None
    return Snapshot(state=state, agent=agent)


@pytest.mark.parametrize(("state", "event_type"), sorted(TRANSITIONS, key=str))
def test_it_follows_every_legal_transition(state: State, event_type: type[Event]) -> None:
    event = next(e for e in EVENTS if type(e) is event_type)
    decision = decide(snapshot(state), event, NOW)
    assert decision.state is TRANSITIONS[(state, event_type)]
    assert decision.journal == (event_name(event),)


ILLEGAL = [(s, e) for s in State for e in EVENTS if (s, type(e)) not in TRANSITIONS]


@pytest.mark.parametrize(("state", "event"), ILLEGAL, ids=lambda v: getattr(v, "value", type(v).__name__))
def test_it_refuses_every_other_transition(state: State, event: Event) -> None:
    with pytest.raises(IllegalTransition):
        decide(snapshot(state), event, NOW)


def test_terminal_states_absorb_every_event() -> None:
    for state in TERMINAL:
        assert not [e for (s, e) in TRANSITIONS if s is state]


def test_routing_records_the_agent_and_requeue_forgets_it() -> None:
    routed = decide(Snapshot(State.QUEUED), Routed(agent="bob@example.test"), NOW)
    assert routed.agent == "bob@example.test" and routed.stamps == ("routed_at",)
    back = decide(Snapshot(State.ROUTED, agent="bob@example.test"), OfferExpired(), NOW)
    assert back.state is State.QUEUED and back.agent is None


def test_the_happy_path_stamps_each_time() -> None:
    snap = Snapshot(State.QUEUED)
    stamps: list[str] = []
    for event in (Routed(agent="a@example.test"), Answered(), Delivered(), ReplyAccepted(), ReplySent(), CleanedUp()):
        decision = decide(snap, event, NOW)
        stamps += decision.stamps
        snap = Snapshot(decision.state, decision.agent)
    assert snap.state is State.CLOSED
    assert stamps == ["routed_at", "answered_at", "delivered_at", "replied_at", "closed_at"]


@given(st.lists(st.sampled_from(EVENTS), max_size=40))
def test_random_sequences_keep_the_invariants(events: list[Event]) -> None:
    """At most one reply is ever sent; an agent is held exactly in the agent states;
    nothing happens after CLOSED."""
    snap = Snapshot(State.QUEUED)
    replies_sent = 0
    now = NOW
    for event in events:
        now += timedelta(seconds=1)
        try:
            decision = decide(snap, event, now)
        except IllegalTransition:
            continue
        assert snap.state not in TERMINAL
        if isinstance(event, ReplySent):
            replies_sent += 1
        snap = Snapshot(decision.state, decision.agent)
        if snap.state in WITH_AGENT or snap.state in (State.REPLYING, State.REPLIED):
            assert snap.agent is not None
        if snap.state is State.QUEUED:
            assert snap.agent is None
    assert replies_sent <= 1
