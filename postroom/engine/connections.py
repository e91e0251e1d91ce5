"""IMAP command sessions for the worker thread, one per mailbox, opened on first use, and
each box's backoff.

Watchers keep their own sessions for IDLE; these are for fetching originals, deleting
and moving, which must not wait behind an IDLE. A box that fails (unreachable, wrong
password, deleted account) backs off alone, exponentially with jitter: while it does,
`get` refuses it at once, without touching the network, and every step goes on with the
other boxes (issue 7, window 10; field bug B-9).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from postroom.core.backoff import delay
from postroom.engine.site import Site
from postroom.mail.imap import ImapSession, MailboxUnavailable
from postroom.store.models import Mailbox

log = logging.getLogger(__name__)

BACKOFF_BASE = 1.0
BACKOFF_CAP = 30.0


class BoxBackingOff(MailboxUnavailable):
    """The box failed recently and is not tried again before its backoff has passed."""


@dataclass
class _Trouble:
    failures: int
    retry_at: float
    error: str


class Sessions:
    def __init__(self, site: Site) -> None:
        self.site = site
        self._open: dict[int, ImapSession] = {}
        self._trouble: dict[int, _Trouble] = {}

    def get(self, box: Mailbox, *, ingesting: bool = False, recorded: int | None | Literal["read"] = "read") -> ImapSession:
        """The box's open session; `ingesting`: for taking new mail, which is what re-binds
        after a UIDVALIDITY change (everything else waits for that). `recorded`: the box's
        UIDVALIDITY as the caller read it in the same statement as the rows it acts on
        (delivery's batch, decision 0060); by default it is read from the database here."""
        trouble = self._trouble.get(box.pk)
        if trouble is not None and time.monotonic() < trouble.retry_at:
            raise BoxBackingOff(f"{box.address} backing off after {trouble.failures} failure(s): {trouble.error}")
        session = self._session(box)
        if not ingesting:
            self._check_uidvalidity(box, session, recorded)
        return session

    def _session(self, box: Mailbox) -> ImapSession:
        session = self._open.get(box.pk)
        account = session.account if session is not None else None
        if session is not None and account is not None and (account.password, account.login, account.folder) == (self.site.password_for(box.address), box.login, box.folder):
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

    @staticmethod
    def _check_uidvalidity(box: Mailbox, session: ImapSession, recorded: int | None | Literal["read"]) -> None:
        # The box was rebuilt (new UIDVALIDITY) and its watcher has not re-bound the live
        # interactions to the new UIDs yet: acting on the old UIDs now would close them as
        # vanished (issue 7, window 7). Wait for the watcher. The watcher re-binds the
        # interactions and records the new UIDVALIDITY in one transaction, so a value read
        # in one statement with the interactions is the one their UIDs are under.
        if recorded == "read":
            recorded = Mailbox.objects.filter(pk=box.pk).values_list("uidvalidity", flat=True).first()
        if recorded is not None and recorded != session.uidvalidity:
            raise MailboxUnavailable(
                f"{box.address}: UIDVALIDITY is now {session.uidvalidity}, not {recorded}; waiting for the re-bind"
            )

    def failed(self, box: Mailbox, exc: Exception) -> None:
        """Count a failure of `box`: it is left alone until its backoff has passed. (A
        refusal because it is backing off already is not a new failure: counting it would
        push the next try back for ever.)"""
        if isinstance(exc, BoxBackingOff):
            return
        previous = self._trouble.get(box.pk)
        failures = (previous.failures if previous else 0) + 1
        wait = delay(failures, base=BACKOFF_BASE, cap=BACKOFF_CAP, jitter=random.random())
        self._trouble[box.pk] = _Trouble(failures, time.monotonic() + wait, str(exc)[:300])
        session = self._open.get(box.pk)
        if session is not None:
            session.close()
        log.warning("%s: %s; next try in %.0f s", box.address, exc, wait)

    def succeeded(self, box: Mailbox) -> None:
        self._trouble.pop(box.pk, None)

    def forgive(self) -> None:
        """Forget every backoff (tests drive the engine synchronously, without waiting)."""
        self._trouble.clear()

    @contextlib.contextmanager
    def isolated(self, box: Mailbox) -> Iterator[None]:
        """Run one item's work on `box`; if the box fails, note it and go on with the rest."""
        try:
            yield
        except MailboxUnavailable as exc:
            self.failed(box, exc)
        else:
            self.succeeded(box)

    def close(self) -> None:
        for session in self._open.values():
            session.close()
        self._open.clear()
