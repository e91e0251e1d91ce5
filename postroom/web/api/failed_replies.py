"""Replies the mail server refused for good (`reply_failed`), for supervisors:
GET /api/failed-replies, then resend, edit and send, or end with a wrap-up code.

The actions are `store/commands.py`'s (`resend_reply`, `edit_reply`, `end_failed_reply`),
which check who is asking; each answers with the list as it now is.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from django.http import HttpRequest
from django.utils import timezone
from ninja import Field, Schema

from postroom.store import commands
from postroom.store.permissions import Role
from postroom.web.access import allow, interaction_for, principal_of
from postroom.web.api.router import Router
from postroom.web.api.schemas import NO_NUL, TEXT_MAX, Body, CodeIn, answers
from postroom.web.failed_replies import failed_replies

router = Router(tags=["failed replies"])


class FailedReply(Schema):
    guid: UUID
    subject: str
    customer: str
    customer_name: str
    agent: str | None
    agent_name: str | None
    failed_at: datetime | None
    reason: str
    attempts: int
    text: str


class FailedReplies(Schema):
    now: datetime
    items: list[FailedReply]


class TextIn(Body):
    text: str = Field(min_length=1, max_length=TEXT_MAX, pattern=NO_NUL)


@router.get(
    "/failed-replies",
    response=answers(FailedReplies),
    url_name="failed-replies",
    summary="Replies the mail server refused for good, waiting for a supervisor",
)
@allow(Role.SUPERVISOR)
def list_failed(request: HttpRequest):
    return failed_replies(principal_of(request))


@router.post(
    "/failed-replies/{guid}/resend",
    response=answers(FailedReplies, 400, 404, 409, 422),
    url_name="failed-reply-resend",
    summary="Send the failed reply again, as it was",
)
@allow(Role.SUPERVISOR)
def resend(request: HttpRequest, guid: UUID):
    commands.resend_reply(interaction_for(request, guid), by_user=request.auth, now=timezone.now())
    return failed_replies(principal_of(request))


@router.post(
    "/failed-replies/{guid}/edit",
    response=answers(FailedReplies, 400, 404, 409, 422),
    url_name="failed-reply-edit",
    summary="Replace the failed reply's text, then send it",
)
@allow(Role.SUPERVISOR)
def edit(request: HttpRequest, guid: UUID, payload: TextIn):
    commands.edit_reply(
        interaction_for(request, guid), by_user=request.auth, text=payload.text, now=timezone.now()
    )
    return failed_replies(principal_of(request))


@router.post(
    "/failed-replies/{guid}/end",
    response=answers(FailedReplies, 400, 404, 409, 422),
    url_name="failed-reply-end",
    summary="End the interaction without a reply, with a wrap-up code",
)
@allow(Role.SUPERVISOR)
def end(request: HttpRequest, guid: UUID, payload: CodeIn):
    commands.end_failed_reply(
        interaction_for(request, guid), by_user=request.auth, code=payload.code, now=timezone.now()
    )
    return failed_replies(principal_of(request))
