"""The cut-off node's own island mode, its pure parts (decision 0036, "What an islanded
node knows"; issue 10).

Two things every node must agree on without the database:

* **The Message-ID of what Postroom writes to a customer for one email.** The
  auto-response and the reply of an email carry a Message-ID derived from the email's
  name in claims (mailbox, Message-ID, sha256 of the raw bytes), so a node that starts
  over from the boxes (the islanded node on its empty local store) mints the very ID the
  other side already sent, and the journal box (decision 0007) answers "already sent?"
  for it. Without a name (no Message-ID or no hash: mail from before migration 0012) it
  falls back to a random one, as before.
* **Which copy of an interaction survives the merge** when the islanded node writes its
  local records back into PostgreSQL (`merge`), and whether the island's lifecycle state
  goes with it (`carries`: it routed, forwarded or answered the email on its own).
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass


def answer_message_id(
    kind: str, mailbox: str, message_id: str, sha256: str, domain: str
) -> str | None:
    """`<kind>.<32 hex>@domain`, the same on every node for the same email; None when the
    email has no stable name (the caller mints a random one)."""
    if not message_id or not sha256:
        return None
    digest = hashlib.sha256(
        f"{kind}\n{mailbox.lower()}\n{message_id}\n{sha256}".encode()
    ).hexdigest()[:32]
    return f"<{kind}.{digest}@{domain}>"


class Merge(enum.Enum):
    """What the merge does with one local record."""

    INSERT = "insert"  # PostgreSQL never saw the email: the local record is written there
    TAKE_OVER = "take_over"  # both know it, the claim is ours: the shared record gets our facts
    CLAIMED_ELSEWHERE = "claimed_elsewhere"  # both know it, another node's claim: ours is closed
    # Both know it, the claim is ours, and the node that lost it to us closed the shared
    # record as claimed elsewhere: it is reopened (lifecycle `ClaimReturned`) and continues.
    REOPEN = "reopen"
    LEAVE = "leave"  # nothing of ours to bring (never claimed here, or closed there already)


@dataclass(frozen=True)
class Copy:
    """One side's record of an email, as much of it as the merge decides by."""

    claim_node: str
    closed: bool
    # Closed because another node won its claim (outcome claimed_elsewhere).
    claimed_elsewhere: bool = False
    # This side gave the email to an agent (routed it at least once): an island that did
    # so forwarded it, perhaps took the reply, and its lifecycle state must go with it
    # (decision 0045).
    progressed: bool = False


def merge(me: str, local: Copy, shared: Copy | None) -> Merge:
    """Which copy survives: the claim holder's (decision 0036).

    A local record this node never won the claim of was never acted on here (nothing is
    sent before the claim is won), so it brings nothing. One it won is written to
    PostgreSQL if that has no copy; if it has one, the shared record keeps its row (one
    record per interaction, its GUID unchanged) and takes our claim and what we sent,
    unless it is closed already (its outcome stands) or another node holds its claim
    there (its claim was won after ours expired: its copy stands, ours is closed as
    claimed elsewhere).

    The one closed record that does not stand is one the node on the database closed as
    claimed elsewhere because it lost the claim to us: it is reopened, and continues
    where our copy is (`carries`): queued for the nodes on the database to route when we
    only sent the auto-response, else in our copy's state (routed, forwarded, answered:
    decision 0045). That node names the winner on the record (`claim_node`); it read our
    win from the sync box, which we may not have done ourselves before the link came back
    (our claim in flight): then our copy says nobody's, we sent nothing for it, and it is
    reopened all the same. Never when our copy closed before we gave it to an agent (it
    vanished here); one we handled and then closed brings its outcome."""
    if shared is not None and shared.closed and shared.claimed_elsewhere:
        won = (shared.claim_node or local.claim_node) == me
        return Merge.REOPEN if won and (not local.closed or local.progressed) else Merge.LEAVE
    if local.claim_node != me:
        return Merge.LEAVE
    if shared is None:
        return Merge.INSERT
    if shared.closed:
        return Merge.LEAVE
    if shared.claim_node not in ("", me):
        return Merge.CLAIMED_ELSEWHERE
    return Merge.TAKE_OVER


def carries(action: Merge, local: Copy) -> bool:
    """Does the surviving record take our copy's lifecycle state (agent, answer time,
    timers, deliveries, outcome) and its outgoing mail (decision 0045)? When the merge
    writes our copy at all and we gave the email to an agent: what we forwarded and
    answered must not be done again from an older state. Otherwise only our claim and
    what we sent cross over (the auto-response), and the nodes on the database route it."""
    return action in (Merge.INSERT, Merge.TAKE_OVER, Merge.REOPEN) and local.progressed
