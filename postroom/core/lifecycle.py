"""The interaction lifecycle: states, events and the one table of legal transitions.

This is the method of the patent's figures 5 to 10 written as data. The engine (or the
web, for an agent's or supervisor's action) feeds an event and the interaction's current
snapshot into `decide()` and gets back the new state, who holds it, what to stamp, which
timers to set or clear and how its priority changes; nothing changes a state any other
way. Nothing here reads the clock, the database or the network: `now` and the policy
(`Timing`) come in as arguments.

The state diagram in the README is generated from `TRANSITIONS` (`postroom lifecycle`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final


class State(enum.StrEnum):
    # fig. 3 STATUS 0: on the email server, waiting in the prioritised list.
    QUEUED = "queued"
    # fig. 6: a routed-to agent is chosen and offered the email; not answered yet.
    ROUTED = "routed"
    # fig. 7 / STATUS 2: the agent answered; the forwarded copy is being sent to them.
    ANSWERED = "answered"
    # fig. 7 done: the agent's mailbox holds the forwarded copy; the no-reply clock runs.
    DELIVERED = "delivered"
    # fig. 10 564-570: the agent's reply waits for a supervisor's approval.
    AWAITING_APPROVAL = "awaiting_approval"
    # fig. 9: the reply is accepted (and approved where needed) and queued for the customer.
    REPLYING = "replying"
    # fig. 9 518: the reply left; the mailboxes still hold the original and the reply.
    REPLIED = "replied"
    # The reply was refused for good (5xx) or ran out of attempts: the customer has
    # nothing. The agent and supervisors are told; a supervisor resends it, edits it and
    # sends that, or ends the interaction with a wrap-up code.
    REPLY_FAILED = "reply_failed"
    # Ended without a reply (hang-up with a wrap-up code, or deleted by a rule); the
    # original still has to be cleared from the incoming box.
    ENDED = "ended"
    # fig. 9 526: mailboxes cleaned up; the interaction is complete.
    CLOSED = "closed"


TERMINAL: Final = frozenset({State.CLOSED})
# The outcome of an interaction whose claim another node won (island mode, decision 0036):
# the only closed interaction that can come back (`ClaimReturned`).
CLAIMED_ELSEWHERE: Final = "claimed_elsewhere"
# States in which an agent holds the interaction (counts against their capacity).
WITH_AGENT: Final = frozenset({State.ROUTED, State.ANSWERED, State.DELIVERED, State.AWAITING_APPROVAL})
# States in which a reply from the assigned agent is acceptable (fig. 9 504, fig. 10 556).
AWAITING_REPLY: Final = frozenset({State.ANSWERED, State.DELIVERED})
# States an interaction is live in: it can still be answered, routed or ended.
LIVE: Final = frozenset(set(State) - {State.REPLIED, State.ENDED, State.CLOSED})


class Timer(enum.StrEnum):
    OFFER = "offer_due_at"  # fig. 7: an offer not answered in time goes back to the queue
    NO_REPLY = "no_reply_due_at"  # fig. 8: an answered email not replied to in time


@dataclass(frozen=True)
class Event:
    """Something that happened to an interaction."""


@dataclass(frozen=True)
class Routed(Event):
    agent: str


@dataclass(frozen=True)
class Answered(Event):
    pass


@dataclass(frozen=True)
class OfferExpired(Event):
    pass


@dataclass(frozen=True)
class Delivered(Event):
    pass


@dataclass(frozen=True)
class DeliveryFailed(Event):
    reason: str = ""


@dataclass(frozen=True)
class NoReplyExpired(Event):
    pass


@dataclass(frozen=True)
class ReplyAccepted(Event):
    pass


@dataclass(frozen=True)
class ReplyHeld(Event):
    """The reply needs approval (fig. 10 564) and went to the approver."""


@dataclass(frozen=True)
class Approved(Event):
    edited: bool = False


@dataclass(frozen=True)
class Rejected(Event):
    """The approver refused the reply; the agent keeps the interaction and tries again."""

    reason: str = ""


@dataclass(frozen=True)
class RejectedToQueue(Event):
    """The approver refused the reply and policy gives the interaction to someone else."""

    reason: str = ""


@dataclass(frozen=True)
class ReplySent(Event):
    pass


@dataclass(frozen=True)
class ReplyFailed(Event):
    """The reply will not leave by itself: refused for good, or out of attempts."""

    reason: str = ""


@dataclass(frozen=True)
class ReplyRetried(Event):
    """A supervisor sends the failed reply again, as it was or with new text."""

    edited: bool = False


@dataclass(frozen=True)
class HungUp(Event):
    """The agent ended the interaction without a reply, with a wrap-up code."""

    code: str


@dataclass(frozen=True)
class Transferred(Event):
    """Handed to another agent (`agent`) or back to a queue (`agent` None)."""

    agent: str | None = None
    queue: str | None = None


@dataclass(frozen=True)
class Discarded(Event):
    """A routing rule said delete: moved to the trash, never destroyed."""

    rule: str = ""


@dataclass(frozen=True)
class CleanedUp(Event):
    pass


@dataclass(frozen=True)
class Vanished(Event):
    """The customer's original disappeared from the incoming box before the agent had it
    (deleted by someone on the mail server): there is nothing left to deliver."""


@dataclass(frozen=True)
class ClaimedElsewhere(Event):
    """Island mode (decision 0036): another node won this email's claim in the sync box,
    so that node handles it and this one ends its copy. Closed at once, not ended: the
    original in the incoming box is the winner's to answer and clean up."""


@dataclass(frozen=True)
class ClaimReturned(Event):
    """Island mode (decision 0036): the node that won this email's claim while cut off
    from the database merges back, and this record was closed as claimed elsewhere by
    the node that lost the claim to it. The winner sent only the auto-response on its own
    (it neither routes nor takes replies there), so the email is queued again for the
    nodes on the database to route, forward and answer. Only from that outcome: a record
    closed for any other reason (replied, ended, vanished) stays closed."""


TRANSITIONS: Final[Mapping[tuple[State, type[Event]], State]] = {
    (State.QUEUED, Routed): State.ROUTED,
    (State.ROUTED, Answered): State.ANSWERED,
    (State.ROUTED, OfferExpired): State.QUEUED,
    (State.ANSWERED, Delivered): State.DELIVERED,
    (State.ANSWERED, DeliveryFailed): State.QUEUED,
    (State.DELIVERED, NoReplyExpired): State.QUEUED,
    # A fast agent can reply before we record the forward as sent (the send and the
    # bookkeeping are two steps); the reply is still theirs to give.
    (State.ANSWERED, ReplyAccepted): State.REPLYING,
    (State.DELIVERED, ReplyAccepted): State.REPLYING,
    (State.ANSWERED, ReplyHeld): State.AWAITING_APPROVAL,
    (State.DELIVERED, ReplyHeld): State.AWAITING_APPROVAL,
    (State.AWAITING_APPROVAL, Approved): State.REPLYING,
    (State.AWAITING_APPROVAL, Rejected): State.DELIVERED,
    (State.AWAITING_APPROVAL, RejectedToQueue): State.QUEUED,
    (State.REPLYING, ReplySent): State.REPLIED,
    (State.REPLYING, ReplyFailed): State.REPLY_FAILED,
    (State.REPLY_FAILED, ReplyRetried): State.REPLYING,
    (State.REPLY_FAILED, HungUp): State.ENDED,
    (State.ROUTED, HungUp): State.ENDED,
    (State.ANSWERED, HungUp): State.ENDED,
    (State.DELIVERED, HungUp): State.ENDED,
    (State.QUEUED, Transferred): State.QUEUED,
    (State.ROUTED, Transferred): State.QUEUED,
    (State.ANSWERED, Transferred): State.QUEUED,
    (State.DELIVERED, Transferred): State.QUEUED,
    (State.QUEUED, Discarded): State.ENDED,
    (State.REPLIED, CleanedUp): State.CLOSED,
    (State.ENDED, CleanedUp): State.CLOSED,
    (State.QUEUED, Vanished): State.CLOSED,
    (State.ROUTED, Vanished): State.CLOSED,
    (State.ANSWERED, Vanished): State.CLOSED,
    # Every state in which nothing has reached the customer's side for good yet.
    (State.QUEUED, ClaimedElsewhere): State.CLOSED,
    (State.ROUTED, ClaimedElsewhere): State.CLOSED,
    (State.ANSWERED, ClaimedElsewhere): State.CLOSED,
    (State.DELIVERED, ClaimedElsewhere): State.CLOSED,
    (State.AWAITING_APPROVAL, ClaimedElsewhere): State.CLOSED,
    (State.REPLYING, ClaimedElsewhere): State.CLOSED,
    (State.REPLY_FAILED, ClaimedElsewhere): State.CLOSED,
    # The one way out of CLOSED, and only for outcome claimed_elsewhere (`decide`).
    (State.CLOSED, ClaimReturned): State.QUEUED,
}


class IllegalTransition(Exception):
    def __init__(self, state: State, event: Event) -> None:
        super().__init__(f"{type(event).__name__} is not allowed in state {state.value}")
        self.state = state
        self.event = event


@dataclass(frozen=True)
class Timing:
    """The clock policy of one interaction (its box, its priority band, the site)."""

    offer_timeout: timedelta | None = None  # None: offers wait until answered
    no_reply: timedelta | None = None  # None: no no-reply rerouting
    no_reply_priority_raise: int = 10


@dataclass(frozen=True)
class Snapshot:
    """What `decide()` needs to know about an interaction."""

    state: State
    agent: str | None = None
    priority: int = 0
    # How it ended, once it has (`Decision.outcome`); only ClaimReturned asks.
    outcome: str = ""


@dataclass(frozen=True)
class Decision:
    state: State
    agent: str | None
    priority: int
    # Fields to stamp with `now` (answer time, delivered time, ...).
    stamps: tuple[str, ...] = ()
    # Timers to set (to a due time) or clear (None). Timers not named are left alone,
    # except that every timer is cleared when the interaction leaves the live states.
    timers: Mapping[Timer, datetime | None] = field(default_factory=dict)
    # The agent who just stopped holding the interaction, if any (no-reply, transfer,
    # rejection with reroute): routing avoids them for this interaction.
    released: str | None = None
    # How the interaction ended, when it did: replied, wrapped_up, discarded, vanished,
    # claimed_elsewhere.
    outcome: str | None = None
    # Fields put back to their empty value (a reopened interaction: no closing time, no
    # outcome, nobody excluded from routing it).
    clears: tuple[str, ...] = ()
    journal: str = ""


def next_state(state: State, event: Event) -> State:
    try:
        return TRANSITIONS[(state, type(event))]
    except KeyError:
        raise IllegalTransition(state, event) from None


def decide(ix: Snapshot, event: Event, now: datetime, timing: Timing | None = None) -> Decision:
    """The new state of `ix` after `event`, with what to stamp, time and journal."""
    timing = timing or Timing()
    state = next_state(ix.state, event)
    if isinstance(event, ClaimReturned) and ix.outcome != CLAIMED_ELSEWHERE:
        raise IllegalTransition(ix.state, event)
    agent = ix.agent
    priority = ix.priority
    stamps: tuple[str, ...] = ()
    timers: dict[Timer, datetime | None] = {}
    released: str | None = None
    outcome: str | None = None
    clears: tuple[str, ...] = ()
    match event:
        case Routed(agent=chosen):
            agent = chosen
            stamps = ("routed_at",)
            timers[Timer.OFFER] = now + timing.offer_timeout if timing.offer_timeout else None
        case Answered():
            stamps = ("answered_at",)
            timers[Timer.OFFER] = None
        case OfferExpired():
            # Back to the queue, its agent not excluded: like a voice ACD's "redirect on
            # no answer", the engine makes an agent who let an offer expire Not Ready
            # instead, so the mail goes to someone else, or to them once they are back.
            agent = None
        case DeliveryFailed() | RejectedToQueue() | Transferred():
            released, agent = agent, None
        case Delivered():
            stamps = ("delivered_at",)
            timers[Timer.NO_REPLY] = now + timing.no_reply if timing.no_reply else None
        case NoReplyExpired():
            # fig. 8 456-464: logged, rerouted to someone else, priority raised.
            released, agent = agent, None
            priority += timing.no_reply_priority_raise
            timers[Timer.NO_REPLY] = None
        case ReplyAccepted() | ReplyHeld():
            timers[Timer.NO_REPLY] = None
        case Rejected():
            # Back to the agent to try again, with a fresh no-reply time.
            timers[Timer.NO_REPLY] = now + timing.no_reply if timing.no_reply else None
        case ReplySent():
            stamps = ("replied_at",)
            outcome = "replied"
        case HungUp():
            stamps = ("ended_at",)
            outcome = "wrapped_up"
        case Discarded():
            stamps = ("ended_at",)
            outcome = "discarded"
        case Vanished():
            stamps = ("closed_at",)
            outcome = "vanished"
            released = agent
        case ClaimedElsewhere():
            # The agent no longer holds it: their forwarded copy is taken back out.
            stamps = ("closed_at",)
            outcome = CLAIMED_ELSEWHERE
            released = agent
        case ClaimReturned():
            # Starts over in the queue: the agent it had was released when it closed
            # (the forward taken back), and was excluded only because of the lost claim.
            agent = None
            clears = ("closed_at", "outcome", "excluded_agents")
        case CleanedUp():
            stamps = ("closed_at",)
    if state not in LIVE or state is State.QUEUED:
        # No timer outlives the phase it guards.
        timers = {t: None for t in Timer}
    return Decision(
        state=state,
        agent=agent,
        priority=priority,
        stamps=stamps,
        timers=timers,
        released=released,
        outcome=outcome,
        clears=clears,
        journal=event_name(event),
    )


def event_name(event: Event) -> str:
    """The journal name of an event: `ReplyAccepted` → `reply_accepted`."""
    name = type(event).__name__
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


def mermaid() -> str:
    """The state diagram, generated from the table (README, `postroom lifecycle`)."""
    lines = ["stateDiagram-v2", "    [*] --> queued"]
    for (source, event), target in TRANSITIONS.items():
        lines.append(f"    {source.value} --> {target.value}: {event.__name__}")
    lines.append("    closed --> [*]")
    return "\n".join(lines)
