"""Island mode: this node lost the claim of an email another node now handles (issue 10,
decision 0036; the pure decision is `core/claimloss.py`).

The interaction is closed through the lifecycle (`ClaimedElsewhere`: its agent released,
the forwarded copy taken back out of their mailbox), every outbox row still waiting for it
is cancelled (the customer gets nothing more from this node), the agent is told by a
notice, and the journal and the log say so.

The agent's notice is mail about this node's own handling, to this node's own agent: it
tells the customer nothing, so the claim of the customer's email does not gate it
(`ungated`), or it could never leave, that claim being another node's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from django.db import transaction
from django.db.models import QuerySet

from postroom.core.claimloss import OUTCOME, Loss, notice_text, on_lost_claim
from postroom.core.island import EmailKey
from postroom.core.lifecycle import ClaimedElsewhere
from postroom.core.outbox import OutboxState
from postroom.engine.notices import queue_notice
from postroom.engine.site import Site
from postroom.store.models import Interaction, OutboundMessage, Outgoing
from postroom.store.transitions import StaleInteraction, apply

log = logging.getLogger(__name__)

NOTICE_KEY = "notice:claim_lost:"
# Rows that can still be stopped before they leave. An UNKNOWN row may have left: the
# outbox settles it from the journal box first; one in SENDING comes back. Either, if it
# did not leave, waits at the gate (RETRY_WAIT), where `sweep` cancels it.
WAITING = (OutboxState.PENDING, OutboxState.RETRY_WAIT)


def ungated(row: Outgoing) -> bool:
    """A lost claim's notice to our agent: sent whoever holds the customer's email."""
    return row.kind == Outgoing.NOTICE and row.key.startswith(NOTICE_KEY)


def end_lost(
    site: Site, email: EmailKey, winner: str, now: datetime, claim_time: datetime | None = None
) -> bool:
    """Close this node's interactions for `email`, whose claim `winner` holds (sent at
    `claim_time` by its clock); False when one changed under us (the caller tries again
    next step). The closed record names the winning claim (`claim_node`, `claim_time`):
    a winner cut off from the database may come back without having read its own win,
    and its merge reopens the records that name it (store/islandmerge.py)."""
    candidates = Interaction.objects.filter(
        mailbox__address=email.mailbox, message_id=email.message_id, raw_sha256=email.sha256, closed_at=None
    ).values_list("pk", flat=True)
    for pk in list(candidates):
        try:
            with transaction.atomic():
                ix = Interaction.objects.select_for_update(of=("self",)).select_related("agent", "mailbox").get(pk=pk)
                agent = ix.agent
                loss = on_lost_claim(ix.state, agent.address if agent else None, ix.claim_node, winner)
                if loss is Loss.NOTHING:
                    continue
                was = ix.status
                cancelled = cancel_waiting([pk])
                apply(ix, ClaimedElsewhere(), now, winner=winner, was=was, cancelled=cancelled)
                Interaction.objects.filter(pk=pk).update(claim_node=winner, claim_time=claim_time)
                if loss is Loss.CLOSE_AND_TELL and agent is not None:
                    # A reply taken whose outbox row is now cancelled (or that waited for an
                    # approval) never leaves: clean-up moves it to the dead box.
                    reply_kept = ix.replies.filter(outcome=OutboundMessage.ACCEPTED, removed_at=None).exists() and not (
                        Outgoing.objects.filter(interaction=ix, kind=Outgoing.REPLY)
                        .exclude(state__in=[OutboxState.CANCELLED, OutboxState.DEAD])
                        .exists()
                    )
                    queue_notice(
                        site,
                        now,
                        key=f"{NOTICE_KEY}{ix.guid}",
                        to=agent.address,
                        subject=f"Handled by another node: {ix.subject}",
                        text=notice_text(ix.customer, ix.mailbox.address, winner, reply_kept),
                        interaction=ix,
                    )
        except StaleInteraction:
            return False
        # The audit line: what was given up, to whom, and what it cancelled.
        log.warning(
            "claim lost to node %s: interaction %s (%s, was %s, agent %s) closed as claimed elsewhere; "
            "%d outgoing mail(s) cancelled%s",
            winner, ix.guid, email, was, agent.address if agent else "-", cancelled,
            "; the agent is told" if loss is Loss.CLOSE_AND_TELL else "",
        )
    return True


def cancel_waiting(pks: Iterable[int]) -> int:
    """Cancel what still waits to leave for these interactions (not their agents' notices)."""
    return _cancel(Outgoing.objects.filter(interaction_id__in=list(pks)))


def sweep() -> int:
    """Cancel the rows of interactions closed as claimed elsewhere that came back to wait
    since (from a sender, or a journal-box check that found nothing). From the database,
    so a restart leaves none waiting at the gate for good."""
    return _cancel(Outgoing.objects.filter(interaction__outcome=OUTCOME))


def _cancel(rows: QuerySet[Outgoing]) -> int:
    return (
        rows.filter(state__in=[s.value for s in WAITING])
        .exclude(key__startswith=NOTICE_KEY)
        .update(state=OutboxState.CANCELLED, claimed_by="", lease_until=None)
    )


__all__ = ["NOTICE_KEY", "end_lost", "sweep", "ungated"]
