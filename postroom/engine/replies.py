"""Reply handling (figs. 9 and 10): mail arriving in the outbound box.

Every message there gets one ledger row. A reply is accepted only when it carries a
correlation token whose MAC verifies for the agent the interaction was delivered to, it
comes From that agent, and the interaction still waits for a reply; then the rewritten
reply is queued under the key `reply:<guid>`, which exists at most once per interaction.
Anything else goes to the dead box. Strangers get no notice (no backscatter, and no way
for an outsider to make Postroom send anything); a known agent whose reply is refused is
told why.
"""

from __future__ import annotations

import logging
from datetime import datetime
from email.utils import make_msgid

from django.db import IntegrityError, transaction

from postroom.core import autoreply
from postroom.core.correlation import candidate_tokens, parse_token, verify_token
from postroom.core.lifecycle import AWAITING_REPLY, ReplyAccepted
from postroom.core.rewrite import notice, reply_to_customer
from postroom.engine.reception import advance_cursor, reply_target
from postroom.engine.site import Site
from postroom.mail.imap import FetchedMessage, ImapSession
from postroom.mail.message import ParsedMail, UnreadableMessage, parse
from postroom.store import journal
from postroom.store.models import Agent, Interaction, Mailbox, OutboundMessage, Outgoing
from postroom.store.transitions import apply

log = logging.getLogger(__name__)


class Refused(Exception):
    def __init__(self, reason: str, interaction: Interaction | None = None, notify: tuple[str, ...] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.interaction = interaction
        self.notify = notify


def take_outbound(box: Mailbox, session: ImapSession, message: FetchedMessage, site: Site, now: datetime) -> None:
    if OutboundMessage.objects.filter(mailbox=box, uidvalidity=session.uidvalidity, uid=message.uid).exists():
        with transaction.atomic():
            advance_cursor(box, message.uid)
        return
    mail: ParsedMail | None = None
    try:
        mail = parse(message.raw)
        ix = match(box, mail, site)
    except UnreadableMessage as exc:
        refuse(box, session, message, None, Refused(f"unreadable: {exc}"), site, now)
        return
    except Refused as refusal:
        refuse(box, session, message, mail, refusal, site, now)
        return
    try:
        with transaction.atomic():
            accept(box, session, message, mail, ix, site, now)
    except IntegrityError:
        # reply:<guid> already exists: a second reply to the same interaction.
        refuse(box, session, message, mail, Refused("the interaction already has a reply", ix, (mail.from_addr or "",)), site, now)


def match(box: Mailbox, mail: ParsedMail, site: Site) -> Interaction:
    """The interaction this mail answers, or Refused with the reason (fig. 9 504, fig. 10 556)."""
    verdict = autoreply.classify(mail.msg)
    if verdict.kind != "human":
        # An agent's out-of-office or a bounce must never reach the customer as a reply.
        raise Refused(f"{verdict.kind}: {verdict.reason}")
    sender = (mail.from_addr or "").lower()
    known_agent = Agent.objects.filter(address__iexact=sender).exists()
    candidates = candidate_tokens(
        recipients=[*mail.delivered_to, *mail.to, *mail.cc],
        outbound=box.address,
        in_reply_to=mail.in_reply_to,
        references=list(mail.references),
        subject=mail.subject,
    )
    found: Interaction | None = None
    for _source, token in candidates:
        parsed = parse_token(token)
        if parsed is None:
            continue
        ix = Interaction.objects.select_related("agent", "mailbox").filter(guid=parsed.guid).first()
        if ix is None or ix.agent is None:
            continue
        if not verify_token(site.secret, token, ix.agent.address):
            continue
        found = ix
        break
    if found is None:
        notify = (sender,) if known_agent else ()
        raise Refused("no live interaction matches this mail", None, notify)
    if sender != found.agent.address.lower():
        raise Refused(
            f"sent by {sender or 'nobody'}, but the interaction is assigned to {found.agent.address}",
            found,
            # Another agent answering (fig. 10 558-560): tell them and the assigned agent.
            # Someone outside the contact center gets no reaction at all: an outsider
            # must not be able to make Postroom send mail, not even a notice.
            (sender, found.agent.address) if known_agent else (),
        )
    if found.state not in AWAITING_REPLY:
        raise Refused(f"the interaction is {found.status}, not waiting for a reply", found, (sender,) if known_agent else ())
    return found


def accept(
    box: Mailbox, session: ImapSession, message: FetchedMessage, mail: ParsedMail, ix: Interaction, site: Site, now: datetime
) -> None:
    ix = Interaction.objects.select_for_update(of=("self",)).select_related("agent", "mailbox").get(pk=ix.pk)
    if ix.state not in AWAITING_REPLY:
        raise IntegrityError("interaction no longer waits for a reply")
    message_id = make_msgid("re", domain=site.message_id_domain)
    reply = reply_to_customer(
        mail.msg,
        box_address=ix.mailbox.address,
        box_name=ix.mailbox.display_name or None,
        customer=reply_target(ix),
        original_message_id=ix.message_id or None,
        original_references=list(ix.references or []),
        message_id=message_id,
        subject=ix.subject,
    )
    Outgoing.objects.create(
        key=f"reply:{ix.guid}",
        kind=Outgoing.REPLY,
        interaction=ix,
        envelope_from=ix.mailbox.address,
        recipients=[reply_target(ix)],
        message_id=message_id,
        raw=reply.as_bytes(),
        next_attempt_at=now,
    )
    OutboundMessage.objects.create(
        mailbox=box,
        uidvalidity=session.uidvalidity,
        uid=message.uid,
        message_id=mail.message_id or "",
        sender=mail.from_addr or "",
        subject=mail.subject[:998],
        interaction=ix,
        outcome=OutboundMessage.ACCEPTED,
    )
    apply(ix, ReplyAccepted(), now, uid=message.uid, message_id=mail.message_id)
    advance_cursor(box, message.uid)


def refuse(
    box: Mailbox,
    session: ImapSession,
    message: FetchedMessage,
    mail: ParsedMail | None,
    refusal: Refused,
    site: Site,
    now: datetime,
) -> None:
    """Ledger it as dead (the cleanup step moves it to the dead box) and notify agents."""
    log.warning("outbound uid %s to the dead box: %s", message.uid, refusal.reason)
    with transaction.atomic():
        row, created = OutboundMessage.objects.get_or_create(
            mailbox=box,
            uidvalidity=session.uidvalidity,
            uid=message.uid,
            defaults={
                "message_id": (mail.message_id if mail else "") or "",
                "sender": (mail.from_addr if mail else "") or "",
                "subject": (mail.subject if mail else "")[:998],
                "interaction": refusal.interaction,
                "outcome": OutboundMessage.DEAD,
                "reason": refusal.reason[:500],
            },
        )
        if created:
            journal.record(
                "dead_boxed",
                now,
                interaction=refusal.interaction,
                mailbox=box,
                reason=refusal.reason,
                sender=(mail.from_addr if mail else "") or "",
            )
            for to in dict.fromkeys(refusal.notify):
                queue_notice(to, refusal, mail, row, site, now)
        advance_cursor(box, message.uid)


def queue_notice(
    to: str, refusal: Refused, mail: ParsedMail | None, row: OutboundMessage, site: Site, now: datetime
) -> None:
    outbound = Mailbox.objects.get(kind=Mailbox.OUTBOUND)
    subject = f"Not delivered: {mail.subject if mail else '(unreadable message)'}"
    text = (
        "Postroom did not send your message to the customer.\n\n"
        f"Reason: {refusal.reason}\n\n"
        "The message was kept in the dead box. Ask your supervisor if you think this is wrong.\n"
    )
    message_id = make_msgid("notice", domain=site.message_id_domain)
    msg = notice(
        from_address=outbound.address,
        to=to,
        subject=subject,
        text=text,
        message_id=message_id,
        in_reply_to=mail.message_id if mail else None,
        attach=mail.msg if mail else None,
    )
    Outgoing.objects.create(
        key=f"notice:dead:{row.pk}:{to}",
        kind=Outgoing.NOTICE,
        interaction=refusal.interaction,
        envelope_from="",
        recipients=[to],
        message_id=message_id,
        raw=msg.as_bytes(),
        next_attempt_at=now,
    )
