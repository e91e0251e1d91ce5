"""What a lost claim does to an interaction (island mode, issue 10, decision 0036).

Another node won the claim of an email this node has an interaction for: that node
answers the customer, so this one ends its copy and sends the customer nothing more. What
that means depends on how far the interaction got here:

- not started, or already finished here (replied, ended, closed): nothing to do. A reply
  that left did so while this node held the claim (the send gate); an ended one's
  clean-up is under way;
- queued: closed as claimed elsewhere, nobody to tell;
- with an agent (offered, answered, delivered, awaiting approval) or with a reply that
  has not left (replying, failed): closed as claimed elsewhere, and the agent is told, so
  they stop working on it and do not wonder where it went (issue 10: "ends that
  interaction and tells the agent").
"""

from __future__ import annotations

import enum
from typing import Final

from postroom.core.lifecycle import CLAIMED_ELSEWHERE, TRANSITIONS, ClaimedElsewhere, State

# The interaction's outcome (`lifecycle.decide` for `ClaimedElsewhere`).
OUTCOME: Final = CLAIMED_ELSEWHERE


class Loss(enum.Enum):
    NOTHING = "nothing"
    CLOSE = "close"
    CLOSE_AND_TELL = "close_and_tell"


def on_lost_claim(state: State, agent: str | None, claim_node: str = "", winner: str = "") -> Loss:
    """The consequence of losing the claim of an interaction in `state`, held by `agent`.

    A record whose `claim_node` is the winner is the winner's own copy: the node that won
    while cut off from the database merged it back (store/islandmerge.py) before this
    node's book let the claim go; closing it would leave the email unanswered."""
    if winner and claim_node == winner:
        return Loss.NOTHING
    if (state, ClaimedElsewhere) not in TRANSITIONS:
        return Loss.NOTHING
    return Loss.CLOSE_AND_TELL if agent else Loss.CLOSE


def notice_text(customer: str, mailbox: str, node: str, reply_kept: bool = False) -> str:
    """The agent's notice: what happened, and what not to do; `reply_kept` when the
    agent's reply had been taken but will never be sent (it goes to the dead box)."""
    kept = (
        "Your reply to it was not sent to the customer; it is kept in the dead box.\n\n" if reply_kept else ""
    )
    return (
        f"The email from {customer} to {mailbox} is being handled by another Postroom node "
        f"({node}), which claimed it first while the nodes could not share their database.\n\n"
        f"{kept}"
        "It has been taken off your list here and out of your mailbox. Please do not reply "
        "to it: a reply from you would not reach the customer through this node.\n"
    )


__all__ = ["OUTCOME", "Loss", "notice_text", "on_lost_claim"]
