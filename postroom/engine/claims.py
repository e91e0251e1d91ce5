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
back in normal mode.

One `Claims` per engine: its thread runs `step()`; the sender threads call `admits()`.
The claim book is read and written under one lock (the `Claimer` is not thread-safe).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from postroom.core.island import ChangeKind, EmailKey
from postroom.engine.island import Claimer, IslandSettings
from postroom.engine.site import Site
from postroom.mail.smtp import SmtpSender
from postroom.mail.syncbox import SyncBox
from postroom.store.models import Interaction, Mailbox, Outgoing

log = logging.getLogger(__name__)

# The "peer" of every box of a node working on its local store (engine/localstore.py):
# the shared database itself, never live there, so its boxes stay island boxes.
ISLAND_PEER = "(the database)"


def email_key(ix: Interaction, box_address: str) -> EmailKey:
    """The email's name in claims: the same on every node that read the same bytes."""
    return EmailKey(box_address, ix.message_id, ix.raw_sha256)


class Claims:
    def __init__(self, site: Site, settings: IslandSettings) -> None:
        self.site = site
        self.settings = settings
        self._lock = threading.Lock()
        # Island box pk -> the node whose lost lease made it one.
        self.boxes: dict[int, str] = {}
        self._claimer: Claimer | None = None

    # -- which boxes ----------------------------------------------------------------------
    def enter(self, box_pk: int, peer: str) -> None:
        with self._lock:
            if box_pk not in self.boxes:
                log.warning("mailbox %s taken from node %s, which did not stop cleanly: island mode "
                            "for it (claims first) until %s is back", box_pk, peer, peer)
            self.boxes.setdefault(box_pk, peer)

    def settle(self, live: Iterable[str], held: Iterable[int]) -> None:
        """After a membership tick: boxes whose node is live again, or that this node no
        longer holds, are back in normal mode and their claims released."""
        live, held = set(live), set(held)
        with self._lock:
            back = [pk for pk, peer in self.boxes.items() if peer in live or pk not in held]
            for pk in back:
                log.info("mailbox %s: back in normal mode", pk)
                del self.boxes[pk]
            if back and self._claimer is not None:
                addresses = set(Mailbox.objects.filter(pk__in=back).values_list("address", flat=True))
                for key in sorted(self._claimer.wanted):
                    if key.mailbox in addresses:
                        self._claimer.release(key)

    @property
    def island(self) -> bool:
        return bool(self.boxes)

    # -- the gate -------------------------------------------------------------------------
    def admits(self, row: Outgoing) -> bool:
        """May `row` be sent now? Always, for mail of no island box; else only while this
        node holds the email's claim (`Claimer.may_send`)."""
        if not self.boxes or row.interaction_id is None:
            return True
        ix = Interaction.objects.select_related("mailbox").get(pk=row.interaction_id)
        with self._lock:
            if ix.mailbox_id not in self.boxes:
                return True
            if self._claimer is None:
                return False
            key = email_key(ix, ix.mailbox.address)
            self._claimer.want(key)
            return self._claimer.may_send(key)

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
        what is owed; record won claims. True while there is island work."""
        with self._lock:
            boxes = dict(self.boxes)
            if not boxes and (self._claimer is None or not self._claimer.wanted):
                return False
        wanted = [
            email_key(ix, ix.mailbox.address)
            for ix in Interaction.objects.filter(mailbox_id__in=list(boxes), closed_at=None).select_related("mailbox")
        ]
        with self._lock:
            claimer = self._open()
            for key in wanted:
                claimer.want(key)
            # Closed here (replied, cleaned up), or its box back in normal mode: released.
            for key in sorted(claimer.wanted - set(wanted)):
                claimer.release(key)
            changes = claimer.step()
        for change in changes:
            claim = change.claim
            if change.kind is ChangeKind.WON and claim.node == self.site.node_id:
                Interaction.objects.filter(
                    mailbox__address=claim.email.mailbox, message_id=claim.email.message_id,
                    raw_sha256=claim.email.sha256, claim_node="",
                ).update(claim_node=claim.node, claim_time=claim.local_time)
                log.info("claim won: %s", claim.email)
        for key in claimer.lost(changes):
            log.warning("claim lost to another node: %s; nothing is sent for it here", key)
        return True

    def detail(self) -> dict[str, Any]:
        """What the node's row shows (the nodes page reads `claims`): the emails whose
        claims it holds ("<mailbox> <Message-ID>") and its island boxes."""
        with self._lock:
            if not self.boxes:
                return {}
            claimer, me = self._claimer, self.site.node_id
            held = [] if claimer is None else [
                f"{key.mailbox} {key.message_id}" for key in sorted(claimer.wanted) if claimer.book.owner(key) == me
            ]
            return {"claims": held, "island_boxes": sorted(self.boxes)}

    def close(self) -> None:
        with self._lock:
            if self._claimer is not None:
                self._claimer.box.close()
                self._claimer.smtp.close()
                self._claimer = None

    def _open(self) -> Claimer:
        if self._claimer is None:
            site, settings = self.site, self.settings
            box = SyncBox(site.imap_account(settings.sync_address, site.password_for(settings.sync_address))).open()
            self._claimer = Claimer(site.node_id, settings, box, SmtpSender(site.smtp))
        return self._claimer


__all__ = ["ISLAND_PEER", "Claims", "email_key"]
