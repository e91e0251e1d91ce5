"""What a lost island-mode claim does to an interaction in each state (core/claimloss.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from postroom.core.claimloss import OUTCOME, Loss, notice_text, on_lost_claim
from postroom.core.lifecycle import LIVE, ClaimedElsewhere, Snapshot, State, decide

NOW = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)
AGENT = "alice@example.test"

EXPECTED = {
    State.QUEUED: Loss.CLOSE,
    State.ROUTED: Loss.CLOSE_AND_TELL,
    State.ANSWERED: Loss.CLOSE_AND_TELL,
    State.DELIVERED: Loss.CLOSE_AND_TELL,
    State.AWAITING_APPROVAL: Loss.CLOSE_AND_TELL,
    State.REPLYING: Loss.CLOSE_AND_TELL,
    State.REPLY_FAILED: Loss.CLOSE_AND_TELL,
    # Finished here already: the reply left while this node held the claim, or the
    # interaction was ended and is being cleaned up.
    State.REPLIED: Loss.NOTHING,
    State.ENDED: Loss.NOTHING,
    State.CLOSED: Loss.NOTHING,
}


@pytest.mark.parametrize("state", list(State))
def test_a_lost_claim_closes_what_is_live_and_tells_its_agent(state: State) -> None:
    agent = None if state is State.QUEUED else AGENT
    assert on_lost_claim(state, agent) is EXPECTED[state]


def test_every_state_has_an_answer_and_every_live_one_is_closed() -> None:
    assert set(EXPECTED) == set(State)
    assert {s for s in State if on_lost_claim(s, AGENT) is not Loss.NOTHING} == set(LIVE)


def test_no_agent_no_notice() -> None:
    assert on_lost_claim(State.ROUTED, None) is Loss.CLOSE


@pytest.mark.parametrize("state", sorted(LIVE))
def test_it_closes_through_the_lifecycle_releasing_the_agent(state: State) -> None:
    agent = None if state is State.QUEUED else AGENT
    decision = decide(Snapshot(state, agent), ClaimedElsewhere(), NOW)
    # Closed, not ended: the original is the winner's to clean up (no clean-up here).
    assert decision.state is State.CLOSED and decision.outcome == OUTCOME == "claimed_elsewhere"
    assert decision.stamps == ("closed_at",) and decision.journal == "claimed_elsewhere"
    assert decision.released == agent
    assert all(due is None for due in decision.timers.values())


def test_the_notice_names_the_customer_the_box_and_the_winner() -> None:
    text = notice_text("carol@customer.test", "support@example.test", "node-b")
    assert "carol@customer.test" in text and "support@example.test" in text and "node-b" in text
    assert "do not reply" in text
    assert "dead box" not in text


def test_the_winners_own_merged_copy_is_not_closed() -> None:
    # The winner merged its island copy into the shared record (claim_node = winner)
    # before this node's book let the claim go: closing it would leave the email unanswered.
    assert on_lost_claim(State.QUEUED, None, "node-p", "node-p") is Loss.NOTHING
    assert on_lost_claim(State.QUEUED, None, "", "node-p") is Loss.CLOSE
    assert on_lost_claim(State.QUEUED, None, "node-s", "node-p") is Loss.CLOSE


def test_the_notice_says_where_a_reply_that_will_not_leave_is_kept() -> None:
    text = notice_text("carol@customer.test", "support@example.test", "node-b", reply_kept=True)
    assert "not sent to the customer" in text and "dead box" in text
