"""This node's place among the nodes, kept by the engine's supervisor thread.

Every `tick` (each `Site.heartbeat` seconds): renew the node's lease, look at the nodes
and the leases, give back what `core/cluster.py` says this node should not hold (after the
engine has stopped the work that depends on it) and take what it should. What the node
holds is read back from the database at every tick, never remembered: a lease this node
thinks it gave back but the database still names it for cannot stay unwatched.

A node that finds its lease gone (`nodes.Fenced`: paused past it, fenced out by another
node, the database away for longer than the lease) stops all its work and registers
again with a new epoch; what it wrote meanwhile under the old epoch was refused by the
database (decision 0031).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from postroom.core.cluster import ROUTER, Mode, box_of, mailbox_lease
from postroom.engine import nodes
from postroom.engine.site import Site

log = logging.getLogger(__name__)

Releasing = Callable[[str], AbstractContextManager[Any]]


class Membership:
    def __init__(self, site: Site) -> None:
        self.site = site
        self.ticket: nodes.Ticket | None = None
        # Lease name → token, as the database said at the last tick.
        self.held: dict[str, int] = {}
        self._renewed = 0.0
        # Island mode (decision 0036), kept by the engine: NORMAL or ISLAND, as the heartbeat
        # records it on the node's row (the console shows it), and what detail() adds.
        self.mode = Mode.NORMAL
        self.island_detail: dict[str, Any] = {}
        # At the last tick: each lease taken from a node that lost it without a clean stop,
        # by the name of that node, and which nodes were live.
        self.taken_from: dict[str, str] = {}
        self.live: set[str] = set()
        # ... and which had stopped: cleanly, or forgotten by the operator (`postroom node
        # forget`): either way not working on its own, so no reason for island mode.
        self.stopped: set[str] = set()

    @property
    def node_id(self) -> str:
        return self.site.node_id

    def join(self) -> nodes.Ticket:
        """Register (NodeRefused if this node may not run); nothing is held yet."""
        self.held = {}
        self.ticket = nodes.register(self.site.node_id, self.site.role, self.site.node_lease)
        self._renewed = time.monotonic()
        return self.ticket

    def leave(self) -> None:
        """A clean stop: every lease is free for the others at once."""
        ticket, self.ticket = self.ticket, None
        self.held = {}
        if ticket is not None:
            nodes.stop(ticket)
        nodes.forget()

    def stand_down(self) -> None:
        """Our lease is gone: hold nothing, write as nobody until registered again."""
        self.ticket = None
        self.held = {}
        nodes.forget()

    def expired(self) -> bool:
        """By our own reckoning (the database may be away): the lease has run out."""
        return self.ticket is not None and time.monotonic() - self._renewed > self.site.node_lease.total_seconds()

    def tick(self, boxes: Iterable[int], releasing: Releasing = lambda name: nullcontext()) -> None:
        """Renew, then give back and take leases; `releasing(name)` is entered around
        each give-back (the engine stops what depends on the lease before it)."""
        ticket = self.ticket
        assert ticket is not None
        nodes.heartbeat(ticket, self.detail(), self.mode)
        self._renewed = time.monotonic()
        boxes = sorted(boxes)
        view = nodes.look()
        self.held = {
            name: lease.token
            for name, lease in view.leases.items()
            if lease.node_id == ticket.node_id and lease.epoch == ticket.epoch
        }
        plan = nodes.plan_for(ticket, view, boxes)
        self.live = {node_id for node_id, node in view.nodes.items() if node.live}
        self.stopped = {node_id for node_id, node in view.nodes.items() if node.stopped_at is not None}
        self.taken_from = {}
        for name in plan.release:
            with releasing(name):
                self.held.pop(name, None)
                nodes.release(ticket, name)
            log.info("node %s gave back %s", ticket.node_id, name)
        for name in plan.take:
            lost_by = nodes.lost_holder(ticket, name, view)
            token = nodes.take(ticket, name, view)
            if token is not None:
                if lost_by is not None:
                    self.taken_from[name] = lost_by
                self.held[name] = token
                log.info("node %s took %s (token %d)", ticket.node_id, name, token)

    # -- what we hold -------------------------------------------------------------------
    @property
    def router(self) -> bool:
        return ROUTER in self.held

    def owns(self, box_pk: int) -> bool:
        return mailbox_lease(box_pk) in self.held

    def box_lease(self, box_pk: int) -> tuple[str, str, int] | None:
        """(lease name, node id, token) for the watcher's fenced writes."""
        name = mailbox_lease(box_pk)
        token = self.held.get(name)
        return None if token is None else (name, self.site.node_id, token)

    def boxes(self) -> list[int]:
        return sorted(pk for name in self.held if (pk := box_of(name)) is not None)

    def detail(self) -> dict[str, Any]:
        return {"boxes": self.boxes(), "router": self.router, **self.island_detail}
