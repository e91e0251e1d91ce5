"""Re-binding after a UIDVALIDITY change: the same messages under new UIDs.

A box rebuilt or restored from a backup gets a new UIDVALIDITY, and with it every UID
changes (RFC 3501 §2.3.1.1). What the database holds under the old one would name
nothing any more: interactions would be closed as vanished when delivered, re-read mail
dropped as duplicates, accepted replies refused as second ones (issue 7, window 7). So in
the transaction that resets the box's cursor (`reception.sync_cursor`), everything still
in progress is re-bound to its message's new UID, found by Message-ID and the dedupe
digest (decision 0011). A message without a Message-ID cannot be found again; it is read
as new mail.
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import Q

from postroom.core.dedupe import dedupe_key
from postroom.core.lifecycle import State
from postroom.mail.imap import ImapSession
from postroom.mail.message import UnreadableMessage, parse
from postroom.store import journal
from postroom.store.models import Interaction, Mailbox, OutboundMessage, Quarantined


def rebind(box: Mailbox, session: ImapSession, old: int, now: datetime) -> None:
    """Re-bind what the database holds under the box's `old` UIDVALIDITY to the same
    messages' new UIDs, found by Message-ID (and the dedupe digest): live interactions and
    their copies, pending quarantine moves, outbound ledger rows not yet cleared (issue 7,
    window 7). A message without a Message-ID cannot be found again; it is read as new."""
    new = session.uidvalidity
    by_key: dict[str, list[int]] = {}
    by_id: dict[str, list[int]] = {}
    for uid, header in sorted(session.headers(session.all_uids()).items()):
        try:
            mail = parse(header + b"\r\n")
        except UnreadableMessage:
            continue
        if mail.message_id:
            by_id.setdefault(mail.message_id, []).append(uid)
            by_key.setdefault(dedupe_key(mail.message_id, mail.from_addr, mail.date, mail.subject), []).append(uid)

    def take(key: str, message_id: str) -> int | None:
        found = by_key.get(key) if key else None
        found = found or by_id.get(message_id)
        return found.pop(0) if found else None

    rebound = 0
    live = Interaction.objects.exclude(status=State.CLOSED)
    for ix in live.filter(mailbox=box, uidvalidity=old):
        uid = take(ix.dedupe_key, ix.message_id)
        if uid is not None:
            Interaction.objects.filter(pk=ix.pk).update(uidvalidity=new, uid=uid)
            journal.record("rebound", now, interaction=ix, mailbox=box, uid=uid, was=[old, ix.uid])
            rebound += 1
    for ix in Interaction.objects.exclude(copies=[]).filter(Q(copies_pending=True) | ~Q(status=State.CLOSED)):
        copies = []
        for copy in ix.copies:
            if copy[0] == box.pk and copy[1] == old:
                uid = take(ix.dedupe_key, ix.message_id)
                if uid is None:
                    continue
                copy = [box.pk, new, uid]
            copies.append(copy)
        if copies != ix.copies:
            Interaction.objects.filter(pk=ix.pk).update(copies=copies)
    for row in Quarantined.objects.filter(mailbox=box, uidvalidity=old, moved_at=None, released_at=None):
        uid = take("", row.message_id)
        if uid is not None:
            Quarantined.objects.filter(pk=row.pk).update(uidvalidity=new, uid=uid)
        else:
            Quarantined.objects.filter(pk=row.pk).update(
                released_at=now, release_result="the box was rebuilt (new UIDVALIDITY): read again as new mail"
            )
    for ledger in OutboundMessage.objects.filter(mailbox=box, uidvalidity=old, removed_at=None):
        uid = take("", ledger.message_id)
        if uid is not None:
            OutboundMessage.objects.filter(pk=ledger.pk).update(uidvalidity=new, uid=uid)
            rebound += 1
    journal.record("uidvalidity_changed", now, mailbox=box, old=old, new=new, rebound=rebound)
