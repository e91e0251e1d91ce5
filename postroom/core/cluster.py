"""Several nodes on one database: who watches which mailbox, and who routes.

Pure: the engine (`engine/nodes.py`) reads the nodes and the leases from the database,
asks `plan()` what this node should take and give back, and carries that out by
compare-and-set, each node for itself, every second or so. Every node computes with the
same rule, so the nodes converge on one holder per lease without talking to each other:

* the **active** nodes are the live primaries; while none is live, the live secondaries
  (a secondary takes nothing while a primary's lease is live: the patent's fig. 4 slave);
* the **router** lease (one per database: routing is one in-memory index, decision 0030)
  goes to an active node, preferably one that holds it already;
* the **mailbox** leases are shared out evenly among the active nodes: a node holds at
  most its fair share (the number of boxes divided by the active nodes, rounded up; the
  lowest node ids take the rounding), takes free boxes up to it and gives back what is
  above it, so a node that joins gets its share and one that dies leaves its boxes free
  for the others;
* a node that is not active gives back everything.

A lease whose holder is not live any more is free: its holder is fenced out first
(`engine/nodes.py`), so nothing it still writes can land (decision 0031).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

ROUTER = "router"
MAILBOX = "mailbox:"


class Role(enum.StrEnum):
    # Takes its share of the mailboxes whenever it is live.
    PRIMARY = "primary"
    # Stands by: takes mailboxes only while no primary is live (fig. 4).
    SECONDARY = "secondary"


class Link(enum.StrEnum):
    """A node's database link as people asked for it (`Node.link`): `postroom demo` cuts
    and heals the loopback relay between a node and PostgreSQL to match."""

    UP = "up"
    CUT = "cut"


class Mode(enum.StrEnum):
    # On the shared database, holding leases.
    NORMAL = "normal"
    # Cut off from the database (or on it, beside a node that is): mail is claimed through
    # the sync mailbox before anything is sent for it (fig. 11, decision 0033).
    ISLAND = "island"
    # Stopped cleanly: its leases are free at once.
    STOPPED = "stopped"


def mailbox_lease(box_pk: int) -> str:
    return f"{MAILBOX}{box_pk}"


def box_of(lease: str) -> int | None:
    return int(lease[len(MAILBOX) :]) if lease.startswith(MAILBOX) else None


@dataclass(frozen=True)
class Peer:
    node_id: str
    role: Role
    # Its lease on the database is live (heartbeat renewed in time, not stopped).
    live: bool


@dataclass(frozen=True)
class Plan:
    take: tuple[str, ...] = ()
    release: tuple[str, ...] = ()


def active(peers: Iterable[Peer]) -> list[str]:
    """The nodes that work now, sorted: the live primaries, or the live secondaries while
    no primary is live."""
    live = [p for p in peers if p.live]
    primaries = sorted(p.node_id for p in live if p.role is Role.PRIMARY)
    return primaries or sorted(p.node_id for p in live if p.role is Role.SECONDARY)


def share(node_id: str, working: list[str], boxes: int) -> int:
    """How many mailboxes `node_id` may hold: an even share, the first nodes taking the
    remainder, so the shares add up to exactly the number of boxes."""
    if node_id not in working:
        return 0
    base, extra = divmod(boxes, len(working))
    return base + (1 if working.index(node_id) < extra else 0)


def plan(me: str, peers: Iterable[Peer], holders: Mapping[str, str | None], boxes: Iterable[int]) -> Plan:
    """What `me` should take and give back.

    `holders`: each lease name to its live holder (None: free, or held by a node that is
    not live). `boxes`: the primary keys of the watched mailboxes now.
    """
    working = active(peers)
    names = [ROUTER, *(mailbox_lease(pk) for pk in sorted(boxes))]
    mine = [n for n in names if holders.get(n) == me]
    if me not in working:
        return Plan(release=tuple(mine))
    take: list[str] = []
    release: list[str] = []
    # A router held by a node that is not active (a secondary beside a live primary) is
    # given back by that node; here only a free one is taken, by the first active node
    # that sees it free (the compare-and-set picks one if two try).
    if holders.get(ROUTER) is None:
        take.append(ROUTER)
    # Leases of boxes no longer configured are given back.
    known = set(names)
    release += [n for n, holder in holders.items() if holder == me and n not in known]
    my_boxes = [n for n in mine if n != ROUTER]
    allowed = share(me, working, len(names) - 1)
    if len(my_boxes) > allowed:
        release += my_boxes[allowed:]
    else:
        free = [n for n in names[1:] if holders.get(n) is None]
        take += free[: allowed - len(my_boxes)]
    return Plan(take=tuple(take), release=tuple(release))
