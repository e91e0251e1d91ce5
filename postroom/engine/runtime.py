"""The engine process: one watcher thread per mailbox, one worker thread for the rest.

Watchers hold an IDLE connection each (polling where the server has no IDLE), take new
mail into the database as soon as the server reports it, and wake the worker. The worker
runs the step functions (route, deliver, send, clean) until none has work, then sleeps
until woken or for a second, so changes made elsewhere (an agent going Ready in the web
process) are seen quickly. Every step is a plain function; `run_until_idle()` drives them
synchronously for tests.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from django.db import close_old_connections, connection
from django.utils import timezone

from postroom.engine import (
    approvals,
    cleanup,
    delivery,
    outbox,
    reception,
    replies,
    routing,
    timers,
    withdrawals,
)
from postroom.engine.connections import Sessions
from postroom.engine.site import Site
from postroom.mail.imap import ImapSession, MailboxUnavailable
from postroom.mail.journalbox import JournalBox
from postroom.mail.smtp import SmtpSender
from postroom.store.models import Mailbox

log = logging.getLogger(__name__)

TAKERS = {Mailbox.INCOMING: reception.take_incoming, Mailbox.OUTBOUND: replies.take_outbound}


class Engine:
    def __init__(self, site: Site, now: Callable[[], datetime] = timezone.now) -> None:
        self.site = site
        self.now = now
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self._threads: dict[int, threading.Thread] = {}
        self._sessions: Sessions | None = None
        self._sender: SmtpSender | None = None
        self.desk = routing.RoutingDesk(site)
        # The sending side (engine/outbox.py): this process's claimant name, its session
        # on the journal box, when that box's old copies were last expunged.
        self.claimant = outbox.claimant(site.node_id)
        self._journal: JournalBox | None = None
        self._journal_expired_at: datetime | None = None
        if site.journal is None:
            log.warning("no [journal] box: a send whose outcome is unknown is sent again (at least once)")

    # -- the steps ------------------------------------------------------------------
    def ingest_box(self, box: Mailbox, session: ImapSession) -> int:
        return reception.ingest(box, session, self.site, self.now, TAKERS[box.kind])

    def work(self) -> bool:
        """One round of every worker step; True if any of them did something."""
        sessions = self._sessions_for_worker()
        sender = self._sender_for_worker()
        did = timers.fire(self.site, self.now())
        did = approvals.act(self.site, self.now()) or did
        did = self.desk.route(self.now()) or did
        did = delivery.deliver(self.site, sessions, self.now()) or did
        did = outbox.send(self.site, sender, self._journal_for_worker(), self.claimant, self.now) or did
        self._expire_journal()
        did = cleanup.clean(sessions, self.now()) or did
        did = withdrawals.withdraw(self.site, self.now()) or did
        return did

    def run_until_idle(self, rounds: int = 50) -> None:
        """Take all mail now in the boxes and work until nothing is left to do (tests)."""
        sessions = self._sessions_for_worker()
        for _ in range(rounds):
            took = 0
            for box in watched_boxes():
                took += self.ingest_box(box, sessions.get(box))
            if not self.work() and not took:
                return
        raise RuntimeError(f"engine still busy after {rounds} rounds")

    def _sessions_for_worker(self) -> Sessions:
        if self._sessions is None:
            self._sessions = Sessions(self.site)
        return self._sessions

    def _sender_for_worker(self) -> SmtpSender:
        if self._sender is None:
            self._sender = SmtpSender(self.site.smtp)
        return self._sender

    def _journal_for_worker(self) -> JournalBox | None:
        if self._journal is None and self.site.journal is not None:
            self._journal = JournalBox(self.site.journal.account)  # opened on first use
        return self._journal

    def _expire_journal(self) -> None:
        """About once an hour: expunge journal copies past their retention."""
        box, now = self._journal_for_worker(), self.now()
        if box is None or (self._journal_expired_at and now - self._journal_expired_at < timedelta(hours=1)):
            return
        self._journal_expired_at = now
        try:
            outbox.expire_copies(self.site, box, now)
        except MailboxUnavailable as exc:
            log.warning("journal box: expiry failed: %s", exc)
            box.close()

    # -- the threads ----------------------------------------------------------------
    def start(self) -> None:
        self.stopping.clear()
        self._spawn("worker", self._worker_loop)
        self._spawn("supervisor", self._supervise)

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self.wake.set()
        for thread in list(self._threads.values()):
            thread.join(timeout)
        self._threads.clear()

    def close(self) -> None:
        """Close the worker's connections (after stop(), or after run_until_idle())."""
        if self._sessions is not None:
            self._sessions.close()
        if self._sender is not None:
            self._sender.close()
        if self._journal is not None:
            self._journal.close()

    def _spawn(self, name: str, target: Callable[[], None], key: int | None = None) -> None:
        thread = threading.Thread(target=self._guarded(target), name=f"postroom-{name}", daemon=True)
        self._threads[key if key is not None else -len(self._threads) - 1] = thread
        thread.start()

    def _guarded(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            finally:
                connection.close()

        return run

    def _supervise(self) -> None:
        """Start a watcher for every configured box, and for boxes added while we run."""
        while not self.stopping.is_set():
            close_old_connections()
            for box in watched_boxes():
                thread = self._threads.get(box.pk)
                if thread is None or not thread.is_alive():
                    self._spawn(f"watch-{box.address}", lambda b=box.pk: self._watch(b), key=box.pk)
            self.stopping.wait(10.0)

    def _worker_loop(self) -> None:
        try:
            while not self.stopping.is_set():
                close_old_connections()
                try:
                    busy = self.work()
                except MailboxUnavailable as exc:
                    log.warning("worker: %s", exc)
                    busy = False
                    self.stopping.wait(2.0)
                except Exception:
                    # The item-level steps already isolate bad items; this guards against
                    # the unexpected so the worker never dies silently (B-8).
                    log.exception("worker step failed")
                    busy = False
                    self.stopping.wait(2.0)
                if not busy:
                    self.wake.wait(1.0)
                    self.wake.clear()
        finally:
            self.close()

    def _watch(self, box_pk: int) -> None:
        delay = 1.0
        quiet = 0
        session: ImapSession | None = None
        while not self.stopping.is_set():
            try:
                close_old_connections()
                box = Mailbox.objects.get(pk=box_pk)
                if session is None or not session.is_open:
                    session = ImapSession(self.site.imap_account(box.login, box.password, box.folder)).open()
                    log.info("watching %s (%s)", box.address, "IDLE" if session.has_idle and self.site.idle else "polling")
                # Until a pass finds nothing: mail that arrived during a pass may have
                # been announced in the middle of a FETCH, where the notice is lost.
                while self.ingest_box(box, session) and not self.stopping.is_set():
                    self.wake.set()
                    quiet = 0
                delay = 1.0
                if self.site.idle and session.has_idle:
                    # Dovecot does not announce mail that arrived between our last SEARCH
                    # and the start of IDLE (measured: never, not even seconds later). So
                    # the first IDLE after a pass is short and is followed by one more look;
                    # later ones last idle_timeout, which bounds how late such mail can be.
                    timeout = 1.0 if quiet == 0 else self.site.idle_timeout
                    quiet += 1
                    session.wait(timeout, stop=self.stopping.is_set)
                else:
                    self.stopping.wait(self.site.poll_interval)
            except MailboxUnavailable as exc:
                log.warning("%s: %s; retrying in %.0f s", box_pk, exc, delay)
                if session is not None:
                    session.close()
                session = None
                self.stopping.wait(delay)
                delay = min(delay * 2, 60.0)
            except Mailbox.DoesNotExist:
                return
            except Exception:
                log.exception("watcher for mailbox %s failed", box_pk)
                if session is not None:
                    session.close()
                session = None
                self.stopping.wait(delay)
                delay = min(delay * 2, 60.0)
        if session is not None:
            session.close()


def watched_boxes() -> list[Mailbox]:
    return list(Mailbox.objects.filter(kind__in=[Mailbox.INCOMING, Mailbox.OUTBOUND]))
