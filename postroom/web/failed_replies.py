"""Replies the mail server refused for good (state `reply_failed`), as view-models for
supervisors: the API lists them (`web/api/failed_replies.py`) and the console draws them
(`templates/postroom/_failed_replies.html`, `assets/failed_replies.js`). The actions are
the commands in `store/commands.py` (`resend_reply`, `edit_reply`, `end_failed_reply`).
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from postroom.core.lifecycle import State
from postroom.mail.message import UnreadableMessage, parse
from postroom.store.models import Interaction, JournalEvent, Outgoing
from postroom.store.permissions import Principal, visible_interactions


def body_text(raw: bytes) -> str:
    """The reply's text as the customer would read it (the parser's, HTML as text)."""
    try:
        return parse(raw).text.strip()
    except UnreadableMessage:
        return ""


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


def failed_replies(who: Principal) -> dict[str, Any]:
    """The failed replies `who` may act on (a supervisor: their agents')."""
    found = (
        visible_interactions(who, Interaction.objects.filter(status=State.REPLY_FAILED))
        .select_related("agent")
        .order_by("id")[:200]
    )
    return {"now": timezone.now(), "items": [failed_reply(ix) for ix in found]}
