"""Auto-responses (fig. 5 310): the one acknowledgement a customer gets for a new mail.

Called by reception inside the transaction that creates the interaction, so the
auto-response exists as an outbox row (key ``auto_response:<guid>``, at most one per
interaction) exactly when the interaction does.

Anyone can write to a contact center with any From and Reply-To, so an auto-response
is a way to make Postroom mail a third party.  Two limits keep it from being a spam
cannon (issue 8 #6): at most ``Site.auto_response_limit`` auto-responses to one address
within ``Site.auto_response_window`` (Znuny and Zammad do the same), the skipped reason
kept on the interaction; and no words of the sender's in it unless the box opts in
(``Mailbox.auto_response_customer_text``, see ``core.compose.auto_response``).
"""

from __future__ import annotations

from datetime import datetime
from email.utils import make_msgid

from postroom.config import DEFAULT_AUTO_RESPONSE_SUBJECT, DEFAULT_AUTO_RESPONSE_TEXT
from postroom.core import autoreply
from postroom.core.compose import auto_response_bytes
from postroom.core.islandlocal import answer_message_id
from postroom.engine import batchreads
from postroom.engine.site import Site
from postroom.mail.message import ParsedMail
from postroom.store import journal
from postroom.store.models import Interaction, Mailbox, Outgoing


def auto_response_skip_reason(
    box: Mailbox,
    verdict: autoreply.Verdict,
    rule_template: str | None = None,
    *,
    ix: Interaction | None = None,
    site: Site | None = None,
    now: datetime | None = None,
) -> str:
    if rule_template == "off":
        return "auto-response off by a routing rule"
    if not box.auto_response and not rule_template:
        return "auto-response off for this box"
    if verdict.kind != "human":
        # RFC 3834 §2: never answer automatic mail or list traffic automatically.
        return f"not answered automatically: {verdict.kind} ({verdict.reason})"
    if ix is not None and site is not None and now is not None and site.auto_response_limit:
        sent = recent_auto_responses(reply_target(ix), since=now - site.auto_response_window)
        if sent >= site.auto_response_limit:
            hours = site.auto_response_window.total_seconds() / 3600
            return f"rate limit: {sent} auto-responses to this address in the last {hours:g} h"
    return ""


def recent_auto_responses(address: str, *, since: datetime) -> int:
    """Auto-responses queued for ``address`` since ``since`` (by where they were sent):
    one indexed range count on ``Outgoing.rate_key``; inside a FETCH batch read ahead,
    from what was read for the batch and the batch's own (decision 0043)."""
    reads = batchreads.current()
    if reads is not None:
        return reads.recent_auto_responses(address, since)
    return Outgoing.objects.filter(
        rate_key=rate_key(address), created_at__gte=since, kind=Outgoing.AUTO_RESPONSE
    ).count()


def rate_key(address: str) -> str:
    """What the rate limit counts by: the address lower-cased (what ``iexact`` compared)."""
    return address.lower()


def queue_auto_response(
    ix: Interaction, box: Mailbox, mail: ParsedMail, site: Site, now: datetime, template: str | None = None
) -> None:
    # Derived from the email's name, so a node rebuilding its view from the boxes (island
    # mode, decision 0036) mints the ID the journal box may already hold.
    message_id = answer_message_id(
        "ar", box.address, ix.message_id, ix.raw_sha256, site.message_id_domain
    ) or make_msgid("ar", domain=site.message_id_domain)
    # As text where the message is plain (ASCII, one-line headers): the same bytes as
    # building it as a message, without the email package's cost (decision 0049).
    raw = auto_response_bytes(
        mail.msg,
        box_address=box.address,
        box_name=box.display_name or None,
        customer=reply_target(ix),
        text=template or box.auto_response_text or DEFAULT_AUTO_RESPONSE_TEXT,
        message_id=message_id,
        subject_template=box.auto_response_subject or DEFAULT_AUTO_RESPONSE_SUBJECT,
        reference=reference(ix),
        customer_text=box.auto_response_customer_text,
        date=now,
    )
    # The key makes a second auto-response for this interaction impossible (fig. 5 310).
    row = Outgoing(
        key=f"auto_response:{ix.guid}",
        kind=Outgoing.AUTO_RESPONSE,
        interaction=ix,
        # RFC 3834 §3.3: a null return path by default, so bounces cannot loop; or the
        # box's address where the relay refuses a null sender ([outbox]).
        envelope_from=site.automatic_sender(box.address),
        recipients=[reply_target(ix)],
        rate_key=rate_key(reply_target(ix)),
        message_id=message_id,
        raw=raw,
        next_attempt_at=now,
    )
    if batchreads.current() is not None:
        journal.defer(row)  # with the batch's interactions (decision 0043)
    else:
        row.save(force_insert=True)


def reply_target(ix: Interaction) -> str:
    """Where answers to the customer go: their Reply-To, else their From."""
    return ix.reply_to or ix.customer


def reference(ix: Interaction) -> str:
    """A short reference the customer can quote (not a credential: correlation uses MACs)."""
    return ix.guid.hex[:10].upper()
