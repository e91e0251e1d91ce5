"""The engine process: one watcher thread per mailbox, N sender threads, one worker thread
for the rest.

Watchers hold an IDLE connection each (polling where the server has no IDLE), take new
mail into the database as soon as the server reports it, reconcile their box with the
ledger from time to time, and wake the worker. The worker runs the step functions (route,
deliver, send, clean, ...) until none has work, then sleeps until woken or for a second,
so changes made elsewhere (an agent going Ready in the web process) are seen quickly.

Failures stay where they happen (issue 7, window 10; field bugs B-8, B-9): each worker
step runs on its own, and inside the steps each box backs off alone (`Sessions`), so an
unreachable box delays its own mail and nobody else's. A watcher whose box or database
fails reconnects with exponential backoff and jitter, then drains what piled up. The
supervisor thread keeps the watchers alive, renews the engine's lease and runs the health
watchdog. The outbox is not a worker step in a running engine: `[outbox] sessions` sender
threads each keep an SMTP session (and a journal box session) of their own and send their
share of the due mail (decision 0039), so a burst of auto-responses neither waits for nor
holds up routing and delivery. Every step is a plain function; `run_until_idle()` drives
them synchronously for tests, the outbox included, over one session.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from django.db import InterfaceError, OperationalError, close_old_connections, connection
from django.utils import timezone

from postroom.core.backoff import delay
from postroom.engine import (
    alerts,
    approvals,
    cleanup,
    delivery,
    health,
    lease,
    outbox,
    reception,
    reconcile,
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
WATCH_BACKOFF_CAP = 30.0
# How often a busy watcher writes its box's health row (a failure or recovery at once).
HEALTH_EVERY = 5.0


class Engine:
    def __init__(self, site: Site, now: Callable[[], datetime] = timezone.now) -> None:
        self.site = site
        self.now = now
        self.wake = threading.Event()
        self.stopping = threading.Event()
        # Set when the engine stopped itself (lease lost): `postroom engine` exits non-zero.
        self.failure: str | None = None
        self._threads: dict[int, threading.Thread] = {}
        self._sessions: Sessions | None = None
        self._sender: SmtpSender | None = None
        self._lease: lease.Lease | None = None
        self._started_at = timezone.now()
        self.desk = routing.RoutingDesk(site)
        # The sending side (engine/outbox.py): this process's claimant name, its session
        # on the journal box, when that box's old copies were last expunged.
        self.claimant = outbox.claimant(site.node_id)
        self._journal: JournalBox | None = None
        self._journal_expired_at: datetime | None = None
        # Set while sender threads run (start()): then the worker skips the outbox step.
        self._sender_wakes: list[threading.Event] = []
        if site.journal is None:
            log.warning("no [journal] box: a send whose outcome is unknown is sent again (at least once)")

    # -- the steps ------------------------------------------------------------------
    def ingest_box(self, box: Mailbox, session: ImapSession) -> int:
        return reception.ingest(
            box, session, self.site, self.now, TAKERS[box.kind], per_batch=box.kind == Mailbox.INCOMING
        )

    def steps(self) -> list[tuple[str, Callable[[], bool]]]:
        sessions = self._sessions_for_worker()
        site, now = self.site, self.now
        return [
            ("timers", lambda: timers.fire(site, now())),
            ("approval requests", lambda: approvals.request_waiting(site, now())),
            ("approvals", lambda: approvals.act(site, now())),
            ("routing", lambda: self.desk.route(now())),
            ("delivery", lambda: delivery.deliver(site, sessions, now())),
            ("outbox", self._send_in_worker),
            ("journal expiry", self._expire_journal),
            ("cleanup", lambda: cleanup.clean(sessions, now())),
            ("withdrawals", lambda: withdrawals.withdraw(site, now())),
            ("alerts", lambda: alerts.notify(site, now())),
        ]

    def work(self) -> bool:
        """One round of every worker step, each on its own; True if any did something."""
        did = False
        for name, step in self.steps():
            try:
                did = step() or did
            except MailboxUnavailable as exc:
                log.warning("%s: %s", name, exc)
            except (OperationalError, InterfaceError) as exc:
                # The database is away for a moment: the next round tries again.
                log.warning("%s: database error: %s", name, exc)
                connection.close()
            except Exception:
                # Steps isolate their items; this guards against the unexpected so that
                # one step failing never keeps the others from running (B-8).
                log.exception("worker step %s failed", name)
        return did

    def run_until_idle(self, rounds: int = 50) -> None:
        """Take all mail now in the boxes and work until nothing is left to do (tests).

        A box that fails is tried again in the next round (without the backoff a running
        engine would wait), at most three times per call."""
        sessions = self._sessions_for_worker()
        troubled: dict[int, int] = {}
        for _ in range(rounds):
            took = 0
            sessions.forgive()
            for box in watched_boxes():
                try:
                    took += self.ingest_box(box, sessions.get(box, ingesting=True))
                except reception.TRANSIENT as exc:
                    log.warning("%s: %s", box.address, exc)
                    sessions.failed(box, exc)
                    if isinstance(exc, OperationalError | InterfaceError):
                        connection.close()
                    troubled[box.pk] = troubled.get(box.pk, 0) + 1
                    took += troubled[box.pk] <= 3
            if not self.work() and not took:
                return
        raise RuntimeError(f"engine still busy after {rounds} rounds")

    def _send_in_worker(self) -> bool:
        if self._sender_wakes:
            return False  # the sender threads send
        return outbox.send(self.site, self._sender_for_worker(), self._journal_for_worker(), self.claimant, self.now)

    def _wake_all(self) -> None:
        self.wake.set()
        for event in self._sender_wakes:
            event.set()

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

    def _expire_journal(self) -> bool:
        """About once an hour: expunge journal copies past their retention."""
        box, now = self._journal_for_worker(), self.now()
        if box is None or (self._journal_expired_at and now - self._journal_expired_at < timedelta(hours=1)):
            return False
        self._journal_expired_at = now
        try:
            outbox.expire_copies(self.site, box, now)
        except MailboxUnavailable as exc:
            log.warning("journal box: expiry failed: %s", exc)
            box.close()
        return False

    # -- the threads ----------------------------------------------------------------
    def start(self) -> None:
        """Take the engine lease (LeaseHeld if another engine has it), then the threads."""
        self._lease = lease.acquire(self.site.node_id, self.site.lease_seconds)
        self._started_at = timezone.now()
        self.stopping.clear()
        shares = max(1, self.site.smtp_sessions)
        self._sender_wakes = [threading.Event() for _ in range(shares)]
        for share in range(shares):
            self._spawn(f"sender-{share}", lambda s=share: self._sender_loop(s, shares))
        self._spawn("worker", self._worker_loop)
        self._spawn("supervisor", self._supervise)

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self._wake_all()
        for thread in list(self._threads.values()):
            if thread is not threading.current_thread():
                thread.join(timeout)
        self._threads.clear()
        self._sender_wakes = []
        if self._lease is not None:
            try:
                lease.release(self._lease)
            except Exception:  # the database may be gone; the lease then simply expires
                log.warning("could not release the engine lease", exc_info=True)
            self._lease = None

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

    def _holds_lease(self) -> bool:
        return self._lease is None or self._lease.valid()

    def _supervise(self) -> None:
        """Keep a watcher running for every configured box (and boxes added while we run),
        renew the lease, and watch the boxes' health."""
        while not self.stopping.is_set():
            try:
                close_old_connections()
                if self._lease is not None:
                    lease.renew(self._lease)
                for box in watched_boxes():
                    thread = self._threads.get(box.pk)
                    if thread is None or not thread.is_alive():
                        self._spawn(f"watch-{box.address}", lambda b=box.pk: self._watch(b), key=box.pk)
                health.watchdog(self.site, timezone.now(), self._started_at)
            except lease.LeaseLost as exc:
                log.error("%s: stopping this engine", exc)
                self.failure = str(exc)
                self.stopping.set()
                self._wake_all()
                return
            except Exception:
                log.exception("supervisor round failed")
                connection.close()
            self.stopping.wait(min(10.0, self.site.lease_seconds / 3))

    def _worker_loop(self) -> None:
        try:
            while not self.stopping.is_set():
                close_old_connections()
                busy = False
                if self._holds_lease():
                    busy = self.work()
                else:
                    log.warning("the engine lease could not be renewed: not working until it is")
                if busy:
                    self._wake_all()  # a forward queued, an interaction closed ...
                else:
                    self.wake.wait(1.0)
                    self.wake.clear()
        finally:
            self.close()

    def _sender_loop(self, share: int, shares: int) -> None:
        """One SMTP session (and journal box session) kept open, sending this thread's share
        of the due mail; claims and fences as the outbox always does (decision 0007)."""
        sender = SmtpSender(self.site.smtp)
        box = JournalBox(self.site.journal.account) if self.site.journal is not None else None
        # Its own claimant name: a fence never mistakes another thread's claim for its own.
        holder = outbox.claimant(self.site.node_id)
        wake = self._sender_wakes[share]
        try:
            while not self.stopping.is_set():
                close_old_connections()
                busy = False
                try:
                    if self._holds_lease():
                        busy = outbox.send(self.site, sender, box, holder, self.now, share=share, shares=shares)
                except MailboxUnavailable as exc:
                    log.warning("outbox: %s", exc)
                except (OperationalError, InterfaceError) as exc:
                    log.warning("outbox: database error: %s", exc)
                    connection.close()
                except Exception:
                    log.exception("outbox sender %d failed", share)
                # Sent mail's consequences (cleanup after a reply) wait for the worker's
                # next round, at most a second: waking it per batch sent cost more CPU
                # than it saved time.
                if not busy:
                    wake.wait(1.0)
                    wake.clear()
        finally:
            sender.close()
            if box is not None:
                box.close()

    def _watch(self, box_pk: int) -> None:
        failures = 0
        quiet = 0
        reported = 0.0
        next_reconcile = 0.0
        session: ImapSession | None = None
        while not self.stopping.is_set():
            try:
                close_old_connections()
                box = Mailbox.objects.get(pk=box_pk)
                wanted = (box.login, self.site.password_for(box.address), box.folder)
                if session is not None and (session.account.login, session.account.password, session.account.folder) != wanted:
                    session.close()  # the box's settings changed: log in again with them
                if session is None or not session.is_open:
                    session = ImapSession(self.site.imap_account(box.login, self.site.password_for(box.address), box.folder)).open()
                    log.info("watching %s (%s)", box.address, "IDLE" if session.has_idle and self.site.idle else "polling")
                if not self._holds_lease():
                    self.stopping.wait(1.0)
                    continue
                # Until a pass finds nothing: mail that arrived during a pass may have
                # been announced in the middle of a FETCH, where the notice is lost.
                backlog = 0
                while (took := self.ingest_box(box, session)) and not self.stopping.is_set():
                    backlog = backlog or took
                    self._wake_all()
                    quiet = 0
                now = timezone.now()
                if failures or backlog or time.monotonic() - reported >= HEALTH_EVERY:
                    health.synced(box, now, backlog=backlog)
                    reported = time.monotonic()
                if failures:
                    log.info("%s: working again after %d failure(s)", box.address, failures)
                failures = 0
                if time.monotonic() >= next_reconcile:
                    reconcile.reconcile(box, session, now)
                    next_reconcile = time.monotonic() + self.site.reconcile_interval.total_seconds()
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
            except Mailbox.DoesNotExist:
                break
            except Exception as exc:
                failures += 1
                wait = delay(failures, base=1.0, cap=WATCH_BACKOFF_CAP, jitter=random.random())
                if isinstance(exc, reception.TRANSIENT):
                    log.warning("watcher %s: %s; retrying in %.1f s", box_pk, exc, wait)
                else:
                    log.exception("watcher for mailbox %s failed; retrying in %.1f s", box_pk, wait)
                if session is not None:
                    session.close()
                session = None
                connection.close()  # a database error leaves the connection unusable
                try:
                    health.failed(box_pk, f"{type(exc).__name__}: {exc}", timezone.now())
                except Exception:  # the database itself may be what failed
                    log.debug("could not record the failure of box %s", box_pk, exc_info=True)
                self.stopping.wait(wait)
        if session is not None:
            session.close()


def watched_boxes() -> list[Mailbox]:
    return list(Mailbox.objects.filter(kind__in=[Mailbox.INCOMING, Mailbox.OUTBOUND]))
