"""The interaction lifecycle: states, events and the one table of legal transitions.

This is the method of the patent's figures 5 to 10 written as data. The engine feeds an
event and the interaction's current state into `decide()` and gets back the new state and
the effects to carry out; it never changes a state any other way. Nothing here reads the
clock, the database or the network: `now` and the facts the decision needs come in as
arguments.

    QUEUED ──Routed──▶ ROUTED ──Answered──▶ ANSWERED ──Delivered──▶ DELIVERED
      ▲                  │                    │                       │
      └──OfferExpired────┘   DeliveryFailed───┘          ReplyAccepted│
                                                                      ▼
                         CLOSED ◀──CleanedUp── REPLIED ◀──ReplySent── REPLYING
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final


class State(enum.StrEnum):
    # fig. 3 STATUS 0: on the email server, waiting in the prioritised list.
    QUEUED = "queued"
    # fig. 6: a routed-to agent is chosen and written down; the agent has not answered.
    ROUTED = "routed"
    # fig. 7 / STATUS 2: the agent answered; the forwarded copy is being sent to them.
    ANSWERED = "answered"
    # fig. 7 done: the agent's mailbox holds the forwarded copy; we wait for the reply.
    DELIVERED = "delivered"
    # fig. 9: the assigned agent's reply is accepted and queued for the customer.
    REPLYING = "replying"
    # fig. 9 518: the reply left; the mailboxes still hold the original and the reply.
    REPLIED = "replied"
    # fig. 9 526: mailboxes cleaned up; the interaction is complete.
    CLOSED = "closed"


TERMINAL: Final = frozenset({State.CLOSED})
# States in which an agent holds the interaction (counts against their capacity).
WITH_AGENT: Final = frozenset({State.ROUTED, State.ANSWERED, State.DELIVERED})
# States in which a reply from the assigned agent is acceptable (fig. 9, 504/556).
AWAITING_REPLY: Final = frozenset({State.ANSWERED, State.DELIVERED})


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
class ReplyAccepted(Event):
    pass


@dataclass(frozen=True)
class ReplySent(Event):
    pass


@dataclass(frozen=True)
class CleanedUp(Event):
    pass


@dataclass(frozen=True)
class Vanished(Event):
    """The customer's original disappeared from the incoming box before delivery
    (deleted by someone on the mail server): there is nothing left to deliver."""


TRANSITIONS: Final[Mapping[tuple[State, type[Event]], State]] = {
    (State.QUEUED, Routed): State.ROUTED,
    (State.ROUTED, Answered): State.ANSWERED,
    (State.ROUTED, OfferExpired): State.QUEUED,
    (State.ANSWERED, Delivered): State.DELIVERED,
    (State.ANSWERED, DeliveryFailed): State.QUEUED,
    # A fast agent can reply before we record the forward as sent (the send and the
    # bookkeeping are two steps); the reply is still theirs to give.
    (State.ANSWERED, ReplyAccepted): State.REPLYING,
    (State.DELIVERED, ReplyAccepted): State.REPLYING,
    (State.REPLYING, ReplySent): State.REPLIED,
    (State.REPLIED, CleanedUp): State.CLOSED,
    (State.QUEUED, Vanished): State.CLOSED,
    (State.ROUTED, Vanished): State.CLOSED,
    (State.ANSWERED, Vanished): State.CLOSED,
}


class IllegalTransition(Exception):
    def __init__(self, state: State, event: Event) -> None:
        super().__init__(f"{type(event).__name__} is not allowed in state {state.value}")
        self.state = state
        self.event = event


@dataclass(frozen=True)
class Snapshot:
    """What `decide()` needs to know about an interaction."""

    state: State
    agent: str | None = None
    priority: int = 0


@dataclass(frozen=True)
class Decision:
    state: State
    agent: str | None
    # Names of fields to stamp with `now` (answer time, delivered time, ...).
    stamps: tuple[str, ...] = ()
    journal: tuple[str, ...] = field(default=())


def next_state(state: State, event: Event) -> State:
    try:
        return TRANSITIONS[(state, type(event))]
    except KeyError:
        raise IllegalTransition(state, event) from None


def decide(ix: Snapshot, event: Event, now: datetime) -> Decision:
    """The new state of `ix` after `event`, with what to stamp and journal."""
    state = next_state(ix.state, event)
    agent = ix.agent
    stamps: tuple[str, ...] = ()
    match event:
        case Routed(agent=chosen):
            agent = chosen
            stamps = ("routed_at",)
        case Answered():
            stamps = ("answered_at",)
        case OfferExpired() | DeliveryFailed():
            # Back to the queue: nobody holds it any more.
            agent = None
        case Delivered():
            stamps = ("delivered_at",)
        case ReplySent():
            stamps = ("replied_at",)
        case CleanedUp() | Vanished():
            stamps = ("closed_at",)
    return Decision(state=state, agent=agent, stamps=stamps, journal=(event_name(event),))


def event_name(event: Event) -> str:
    """The journal name of an event: `ReplyAccepted` → `reply_accepted`."""
    name = type(event).__name__
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
