"""Taking a forwarded copy back out of an agent's mailbox (fig. 8 462).

Only where the site gave the agent's mailbox credentials; otherwise the row is closed with
that reason, and a late reply from the agent still lands in the dead box (fig. 9). When
the agent's mailbox cannot be reached, the withdrawal is tried again with exponential
backoff and jitter; after `Site.withdrawal_attempts` it is given up with an alert, so a
supervisor knows a copy is still in that mailbox (issue 7, window 11).
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta

from django.db.models import Q, QuerySet

from postroom.core.alerts import AlertKind
from postroom.core.backoff import delay
from postroom.engine.alerts import raise_alert
from postroom.engine.site import Site
from postroom.mail.imap import ImapSession, MailboxUnavailable
from postroom.store import journal
from postroom.store.compiled import CompiledAt
from postroom.store.models import Withdrawal

log = logging.getLogger(__name__)

BACKOFF_BASE = 30.0
BACKOFF_CAP = 3600.0
# Long enough for one withdrawal's IMAP work (connect, search, delete: each bounded by the
# account's timeout).
CLAIM = timedelta(minutes=5)


class NotYet(Exception):
    """The agent's mailbox could not be reached; try again later."""


AT_ONCE = 20


def due(now: datetime) -> QuerySet[Withdrawal]:
    """The withdrawals to try at `now`: not done, and never tried or due again."""
    return Withdrawal.objects.filter(done_at=None).filter(Q(next_attempt_at=None) | Q(next_attempt_at__lte=now))


# Whether any is due, with SQL compiled once per thread and connection: the step runs
# every second and mostly finds nothing, and building the queryset was most of its time
# (decision 0065). Its condition is `due`'s own; the rows are then read as before.
_ANY_DUE = CompiledAt(lambda at: due(at).values_list("pk")[:1], Withdrawal._meta.get_field("next_attempt_at"))


def withdraw(site: Site, now: datetime) -> bool:
    if not _ANY_DUE.rows(now):
        return False
    rows = list(due(now).select_related("agent", "interaction").order_by("id")[:AT_ONCE])
    for row in rows:
        # Every node runs this step: a row is claimed for CLAIM by compare-and-set before
        # its IMAP work (a node that dies holding it leaves it due again after that).
        claimed = Withdrawal.objects.filter(
            pk=row.pk, done_at=None, attempts=row.attempts, next_attempt_at=row.next_attempt_at
        ).update(next_attempt_at=now + CLAIM)
        if claimed != 1:
            continue
        try:
            result = take_back(site, row)
        except NotYet as exc:
            retry_or_give_up(site, row, str(exc), now)
            continue
        Withdrawal.objects.filter(pk=row.pk).update(done_at=now, result=result, attempts=row.attempts + 1)
        journal.record("withdrawn", now, interaction=row.interaction, agent=row.agent, result=result)
    return bool(rows)


def retry_or_give_up(site: Site, row: Withdrawal, error: str, now: datetime) -> None:
    attempts = row.attempts + 1
    if attempts >= site.withdrawal_attempts:
        result = f"given up after {attempts} attempts: {error}"[:200]
        Withdrawal.objects.filter(pk=row.pk).update(done_at=now, result=result, attempts=attempts, last_error=error[:500])
        journal.record("withdrawal_given_up", now, interaction=row.interaction, agent=row.agent, error=error)
        raise_alert(
            AlertKind.WITHDRAWAL_GIVEN_UP,
            str(row.pk),
            f"the forwarded copy of {row.interaction.subject!r} ({row.message_id}) could not be taken back out of "
            f"{row.agent.address} after {attempts} attempts: {error}. It is still in that mailbox; a reply "
            "to it will go to the dead box.",
            now,
        )
        return
    wait = delay(attempts, base=BACKOFF_BASE, cap=BACKOFF_CAP, jitter=random.random())
    Withdrawal.objects.filter(pk=row.pk).update(
        attempts=attempts, next_attempt_at=now + timedelta(seconds=wait), last_error=error[:500]
    )
    log.warning("withdrawal from %s failed (attempt %d): %s; again in %.0f s", row.agent.address, attempts, error, wait)


def take_back(site: Site, row: Withdrawal) -> str:
    agent = row.agent
    password = site.password_for(agent.address)
    if not password:
        return "not withdrawn: no mailbox credentials for the agent"
    session = ImapSession(site.imap_account(agent.mailbox_login or agent.address, password))
    try:
        session.open()
        uids = session.search_header("Message-ID", row.message_id)
        session.delete(uids)
        return f"removed {len(uids)} message(s)" if uids else "already gone"
    except MailboxUnavailable as exc:
        raise NotYet(str(exc)) from exc
    finally:
        session.close()
