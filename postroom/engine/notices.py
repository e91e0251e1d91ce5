"""Notices: short mails from Postroom to agents and supervisors (never to customers)."""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage
from email.utils import make_msgid

from postroom.core.compose import notice
from postroom.engine.site import Site
from postroom.store.models import Interaction, Mailbox, Outgoing


def queue_notice(
    site: Site,
    now: datetime,
    *,
    key: str,
    to: str,
    subject: str,
    text: str,
    interaction: Interaction | None = None,
    in_reply_to: str | None = None,
    attach: EmailMessage | None = None,
    reply_to: str | None = None,
    from_address: str | None = None,
) -> Outgoing:
    """Queue a notice under `key`: the same key twice is one notice (get_or_create)."""
    existing = Outgoing.objects.filter(key=key).first()
    if existing is not None:
        return existing
    outbound = Mailbox.objects.get(kind=Mailbox.OUTBOUND)
    message_id = make_msgid("notice", domain=site.message_id_domain)
    msg = notice(
        from_address=from_address or outbound.address,
        to=to,
        subject=subject,
        text=text,
        message_id=message_id,
        in_reply_to=in_reply_to,
        attach=attach,
    )
    if reply_to:
        msg["Reply-To"] = reply_to
    return Outgoing.objects.create(
        key=key,
        kind=Outgoing.NOTICE,
        interaction=interaction,
        envelope_from="",  # RFC 3834: automatic mail has a null return path
        recipients=[to],
        message_id=message_id,
        raw=msg.as_bytes(),
        next_attempt_at=now,
    )
