"""Answering from the browser: the composer, for the agent holding an interaction.

The reply is built as the agent's mail client would build it (From the agent, "Re:" the
subject, the text, a simple-formatting HTML alternative, the attachments) and handed to
`postroom.store.webreply.accept_web_reply`, the same reply path as mail from a client:
approval, one reply per interaction under `reply:<guid>`, threading, From the box.
An offered interaction is answered first.
"""

from __future__ import annotations

import mimetypes
from email.message import EmailMessage
from email.utils import format_datetime
from uuid import UUID

import nh3
from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from postroom.core.lifecycle import AWAITING_REPLY, State
from postroom.mail.parts import UnreadableMessage, readable
from postroom.store import agents as agent_state
from postroom.store.commands import CommandError
from postroom.store.permissions import Role, may_handle
from postroom.store.webreply import accept_web_reply
from postroom.web.access import page, principal_of
from postroom.web.mailcopies import customer_copy, customer_excerpt
from postroom.web.pages import interaction_or_403
from postroom.web.views import nav

TEXT_MAX = 100_000
ATTACHMENTS_MAX = 10
ATTACHMENT_BYTES_MAX = 10 * 1024 * 1024
QUOTE_MAX = 20_000
_FORMAT_TAGS = {"p", "br", "strong", "em", "ul", "ol", "li", "a", "blockquote", "code", "pre", "h3", "h4"}


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class AttachmentsField(forms.FileField):
    widget = MultipleFileInput

    def clean(self, data, initial=None):  # type: ignore[override]
        files = data if isinstance(data, list | tuple) else ([data] if data else [])
        return [super(AttachmentsField, self).clean(f, initial) for f in files]


class ReplyForm(forms.Form):
    text = forms.CharField(
        label="Your reply", max_length=TEXT_MAX, strip=False,
        widget=forms.Textarea(attrs={"rows": 14, "id": "reply-text"}),
    )
    formatted = forms.BooleanField(
        label="Simple formatting: **bold**, _italic_, lists with - and links", required=False
    )
    attachments = AttachmentsField(label="Attachments", required=False)

    def clean_text(self) -> str:
        text = self.cleaned_data["text"].replace("\x00", "").replace("\r\n", "\n")
        if not text.strip():
            raise forms.ValidationError("Write something first.")
        return text

    def clean_attachments(self) -> list:
        files = self.cleaned_data.get("attachments") or []
        if len(files) > ATTACHMENTS_MAX:
            raise forms.ValidationError(f"At most {ATTACHMENTS_MAX} attachments.")
        if sum(f.size for f in files) > ATTACHMENT_BYTES_MAX:
            raise forms.ValidationError(f"Attachments of at most {ATTACHMENT_BYTES_MAX // 2**20} MB in all.")
        return files


def formatted_html(text: str) -> str:
    """The simple formatting (a Markdown subset, no raw HTML) as clean HTML."""
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark", {"html": False, "linkify": False}).render(text)
    return nh3.clean(
        html, tags=set(_FORMAT_TAGS), attributes={"a": {"href"}},
        url_schemes={"http", "https", "mailto"}, link_rel="noopener noreferrer",
    )


def quoted(ix, text: str) -> str:
    when = ix.arrival_time.strftime("%Y-%m-%d %H:%M")
    who = f"{ix.customer_name} <{ix.customer}>" if ix.customer_name else ix.customer
    lines = text[:QUOTE_MAX].strip("\n").split("\n")
    return f"\n\nOn {when}, {who} wrote:\n" + "\n".join("> " + line if line else ">" for line in lines)


def build_message(ix, agent, form: ReplyForm, now) -> EmailMessage:
    """The reply as the agent's own mail client would send it."""
    msg = EmailMessage()
    msg["From"] = f"{agent.name} <{agent.address}>" if agent.name else agent.address
    msg["To"] = ix.mailbox.address
    msg["Subject"] = f"Re: {ix.subject}".strip() if ix.subject else "Re:"
    msg["Date"] = format_datetime(now)
    if ix.message_id:
        msg["In-Reply-To"] = ix.message_id
    text = form.cleaned_data["text"]
    msg.set_content(text, charset="utf-8")
    if form.cleaned_data.get("formatted"):
        msg.add_alternative(formatted_html(text), subtype="html", charset="utf-8")
    for upload in form.cleaned_data.get("attachments") or []:
        name = (upload.name or "attachment").replace("\\", "/").rsplit("/", 1)[-1][:150]
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        maintype, _, subtype = kind.partition("/")
        msg.add_attachment(upload.read(), maintype=maintype, subtype=subtype, filename=name)
    return msg


@require_http_methods(["GET", "POST"])
@never_cache
@page(Role.AGENT, handles=True)
def reply(request: HttpRequest, guid: UUID) -> HttpResponse:
    ix = interaction_or_403(
        request, guid, may_handle,
        "Only the agent holding the interaction (and its supervisors, who may look) may open its composer.",
    )
    who = principal_of(request)
    holder = who.agent is not None and ix.agent_id == who.agent.pk
    can_write = holder and (ix.state in AWAITING_REPLY or ix.state is State.ROUTED)
    copy = customer_copy(ix)
    original = ""
    if copy is not None:
        try:
            original = readable(copy.raw).text
        except UnreadableMessage:
            original = ""
    original = original or customer_excerpt(ix)
    error, status = "", 200
    if request.method == "POST":
        form = ReplyForm(request.POST, request.FILES)
        if not can_write:
            error, status = "You cannot reply to this interaction now.", 409 if holder else 403
        elif form.is_valid():
            now = timezone.now()
            if ix.state is State.ROUTED and not agent_state.answer(ix, who.agent, now=now):
                error, status = "Someone else changed this interaction meanwhile; reload.", 409
            else:
                try:
                    outcome = accept_web_reply(ix, who.agent, build_message(ix, who.agent, form, now), now=now)
                except CommandError as exc:
                    error, status = exc.message, exc.status
                else:
                    return redirect(f"{request.path}?sent={outcome}")
        else:
            status = 400
    else:
        form = ReplyForm(initial={"text": quoted(ix, original) if original else ""})
    return render(
        request,
        "postroom/reply.html",
        {"nav": nav(who), "ix": ix, "form": form, "original": original, "holder": holder,
         "can_write": can_write, "error": error, "sent": request.GET.get("sent", ""),
         "limits": {"files": ATTACHMENTS_MAX, "mb": ATTACHMENT_BYTES_MAX // 2**20}},
        status=status,
    )
