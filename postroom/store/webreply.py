"""A reply written in the browser enters the reply path of a reply from a mail client.

`engine/replies.accept` takes an agent's mail from the outbound box: a ledger row, then
either the reply queued under `reply:<guid>` (ReplyAccepted) or an approval (ReplyHeld).
A reply from the web composer does the same here, in the store, because the web may not
import the engine: the same ledger row (for a message that never was in the box: UID
-interaction id, UIDVALIDITY 0, already "removed"), the same rewrite
(`core.compose.reply_to_customer`: From the box, threaded to the customer's mail), the same
key, so one interaction still gets one reply whichever way it was written, and the same
approval decision (`core.approval.at_reply`). The outbox sends it and records ReplySent.

A held web reply is mailed to its approvers by the engine's approval step
(`engine/approvals.request_by_mail`: the request's token needs the engine's approval key),
within a second; until then, and always, they see it in the console.
"""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage
from email.utils import make_msgid

from django.db import IntegrityError, transaction

from postroom.core.approval import ApprovalPolicy, at_reply
from postroom.core.compose import UnsafeHeaderValue, reply_to_customer
from postroom.core.lifecycle import AWAITING_REPLY, ReplyAccepted, ReplyHeld
from postroom.store.commands import CommandError
from postroom.store.models import Agent, Approval, Interaction, Mailbox, OutboundMessage, Outgoing
from postroom.store.transitions import apply

__all__ = ["accept_web_reply", "message_id_domain"]


def message_id_domain(outbound: Mailbox) -> str:
    """The domain Postroom mints Message-IDs in: as `engine.site.Site.message_id_domain`."""
    return "postroom." + outbound.address.rpartition("@")[2]


def accept_web_reply(ix: Interaction, agent: Agent, message: EmailMessage, *, now: datetime) -> str:
    """Take `message` (as the agent's mail client would have sent it) as the reply to `ix`.

    Returns "queued" (sent by the outbox) or "held" (waits for approval). Raises
    CommandError: 403 not the agent holding it, 409 it no longer waits for a reply or
    already has one, 400 a customer address that cannot be written.
    """
    outbound = Mailbox.objects.filter(kind=Mailbox.OUTBOUND).first()
    if outbound is None:
        raise CommandError("No outbound box is configured", 409)
    try:
        with transaction.atomic():
            ix = (
                Interaction.objects.select_for_update(of=("self",))
                .select_related("agent", "mailbox")
                .get(pk=ix.pk)
            )
            if ix.agent_id != agent.pk:
                raise CommandError("Only the agent holding the interaction may reply to it", 403)
            if ix.state not in AWAITING_REPLY:
                raise CommandError(f"Interaction {ix.guid} is {ix.status}: it does not wait for a reply", 409)
            message_id = make_msgid("re", domain=message_id_domain(outbound))
            try:
                reply = reply_to_customer(
                    message,
                    box_address=ix.mailbox.address,
                    box_name=ix.mailbox.display_name or None,
                    customer=ix.reply_to or ix.customer,
                    original_message_id=ix.message_id or None,
                    original_references=list(ix.references or []),
                    message_id=message_id,
                    subject=ix.subject,
                    outbound=outbound.address,
                    date=now,
                )
            except UnsafeHeaderValue as exc:
                raise CommandError(f"Cannot address the reply: {exc}", 400) from None
            row = OutboundMessage.objects.create(
                mailbox=outbound,
                uidvalidity=0,
                uid=-ix.pk,
                message_id=str(message["Message-ID"] or ""),
                sender=agent.address,
                subject=str(message["Subject"] or "")[:998],
                interaction=ix,
                outcome=OutboundMessage.ACCEPTED,
                reason="written in the web composer",
                removed_at=now,
            )
            held = at_reply(
                ApprovalPolicy(),  # probation is on the agent's row (the loader merges it)
                required_at_reception=ix.approval,
                agent=agent.address,
                probationary=agent.probationary,
            )
            if held:
                approvers = agent.approvers()
                Approval.objects.create(
                    interaction=ix, reply=row, raw=reply.as_bytes(), approvers=approvers,
                    reason_held=held, requested_at=now,
                )
                apply(ix, ReplyHeld(), now, reason=held, approvers=approvers, via="web")
                return "held"
            Outgoing.objects.create(
                key=f"reply:{ix.guid}",
                kind=Outgoing.REPLY,
                interaction=ix,
                envelope_from=ix.mailbox.address,
                recipients=[ix.reply_to or ix.customer],
                message_id=message_id,
                raw=reply.as_bytes(),
                next_attempt_at=now,
            )
            apply(ix, ReplyAccepted(), now, via="web", message_id=message_id)
            return "queued"
    except IntegrityError:
        # reply:<guid> or the ledger row exists: this interaction has its reply already.
        raise CommandError(f"Interaction {ix.guid} already has a reply", 409) from None
