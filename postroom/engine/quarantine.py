"""The quarantine's server side: moving held mail aside, and giving released mail back.

Reception records a quarantined message before it moves it (nothing changes on the
server before the commit that says why). When the move fails (the connection dropped, the
server said NO), the row stays "not moved" and `tend` tries again at the box's next pass,
until it is done; reconciliation counts such a message as accounted for meanwhile. A
release (store/quarantine.py) is carried out here too: the message is moved back into the
box's folder, where it gets a new UID and is taken again as new mail.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta

from django.db.models import F

from postroom.core.backoff import delay
from postroom.engine.site import Site
from postroom.mail.imap import ImapSession, MailboxUnavailable
from postroom.store import journal
from postroom.store.models import Mailbox, Quarantined

log = logging.getLogger(__name__)

QUARANTINE_FOLDER = "Postroom-Quarantine"


def move_aside(rows: list[Quarantined], session: ImapSession, now: datetime) -> None:
    """Move these rows' messages to the quarantine folder (one command); on failure each
    row records the error and when to try again, and the error is raised for the caller's
    backoff."""
    if not rows:
        return
    try:
        session.move([r.uid for r in rows], QUARANTINE_FOLDER)
    except MailboxUnavailable as exc:
        for row in rows:
            wait = delay(row.move_attempts + 1, base=5.0, cap=3600.0, jitter=random.random())
            Quarantined.objects.filter(pk=row.pk).update(
                move_attempts=F("move_attempts") + 1,
                next_move_at=now + timedelta(seconds=wait),
                last_error=str(exc)[:500],
            )
        raise
    Quarantined.objects.filter(pk__in=[r.pk for r in rows]).update(
        moved_at=now, folder=QUARANTINE_FOLDER, last_error="", move_attempts=F("move_attempts") + 1
    )


def tend(box: Mailbox, session: ImapSession, site: Site, now: datetime) -> bool:
    """Finish what the quarantine owes the server for `box`: moves that failed, releases.
    Runs at the start of each pass of the box's watcher."""
    pending = list(
        Quarantined.objects.filter(mailbox=box, moved_at=None, released_at=None, uidvalidity=session.uidvalidity)
        .exclude(next_move_at__gt=now)
        .order_by("id")[:500]
    )
    move_aside(pending, session, now)
    wanted = list(
        Quarantined.objects.filter(mailbox=box, released_at=None)
        .exclude(release_requested_at=None)
        .exclude(moved_at=None)
        .order_by("id")[:100]
    )
    if wanted:
        give_back(box, wanted, site, now)
    return bool(pending or wanted)


def give_back(box: Mailbox, rows: list[Quarantined], site: Site, now: datetime) -> None:
    held = ImapSession(site.imap_account(box.login, site.password_for(box.address), QUARANTINE_FOLDER)).open()
    try:
        for row in rows:
            uids = held.locate(row.message_id, row.size, row.internaldate)
            if uids:
                held.move(uids[:1], box.folder)
                result = f"moved back to {box.folder}, to be taken again"
            else:
                result = "not in the quarantine folder any more (moved back already, or removed by someone)"
            Quarantined.objects.filter(pk=row.pk).update(released_at=now, release_result=result)
            journal.record("quarantine_released", now, mailbox=box, uid=row.uid, row=row.pk, result=result)
            log.info("%s: quarantined uid %s released: %s", box.address, row.uid, result)
    finally:
        held.close()
