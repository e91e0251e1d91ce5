"""Reconciliation: every message in a watched box is accounted for, or someone is told.

Run by each box's watcher after a pass, every `Site.reconcile_interval` (and at start):
the server's UIDs in the watched folder are compared with what the database says should
be there. A message in an incoming box is accounted for when it is a live interaction's
original or copy, a quarantined message whose move is pending, or new (beyond the
cursor); in the outbound box, when it has a ledger row not yet removed, or is new.
Anything else gets an "unaccounted" alert naming it (UID, Message-ID, sender, subject),
cleared once it is gone (field bug B-5). Mail a rule deleted is in the trash, not in the
watched folder.

The database is read before the server: the worker moves a message away before it
commits what makes it unaccounted for (closing an interaction, marking a ledger row
removed), so reading in this order never takes a message in flight for a lost one.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db.models import Q

from postroom.core.alerts import AlertKind
from postroom.core.lifecycle import State
from postroom.engine.alerts import clear_alert, raise_alert
from postroom.mail.imap import ImapSession
from postroom.mail.message import UnreadableMessage, parse
from postroom.store.models import (
    Alert,
    BoxHealth,
    Interaction,
    Mailbox,
    OutboundMessage,
    Quarantined,
)

log = logging.getLogger(__name__)


def accounted(box: Mailbox, uidvalidity: int) -> set[int]:
    """UIDs of `box` (under `uidvalidity`) the database expects on the server."""
    uids: set[int] = set()
    live = Interaction.objects.exclude(status=State.CLOSED)
    if box.kind == Mailbox.INCOMING:
        uids |= set(live.filter(mailbox=box, uidvalidity=uidvalidity).values_list("uid", flat=True))
        # Copies (the same mail in two boxes) are few; JSON lookups differ per database.
        with_copies = Interaction.objects.exclude(copies=[]).filter(Q(copies_pending=True) | ~Q(status=State.CLOSED))
        for copies in with_copies.values_list("copies", flat=True):
            uids |= {uid for mailbox_id, uv, uid in copies if mailbox_id == box.pk and uv == uidvalidity}
    else:
        uids |= set(
            OutboundMessage.objects.filter(mailbox=box, uidvalidity=uidvalidity, removed_at=None).values_list("uid", flat=True)
        )
    uids |= set(
        Quarantined.objects.filter(mailbox=box, uidvalidity=uidvalidity, moved_at=None, released_at=None).values_list(
            "uid", flat=True
        )
    )
    return uids


def reconcile(box: Mailbox, session: ImapSession, now: datetime) -> list[int]:
    """Alert on every unaccounted message of `box`; returns their UIDs."""
    box.refresh_from_db(fields=["uidvalidity", "last_uid"])
    if box.uidvalidity != session.uidvalidity:
        return []  # the next pass re-binds first
    expected = accounted(box, session.uidvalidity)
    cursor = box.last_uid
    on_server = session.all_uids()
    unaccounted = [uid for uid in on_server if uid <= cursor and uid not in expected]
    prefix = f"{box.address}:{session.uidvalidity}:"
    if unaccounted:
        headers = session.headers(unaccounted)
        for uid in unaccounted:
            raise_alert(AlertKind.UNACCOUNTED, f"{prefix}{uid}", describe(box, uid, headers.get(uid, b"")), now)
    keys = {f"{prefix}{uid}" for uid in unaccounted}
    stale = Alert.objects.filter(kind=AlertKind.UNACCOUNTED, key__startswith=f"{box.address}:", cleared_at=None)
    for key in stale.values_list("key", flat=True):
        if key not in keys:
            clear_alert(AlertKind.UNACCOUNTED, key, now)
    BoxHealth.objects.get_or_create(mailbox=box)
    BoxHealth.objects.filter(mailbox=box).update(reconciled_at=now, unaccounted=len(unaccounted), messages=len(on_server))
    return unaccounted


def describe(box: Mailbox, uid: int, header: bytes) -> str:
    try:
        mail = parse(header + b"\r\n") if header.strip() else None
    except UnreadableMessage:
        mail = None
    if mail is None:
        return f"{box.address} uid {uid}: on the server but not in the ledger (no readable header)"
    return (
        f"{box.address} uid {uid}: on the server but not in the ledger: Message-ID {mail.message_id or '(none)'}, "
        f"from {mail.from_addr or '(nobody)'}, subject {mail.subject!r}"
    )
