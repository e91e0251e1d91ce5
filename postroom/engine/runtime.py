"""The engine process: one watcher thread per mailbox, N sender threads, one worker thread
for the rest.

Watchers hold an IDLE connection each (polling where the server has no IDLE), take new
mail into the database as soon as the server reports it, reconcile their box with the
ledger from time to time, and wake the worker. The worker runs the step functions (route,
deliver, clean, ...) in lazy rounds (decision 0041): a step runs when something in this
process made work for it (mail taken in marks routing and delivery; a step that did
something marks the steps that follow from it, `FOLLOWS`), and otherwise once a second,
so changes made elsewhere (an agent going Ready in the web process) are seen within a
second; on PostgreSQL a listener thread marks every step as soon as another node or the
web commits a change, and wakes the senders when mail was queued (LISTEN/NOTIFY).

Several engines (nodes) may share one PostgreSQL database (decisions 0030, 0031): the
supervisor thread keeps this node's membership (heartbeat, mailbox and router leases,
`engine/membership.py`) and runs a watcher for each box this node holds; the routing
step runs on the node holding the router lease; every other step is safe on all nodes
at once (leased claims, SKIP LOCKED, compare-and-set). A node whose lease is gone stops
every thread it runs and registers again: what they wrote meanwhile was refused.

Failures stay where they happen (issue 7, window 10; field bugs B-8, B-9): each worker
step runs on its own, and inside the steps each box backs off alone (`Sessions`), so an
unreachable box delays its own mail and nobody else's. A watcher whose box or database
fails reconnects with exponential backoff and jitter, then drains what piled up. The
supervisor thread keeps the watchers alive, renews the node's lease and runs the health
watchdog. The outbox is not a worker step in a running engine: `[outbox] sessions` sender
threads each keep an SMTP session (and a journal box session) of their own and send their
share of the due mail (decision 0039), so a burst of auto-responses neither waits for nor
holds up routing and delivery. Every step is a plain function; `run_until_idle()` drives
them synchronously for tests, the outbox included, over one session.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

from django.db import (
    InterfaceError,
    OperationalError,
    connection,
    connections,
)
from django.utils import timezone

from postroom.config import Config
from postroom.core.backoff import delay
from postroom.core.cluster import ROUTER, Mode, box_of
from postroom.engine import (
    alerts,
    approvals,
    cleanup,
    delivery,
    health,
    islandagents,
    localstore,
    nodes,
    outbox,
    reception,
    reconcile,
    replies,
    routing,
    timers,
    withdrawals,
)
from postroom.engine.claims import ISLAND_PEER, Claims
from postroom.engine.connections import Sessions
from postroom.engine.listener import backend_pid, listen
from postroom.engine.membership import Membership
from postroom.engine.site import Site
from postroom.mail.imap import ImapSession, MailboxUnavailable
from postroom.mail.journalbox import JournalBox
from postroom.mail.smtp import SmtpSender
from postroom.store.compiled import Compiled
from postroom.store.fence import is_fence_error
from postroom.store.islandmerge import merge_back
from postroom.store.models import Mailbox, Node, Outgoing

log = logging.getLogger(__name__)

TAKERS = {Mailbox.INCOMING: reception.take_incoming, Mailbox.OUTBOUND: replies.take_outbound}
WATCH_BACKOFF_CAP = 30.0
# The worker's steps, in the order of a round (`Engine.steps`).
STEPS = (
    "timers", "approval requests", "approvals", "routing", "delivery", "outbox", "journal expiry",
    "cleanup", "withdrawals", "oauth2", "alerts",
)
# A worker step that found nothing to do is asked again after this long, unless something
# in this process made work for it meanwhile (`Schedule.mark`): asking every step after
# every change cost a round of queries each (decisions 0026, 0041). Work made elsewhere
# (the web process, another node) is seen within this time, or at once on PostgreSQL
# (LISTEN/NOTIFY marks every step).
POLL_EVERY = 1.0
# Housekeeping nobody waits for gathers its work: it runs at most this often, whatever
# marks it, so that one round takes everything finished meanwhile (one MOVE per box and
# folder, one transaction, one journal INSERT) instead of a round of IMAP commands and
# queries for each interaction or two (decision 0047). The customer has the reply by
# then; only the archiving waits.
GATHER = {"cleanup": 5.0}
# What a step that did something may have made work for (itself: there may be more). A
# step not named here marks every step (EVERY).
EVERY = "*"
FOLLOWS = {
    "routing": ("routing", "delivery", "withdrawals", "alerts"),
    "delivery": ("delivery", "routing", "withdrawals", "alerts"),
    "journal expiry": (),
    "cleanup": ("cleanup",),
    "withdrawals": ("withdrawals", "alerts"),
    "alerts": ("alerts",),
}
# Steps whose work never queues mail: the senders are not woken for them. (Routing does:
# an offer notice to an agent who is not auto-answer.)
SILENT = frozenset({"cleanup", "withdrawals", "journal expiry"})
# Steps after which the senders are woken at once when the round so far queued mail (a
# forward, an approved reply), not at the round's end: the steps after them (clean-up's
# IMAP round, the expiry, the alerts) are nothing a customer's mail waits for
# (decision 0050). Any later step that queues mail wakes them again at the end.
HAND_OFF = frozenset({"approvals", "delivery"})


class Schedule:
    """Which worker steps a lazy round runs: the ones marked as having work since they last
    ran, and every other one once per `every` seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, every: float = POLL_EVERY) -> None:
        self.clock, self.every = clock, every
        self._marked: set[str] = set()
        self._lock = threading.Lock()  # watchers, senders and the listener mark
        self._asked: dict[str, float] = {}

    def mark(self, *steps: str) -> None:
        with self._lock:
            self._marked.update(STEPS if EVERY in steps else steps)

    def due(self, name: str) -> bool:
        now = self.clock()
        with self._lock:
            marked = name in self._marked and name not in GATHER
            self._marked.discard(name)
        if marked or now - self._asked.get(name, float("-inf")) >= self._every(name):
            self._asked[name] = now
            return True
        return False

    def _every(self, name: str) -> float:
        return max(self.every, GATHER.get(name, 0.0))

    def wait_s(self) -> float:
        """Seconds until the first step is due again by time (at most `every`)."""
        if not self._asked:
            return 0.01
        soonest = min(asked + self._every(name) for name, asked in self._asked.items())
        return min(self.every, max(0.01, soonest - self.clock()))


# How long a sender other than sender 0 waits for a wake-up before it reads the due rows
# on its own (decision 0062): sender 0 reads every second and wakes the senders whose
# share has rows; this is only the net under that.
IDLE_SENDER_WAIT = 5.0

# The table whose inserts (NOTIFY, store/fence.py) are mail for the senders only.
OUTBOX_TABLE = Outgoing._meta.db_table

# How often a busy watcher writes its box's health row (a failure or recovery at once).
HEALTH_EVERY = 5.0


class Engine:
    def __init__(
        self, site: Site, now: Callable[[], datetime] = timezone.now, config: Config | None = None
    ) -> None:
        self.site = site
        self.now = now
        if site.tokens is not None:
            site.tokens.clock = now  # OAuth2 expiry is judged on the engine's clock
        self.wake = threading.Event()
        self.stopping = threading.Event()
        # Stops the current generation of working threads (a stand-down, or the end).
        self.work_stop = threading.Event()
        # Set when the engine stopped itself (its node id taken over by another process):
        # `postroom engine` exits non-zero.
        self.failure: str | None = None
        self._threads: dict[str, threading.Thread] = {}
        self._sessions: Sessions | None = None
        self._sender: SmtpSender | None = None
        # This node among the nodes (None when driven by run_until_idle: it then does all).
        self.membership: Membership | None = None
        # Set by a thread whose write the fence refused: the supervisor stands down.
        self._fenced = threading.Event()
        self._started_at = timezone.now()
        self.desk = routing.RoutingDesk(site)
        # Held while routing, and by the supervisor while it gives the router lease back.
        self._route_lock = threading.Lock()
        # The router lease's token the desk was built under (a new one: a fresh desk).
        self._desk_token: int | None = None
        # The sending side (engine/outbox.py): this process's claimant name, its session
        # on the journal box, when that box's old copies were last expunged.
        self.claimant = outbox.claimant(site.node_id)
        self._journal: JournalBox | None = None
        self._journal_expired_at: datetime | None = None
        # Set while sender threads run (start()): then the worker skips the outbox step.
        self._sender_wakes: list[threading.Event] = []
        # Set while a sender thread has mail on the wire, by share: sender 1 asks for the
        # most urgent row too while sender 0 is busy (decision 0060).
        self._senders_sending: dict[int, threading.Event] = {}
        # Set while a sender thread waits with nothing of its own to send, by share: mail
        # queued wakes one of them, which reads the due rows for all (decision 0062).
        self._senders_idle: dict[int, threading.Event] = {}
        # Which worker steps the running engine's rounds run (`work(lazy=True)`).
        self.schedule = Schedule()
        # The database sessions of the threads that mark their own work (watchers, the
        # worker), by thread: their notifications tell this node nothing new (0043).
        self._own_sessions: dict[str, int] = {}
        # Island mode ([cluster] sync_address; engine/claims.py): None when off.
        self.claims = Claims(site, site.island, now) if site.island is not None else None
        # The cut-off node's own island mode (decision 0036): the local store it works on
        # once the database has been away for `island_after`; None when island mode is off
        # (or no configuration was given: tests driving the steps).
        self.local = (
            localstore.LocalStore(site.node_id, config)
            if self.claims is not None and config
            else None
        )
        self.island_after = config.cluster.island_after_seconds if config is not None else 0
        # True while the working threads run on the local store; `_unmerged` until what
        # they did there is written back into PostgreSQL.
        self.islanded = False
        self._unmerged = False
        # When the shared database last answered the supervisor (monotonic seconds).
        self._db_ok_at = time.monotonic()
        # The agents as last seen on the shared database: who is ready on the island
        # (engine/islandagents.py, decision 0045).
        self._agents_seen: list[dict[str, object]] = []
        # The supervisor runs the sync watchdog at the pace its alerts need, not at every
        # heartbeat (engine/health.py, decision 0058).
        self._watchdog = health.Pace(health.watchdog_every(site))
        if site.journal is None:
            log.warning("no [journal] box: a send whose outcome is unknown is sent again (at least once)")

    # -- the steps ------------------------------------------------------------------
    def ingest_box(self, box: Mailbox, session: ImapSession) -> int:
        if box.kind == Mailbox.OUTBOUND:
            # Mail left while a node was on its local store is read again once it merged.
            replies.rewind_waiting(box, self.site)
        # Every box a FETCH batch per transaction: incoming mail (decision 0039) and the
        # outbound box's replies (decision 0050), whose batch reads ahead what it can.
        return reception.ingest(
            box, session, self.site, self.now, TAKERS[box.kind], per_batch=True,
            ahead=replies.read_ahead if box.kind == Mailbox.OUTBOUND else None,
        )

    def steps(self) -> list[tuple[str, Callable[[], bool]]]:
        sessions = self._sessions_for_worker()
        site, now = self.site, self.now
        # Routing, the journal box's expiry and the alert mails run on the node holding
        # the router lease; the rest on every node (each item claimed: decision 0030).
        steps = [
            ("timers", lambda: timers.fire(site, now())),
            ("approval requests", lambda: approvals.request_waiting(site, now())),
            ("approvals", lambda: approvals.act(site, now())),
            ("routing", self._route),
            ("delivery", lambda: delivery.deliver(site, sessions, now())),
            ("outbox", self._send_in_worker),
            ("journal expiry", lambda: self.is_router() and self._expire_journal()),
            # Not on the local store: closing and archiving what the island handled is
            # the database's side's after the merge (the island moves nothing on the
            # shared server that the other side may still read; decision 0045).
            ("cleanup", lambda: not self.islanded and cleanup.clean(sessions, now())),
            ("withdrawals", lambda: withdrawals.withdraw(site, now())),
            # Tokens refreshed ahead of expiry and refresh-token expiry warned about (B-10).
            ("oauth2", lambda: site.tokens is not None and site.tokens.step(now())),
            ("alerts", lambda: self.is_router() and alerts.notify(site, now())),
        ]
        assert tuple(name for name, _ in steps) == STEPS
        return steps

    def work(self, *, lazy: bool = False) -> bool:
        """One round of the worker steps, each on its own; True if any did something.

        `lazy` (the running engine's worker): only the steps marked as having work, and the
        others once every `POLL_EVERY`. Senders are woken when a step that may queue mail
        did something."""
        did = loud = False
        for name, step in self.steps():
            if lazy and not self.schedule.due(name):
                continue
            try:
                worked = step()
                if worked:
                    did = True
                    loud = loud or name not in SILENT
                    self.schedule.mark(*FOLLOWS.get(name, (EVERY,)))
            except MailboxUnavailable as exc:
                log.warning("%s: %s", name, exc)
            except (OperationalError, InterfaceError) as exc:
                # The database is away for a moment: the next round tries again.
                log.warning("%s: database error: %s", name, exc)
                connection.close()
            except Exception as exc:
                if is_fence_error(exc):
                    self._refused(name, exc)
                    continue
                # Steps isolate their items; this guards against the unexpected so that
                # one step failing never keeps the others from running (B-8).
                log.exception("worker step %s failed", name)
            if loud and name in HAND_OFF:
                self._wake_senders()
                loud = False
        if loud:
            self._wake_senders()
        return did

    def _refused(self, where: str, exc: BaseException) -> None:
        """The database refused a write of ours: this node's lease is gone."""
        log.error("%s: %s", where, str(exc).splitlines()[0])
        self._fenced.set()

    def is_router(self) -> bool:
        return self.membership is None or self.membership.router

    def owns(self, box_pk: int) -> bool:
        return self.membership is None or self.membership.owns(box_pk)

    def _route(self) -> bool:
        with self._route_lock:
            if not self.is_router():
                return False
            token = self.membership.held.get(ROUTER) if self.membership else None
            if token != self._desk_token:
                # The router lease is ours under a new token: whatever this desk knew is
                # from before another node routed; start from the tables (decision 0030).
                self.desk = routing.RoutingDesk(self.site)
                self._desk_token = token
            return self.desk.route(self.now())

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
        return outbox.send(
            self.site, self._sender_for_worker(), self._journal_for_worker(), self.claimant, self.now,
            gate=self._gate(), ask_journal=self._ask_journal(),
        )

    def _gate(self) -> outbox.Gate | None:
        return self.claims.admits if self.claims is not None else None

    def _ask_journal(self) -> outbox.Gate | None:
        return self.claims.island_row if self.claims is not None else None

    def _wake_all(self) -> None:
        """Anything may have changed (another node or the web, a stop): every step runs,
        and every sender looks (a stop must reach each one: decision 0062)."""
        self.schedule.mark(EVERY)
        self.wake.set()
        for event in self._sender_wakes:
            event.set()

    def _notified(self, table: str, pid: int | None = None) -> None:
        """A commit (this node's, another's, the web's) added mail to the outbox: the
        senders look; anything else (a journal event: any change): every worker step.
        Not for a commit of this node's watchers or worker: they marked its work."""
        if pid is not None and pid in self._own_sessions.values():
            return
        if table == OUTBOX_TABLE:
            self._wake_senders()
            return
        self.schedule.mark(EVERY)
        self.wake.set()

    def _wake_senders(self) -> None:
        """Mail was queued: one idle sender reads the due rows, and wakes the senders whose
        share has rows in them (`_hand_out`, decision 0062), the first idle one by share
        (sender 0's is the most urgent row). With none idle, every sender is woken, as
        before: whichever reads next hands out what it finds."""
        wakes = self._sender_wakes
        for share, event in enumerate(wakes):
            idle = self._senders_idle.get(share)
            if idle is not None and idle.is_set():
                idle.clear()  # woken: the next wake-up picks another idle sender
                event.set()
                return
        for event in wakes:
            event.set()

    def _hand_out(self, shares: set[int], urgent_first: bool) -> None:
        """A sender read the due rows: the senders whose share has rows in them look too;
        and sender 1 when the most urgent row is sender 0's, a reply or a forward, while
        sender 0 has mail on the wire (it may ask for that row: decision 0060)."""
        wakes = self._sender_wakes
        if urgent_first and 0 in shares and len(wakes) > 1:
            zero = self._senders_sending.get(0)
            if zero is not None and zero.is_set():
                shares = shares | {1}
        for share in shares:
            if share < len(wakes):
                wakes[share].set()

    def _own_session(self) -> None:
        """This thread marks what its commits make work for: the listener may ignore them."""
        if (pid := backend_pid()) is not None:
            self._own_sessions[threading.current_thread().name] = pid

    def _took_mail(self, box: Mailbox) -> None:
        """A watcher took mail in: new interactions to route and deliver, auto-responses to
        send; a reply or an approval from the outbound box may change anything."""
        if box.kind == Mailbox.INCOMING:
            self.schedule.mark("routing", "delivery")
        else:
            self.schedule.mark(EVERY)
        self.wake.set()
        self._wake_senders()

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
        """Register this node (NodeRefused if it may not run), then the supervisor thread,
        which takes this node's leases and starts the working threads."""
        if self.local is not None:
            if self.local.left_unmerged():
                # Killed (or stopped) while on its local store, or in the middle of the
                # merge: merged now, before registering, as on a live return (decision
                # 0036). Should PostgreSQL fail meanwhile, the start fails and the store
                # stays for the next one (the merge is idempotent).
                log.warning("this node stopped while on its local store: merging it before it registers")
                self._merge_back()
            else:
                self.local.prepare_soon()
        self.membership = Membership(self.site)
        self.membership.join()
        self._started_at = timezone.now()
        self.stopping.clear()
        self.work_stop.clear()
        # The supervisor starts the sender threads with the other working threads, once
        # this node holds its leases (and again after a stand-down).
        self._sender_wakes = [threading.Event() for _ in range(max(1, self.site.smtp_sessions))]
        self._spawn("supervisor", self._supervise)

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self.work_stop.set()
        self._wake_all()
        for thread in list(self._threads.values()):
            if thread is not threading.current_thread():
                thread.join(timeout)
        self._threads.clear()
        self._sender_wakes = []
        kept = self.site.originals
        log.info("originals kept for delivery (decision 0053): %d used, %d fetched again, %d bytes kept now",
                 kept.hits, kept.misses, kept.size)
        if self.membership is not None and self.membership.ticket is not None and not self.islanded:
            try:
                self.membership.leave()
            except Exception:  # the database may be gone; the lease then simply runs out
                log.warning("could not record this node's stop", exc_info=True)

    def close(self) -> None:
        """Close the worker's connections (after stop(), or after run_until_idle())."""
        if self._sessions is not None:
            self._sessions.close()
        if self._sender is not None:
            self._sender.close()
        if self._journal is not None:
            self._journal.close()

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=self._guarded(target, self.islanded), name=f"postroom-{name}", daemon=True)
        self._threads[name] = thread
        thread.start()

    def _guarded(self, target: Callable[[], None], local: bool = False) -> Callable[[], None]:
        def run() -> None:
            if local:
                localstore.use_local()  # an island thread: its `default` is the local store
            try:
                target()
            finally:
                connection.close()

        return run

    def _alive(self, name: str) -> bool:
        thread = self._threads.get(name)
        return thread is not None and thread.is_alive()

    def _supervise(self) -> None:
        """Keep this node's membership (heartbeat, leases), a watcher for every box it
        holds and the working threads; run the health watchdog where the router is."""
        membership = self.membership
        assert membership is not None
        while not self.stopping.is_set():
            try:
                if self._supervise_once(membership):
                    continue
            except nodes.Fenced as exc:
                log.error("%s: this node stops its work and registers again", exc)
                self._stand_down()
                if nodes.replaced_by_another_process(exc):
                    self.failure = str(exc)
                    self.stopping.set()
                    self.work_stop.set()
                    self._wake_all()
                    return
            except nodes.NodeRefused as exc:
                self.failure = str(exc)
                log.error("%s: stopping", exc)
                self.stopping.set()
                self.work_stop.set()
                self._wake_all()
                return
            except (OperationalError, InterfaceError) as exc:
                log.warning("supervisor: database error: %s", exc)
                connection.close()
                if membership.expired():
                    log.error("this node's lease ran out while the database was away: stopping its work")
                    self._stand_down()
                if self._island_due():
                    self._go_island()
            except Exception:
                log.exception("supervisor round failed")
                connection.close()
            self.stopping.wait(self.site.heartbeat)

    def _supervise_once(self, membership: Membership) -> bool:
        """One round of the supervisor: its heartbeat, leases, threads and watchdog.
        True when it is to run again at once (back from island mode). Raises what the
        loop handles (nodes.Fenced: our lease is gone; nodes.NodeRefused; database errors)."""
        nodes.keep_connection()
        if self._fenced.is_set():
            # A write of ours was refused: the heartbeat says why (fenced out by
            # another node, or our node id taken over by another process, which
            # ends this one) and raises Fenced, unless our lease is in fact live.
            self._fenced.clear()
            if membership.ticket is not None:
                nodes.heartbeat(membership.ticket, membership.detail(), membership.mode)
        if self.islanded and self._db_back():
            return True
        if membership.ticket is None:
            if self._unmerged and not self.islanded:
                self._merge_back()
            membership.join()  # after a stand-down: a new epoch
            connection.close()  # the next one carries the new epoch
            self._started_at = timezone.now()
        # The boxes read once a round (the tick's plan and the watchers both need
        # them), as their ids, by SQL compiled once (decision 0058).
        boxes = watched_box_ids()
        membership.tick(boxes, self._releasing)
        if not self.islanded:
            self._db_ok_at = time.monotonic()
            if self.local is not None:
                self._agents_seen = islandagents.snapshot()
        self._keep_island(membership)
        self._keep_threads(boxes)
        if membership.router and self._watchdog.due():
            health.watchdog(self.site, timezone.now(), self._started_at)
        return False

    def _stand_down(self) -> None:
        """Stop every working thread and hold nothing (the supervisor registers again)."""
        self.work_stop.set()
        self._wake_all()
        for name, thread in list(self._threads.items()):
            if name != "supervisor":
                thread.join(30.0)
                self._threads.pop(name, None)
        self.work_stop.clear()
        assert self.membership is not None
        self.membership.stand_down()
        with self._route_lock:
            self.desk = routing.RoutingDesk(self.site)

    # -- the cut-off node's own island mode (decision 0036) ---------------------------
    def _island_due(self) -> bool:
        return (
            self.local is not None
            and not self.islanded
            and self.membership is not None
            and self.membership.ticket is None
            and time.monotonic() - self._db_ok_at > self.island_after
        )

    def _go_island(self) -> None:
        """The database has been away for `island_after`: work on the local store as an
        independent master. Every box is an island box there (claims first: nothing is
        sent for an email before this node has won its claim in the sync box), the boxes
        are read again from the start (the local store knows nothing yet), and what the
        other side already sent is found in the journal box by its derived Message-ID.
        It routes on the agents as last seen on the database, forwards, and takes its own
        interactions' replies (decision 0045)."""
        assert self.membership is not None and self.claims is not None and self.local is not None
        if not self.local.wait():
            self._db_ok_at = time.monotonic()  # asked again after another island_after
            return
        log.error(
            "the database has been away for more than %d s: island mode on the local store",
            self.island_after,
        )
        self.claims.settle((), ())  # boxes named by the database's ids: none of them holds now
        connection.close()
        localstore.use_local()
        self.islanded = self._unmerged = True
        # Who is ready there: the agents as this node last saw them on the database.
        islandagents.install(self._agents_seen)
        self.membership.join()  # the only node of the local store
        self._started_at = timezone.now()

    def _db_back(self) -> bool:
        """In island mode: if PostgreSQL answers again, stop the island's threads and go
        back to it (the next round merges, then registers with a new epoch)."""
        if not localstore.shared_answers():
            return False
        log.warning("the database answers again: leaving island mode")
        self._stand_down()
        assert self.claims is not None
        self.claims.settle((), ())
        localstore.use_shared()
        self.islanded = False
        return True

    def _merge_back(self) -> None:
        """Write the island's records into PostgreSQL before registering: until then the
        nodes that took this node's boxes keep them in island mode (decision 0036). At a
        return to the database, or at the start of a node killed while on its local store
        (`start`): its claims are then released by the new process, which recognises them
        in the sync box by its node id."""
        assert self.local is not None
        Node.objects.filter(node_id=self.site.node_id).update(mode=Mode.ISLAND.value)
        merge_back(self.site.node_id, localstore.LOCAL, self.now())
        connections[localstore.LOCAL].close()  # this thread's: the file is prepared afresh
        self._unmerged = False
        assert self.claims is not None
        self.claims.release_own()  # no longer re-asserted; released, not left to expire
        self.local.prepare_soon()  # fresh for the next island
        self._db_ok_at = time.monotonic()

    def _releasing(self, name: str) -> contextlib.AbstractContextManager[object]:
        """Around giving a lease back: the work that depends on it stops first."""
        if name == ROUTER:
            return self._route_lock
        pk = box_of(name)
        thread = self._threads.get(f"watch:{pk}")

        @contextlib.contextmanager
        def after_watcher() -> Iterator[None]:
            yield
            # The watcher sees the box is no longer held within a second (its IDLE wait
            # looks every second) and stops; whatever it still writes about the box is
            # refused by the lease token meanwhile (decision 0031). Waited for briefly
            # only: the supervisor must not miss its own heartbeat for it.
            if thread is not None:
                thread.join(self.site.heartbeat)

        return after_watcher()

    def _keep_threads(self, boxes: list[int]) -> None:
        if not self._alive("worker"):
            self._spawn("worker", self._worker_loop)
        shares = len(self._sender_wakes)
        for share in range(shares):
            if not self._alive(f"sender-{share}"):
                self._spawn(f"sender-{share}", lambda s=share: self._sender_loop(s, shares))
        if self.claims is not None and not self._alive("claims"):
            self._spawn("claims", self._claims_loop)
        if nodes.shared() and not self._alive("listener"):
            self._spawn("listener", lambda: listen(self._notified, self.work_stop))
        for pk in boxes:
            # On the local store too: the replies to the island's own interactions are
            # taken there, the rest left for the database's side (engine/replies.py).
            if self.owns(pk) and not self._alive(f"watch:{pk}"):
                self._spawn(f"watch:{pk}", lambda b=pk: self._watch(b))

    def _worker_loop(self) -> None:
        try:
            while not self.work_stop.is_set():
                nodes.keep_connection()
                if not self.work(lazy=True):
                    self.wake.wait(self.schedule.wait_s())
                    self.wake.clear()
                else:
                    self._own_session()
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
        sending = self._senders_sending.setdefault(share, threading.Event())
        idle = self._senders_idle.setdefault(share, threading.Event())
        # Sender 0 looks for mail due by the clock (a retry, an expired lease) every
        # second and hands out what it finds; the others are woken for theirs, and look
        # on their own only as a safety net (decision 0062).
        every = 1.0 if share == 0 else IDLE_SENDER_WAIT
        try:
            while not self.work_stop.is_set():
                nodes.keep_connection()
                busy = False
                # Any wake-up before this read is answered by it (no read again for it).
                wake.clear()
                try:
                    # A forward queued while sender 0 sends its auto-response is sender
                    # 0's (the first due row) but is not left waiting for it.
                    zero = self._senders_sending.get(0) if share == 1 else None
                    busy = outbox.send(
                        self.site, sender, box, holder, self.now, share=share, shares=shares,
                        gate=self._gate(), ask_journal=self._ask_journal(), threaded=True,
                        steal=zero is not None and zero.is_set(), sending=sending,
                        hand_out=self._hand_out,
                    )
                except MailboxUnavailable as exc:
                    log.warning("outbox: %s", exc)
                except (OperationalError, InterfaceError) as exc:
                    log.warning("outbox: database error: %s", exc)
                    connection.close()
                except Exception as exc:
                    if is_fence_error(exc):
                        self._refused(f"outbox sender {share}", exc)
                    else:
                        log.exception("outbox sender %d failed", share)
                # Sent mail's consequences (cleanup after a reply) wait for the worker's
                # next round, at most a second: waking it per batch sent cost more CPU
                # than it saved time.
                # (A stop that came since the loop's check had its wake-up cleared above:
                # it is looked at again here, before a wait that may be long.)
                if not busy and not self.work_stop.is_set():
                    idle.set()
                    wake.wait(every)
                    idle.clear()
        finally:
            idle.clear()
            sender.close()
            if box is not None:
                box.close()

    def _keep_island(self, membership: Membership) -> None:
        """Boxes taken from a node that did not stop cleanly are island boxes until it is
        live again or stopped (forgotten by the operator: `postroom node forget`)
        (engine/claims.py); the node's row says so (mode, detail)."""
        claims = self.claims
        if claims is None:
            return
        for name, peer in membership.taken_from.items():
            if (pk := box_of(name)) is not None:
                claims.enter(pk, peer)
        if self.islanded:
            # On its own, the node knows nothing of what the others did: every box it
            # holds is an island box until it is back on the database.
            for pk in membership.boxes():
                claims.enter(pk, ISLAND_PEER)
        claims.settle(membership.live | membership.stopped, membership.boxes())
        membership.mode = Mode.ISLAND if claims.island else Mode.NORMAL
        membership.island_detail = claims.detail()

    def _claims_loop(self) -> None:
        """Island mode's claims (engine/claims.py): read the sync box and claim, often
        while there is island work (a claim's round trip is what a customer waits)."""
        claims = self.claims
        assert claims is not None
        try:
            while not self.work_stop.is_set():
                nodes.keep_connection()
                busy = False
                try:
                    busy = claims.step()
                except (OperationalError, InterfaceError) as exc:
                    log.warning("claims: database error: %s", exc)
                    connection.close()
                except MailboxUnavailable as exc:
                    log.warning("claims: sync box: %s", exc)
                    claims.close()
                except Exception:
                    log.exception("claims step failed")
                    claims.close()
                self.work_stop.wait(0.25 if busy else 1.0)
        finally:
            claims.close()

    def _watch(self, box_pk: int) -> None:
        failures = 0
        quiet = 0
        reported = 0.0
        reported_backlog: int | None = None
        next_reconcile = 0.0
        session: ImapSession | None = None
        while not self.work_stop.is_set() and self.owns(box_pk):
            try:
                nodes.keep_connection()
                box = Mailbox.objects.get(pk=box_pk)
                # What the watcher writes about the box is fenced by its lease (0031).
                box.lease = self.membership.box_lease(box_pk) if self.membership else None  # type: ignore[attr-defined]
                wanted = (box.login, self.site.password_for(box.address), box.folder)
                if session is not None and (session.account.login, session.account.password, session.account.folder) != wanted:
                    session.close()  # the box's settings changed: log in again with them
                if session is None or not session.is_open:
                    session = ImapSession(self.site.imap_account(box.login, self.site.password_for(box.address), box.folder)).open()
                    log.info("watching %s (%s)", box.address, "IDLE" if session.has_idle and self.site.idle else "polling")
                # Until a pass finds nothing: mail that arrived during a pass may have
                # been announced in the middle of a FETCH, where the notice is lost.
                backlog = 0
                while (took := self.ingest_box(box, session)) and not self.work_stop.is_set():
                    backlog = backlog or took
                    self._own_session()
                    self._took_mail(box)
                    quiet = 0
                now = timezone.now()
                # The backlog as soon as it changes, the sync time at least every
                # HEALTH_EVERY: a write per pass that took mail was a write transaction
                # (SQLite's one write lock) beside the worker's, on every mail's path.
                if failures or backlog != reported_backlog or time.monotonic() - reported >= HEALTH_EVERY:
                    health.synced(box, now, backlog=backlog)
                    reported, reported_backlog = time.monotonic(), backlog
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
                    session.wait(timeout, stop=lambda: self.work_stop.is_set() or not self.owns(box_pk))
                else:
                    self.work_stop.wait(self.site.poll_interval)
            except Mailbox.DoesNotExist:
                break
            except Exception as exc:
                failures += 1
                wait = delay(failures, base=1.0, cap=WATCH_BACKOFF_CAP, jitter=random.random())
                if is_fence_error(exc):
                    self._refused(f"watcher {box_pk}", exc)
                elif reception.transient(exc):
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
                self.work_stop.wait(wait)
        if session is not None:
            session.close()


def watched_boxes() -> list[Mailbox]:
    return list(Mailbox.watched())


_WATCHED_IDS = Compiled(lambda: Mailbox.watched().values_list("pk"))


def watched_box_ids() -> list[int]:
    """The ids of `watched_boxes()` (the supervisor's, at every heartbeat)."""
    return [pk for (pk,) in _WATCHED_IDS.rows()]
