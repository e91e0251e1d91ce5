"""Reception (fig. 5): new mail in an incoming box becomes a queued interaction.

For each message beyond the box's UID cursor, in one transaction: the tracking record,
the auto-response (as an outbox row, so it is sent at most once), the journal, and the
cursor move. The message itself stays on the server. A message we cannot or must not
take is quarantined: recorded with its reason, then moved to a folder beside the inbox.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from email.utils import make_msgid

from django.db import IntegrityError, transaction

from postroom.core import autoreply
from postroom.core.rewrite import auto_response
from postroom.engine.faults import checkpoint
from postroom.engine.site import Site
from postroom.mail.imap import FetchedMessage, ImapSession
from postroom.mail.message import ParsedMail, UnreadableMessage, parse
from postroom.store import journal
from postroom.store.models import Interaction, Mailbox, Outgoing, Quarantined

log = logging.getLogger(__name__)

QUARANTINE_FOLDER = "Postroom-Quarantine"
BATCH = 50

DEFAULT_AUTO_RESPONSE = (
    "Dear {name},\n\n"
    "Thank you for writing to us. We have received your message \"{subject}\" and one of "
    "our team will answer it soon.\n\nYour reference: {reference}\n\n{box}\n"
)


def sync_cursor(box: Mailbox, session: ImapSession) -> None:
    """A new UIDVALIDITY means every UID is new: start over (Message-IDs stop doubles)."""
    if box.uidvalidity != session.uidvalidity:
        if box.uidvalidity is not None:
            log.warning("%s: UIDVALIDITY changed %s → %s", box.address, box.uidvalidity, session.uidvalidity)
        box.uidvalidity = session.uidvalidity
        box.last_uid = 0
        Mailbox.objects.filter(pk=box.pk).update(uidvalidity=box.uidvalidity, last_uid=0)


def advance_cursor(box: Mailbox, uid: int) -> None:
    Mailbox.objects.filter(pk=box.pk, last_uid__lt=uid).update(last_uid=uid)
    box.last_uid = max(box.last_uid, uid)


def ingest(
    box: Mailbox,
    session: ImapSession,
    site: Site,
    now: Callable[[], datetime],
    take: Callable[[Mailbox, ImapSession, FetchedMessage, Site, datetime], None],
) -> int:
    """Run `take` on every message beyond the cursor; returns how many were looked at."""
    sync_cursor(box, session)
    uids = session.new_uids(box.last_uid)
    for start in range(0, len(uids), BATCH):
        batch = uids[start : start + BATCH]
        fetched = session.fetch(batch, max_size=site.max_message_bytes)
        for uid in batch:
            message = fetched.get(uid)
            if message is None:  # expunged between SEARCH and FETCH
                with transaction.atomic():
                    advance_cursor(box, uid)
                continue
            try:
                take(box, session, message, site, now())
            except Exception:
                # One bad message never stops the box (B-7): quarantine it with the reason.
                log.exception("%s uid %s: could not be taken", box.address, uid)
                quarantine(box, session, message, "internal error while taking the message", now())
    return len(uids)


def take_incoming(box: Mailbox, session: ImapSession, message: FetchedMessage, site: Site, now: datetime) -> None:
    if Interaction.objects.filter(mailbox=box, uidvalidity=session.uidvalidity, uid=message.uid).exists():
        with transaction.atomic():
            advance_cursor(box, message.uid)
        return
    if message.size > site.max_message_bytes:
        quarantine(box, session, message, f"message of {message.size} bytes is over the limit of {site.max_message_bytes}", now)
        return
    try:
        mail = parse(message.raw)
    except UnreadableMessage as exc:
        quarantine(box, session, message, f"unreadable: {exc}", now)
        return
    if autoreply.is_own(mail.msg, site.message_id_domain):
        quarantine(box, session, message, "our own mail came back (loop)", now)
        return
    verdict = autoreply.classify(mail.msg)
    if verdict.kind in ("bounce", "loop"):
        quarantine(box, session, message, f"{verdict.kind}: {verdict.reason}", now)
        return
    customer = mail.from_addr or (mail.reply_to[0] if mail.reply_to else None)
    if not customer:
        quarantine(box, session, message, "no sender address", now)
        return
    try:
        with transaction.atomic():
            create_interaction(box, session, message, mail, customer, verdict, site, now)
        checkpoint("received")
    except IntegrityError:
        # Another worker took the same (mailbox, UIDVALIDITY, UID) first.
        log.info("%s uid %s: already taken", box.address, message.uid)


def create_interaction(
    box: Mailbox,
    session: ImapSession,
    message: FetchedMessage,
    mail: ParsedMail,
    customer: str,
    verdict: autoreply.Verdict,
    site: Site,
    now: datetime,
) -> Interaction | None:
    if mail.message_id and Interaction.objects.filter(mailbox=box, message_id=mail.message_id).exists():
        # The same mail seen again under another UID (re-delivered, or a new UIDVALIDITY).
        journal.record("duplicate_ignored", now, mailbox=box, uid=message.uid, message_id=mail.message_id)
        advance_cursor(box, message.uid)
        return None
    ix = Interaction.objects.create(
        node_id=site.node_id,
        mailbox=box,
        uidvalidity=session.uidvalidity,
        uid=message.uid,
        message_id=mail.message_id or "",
        references=list(mail.references),
        to_addr=", ".join(mail.to),
        reply_to=mail.reply_to[0] if mail.reply_to else "",
        customer=customer,
        customer_name=mail.from_name or "",
        subject=mail.subject[:998],
        arrival_time=message.internaldate,
        priority=box.default_priority,
        queue=(box.skills or [site.unassigned_queue])[0],
    )
    journal.record("received", now, interaction=ix, uid=message.uid, size=message.size, classified=verdict.kind)
    skip = auto_response_skip_reason(box, verdict)
    if skip:
        ix.auto_response_skipped = skip
        ix.save(update_fields=["auto_response_skipped"])
    else:
        queue_auto_response(ix, box, mail, site, now)
    journal.record("queued", now, interaction=ix, priority=ix.priority)
    advance_cursor(box, message.uid)
    return ix


def auto_response_skip_reason(box: Mailbox, verdict: autoreply.Verdict) -> str:
    if not box.auto_response:
        return "auto-response off for this box"
    if verdict.kind != "human":
        # RFC 3834 §2: never answer automatic mail or list traffic automatically.
        return f"not answered automatically: {verdict.kind} ({verdict.reason})"
    return ""


def queue_auto_response(ix: Interaction, box: Mailbox, mail: ParsedMail, site: Site, now: datetime) -> None:
    message_id = make_msgid("ar", domain=site.message_id_domain)
    msg = auto_response(
        mail.msg,
        box_address=box.address,
        box_name=box.display_name or None,
        customer=reply_target(ix),
        text=box.auto_response_text or DEFAULT_AUTO_RESPONSE,
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


def quarantine(box: Mailbox, session: ImapSession, message: FetchedMessage, reason: str, now: datetime) -> None:
    """Record why, then move the message aside on the server. Never deletes it."""
    log.warning("%s uid %s quarantined: %s", box.address, message.uid, reason)
    with transaction.atomic():
        _, created = Quarantined.objects.get_or_create(
            mailbox=box,
            uidvalidity=session.uidvalidity,
            uid=message.uid,
            defaults={"folder": QUARANTINE_FOLDER, "reason": reason[:1000], "size": message.size},
        )
        if created:
            journal.record("quarantined", now, mailbox=box, uid=message.uid, reason=reason)
        advance_cursor(box, message.uid)
    # After the commit: a crash before the move leaves the message in place and the
    # row already written, so the next look finds the row and only moves it again.
    session.move([message.uid], QUARANTINE_FOLDER)
