"""The outbox worker: sends prepared mail, then records what that means.

A row is marked as being attempted (attempts + 1, by CAS) before the SMTP transaction and
marked sent in the same DB transaction as its consequence (auto-response flag, delivered,
replied). A crash between the server's 250 and that commit leaves the row pending with
attempts > 0: it is sent again with the same Message-ID, so a duplicate is at most one and
recognisable (docs/decisions/0002-outbox-at-least-once-same-message-id.md).
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F

from postroom.core.lifecycle import Delivered, DeliveryFailed, ReplySent, State
from postroom.engine.faults import checkpoint
from postroom.mail.smtp import Result, SmtpOutcome, SmtpSender
from postroom.store import journal
from postroom.store.models import Interaction, Outgoing
from postroom.store.transitions import StaleInteraction, apply

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 12


def backoff(attempts: int) -> timedelta:
    """5 s, 10 s, 20 s ... capped at an hour."""
    return timedelta(seconds=min(3600, 5 * 2 ** max(0, attempts - 1)))


def send(sender: SmtpSender, now: datetime, limit: int = 50) -> bool:
    rows = list(
        Outgoing.objects.filter(state=Outgoing.PENDING, next_attempt_at__lte=now).order_by(
            "next_attempt_at", "id"
        )[:limit]
    )
    for row in rows:
        send_one(row, sender, now)
    return bool(rows)


def send_one(row: Outgoing, sender: SmtpSender, now: datetime) -> None:
    claimed = Outgoing.objects.filter(pk=row.pk, state=Outgoing.PENDING, attempts=row.attempts).update(
        attempts=F("attempts") + 1
    )
    if claimed != 1:
        return
    row.attempts += 1
    outcome = sender.send(row.envelope_from, row.recipients, bytes(row.raw))
    checkpoint(f"sent-{row.kind}")
    with transaction.atomic():
        if outcome.sent:
            Outgoing.objects.filter(pk=row.pk).update(state=Outgoing.SENT, sent_at=now, last_error=outcome.detail)
            on_sent(row, now)
        elif outcome.result is Result.TEMPORARY and row.attempts < MAX_ATTEMPTS:
            Outgoing.objects.filter(pk=row.pk).update(
                next_attempt_at=now + backoff(row.attempts), last_error=outcome.detail[:2000]
            )
            journal.record("send_deferred", now, interaction=row.interaction, mail=row.kind, error=outcome.detail[:500])
        else:
            Outgoing.objects.filter(pk=row.pk).update(state=Outgoing.DEAD, last_error=outcome.detail[:2000])
            on_dead(row, outcome, now)


def on_sent(row: Outgoing, now: datetime) -> None:
    # Locked (PostgreSQL) / serialised (SQLite IMMEDIATE) so the state we decide on is the
    # state we write over: a failed CAS here would roll back the SENT mark.
    ix = locked_interaction(row)
    if ix is None:
        journal.record("notice_sent", now, message_id=row.message_id, to=row.recipients)
        return
    if row.kind == Outgoing.AUTO_RESPONSE:
        Interaction.objects.filter(pk=ix.pk).update(auto_response_sent_at=now)
        journal.record("auto_responded", now, interaction=ix, message_id=row.message_id)
    elif row.kind == Outgoing.FORWARD:
        if ix.state is State.ANSWERED:
            apply(ix, Delivered(), now, message_id=row.message_id)
        else:
            journal.record("delivered", now, interaction=ix, message_id=row.message_id, late=True)
    elif row.kind == Outgoing.REPLY:
        # Guarded: an exception here would roll back the SENT mark and send it twice.
        if ix.state is State.REPLYING:
            apply(ix, ReplySent(), now, message_id=row.message_id)
        else:
            journal.record("reply_sent", now, interaction=ix, message_id=row.message_id, anomaly=ix.status)
    else:
        journal.record("notice_sent", now, interaction=ix, message_id=row.message_id, to=row.recipients)


def on_dead(row: Outgoing, outcome: SmtpOutcome, now: datetime) -> None:
    log.error("outgoing %s (%s) failed for good: %s", row.key, row.kind, outcome.detail)
    ix = locked_interaction(row)
    journal.record("send_failed", now, interaction=ix, mail=row.kind, error=outcome.detail[:500])
    if ix is not None and row.kind == Outgoing.FORWARD and ix.state is State.ANSWERED:
        with contextlib.suppress(StaleInteraction):
            apply(ix, DeliveryFailed(reason=outcome.detail[:200]), now)


def locked_interaction(row: Outgoing) -> Interaction | None:
    if row.interaction_id is None:
        return None
    return Interaction.objects.select_for_update(of=("self",)).select_related("agent", "mailbox").get(pk=row.interaction_id)
