"""Island mode in the running engine, on the nodes still on PostgreSQL (decision 0036).

When a node takes a mailbox from a node that lost it without stopping cleanly (it died,
or it lost the database and may be working on its own), the box becomes an **island
box** of this node until that node is live on the database again. For an island box's
mail, the other node's last writes are unknown here and it may be answering the same
customers from its own store, so every unclosed interaction of the box is claimable, not
ours: this node claims each one through the sync box (`Claimer`, fig. 11) and the outbox
sends nothing for it (auto-response, forward, reply, notice) before the claim is won
(`admits`, asked by `outbox.send_one` right before an attempt).

A won claim fills the interaction's `claim_node` and `claim_time` (the claimant's clock
when it sent the winning claim: the patent's claim timestamp). When the node that lost
the box is live again, this node releases the claims of that box's emails and the box is
back in normal mode; so it is when the operator forgets that node (`postroom node
forget`: it is down for good, and its row says it stopped).

One `Claims` per engine: its thread runs `step()`; the sender threads call `admits()`.
The `Claimer` (not thread-safe) belongs to the claims' thread alone, which does the sync
box's I/O with no lock held; after each step it publishes, under a short lock, the time
until which this node may act on each claim it holds (`Claimer.safe_until`). The gate
reads that snapshot and never waits on the network. A snapshot that is a step old is
still safe: each time in it is bounded by this node's own clock, before which no other
node can win the claim (decision 0036, "the send gate").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from postroom.core.island import ChangeKind, EmailKey
from postroom.engine import claimloss
from postroom.engine.island import Claimer, IslandSettings, sync_clock
from postroom.engine.site import Site
from postroom.mail.smtp import SmtpSender
from postroom.mail.syncbox import SyncBox
from postroom.store.models import Interaction, Outgoing

log = logging.getLogger(__name__)

# The "peer" of every box of a node working on its local store (engine/localstore.py):
# the shared database itself, never live there, so its boxes stay island boxes.
ISLAND_PEER = "(the database)"


def email_key(ix: Interaction, box_address: str) -> EmailKey:
    """The email's name in claims: the same on every node that read the same bytes."""
    return EmailKey(box_address, ix.message_id, ix.raw_sha256)


class Claims:
    def __init__(self, site: Site, settings: IslandSettings, clock: Callable[[], datetime] | None = None) -> None:
        self.site = site
        self.clock = clock or (lambda: datetime.now(UTC))
        self.settings = settings
        self._lock = threading.Lock()
        # Island box pk -> the node whose lost lease made it one.
        self.boxes: dict[int, str] = {}
        self._claimer: Claimer | None = None  # the claims' thread's alone
        # Published by the claims' thread: email -> until when this node may send for it
        # (its own clock, the sync clock), and what the node's row shows.
        self._safe: dict[EmailKey, datetime] = {}
        self._held: list[str] = []
        # Set when this node is back from its local store: its claims there are released
        # by the claims' thread's next step (`release_own`).
        self._release_own = False

    # -- which boxes ----------------------------------------------------------------------
    def enter(self, box_pk: int, peer: str) -> None:
        with self._lock:
            if box_pk not in self.boxes:
                log.warning("mailbox %s taken from node %s, which did not stop cleanly: island mode "
                            "for it (claims first) until %s is back", box_pk, peer, peer)
            self.boxes.setdefault(box_pk, peer)

    def settle(self, back: Iterable[str], held: Iterable[int]) -> None:
        """After a membership tick: boxes whose node is `back` (live again, or stopped:
        cleanly, or forgotten by the operator, who confirms it is down: `postroom node
        forget`), or that this node no longer holds, are back in normal mode and their
        claims released."""
        live, held = set(back), set(held)
        with self._lock:
            back = [pk for pk, peer in self.boxes.items() if peer in live or pk not in held]
            for pk in back:
                log.info("mailbox %s: back in normal mode", pk)
                del self.boxes[pk]
            # Their claims are released by the claims' thread's next step (no longer wanted).

    @property
    def island(self) -> bool:
        return bool(self.boxes)

    def release_own(self) -> None:
        """Back on the database after an island on the local store, merged: the claims this
        node won there are released at the next step rather than left to expire."""
        with self._lock:
            self._release_own = True

    # -- the gate -------------------------------------------------------------------------
    def admits(self, row: Outgoing) -> bool:
        """May `row` be sent now? Always, for mail of no island box; else only while this
        node holds the email's claim (`Claimer.may_send`)."""
        if not self.boxes or row.interaction_id is None or claimloss.ungated(row):
            return True
        ix = Interaction.objects.select_related("mailbox").get(pk=row.interaction_id)
        with self._lock:
            if ix.mailbox_id not in self.boxes:
                return True
            # Not in the snapshot: not won yet (the claims' thread claims every unclosed
            # interaction of the island boxes), lost, or released.
            safe = self._safe.get(email_key(ix, ix.mailbox.address))
        return safe is not None and sync_clock() <= safe

    def island_row(self, row: Outgoing) -> bool:
        """Is `row` mail for an island box's email? Then the journal box is asked before it
        is sent: the other side may have sent it already (outbox.send_one)."""
        if not self.boxes or row.interaction_id is None:
            return False
        box = (
            Interaction.objects.filter(pk=row.interaction_id)
            .values_list("mailbox_id", flat=True)
            .first()
        )
        with self._lock:
            return box in self.boxes

    # -- the claims' thread ---------------------------------------------------------------
    def step(self) -> bool:
        """Claim every unclosed interaction of the island boxes, read the sync box, send
        what is owed; record won claims, end lost ones. True while there is island work.
        Runs on the claims' thread only; no lock is held during the sync box's I/O."""
        with self._lock:
            boxes = dict(self.boxes)
            release_own = self._release_own
        if not boxes and not release_own and (self._claimer is None or not self._claimer.wanted):
            return False
        wanted = {
            email_key(ix, ix.mailbox.address)
            for ix in Interaction.objects.filter(mailbox_id__in=list(boxes), closed_at=None).select_related("mailbox")
        }
        claimer = self._open()
        for key in wanted:
            claimer.want(key)
        if release_own:
            # The claimer that held them went with the island's threads: a fresh one reads
            # the box and releases what this node holds there and does not want here.
            released = claimer.release_unwanted()
            log.info("back from the local store: %d claim(s) released", len(released))
            with self._lock:
                self._release_own = False
            if not boxes and not claimer.wanted:
                return False
        # Closed here (replied, cleaned up), or its box back in normal mode: released.
        gone = claimer.wanted - wanted
        if gone:
            with self._lock:
                for key in gone:
                    self._safe.pop(key, None)
            for key in sorted(gone):
                claimer.release(key)
        try:
            changes = claimer.step()
        finally:
            self._publish(claimer)
        for change in changes:
            claim = change.claim
            if change.kind is ChangeKind.WON and claim.node == self.site.node_id:
                Interaction.objects.filter(
                    mailbox__address=claim.email.mailbox, message_id=claim.email.message_id,
                    raw_sha256=claim.email.sha256, claim_node="",
                ).update(claim_node=claim.node, claim_time=claim.local_time)
                log.info("claim won: %s", claim.email)
        for change in changes:
            if change.kind is ChangeKind.EXPIRED and change.claim.node == self.site.node_id:
                log.warning("claim expired before this node re-asserted it: %s; nothing is sent for it "
                            "until it is won again", change.claim.email)
        self._end_lost(claimer)
        return True

    def _end_lost(self, claimer: Claimer) -> None:
        """Another node holds the claim of an email this node wants: it handles it, and this
        node ends its interaction and tells the agent (`engine/claimloss.py`). Judged from
        the book's state, not from this reading's changes, so a claim won before this node
        wanted the email counts too; retried each step until the interaction is closed."""
        me = self.site.node_id
        lost = {key: owner for key in claimer.wanted if (owner := claimer.book.owner(key)) not in (None, me)}
        now = self.clock()
        for key, owner in sorted(lost.items()):
            claimloss.end_lost(self.site, key, owner, now, claimer.book.live[key].local_time)
        claimloss.sweep()

    def _publish(self, claimer: Claimer) -> None:
        """What the gate and the node's row read, after a step (or a failed one)."""
        safe = {key: until for key in claimer.wanted if (until := claimer.safe_until(key)) is not None}
        held = [f"{key.mailbox} {key.message_id}" for key in sorted(claimer.wanted) if claimer.book.owner(key) == claimer.node]
        with self._lock:
            self._safe, self._held = safe, held

    def detail(self) -> dict[str, Any]:
        """What the node's row shows (the nodes page reads `claims`): the emails whose
        claims it holds ("<mailbox> <Message-ID>") and its island boxes."""
        with self._lock:
            if not self.boxes:
                return {}
            return {"claims": list(self._held), "island_boxes": sorted(self.boxes)}

    def close(self) -> None:
        """Drop the sync box's connections (claims' thread; reopened by the next step).
        The published times stay: each is bounded by this node's own clock."""
        if self._claimer is not None:
            self._claimer.box.close()
            self._claimer.smtp.close()
            self._claimer = None

    def _open(self) -> Claimer:
        if self._claimer is None:
            site, settings = self.site, self.settings
            box = SyncBox(site.imap_account(settings.sync_address, site.password_for(settings.sync_address))).open()
            self._claimer = Claimer(site.node_id, settings, box, SmtpSender(site.smtp), clock=sync_clock)
        return self._claimer


__all__ = ["ISLAND_PEER", "Claims", "email_key"]
