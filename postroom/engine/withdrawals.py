"""Taking a forwarded copy back out of an agent's mailbox (fig. 8 462).

Only where the site gave the agent's mailbox credentials; otherwise the row is closed with
that reason, and a late reply from the agent still lands in the dead box (fig. 9).
"""

from __future__ import annotations

import logging
from datetime import datetime

from postroom.engine.site import Site
from postroom.mail.imap import ImapSession, MailboxUnavailable
from postroom.store import journal
from postroom.store.models import Withdrawal

log = logging.getLogger(__name__)


def withdraw(site: Site, now: datetime) -> bool:
    rows = list(Withdrawal.objects.filter(done_at=None).select_related("agent", "interaction")[:20])
    for row in rows:
        result = take_back(site, row)
        Withdrawal.objects.filter(pk=row.pk).update(done_at=now, result=result)
        journal.record("withdrawn", now, interaction=row.interaction, agent=row.agent, result=result)
    return bool(rows)


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
        log.warning("withdrawal from %s failed: %s", agent.address, exc)
        return f"not withdrawn: {exc}"[:200]
    finally:
        session.close()
