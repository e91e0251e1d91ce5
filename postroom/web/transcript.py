"""The transcript of one interaction: every mail in and out, approvals, notices and every
journal event with its time and actor, in order; the customer's history; evaluations.

Mail is shown as its text on the page; HTML mail in a sandboxed frame of its own
(`message_frame`), sanitized by `postroom.web.sanitize`, under a Content-Security-Policy
that lets nothing run or load (remote images only when the reader asks). Attachments are
downloads, never rendered: Content-Disposition attachment, and a content type from a short
list of inert ones (anything else is application/octet-stream).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote
from uuid import UUID

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_GET

from postroom.mail.parts import UnreadableMessage, attachment, inline_images, readable
from postroom.store.evaluations import FINISHED
from postroom.store.finder import history
from postroom.store.models import Approval, Interaction, JournalEvent, OutboundMessage, Outgoing
from postroom.store.permissions import Role, may_evaluate, may_handle
from postroom.web.access import page, principal_of
from postroom.web.mailcopies import customer_copy, customer_excerpt
from postroom.web.pages import interaction_or_403
from postroom.web.sanitize import clean_mail_html, frame_document, frame_policy
from postroom.web.views import nav

# Types a browser shows as inert content; everything else is downloaded as bytes.
SAFE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "application/pdf", "text/plain"})
_REF = re.compile(r"customer|out-\d{1,18}|held-\d{1,18}")
KIND_LABELS = {
    Outgoing.AUTO_RESPONSE: "Auto-response to the customer",
    Outgoing.FORWARD: "Forwarded to the agent",
    Outgoing.REPLY: "Reply to the customer",
    Outgoing.NOTICE: "Notice",
}


@dataclass
class Entry:
    """One line of the transcript: a message (with `ref`) or a journal event."""

    at: datetime
    kind: str
    title: str
    actor: str = ""
    ref: str = ""
    source: str = ""
    sender: str = ""
    to: str = ""
    subject: str = ""
    text: str = ""
    has_html: bool = False
    # Remote images the sanitizer left out of the HTML (the reader may ask for them).
    blocked_images: int = 0
    attachments: list[Any] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def _raw_for(ix: Interaction, ref: str) -> tuple[bytes | None, str]:
    """The bytes behind a transcript reference, and where they were read."""
    if not _REF.fullmatch(ref):
        return None, ""
    if ref == "customer":
        copy = customer_copy(ix)
        return (copy.raw, copy.source) if copy else (None, "")
    kind, _, number = ref.partition("-")
    if kind == "out":
        row = Outgoing.objects.filter(interaction=ix, pk=int(number)).first()
        return (bytes(row.raw), "as sent") if row else (None, "")
    row = Approval.objects.filter(interaction=ix, pk=int(number)).first()
    return (bytes(row.raw), "as held") if row else (None, "")


def _message(entry: Entry, raw: bytes | None) -> Entry:
    if raw is None:
        entry.note = "The message is no longer on the mail server and Postroom kept no copy."
        return entry
    try:
        mail = readable(raw)
    except UnreadableMessage as exc:
        entry.note = f"The message cannot be read: {exc.reason}"
        return entry
    entry.sender = mail.sender
    entry.to = ", ".join(mail.to)
    entry.subject = mail.subject
    entry.text = mail.text
    entry.has_html = bool(mail.html)
    if mail.html:
        entry.blocked_images = clean_mail_html(mail.html).blocked_images
    entry.attachments = mail.attachments
    return entry


# Journal kinds that are the agent's own doing (the event's agent did it); the others are
# Postroom's (the event's agent is then only whom it concerned).
AGENT_ACTS = frozenset({"answered", "reply_accepted", "reply_held", "hung_up", "resolution_set"})


def _actor(event: JournalEvent) -> str:
    detail = event.detail if isinstance(event.detail, dict) else {}
    by = detail.get("by")
    if by:
        return str(by)
    if event.kind in AGENT_ACTS and event.agent_id:
        return event.agent.address
    return "Postroom"


def entries(ix: Interaction) -> list[Entry]:
    found: list[Entry] = []
    copy = customer_copy(ix)
    customer = Entry(
        at=ix.arrival_time, kind="customer", title="The customer's mail", ref="customer",
        actor=ix.customer, source=copy.source if copy else "",
    )
    found.append(_message(customer, copy.raw if copy else None))
    if copy is None and (excerpt := customer_excerpt(ix)):
        customer.note = ""
        customer.source = "the text kept for search (the mail itself is no longer on the server)"
        customer.sender = f"{ix.customer_name} <{ix.customer}>" if ix.customer_name else ix.customer
        customer.to = ix.to_addr
        customer.subject = ix.subject
        customer.text = excerpt
    for row in Outgoing.objects.filter(interaction=ix).order_by("created_at", "id"):
        title = KIND_LABELS.get(row.kind, row.kind)
        if row.kind in (Outgoing.FORWARD, Outgoing.NOTICE):
            title += " " + ", ".join(str(r) for r in row.recipients or [])
        entry = Entry(
            at=row.sent_at or row.created_at, kind=row.kind, title=title, ref=f"out-{row.pk}",
            actor="Postroom", source="as sent" if row.state == Outgoing.SENT else f"{row.state}",
        )
        found.append(_message(entry, bytes(row.raw)))
    for approval in Approval.objects.filter(interaction=ix).order_by("requested_at", "id"):
        entry = Entry(
            at=approval.requested_at, kind="held", title=f"Reply held for approval ({approval.state})",
            ref=f"held-{approval.pk}", actor=ix.agent.address if ix.agent_id else "",
            source="as held",
            detail={"approvers": ", ".join(approval.approvers or []), "reason": approval.reason_held,
                    "decided by": approval.decided_by, "rejection": approval.rejection_reason,
                    "edited": "yes" if approval.edited_text else ""},
        )
        found.append(_message(entry, bytes(approval.raw)))
    for row in OutboundMessage.objects.filter(interaction=ix).order_by("created_at", "id"):
        found.append(
            Entry(
                at=row.created_at, kind="ledger",
                title=f"Agent's mail in the outbound box: {row.get_outcome_display()}",
                actor=row.sender, subject=row.subject,
                detail={"reason": row.reason, "message-id": row.message_id},
            )
        )
    for event in JournalEvent.objects.filter(interaction=ix).select_related("agent").order_by("at", "id"):
        detail = event.detail if isinstance(event.detail, dict) else {"value": event.detail}
        detail = {k: v for k, v in detail.items() if k != "by"}
        actor = _actor(event)
        if event.agent_id and actor != event.agent.address:
            detail = {"agent": event.agent.address, **detail}
        found.append(
            Entry(at=event.at, kind="event", title=event.kind.replace("_", " "), actor=actor,
                  detail=detail)
        )
    found.sort(key=lambda e: (e.at, 0 if e.ref else 1))
    return found


@require_GET
@never_cache
@page(Role.AGENT)
def transcript(request: HttpRequest, guid: UUID) -> HttpResponse:
    ix = interaction_or_403(request, guid)
    who = principal_of(request)
    response = render(
        request,
        "postroom/transcript.html",
        {
            "nav": nav(who),
            "ix": ix,
            "entries": entries(ix),
            "history": history(who, ix),
            "evaluations": ix.evaluations.order_by("-created_at"),
            "may_evaluate": may_evaluate(who, ix) and ix.state in FINISHED,
            "may_reply": may_handle(who, ix) and who.agent is not None and ix.agent_id == who.agent.pk,
        },
    )
    # The message frames are this site's own pages (each under its own strict policy).
    response["Content-Security-Policy"] = (
        request_policy(request) + "; frame-src 'self'"
    )
    return response


def request_policy(request: HttpRequest) -> str:
    from postroom.web.csp import POLICY

    return POLICY.format(nonce=getattr(request, "csp_nonce", ""))


@require_GET
@never_cache
@xframe_options_sameorigin
@page(Role.AGENT)
def message_frame(request: HttpRequest, guid: UUID, ref: str) -> HttpResponse:
    """One message's HTML, sanitized, as the document of a sandboxed frame."""
    ix = interaction_or_403(request, guid)
    raw, _source = _raw_for(ix, ref)
    if raw is None:
        raise Http404("no such message")
    try:
        mail = readable(raw)
        inline = inline_images(raw)
    except UnreadableMessage as exc:
        raise Http404("unreadable message") from exc
    remote = request.GET.get("images") == "1"
    if mail.html:
        cleaned = clean_mail_html(mail.html, remote_images=remote, inline=inline)
        body, blocked = cleaned.html, cleaned.blocked_images
    else:
        from django.utils.html import escape

        body, blocked = f"<pre>{escape(mail.text)}</pre>", 0
    response = HttpResponse(frame_document(body), content_type="text/html; charset=utf-8")
    response["Content-Security-Policy"] = frame_policy(remote_images=remote)
    response["X-Postroom-Blocked-Images"] = str(blocked)
    response["Referrer-Policy"] = "no-referrer"
    return response


def _disposition(filename: str) -> str:
    ascii_name = re.sub(r'[^A-Za-z0-9._ -]', "_", filename)[:150] or "attachment"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename[:150])}"


@require_GET
@never_cache
@page(Role.AGENT)
def message_attachment(request: HttpRequest, guid: UUID, ref: str, index: int) -> HttpResponse:
    ix = interaction_or_403(request, guid)
    raw, _source = _raw_for(ix, ref)
    if raw is None:
        raise Http404("no such message")
    try:
        found = attachment(raw, index)
    except UnreadableMessage as exc:
        raise Http404("unreadable message") from exc
    if found is None:
        raise Http404("no such attachment")
    info, data = found
    content_type = info.content_type if info.content_type in SAFE_TYPES else "application/octet-stream"
    if content_type == "text/plain":
        content_type = "text/plain; charset=utf-8"
    response = HttpResponse(data, content_type=content_type)
    response["Content-Disposition"] = _disposition(info.filename)
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["X-Content-Type-Options"] = "nosniff"
    return response
