"""Housekeeping on the mail server once the database says a thing is finished.

Replied interactions: the reply leaves the outbound box and the customer's original the
incoming box (fig. 9 522-526), then the interaction is closed. Refused outbound mail:
copied into the dead box, then removed from the outbound box. Each step is idempotent, so
a crash between two of them only repeats harmless work.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import transaction

from postroom.core.lifecycle import CleanedUp, State
from postroom.engine.connections import Sessions
from postroom.engine.faults import checkpoint
from postroom.store.models import Interaction, Mailbox, OutboundMessage
from postroom.store.transitions import StaleInteraction, apply

log = logging.getLogger(__name__)


def clean(sessions: Sessions, now: datetime) -> bool:
    did = False
    for row in OutboundMessage.objects.filter(outcome=OutboundMessage.DEAD, removed_at=None).select_related("mailbox")[:50]:
        to_dead_box(row, sessions, now)
        did = True
    for row in OutboundMessage.objects.filter(outcome=OutboundMessage.DECISION, removed_at=None).select_related("mailbox")[:50]:
        remove_from_outbound(row, sessions, now)
        did = True
    for ix in Interaction.objects.filter(status__in=[State.REPLIED, State.ENDED]).select_related("mailbox", "agent")[:50]:
        close(ix, sessions, now)
        did = True
    return did


def remove_from_outbound(row: OutboundMessage, sessions: Sessions, now: datetime) -> None:
    outbound = sessions.get(row.mailbox)
    if outbound.uidvalidity == row.uidvalidity:
        outbound.delete([row.uid])
    OutboundMessage.objects.filter(pk=row.pk).update(removed_at=now)


def to_dead_box(row: OutboundMessage, sessions: Sessions, now: datetime) -> None:
    outbound = sessions.get(row.mailbox)
    if outbound.uidvalidity == row.uidvalidity:
        message = outbound.fetch_one(row.uid)
        if message is not None:
            dead_box = Mailbox.objects.get(kind=Mailbox.DEAD)
            dead = sessions.get(dead_box)
            # Copy first, delete second; a Message-ID already in the dead box means the
            # copy was made before a crash and must not be made twice.
            if not (row.message_id and dead.search_header("Message-ID", row.message_id)):
                dead.append(message.raw, dead_box.folder, message.internaldate)
            outbound.delete([row.uid])
    OutboundMessage.objects.filter(pk=row.pk).update(removed_at=now)


def close(ix: Interaction, sessions: Sessions, now: datetime) -> None:
    for row in OutboundMessage.objects.filter(interaction=ix, outcome=OutboundMessage.ACCEPTED, removed_at=None).select_related("mailbox"):
        remove_from_outbound(row, sessions, now)
        checkpoint("cleanup-reply-removed")
    incoming = sessions.get(ix.mailbox)
    if incoming.uidvalidity == ix.uidvalidity:
        if ix.outcome == "discarded":
            # A rule said delete: to the trash, never destroyed.
            incoming.move([ix.uid], ix.mailbox.trash_folder or "Trash")
        else:
            incoming.delete([ix.uid])
    checkpoint("cleanup-original-removed")
    for mailbox_id, uidvalidity, uid in ix.copies or ():
        box = Mailbox.objects.filter(pk=mailbox_id).first()
        copy_session = sessions.get(box) if box else None
        if copy_session is not None and copy_session.uidvalidity == uidvalidity:
            copy_session.delete([uid])
    try:
        with transaction.atomic():
            apply(ix, CleanedUp(), now)
    except StaleInteraction:
        log.info("interaction %s changed during cleanup; will look again", ix.guid)
