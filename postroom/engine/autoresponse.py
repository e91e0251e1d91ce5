"""Auto-responses (fig. 5 310): the one acknowledgement a customer gets for a new mail.

Called by reception inside the transaction that creates the interaction, so the
auto-response exists as an outbox row (key ``auto_response:<guid>``, at most one per
interaction) exactly when the interaction does.
"""

from __future__ import annotations

from datetime import datetime
from email.utils import make_msgid

from postroom.core import autoreply
from postroom.core.compose import auto_response
from postroom.engine.site import Site
from postroom.mail.message import ParsedMail
from postroom.store.models import Interaction, Mailbox, Outgoing

DEFAULT_AUTO_RESPONSE = (
    "Dear {name},\n\n"
    "Thank you for writing to us. We have received your message \"{subject}\" and one of "
    "our team will answer it soon.\n\nYour reference: {reference}\n\n{box}\n"
)


def auto_response_skip_reason(box: Mailbox, verdict: autoreply.Verdict, rule_template: str | None = None) -> str:
    if rule_template == "off":
        return "auto-response off by a routing rule"
    if not box.auto_response and not rule_template:
        return "auto-response off for this box"
    if verdict.kind != "human":
        # RFC 3834 §2: never answer automatic mail or list traffic automatically.
        return f"not answered automatically: {verdict.kind} ({verdict.reason})"
    return ""


def queue_auto_response(
    ix: Interaction, box: Mailbox, mail: ParsedMail, site: Site, now: datetime, template: str | None = None
) -> None:
    message_id = make_msgid("ar", domain=site.message_id_domain)
    msg = auto_response(
        mail.msg,
        box_address=box.address,
        box_name=box.display_name or None,
        customer=reply_target(ix),
        text=template or box.auto_response_text or DEFAULT_AUTO_RESPONSE,
        message_id=message_id,
        subject_template=box.auto_response_subject or "Re: {subject}",
        reference=reference(ix),
    )
    # The key makes a second auto-response for this interaction impossible (fig. 5 310).
    Outgoing.objects.create(
        key=f"auto_response:{ix.guid}",
        kind=Outgoing.AUTO_RESPONSE,
        interaction=ix,
        envelope_from="",  # RFC 3834 §3.3: null return path, so bounces cannot loop
        recipients=[reply_target(ix)],
        message_id=message_id,
        raw=msg.as_bytes(),
        next_attempt_at=now,
    )


def reply_target(ix: Interaction) -> str:
    """Where answers to the customer go: their Reply-To, else their From."""
    return ix.reply_to or ix.customer


def reference(ix: Interaction) -> str:
    """A short reference the customer can quote (not a credential: correlation uses MACs)."""
    return ix.guid.hex[:10].upper()
