"""Island mode's claim protocol (patent fig. 11, 602-620) as a pure state machine.

When the nodes cannot share the database, they arbitrate who handles each email through
a sync mailbox on the mail server: every node sends its claims there, and every node reads
the box in UID order. The mail server is the one party all nodes still reach, and its
arrival order (UID) and arrival stamps (INTERNALDATE) are the same for every reader. So
the state here is a pure function of the prefix of the stream a node has read: two nodes
that have read the same prefix agree on every owner, by construction.

The rules, per email (identified by mailbox, Message-ID and the sha256 of its raw bytes,
so a resent copy with the same Message-ID is a different email):

- the first claim that arrives while nobody holds a live claim wins (602-610); a claim by
  another node while a live claim stands is lost (604 "already claimed": no action);
- the holder re-asserts its claim (RECLAIM) before it expires; a re-claim or claim by
  the holder renews it (618 -> 612). A re-claim for an unclaimed email counts as a claim
  (620: the claim entry is updated from the message), so a reader that starts late
  still learns of claims that live on;
- a claim expires when the server time has moved more than `expiry` past its last
  assertion (616). Server time is the latest arrival stamp seen on the box: claims,
  re-claims, releases and time-sync messages all move it, which is what time-sync
  messages are for (the patent's "passage of time agreed by both servers");
- the holder may release a claim (after the merge back to normal mode, or when the
  interaction is finished); a release by anyone else is ignored.

Expiry is judged on arrival stamps only: a node's own clock never decides who owns what.
The claimant's local time travels in the message for `claim_time` (the patent's claim
timestamp "represents the local time at the time the claim email was transmitted").

What a holder can know: it learns that its claim was renewed only by reading its
re-claim back. It must stop acting on an email when it cannot confirm a renewal in time
(`Holding.safe_until`); that margin, not this module, keeps a slow reader from acting on
a claim the others already count as expired. Decision 0036 has the design and its limits.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

# The version of the JSON body; a reader ignores bodies of versions it does not know.
FORMAT = 1


class SyncKind(enum.Enum):
    CLAIM = "claim"
    RECLAIM = "reclaim"
    TIME_SYNC = "time-sync"
    RELEASE = "release"


class ChangeKind(enum.Enum):
    WON = "won"  # a claim became the live claim
    EXPIRED = "expired"  # a live claim was not re-asserted in time
    RELEASED = "released"  # the holder gave it up


@dataclass(frozen=True, order=True)
class EmailKey:
    """One email: the box it arrived in, its Message-ID and the sha256 of its raw bytes."""

    mailbox: str
    message_id: str
    sha256: str


@dataclass(frozen=True)
class SyncMessage:
    """One message of the sync box as the protocol sees it. `uid` and `arrived` come from
    the mail server (UID, INTERNALDATE); the rest from the body the claimant wrote."""

    uid: int
    arrived: datetime
    kind: SyncKind
    node: str
    local_time: datetime
    email: EmailKey | None = None  # None only for TIME_SYNC


@dataclass(frozen=True)
class Claim:
    email: EmailKey
    node: str
    uid: int  # the message that won it
    local_time: datetime  # the claimant's clock when it sent the winning claim
    won_at: datetime  # arrival stamp of the winning claim
    asserted: datetime  # arrival stamp of the latest assertion


@dataclass(frozen=True)
class Change:
    kind: ChangeKind
    claim: Claim
    uid: int  # the sync message whose reading made the change


@dataclass
class ClaimBook:
    """One node's reading of the sync box. Feed it every message in UID order (`apply`);
    messages at or below the last UID read are ignored, so re-reading is harmless."""

    expiry: timedelta
    live: dict[EmailKey, Claim] = field(default_factory=dict)
    last_uid: int = 0
    server_now: datetime | None = None
    # Every message read, by email, while that email may still matter to a later reader
    # (see `expungeable`).
    _uids_by_email: dict[EmailKey, list[int]] = field(default_factory=dict)
    _arrived: dict[int, datetime] = field(default_factory=dict)

    def owner(self, email: EmailKey) -> str | None:
        claim = self.live.get(email)
        return claim.node if claim else None

    def apply(self, message: SyncMessage) -> list[Change]:
        """Read one message; returns what it changed, expiries first."""
        if message.uid <= self.last_uid:
            return []
        self.last_uid = message.uid
        self._arrived[message.uid] = message.arrived
        # The server's clock may step back; server time never does.
        if self.server_now is None or message.arrived > self.server_now:
            self.server_now = message.arrived
        changes = self._expire(message.uid)
        email = message.email
        if email is None or message.kind is SyncKind.TIME_SYNC:
            return changes
        self._uids_by_email.setdefault(email, []).append(message.uid)
        held = self.live.get(email)
        if message.kind is SyncKind.RELEASE:
            if held is not None and held.node == message.node:
                del self.live[email]
                changes.append(Change(ChangeKind.RELEASED, held, message.uid))
            return changes
        # CLAIM or RECLAIM.
        if held is None:
            claim = Claim(
                email,
                message.node,
                message.uid,
                message.local_time,
                message.arrived,
                message.arrived,
            )
            self.live[email] = claim
            changes.append(Change(ChangeKind.WON, claim, message.uid))
        elif held.node == message.node:
            self.live[email] = Claim(
                email,
                held.node,
                held.uid,
                held.local_time,
                held.won_at,
                max(held.asserted, message.arrived),
            )
        # else: a claim by another node while a live one stands is lost; nothing changes.
        return changes

    def apply_all(self, messages: Iterable[SyncMessage]) -> list[Change]:
        changes: list[Change] = []
        for message in sorted(messages, key=lambda m: m.uid):
            changes.extend(self.apply(message))
        return changes

    def _expire(self, uid: int) -> list[Change]:
        assert self.server_now is not None
        gone = [c for c in self.live.values() if self.server_now - c.asserted > self.expiry]
        for claim in sorted(gone, key=lambda c: c.uid):
            del self.live[claim.email]
        return [Change(ChangeKind.EXPIRED, c, uid) for c in sorted(gone, key=lambda c: c.uid)]

    # -- what a node does next -----------------------------------------------------
    def held_by(self, node: str) -> list[Claim]:
        return sorted((c for c in self.live.values() if c.node == node), key=lambda c: c.uid)

    def reassert_due(self, node: str, reassert: timedelta) -> list[EmailKey]:
        """The emails `node` holds whose last assertion is `reassert` or more behind
        server time: re-claim them now."""
        if self.server_now is None:
            return []
        return [c.email for c in self.held_by(node) if self.server_now - c.asserted >= reassert]

    def expungeable(self) -> list[int]:
        """UIDs a node may delete from the sync box without changing what any later
        reader concludes: messages older than `expiry` (server time) about an email
        that has no live claim, and time-sync messages older than `expiry` but the
        newest. Every message of a live claim's email is kept, so a reader that starts
        from the oldest kept message rebuilds the same live claims (when the server's
        arrival stamps rise with UIDs, as they do on one server)."""
        if self.server_now is None:
            return []
        horizon = self.server_now - self.expiry
        mentioned = {uid for uids in self._uids_by_email.values() for uid in uids}
        out: list[int] = []
        for email, uids in list(self._uids_by_email.items()):
            # (A live claim was asserted after the horizon, so its email is always kept.)
            if any(self._arrived[u] >= horizon for u in uids):
                continue
            out.extend(uids)
            del self._uids_by_email[email]
        syncs = sorted(u for u in self._arrived if u not in mentioned)
        out.extend(u for u in syncs[:-1] if self._arrived[u] < horizon)
        for uid in out:
            self._arrived.pop(uid, None)
        return sorted(out)


@dataclass(frozen=True)
class Holding:
    """How long a holder may act on a claim by its own clock: its last assertion was
    sent at `sent_local` (local time) and read back; the others count the claim expired
    `expiry` after its arrival. The arrival is after the send, so acting until
    `sent_local + expiry - margin` is safe as long as the local clock runs no slower
    than the server's by more than `margin` over that span."""

    sent_local: datetime
    expiry: timedelta
    margin: timedelta

    @property
    def safe_until(self) -> datetime:
        return self.sent_local + self.expiry - self.margin


# -- the wire format (the body of a sync message) ---------------------------------------


class Garbled(ValueError):
    """A message of the sync box that is not a sync message we can read; its text says why."""


def encode(kind: SyncKind, node: str, local_time: datetime, email: EmailKey | None = None) -> bytes:
    """The JSON body of a sync message."""
    if (email is None) != (kind is SyncKind.TIME_SYNC):
        raise ValueError(f"{kind.value} needs {'no' if kind is SyncKind.TIME_SYNC else 'an'} email")
    body: dict[str, object] = {
        "v": FORMAT,
        "kind": kind.value,
        "node": node,
        "local_time": local_time.isoformat(),
    }
    if email is not None:
        body["email"] = {
            "mailbox": email.mailbox,
            "message_id": email.message_id,
            "sha256": email.sha256,
        }
    return json.dumps(body, sort_keys=True).encode()


def decode(uid: int, arrived: datetime, body: bytes) -> SyncMessage:
    """A sync message from its body and the server's UID and arrival stamp; raises
    `Garbled` with the reason for anything else."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Garbled(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise Garbled("not a JSON object")
    if data.get("v") != FORMAT:
        raise Garbled(f"unknown format version {data.get('v')!r}")
    try:
        kind = SyncKind(data["kind"])
        node = data["node"]
        local_time = datetime.fromisoformat(data["local_time"])
        raw_email = data.get("email")
        email = None
        if raw_email is not None:
            email = EmailKey(
                str(raw_email["mailbox"]), str(raw_email["message_id"]), str(raw_email["sha256"])
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise Garbled(f"missing or bad field: {exc!r}") from exc
    if not isinstance(node, str) or not node:
        raise Garbled("no node id")
    if local_time.tzinfo is None:
        raise Garbled("local_time has no time zone")
    if (email is None) != (kind is SyncKind.TIME_SYNC):
        raise Garbled(f"{kind.value} with{'' if email else 'out'} an email")
    return SyncMessage(uid, arrived, kind, node, local_time, email)


__all__ = [
    "Change",
    "ChangeKind",
    "Claim",
    "ClaimBook",
    "EmailKey",
    "Garbled",
    "Holding",
    "SyncKind",
    "SyncMessage",
    "decode",
    "encode",
]
