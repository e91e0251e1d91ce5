"""Quarantine commands shared by the CLI, the admin and the API: list, and ask for a release.

A release is recorded here; the engine does the IMAP part (engine/quarantine.py): it moves
the message back into its box, where it arrives as new mail and is taken again. Mail that
was quarantined as automatic (a bounce, a loop, our own mail) is then taken as customer
mail, because a person said so; mail that cannot be read or is too large is quarantined
again with the same reason.
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction

from postroom.store import journal
from postroom.store.commands import CommandError
from postroom.store.models import Quarantined


def held(include_released: bool = False) -> list[Quarantined]:
    qs = Quarantined.objects.select_related("mailbox").order_by("-created_at", "-id")
    return list(qs if include_released else qs.filter(released_at=None))


def request_release(row_id: int, by: str, now: datetime) -> Quarantined:
    """Ask the engine to give quarantined message `row_id` back to its box."""
    with transaction.atomic():
        row = Quarantined.objects.select_for_update().filter(pk=row_id).first()
        if row is None:
            raise CommandError(f"no quarantined message {row_id}", 404)
        if row.released_at is not None:
            raise CommandError(f"quarantined message {row_id} was already released", 409)
        if row.release_requested_at is None:
            Quarantined.objects.filter(pk=row.pk).update(release_requested_at=now, release_requested_by=by[:320])
            journal.record("quarantine_release_requested", now, mailbox=row.mailbox, uid=row.uid, by=by, row=row.pk)
        row.refresh_from_db()
        return row


def released_before(mailbox_id: int, message_id: str) -> bool:
    """A person released this mail from quarantine in this box: take it as customer mail."""
    if not message_id:
        return False
    return Quarantined.objects.filter(mailbox_id=mailbox_id, message_id=message_id).exclude(released_at=None).exists()
