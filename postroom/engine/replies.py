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
from email.message import EmailMessage
from email.utils import make_msgid

from django.db import IntegrityError, transaction

from postroom.core import autoreply
from postroom.core.approval import at_reply, read_mail_decision
from postroom.core.correlation import (
    candidate_tokens,
    mint_token,
    parse_token,
    reply_address,
    subject_tag,
    verify_token,
)
from postroom.core.lifecycle import AWAITING_REPLY, ReplyAccepted, ReplyHeld
from postroom.core.rewrite import UnsafeHeaderValue, reply_to_customer
from postroom.engine.faults import checkpoint
from postroom.engine.notices import queue_notice
from postroom.engine.reception import advance_cursor, reply_target
from postroom.engine.site import Site
from postroom.mail.imap import FetchedMessage, ImapSession
from postroom.mail.message import ParsedMail, UnreadableMessage, parse
from postroom.store import journal
from postroom.store.commands import CommandError, decide_approval
from postroom.store.models import Agent, Approval, Interaction, Mailbox, OutboundMessage, Outgoing
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
    if message.truncated:
        refuse_oversize(box, session, message, site, now)
        return
    try:
        mail = parse(message.raw)
        ix = match(box, mail, site)
    except UnreadableMessage as exc:
        refuse(box, session, message, None, Refused(f"unreadable: {exc}"), site, now)
        return
    except Refused as refusal:
        refuse(box, session, message, mail, refusal, site, now)
        return
    if isinstance(ix, ApprovalMail):
        take_decision(box, session, message, mail, ix, now)
        return
    try:
        with transaction.atomic():
            accept(box, session, message, mail, ix, site, now)
        checkpoint("reply-committed")
    except UnsafeHeaderValue as exc:
        # e.g. a customer address that needs SMTPUTF8: the reply cannot be sent as is.
        refuse(box, session, message, mail, Refused(f"cannot address the reply: {exc}", ix, (mail.from_addr or "",)), site, now)
    except IntegrityError:
        # reply:<guid> already exists: a second reply to the same interaction.
        refuse(box, session, message, mail, Refused("the interaction already has a reply", ix, (mail.from_addr or "",)), site, now)


def refuse_oversize(box: Mailbox, session: ImapSession, message: FetchedMessage, site: Site, now: datetime) -> None:
    """Over max_message_bytes only the header was fetched: it must never pass for the
    reply (issue 7, window 3). The whole message goes to the dead box (cleanup copies it
    from the server) and the agent, if it is one, is told to send it smaller."""
    try:
        mail: ParsedMail | None = parse(message.raw)
    except UnreadableMessage:
        mail = None
    interaction = None
    try:
        found = match(box, mail, site) if mail else None
        interaction = found if isinstance(found, Interaction) else None
    except Refused as refusal:
        interaction = refusal.interaction
    sender = (mail.from_addr or "").lower() if mail else ""
    known = bool(sender) and Agent.objects.filter(address__iexact=sender).exists()
    reason = (
        f"the message is too large ({message.size} bytes; the limit is {site.max_message_bytes}): "
        "send it again smaller, e.g. with a link instead of a large attachment"
    )
    refuse(box, session, message, mail, Refused(reason, interaction, (sender,) if known else ()), site, now)


def approval_secret(site: Site) -> bytes:
    # A separate key, so a token from an approval request can never pass as an agent's
    # reply token and the other way round.
    return site.secret + b"/approval"


def match(box: Mailbox, mail: ParsedMail, site: Site) -> Interaction | ApprovalMail:
    """The interaction this mail answers (or the approval it decides), or Refused with the
    reason (fig. 9 504, fig. 10 556)."""
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
    former: Interaction | None = None
    for _source, token in candidates:
        parsed = parse_token(token)
        if parsed is None:
            continue
        ix = Interaction.objects.select_related("agent", "mailbox").filter(guid=parsed.guid).first()
        if ix is None:
            continue
        if verify_token(approval_secret(site), token, sender):
            return ApprovalMail(ix)
        if ix.agent is not None and verify_token(site.secret, token, ix.agent.address):
            found = ix
            break
        if any(verify_token(site.secret, token, a) for a in ix.excluded_agents or ()):
            former = ix  # a token we gave an agent who no longer holds it
    if found is None and former is not None:
        # fig. 8/9: the interaction was taken from this agent (no reply in time, transfer):
        # the late reply goes to the dead box and the agent is told.
        raise Refused(
            "the interaction was reassigned before this reply arrived", former, (sender,) if known_agent else ()
        )
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
        raise Refused(
            f"the interaction is {found.status}, not waiting for a reply", found, (sender,) if known_agent else ()
        )
    return found


class ApprovalMail:
    """An approver's answer by mail to an approval request."""

    def __init__(self, interaction: Interaction) -> None:
        self.interaction = interaction


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
    row = OutboundMessage.objects.create(
        mailbox=box,
        uidvalidity=session.uidvalidity,
        uid=message.uid,
        message_id=mail.message_id or "",
        sender=mail.from_addr or "",
        subject=mail.subject[:998],
        interaction=ix,
        outcome=OutboundMessage.ACCEPTED,
    )
    held = at_reply(
        site.approval, required_at_reception=ix.approval, agent=ix.agent.address, probationary=ix.agent.probationary
    )
    if held:
        hold(ix, row, reply, mail, held, site, now)
    else:
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
        apply(ix, ReplyAccepted(), now, uid=message.uid, message_id=mail.message_id)
    advance_cursor(box, message.uid)
    checkpoint("reply-accepted")  # inside the transaction: the acceptance rolls back


def approvers_for(agent: Agent) -> list[str]:
    """The agent's supervisors (fig. 10 566), else every supervisor."""
    named = [a.address for a in agent.supervisors.all()]
    return named or list(Agent.objects.filter(is_supervisor=True).values_list("address", flat=True))


def hold(ix: Interaction, row: OutboundMessage, reply: EmailMessage, mail: ParsedMail, reason: str, site: Site, now: datetime) -> None:
    """fig. 10 564-568: the reply waits for an approver, who gets it by mail and on the web."""
    approvers = approvers_for(ix.agent)
    approval = Approval.objects.create(
        interaction=ix, reply=row, raw=reply.as_bytes(), approvers=approvers, reason_held=reason, requested_at=now
    )
    apply(ix, ReplyHeld(), now, reason=reason, approvers=approvers)
    outbound = row.mailbox
    for approver in approvers:
        token = mint_token(approval_secret(site), ix.guid, approver)
        queue_notice(
            site,
            now,
            key=f"notice:approval:{approval.pk}:{approver}",
            to=approver,
            subject=f"Approval needed: {mail.subject} {subject_tag(token)}",
            text=(
                f"{ix.agent.name} <{ix.agent.address}> wrote a reply that needs your approval "
                f"({reason}). The reply is attached as the customer would receive it.\n\n"
                "Answer this mail with:\n"
                "  APPROVE                 to send it as it is,\n"
                "  REJECT <reason>         to send it back to the agent,\n"
                "  or your edited text     to send your version instead.\n\n"
                "You can also decide in the supervisor console.\n"
            ),
            interaction=ix,
            attach=reply,
            reply_to=reply_address(outbound.address, token),
        )


def take_decision(box: Mailbox, session: ImapSession, message: FetchedMessage, mail: ParsedMail, found: ApprovalMail, now: datetime) -> None:
    """An approver answered an approval request by mail: record the decision; the approval
    step acts on it exactly as on a decision made on the web."""
    sender = (mail.from_addr or "").lower()
    decision = read_mail_decision(mail.text)
    with transaction.atomic():
        OutboundMessage.objects.create(
            mailbox=box,
            uidvalidity=session.uidvalidity,
            uid=message.uid,
            message_id=mail.message_id or "",
            sender=sender,
            subject=mail.subject[:998],
            interaction=found.interaction,
            outcome=OutboundMessage.DECISION,
            reason=decision.decision if decision else "nothing to act on",
        )
        approval = found.interaction.approvals.filter(state=Approval.PENDING).first()
        if approval is not None and decision is not None:
            try:
                decide_approval(
                    approval,
                    by_user=sender,
                    decision=decision.decision,
                    text=decision.text if decision.decision == "edit" else None,
                    reason=decision.text if decision.decision == "reject" else None,
                    via="mail",
                    now=now,
                )
            except CommandError as exc:
                # Not an approver, decided already on the web, ...: logged, nothing sent.
                journal.record("approval_mail_ignored", now, interaction=found.interaction, reason=str(exc), by=sender)
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
                notify_refusal(to, refusal, mail, row, site, now)
        advance_cursor(box, message.uid)


def notify_refusal(
    to: str, refusal: Refused, mail: ParsedMail | None, row: OutboundMessage, site: Site, now: datetime
) -> None:
    queue_notice(
        site,
        now,
        key=f"notice:dead:{row.pk}:{to}",
        to=to,
        subject=f"Not delivered: {mail.subject if mail else '(unreadable message)'}",
        text=(
            "Postroom did not send this message to the customer.\n\n"
            f"Reason: {refusal.reason}\n\n"
            "The message was kept in the dead box. Ask your supervisor if you think this is wrong.\n"
        ),
        interaction=refusal.interaction,
        in_reply_to=mail.message_id if mail else None,
        attach=mail.msg if mail else None,
    )
