"""Approval requests by mail (fig. 10 566-568) and acting on the decisions (570-574),
whether made on the web or by mail.

Requests: each approver gets the held reply as the customer would receive it, with a token
bound to this approval round, so answering by mail decides this round and no other. A
reply held by the reply step is requested in its own transaction; one held by the web
composer (which may not mint tokens) is found here by `request_waiting`.

Approved: the held reply (or the approver's edited version: their text, the agent's
attachments, no token) is queued for the customer under the interaction's one reply key,
and the agent gets a copy of what was sent if it was edited. Rejected: the reply goes to the dead box, the agent is told why, and the
interaction goes back to them (or to the queue, where policy says so).
"""

from __future__ import annotations

import logging
from datetime import datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.utils import make_msgid

from django.db import transaction
from django.db.models import QuerySet

from postroom.core.approval import ACCEPTED_FORMS
from postroom.core.compose import with_text
from postroom.core.correlation import mint_token, reply_address, strip_tokens, subject_tag
from postroom.core.headers import POLICY
from postroom.core.lifecycle import Approved, Rejected, RejectedToQueue, State
from postroom.engine.autoresponse import reply_target
from postroom.engine.notices import queue_notice
from postroom.engine.site import Site
from postroom.store import locking
from postroom.store.compiled import Compiled
from postroom.store.models import Approval, Interaction, Mailbox, OutboundMessage, Outgoing
from postroom.store.transitions import StaleInteraction, apply

log = logging.getLogger(__name__)


def approval_bound(approval: Approval) -> bytes:
    """What an approval token is bound to: one approval round (decision 0013)."""
    return f"approval:{approval.pk}".encode()


def request_by_mail(ix: Interaction, approval: Approval, reply: EmailMessage, site: Site, now: datetime) -> None:
    """Mail each approver the held `reply`; inside the caller's transaction. Notices are
    keyed per round and approver, so a second call queues nothing new."""
    approvers = list(approval.approvers or ())
    if not approvers:
        log.warning("interaction %s: a held reply and no approver but staff on the web", ix.guid)
    outbound = Mailbox.objects.get(kind=Mailbox.OUTBOUND)
    subject = str(reply["Subject"] or ix.subject)
    for approver in approvers:
        # Bound to this round: an answer to an earlier request cannot decide this one.
        token = mint_token(site.keys.approval_key, ix.guid, approver, bound=approval_bound(approval))
        queue_notice(
            site,
            now,
            key=f"notice:approval:{approval.pk}:{approver}",
            to=approver,
            subject=f"Approval needed: {subject} {subject_tag(token)}",
            text=(
                f"{ix.agent.name} <{ix.agent.address}> wrote a reply that needs your approval "
                f"({approval.reason_held}). The reply is attached as the customer would receive it.\n\n"
                + ACCEPTED_FORMS
                + "\nYou can also decide in the supervisor console.\n"
            ),
            interaction=ix,
            attach=reply,
            # From = Reply-To: a "Reply All" then writes to the one address, once.
            from_address=reply_address(outbound.address, token),
            reply_to=reply_address(outbound.address, token),
        )
    Approval.objects.filter(pk=approval.pk).update(mailed_at=now)


def unmailed() -> QuerySet[Approval]:
    """Pending approvals whose request was not mailed yet (held in the web composer)."""
    return Approval.objects.filter(state=Approval.PENDING, mailed_at=None)


def undone() -> QuerySet[Approval]:
    """Decided approvals not acted on yet."""
    return Approval.objects.filter(applied_at=None).exclude(state=Approval.PENDING)


# What the two steps below read at every round (the first 50 of the querysets above), with
# SQL compiled once per thread and connection: both run every second and mostly find
# nothing, and building the querysets was most of their time (decision 0065).
AT_ONCE = 50
_UNMAILED = Compiled(lambda: unmailed().values_list("pk")[:AT_ONCE])
_UNDONE = Compiled(lambda: undone().select_related("reply")[:AT_ONCE])


def request_waiting(site: Site, now: datetime) -> bool:
    """Mail the requests of pending approvals that have none yet (held in the web composer)."""
    waiting = [pk for (pk,) in _UNMAILED.rows()]
    for pk in waiting:
        with transaction.atomic():
            approval = Approval.objects.select_for_update().filter(pk=pk, mailed_at=None).first()
            if approval is None:
                continue
            ix = Interaction.objects.select_related("agent", "mailbox").get(pk=approval.interaction_id)
            if ix.agent is None or ix.state is not State.AWAITING_APPROVAL:
                # Decided or taken away meanwhile: nothing left to ask for.
                Approval.objects.filter(pk=pk).update(mailed_at=now)
                continue
            reply = message_from_bytes(bytes(approval.raw), policy=POLICY)
            assert isinstance(reply, EmailMessage)
            request_by_mail(ix, approval, reply, site, now)
    return bool(waiting)


def act(site: Site, now: datetime) -> bool:
    decided: list[Approval] = _UNDONE.objects()  # type: ignore[assignment]
    for approval in decided:
        try:
            with transaction.atomic():
                # Every node runs this step: the interaction is locked (another node
                # acting on it is skipped), then the decision looked at again.
                ix = locking.take(Interaction.objects.select_related("agent", "mailbox"), approval.interaction_id)
                if ix is None or not Approval.objects.filter(pk=approval.pk, applied_at=None).exists():
                    continue
                if ix.state is State.AWAITING_APPROVAL:
                    if approval.state == Approval.APPROVED:
                        send_approved(ix, approval, site, now)
                    else:
                        send_back(ix, approval, site, now)
                Approval.objects.filter(pk=approval.pk).update(applied_at=now)
        except StaleInteraction:
            continue
    return bool(decided)


def edited(raw: bytes, text: str, box_address: str) -> EmailMessage:
    """The held reply with the approver's text instead of the agent's words: header and
    attachments kept, and no correlation token in it (an approver may paste one)."""
    msg = message_from_bytes(raw, policy=POLICY)
    assert isinstance(msg, EmailMessage)
    return with_text(msg, strip_tokens(text, replacement=box_address))


def send_approved(ix: Interaction, approval: Approval, site: Site, now: datetime) -> None:
    if approval.edited_text:
        msg = edited(bytes(approval.raw), approval.edited_text, ix.mailbox.address)
        raw = msg.as_bytes()
        message_id = str(msg["Message-ID"] or make_msgid("re", domain=site.message_id_domain))
    else:
        raw = bytes(approval.raw)
        msg = message_from_bytes(raw, policy=POLICY)
        message_id = str(msg["Message-ID"])
    Outgoing.objects.create(
        key=f"reply:{ix.guid}",
        kind=Outgoing.REPLY,
        interaction=ix,
        envelope_from=ix.mailbox.address,
        recipients=[reply_target(ix)],
        message_id=message_id,
        raw=raw,
        next_attempt_at=now,
    )
    apply(ix, Approved(edited=bool(approval.edited_text)), now, by=approval.decided_by, via=approval.decided_via)
    if approval.edited_text and isinstance(msg, EmailMessage):
        queue_notice(
            site,
            now,
            key=f"notice:edited:{approval.pk}",
            to=ix.agent.address,
            subject=f"Sent as edited by {approval.decided_by}: {ix.subject}",
            text="Your reply was approved with changes. The attached message is what the customer received.\n",
            interaction=ix,
            attach=msg,
        )


def send_back(ix: Interaction, approval: Approval, site: Site, now: datetime) -> None:
    reason = approval.rejection_reason or "no reason given"
    event = RejectedToQueue(reason=reason) if site.approval.reroute_on_reject else Rejected(reason=reason)
    agent = ix.agent
    # fig. 10 570 → 558: the refused reply goes to the dead box.
    OutboundMessage.objects.filter(pk=approval.reply_id).update(
        outcome=OutboundMessage.DEAD, reason=f"rejected by {approval.decided_by}: {reason}"[:500]
    )
    apply(ix, event, now, by=approval.decided_by, via=approval.decided_via, reason=reason)
    queue_notice(
        site,
        now,
        key=f"notice:rejected:{approval.pk}",
        to=agent.address,
        subject=f"Reply not approved: {ix.subject}",
        text=(
            f"{approval.decided_by} did not approve your reply.\n\nReason: {reason}\n\n"
            + (
                "The email has been given to another agent.\n"
                if site.approval.reroute_on_reject
                else "The email is still yours: please reply to it again.\n"
            )
        ),
        interaction=ix,
    )
