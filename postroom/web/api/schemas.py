"""The API's request and response shapes (pydantic, through django-ninja).

Every response an endpoint can give is declared on it, 4xx included, so the OpenAPI
schema tells clients (and the fuzzer in tests/e2e/test_api_fuzz.py) the truth.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from ninja import Field, Schema
from pydantic import ConfigDict, model_validator

# Bounds on free text from clients: generous for people, small enough for the database.
CODE_MAX = 60
TEXT_MAX = 100_000
# No NUL anywhere: PostgreSQL refuses it in text (the fuzzer's find: a 500 there).
NO_NUL = r"^[^\x00]*$"

class Error(Schema):
    detail: str


class ValidationErrorItem(Schema):
    type: str
    loc: list[str | int]
    msg: str


class Invalid(Schema):
    """422: the request did not match the schema; one entry per problem."""

    detail: list[ValidationErrorItem]


class InteractionRef(Schema):
    guid: UUID
    subject: str
    status: str
    # When the no-reply timer takes it back, and how many seconds are left (negative: late).
    no_reply_due_at: datetime | None = None
    seconds_left: int | None = None


class HistoryItem(Schema):
    """One of the customer's other interactions (that the caller may see)."""

    guid: UUID
    subject: str
    status: str
    arrival_time: datetime


class AgentOut(Schema):
    name: str
    address: str
    ready: bool
    skills: list[str]
    auto_answer: bool
    is_supervisor: bool
    capacity: int
    state_changed_at: datetime | None
    current: list[InteractionRef]


class QueueItem(Schema):
    guid: UUID
    subject: str
    customer: str
    customer_name: str
    mailbox: str
    priority: int
    arrival_time: datetime
    waiting_seconds: int


class Summary(Schema):
    queued: int
    with_agents: int
    replied_today: int


class NodeOut(Schema):
    node_id: str
    role: str
    mode: str
    live: bool
    state: str
    epoch: int
    host: str
    pid: int
    started_at: datetime
    heartbeat_age_s: float
    router: bool
    mailboxes: list[str]
    claims: list[str]


class NodesOut(Schema):
    nodes: list[NodeOut]


class StatusOut(Schema):
    now: datetime
    queue: list[QueueItem]
    agents: list[AgentOut]
    counts: dict[str, int]
    summary: Summary


class InteractionOut(Schema):
    guid: UUID
    subject: str
    customer: str
    mailbox: str
    priority: int
    status: str
    agent: str | None
    arrival_time: datetime


class JournalOut(Schema):
    at: datetime
    kind: str
    agent: str | None
    detail: dict[str, Any]


class InteractionDetail(Schema):
    """The tracking record of fig. 3, with its journal."""

    guid: UUID
    node_id: str
    mailbox: str
    message_id: str
    to: str
    reply_to: str
    customer: str
    customer_name: str
    subject: str
    arrival_time: datetime
    auto_response_sent_at: datetime | None
    auto_response_skipped: str
    priority: int
    status: str
    agent: str | None
    routed_at: datetime | None
    answered_at: datetime | None
    delivered_at: datetime | None
    replied_at: datetime | None
    closed_at: datetime | None
    deliveries: int
    approval: bool
    claim_node: str
    claim_time: datetime | None
    version: int
    queue: str
    target_agent: str | None
    excluded_agents: list[str]
    priority_reasons: list[Any]
    rules: Any
    offer_due_at: datetime | None
    no_reply_due_at: datetime | None
    ended_at: datetime | None
    outcome: str
    wrapup_code: str
    resolution_code: str
    journal: list[JournalOut]


class WrapUpCodeOut(Schema):
    code: str
    label: str


class Body(Schema):
    """A request body: a JSON object with exactly the declared keys.

    (ninja's Schema reads any object's attributes, for ORM rows: without the check a JSON
    array would pass as an object whose every optional field is missing.)
    """

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _an_object(cls, data: Any) -> Any:
        if not isinstance(getattr(data, "_obj", data), dict):  # ninja wraps it in a DjangoGetter
            raise ValueError("expected a JSON object")
        return data


class CodeIn(Body):
    code: str = Field(min_length=1, max_length=CODE_MAX, pattern=NO_NUL)


class TransferIn(Body):
    """Exactly one of the two."""

    agent: str | None = Field(None, min_length=1, max_length=254, pattern=NO_NUL)
    queue: str | None = Field(None, min_length=1, max_length=100, pattern=NO_NUL)


class ApproveIn(Body):
    text: str | None = Field(None, min_length=1, max_length=TEXT_MAX, pattern=NO_NUL)


class RejectIn(Body):
    reason: str = Field(min_length=1, max_length=TEXT_MAX, pattern=NO_NUL)


class ApprovalOut(Schema):
    id: int
    interaction: UUID
    subject: str
    customer: str
    customer_name: str
    agent: str | None
    agent_name: str | None
    approvers: list[str]
    reason_held: str
    state: str
    reply_subject: str
    text: str
    edited_text: str
    rejection_reason: str
    decided_by: str
    decided_via: str
    requested_at: datetime
    decided_at: datetime | None
    applied_at: datetime | None


class DeskItem(Schema):
    guid: UUID
    subject: str
    customer: str
    customer_name: str
    mailbox: str
    queue: str
    priority: int
    status: str
    arrival_time: datetime
    routed_at: datetime | None
    answered_at: datetime | None
    replied_at: datetime | None
    waiting_seconds: int
    wrapup_code: str
    resolution_code: str
    no_reply_due_at: datetime | None
    seconds_left: int | None
    history: list[HistoryItem]


class DeskOut(Schema):
    """The agent bar of the logged-in agent."""

    now: datetime
    agent: AgentOut
    offered: list[DeskItem]
    current: list[DeskItem]
    replied: list[DeskItem]


class QueuedOut(Schema):
    guid: UUID
    subject: str
    customer: str
    customer_name: str
    mailbox: str
    priority: int
    arrival_time: datetime
    waiting_seconds: int
    target_agent: str | None
    priority_reasons: list[Any]
    rules: Any


class QueueGroup(Schema):
    """A queue's head (the first items by priority, then age) and its length."""

    queue: str
    items: list[QueuedOut]
    total: int


class ConsoleAgent(AgentOut):
    load: int


class ConsoleOut(Schema):
    """The supervisor console: queues with the why, agents with load, approvals."""

    now: datetime
    queues: list[QueueGroup]
    agents: list[ConsoleAgent]
    approvals: list[ApprovalOut]
    decided: list[ApprovalOut]
    summary: Summary


class InteractionPage(Schema):
    items: list[InteractionOut]
    count: int


def answers(ok: Any, *codes: int) -> dict[int, Any]:
    """An endpoint's documented responses: `ok` for 200, `Error` for 401, 403 (every
    endpoint needs a login and a role) and each of `codes`, `Invalid` for 422."""
    found: dict[int, Any] = {200: ok, 401: Error, 403: Error}
    for code in codes:
        found[code] = Invalid if code == 422 else Error
    return found
