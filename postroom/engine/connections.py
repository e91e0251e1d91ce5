"""IMAP command sessions for the worker thread, one per mailbox, opened on first use.

Watchers keep their own sessions for IDLE; these are for fetching originals, deleting
and moving, which must not wait behind an IDLE.
"""

from __future__ import annotations

from postroom.engine.site import Site
from postroom.mail.imap import ImapSession
from postroom.store.models import Mailbox


class Sessions:
    def __init__(self, site: Site) -> None:
        self.site = site
        self._open: dict[int, ImapSession] = {}

    def get(self, box: Mailbox) -> ImapSession:
        session = self._open.get(box.pk)
        if session is not None and session.account.password == self.site.password_for(box.address) and session.account.login == box.login:
            if not session.is_open:
                session.open()
            else:
                session.refresh()
            return session
        if session is not None:
            session.close()
        session = ImapSession(self.site.imap_account(box.login, self.site.password_for(box.address), box.folder)).open()
        self._open[box.pk] = session
        return session

    def close(self) -> None:
        for session in self._open.values():
            session.close()
        self._open.clear()
