"""Replies the mail server refused for good (state `reply_failed`), for supervisors:
list them, then resend, edit and send, or end with a wrap-up code.

Mounted on the API at /api/failed-replies (see the end of `web/api.py`); the console shows
them through `templates/postroom/_failed_replies.html`. The actions are the commands in
`store/commands.py` (`resend_reply`, `edit_reply`, `end_failed_reply`), which check who
is asking; a refusal comes back as {"detail": ...} with its status like any command.
"""

from __future__ import annotations

from datetime import datetime
from email import message_from_bytes
from email.message import EmailMessage
from typing import Any
from uuid import UUID

from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from django.utils import timezone
from ninja import Router, Schema
from ninja.errors import HttpError

from postroom.core.lifecycle import State
from postroom.core.rewrite import POLICY
from postroom.store import commands
from postroom.store.models import Interaction, JournalEvent, Outgoing

router = Router(tags=["failed replies"])


class Error(Schema):
    detail: str


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


class TextIn(Schema):
    text: str


class CodeIn(Schema):
    code: str


def body_text(raw: bytes) -> str:
    """The reply's text as the customer would read it first (plain, else HTML source)."""
    msg = message_from_bytes(raw, policy=POLICY)
    body = msg.get_body(("plain", "html")) if isinstance(msg, EmailMessage) else None
    if body is None:
        return ""
    try:
        return str(body.get_content()).strip()
    except (LookupError, UnicodeError, KeyError, AssertionError):
        payload = body.get_payload(decode=True)
        return payload.decode("utf-8", "replace").strip() if isinstance(payload, bytes) else ""


def failed_reply(ix: Interaction) -> dict[str, Any]:
    reply = Outgoing.objects.filter(interaction=ix, kind=Outgoing.REPLY).first()
    failed = JournalEvent.objects.filter(interaction=ix, kind="reply_failed").order_by("-id").first()
    return {
        "guid": ix.guid,
        "subject": ix.subject,
        "customer": ix.customer,
        "customer_name": ix.customer_name,
        "agent": ix.agent.address if ix.agent_id else None,
        "agent_name": ix.agent.name if ix.agent_id else None,
        "failed_at": failed.at if failed else None,
        "reason": reply.last_error if reply else "",
        "attempts": reply.attempts if reply else 0,
        "text": body_text(bytes(reply.raw)) if reply else "",
    }


def failed_replies() -> dict[str, Any]:
    found = Interaction.objects.filter(status=State.REPLY_FAILED).select_related("agent").order_by("id")[:200]
    return {"now": timezone.now(), "items": [failed_reply(ix) for ix in found]}


def _supervisor(request: HttpRequest) -> Any:
    if not commands.is_supervisor(request.auth):
        raise HttpError(403, "Only supervisors and staff may see failed replies")
    return request.auth


def _interaction(guid: UUID) -> Interaction:
    return get_object_or_404(Interaction.objects.select_related("agent", "mailbox"), guid=guid)


@router.get("", response={200: FailedReplies, 403: Error}, url_name="failed-replies",
            summary="Replies the mail server refused for good, waiting for a supervisor")
def list_failed(request: HttpRequest):
    _supervisor(request)
    return failed_replies()


@router.post("/{guid}/resend", response={200: FailedReplies, 400: Error, 403: Error, 404: Error, 409: Error},
             url_name="failed-reply-resend", summary="Send the failed reply again, as it was")
def resend(request: HttpRequest, guid: UUID):
    commands.resend_reply(_interaction(guid), by_user=_supervisor(request), now=timezone.now())
    return failed_replies()


@router.post("/{guid}/edit", response={200: FailedReplies, 400: Error, 403: Error, 404: Error, 409: Error},
             url_name="failed-reply-edit", summary="Replace the failed reply's text, then send it")
def edit(request: HttpRequest, guid: UUID, payload: TextIn):
    commands.edit_reply(_interaction(guid), by_user=_supervisor(request), text=payload.text, now=timezone.now())
    return failed_replies()


@router.post("/{guid}/end", response={200: FailedReplies, 400: Error, 403: Error, 404: Error, 409: Error},
             url_name="failed-reply-end", summary="End the interaction without a reply, with a wrap-up code")
def end(request: HttpRequest, guid: UUID, payload: CodeIn):
    commands.end_failed_reply(_interaction(guid), by_user=_supervisor(request), code=payload.code, now=timezone.now())
    return failed_replies()
