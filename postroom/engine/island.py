"""One node's side of island mode's claim protocol: a step function over the sync box.

`Claimer.step()` reads the sync box from where it stopped (`mail/syncbox.py`), feeds the
claim book (`core/island.py`, which decides every owner), then sends what this node owes
the others: a claim for each email it wants that nobody holds, a re-claim for each email
it holds whose last assertion is `claim_reassert` behind server time, and a time-sync
when it has sent nothing for that long (so the others' server time keeps moving and
expiries are judged without this node's clock).

`may_send(email)` is the gate for island mode's rule "nothing is sent for an email before
its claim is won": true only while this node's claim is live as read from the box AND its
last assertion, by this node's own clock, is young enough that no other node can yet
count it expired (`Holding`).

In the running engine, `engine/claims.py` drives one `Claimer` per node for its island
boxes and puts `may_send` in front of the outbox (decision 0036). The four values of
`IslandSettings` come from `[cluster]` (`IslandSettings.of`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from postroom.config import Config
from postroom.core.island import (
    Change,
    ChangeKind,
    ClaimBook,
    EmailKey,
    Holding,
    SyncKind,
)
from postroom.mail.smtp import SmtpSender
from postroom.mail.syncbox import SyncBox, send

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IslandSettings:
    sync_address: str
    sender: str  # the From and envelope sender of this node's sync mails
    claim_expiry: timedelta = timedelta(minutes=60)  # the patent's 60 minutes
    claim_reassert: timedelta = timedelta(minutes=20)
    # How much slower than the server's this node's clock may run over one expiry.
    clock_margin: timedelta = timedelta(seconds=30)

    def __post_init__(self) -> None:
        # A holder re-claims every `claim_reassert` and may act until `clock_margin`
        # before its last assertion could expire: both must fit inside one expiry.
        if self.claim_reassert + self.clock_margin >= self.claim_expiry:
            raise ValueError("claim_reassert + clock_margin must be shorter than claim_expiry")

    @classmethod
    def of(cls, config: Config) -> IslandSettings | None:
        """The site's island settings ([cluster], docs/configuration.md); None when island
        mode is off. Sync mail is written from the outbound box, the engine's SMTP login."""
        c = config.cluster
        if c.sync_address is None:
            return None
        expiry = timedelta(seconds=c.claim_expiry_seconds)
        # A clock's drift is a rate: 30 s over the patent's hour, in proportion for others.
        return cls(c.sync_address, config.outbound.address, expiry,
                   timedelta(seconds=c.claim_reassert_seconds), expiry / 120)


def sync_clock() -> datetime:
    """This node's clock for claims: real UTC time (never a test's skipped-ahead clock),
    since it is compared with the server's arrival stamps' passage of time."""
    return datetime.now(UTC)


@dataclass
class Claimer:
    node: str
    settings: IslandSettings
    box: SyncBox
    smtp: SmtpSender
    clock: Callable[[], datetime] = sync_clock
    book: ClaimBook = field(init=False)
    wanted: set[EmailKey] = field(default_factory=set)
    # Claims sent and not yet read back, by local send time (resent when no answer).
    pending: dict[EmailKey, datetime] = field(default_factory=dict)
    # Local send time of this node's latest assertion read back, per email it holds.
    asserted_local: dict[EmailKey, datetime] = field(default_factory=dict)
    last_sent: datetime | None = None  # the last sync mail this node tried to send
    last_uid: int = 0
    uidvalidity: int = 0

    def __post_init__(self) -> None:
        self.book = ClaimBook(self.settings.claim_expiry)

    def want(self, email: EmailKey) -> None:
        """This node would like to handle `email`; it claims it at the next step."""
        self.wanted.add(email)

    def release(self, email: EmailKey) -> None:
        """Give up a claim this node holds (the interaction is done, or back to normal)."""
        self.wanted.discard(email)
        if self.book.owner(email) == self.node:
            self._send(SyncKind.RELEASE, email)

    def release_unwanted(self) -> list[EmailKey]:
        """Read the box and release every claim this node holds but does not want: a node
        back on the database after working on its local store (decision 0036) drops the
        claims it won there, so that another island need not wait for them to expire.
        Sends nothing else (no claim, no time-sync)."""
        self._read()
        strays = sorted(e for e, c in self.book.live.items() if c.node == self.node and e not in self.wanted)
        for email in strays:
            self.release(email)
        return strays

    def may_send(self, email: EmailKey) -> bool:
        until = self.safe_until(email)
        return until is not None and self.clock() <= until

    def safe_until(self, email: EmailKey) -> datetime | None:
        """Until when this node may act on `email` by its own clock (`Holding`); None when
        it does not hold the claim in its reading, or has not read its assertion back."""
        if self.book.owner(email) != self.node or email not in self.asserted_local:
            return None
        return Holding(self.asserted_local[email], self.settings.claim_expiry, self.settings.clock_margin).safe_until

    def lost(self, changes: list[Change]) -> list[EmailKey]:
        """The emails this node held, or wanted and saw another win, in `changes`."""
        out = set()
        for c in changes:
            mine = c.claim.node == self.node
            if (c.kind is ChangeKind.EXPIRED and mine) or (
                c.kind is ChangeKind.WON and not mine and c.claim.email in self.wanted
            ):
                out.add(c.claim.email)
        return sorted(out)

    def step(self) -> list[Change]:
        """Read, decide, send what is owed; returns what changed in this reading."""
        changes = self._read()
        now = self.clock()
        owed = [(SyncKind.CLAIM, e) for e in sorted(self.wanted) if self.book.owner(e) is None]
        due = self.book.reassert_due(self.node, self.settings.claim_reassert)
        owed += [(SyncKind.RECLAIM, e) for e in due if e in self.wanted]
        for kind, email in owed:
            # One message in flight per email: resent only when it never came back.
            sent = self.pending.get(email)
            if sent is None or now - sent >= self.settings.claim_reassert:
                self._send(kind, email)
                self.pending[email] = now
        if self.last_sent is None or now - self.last_sent >= self.settings.claim_reassert:
            self._send(SyncKind.TIME_SYNC)
        gone = self.book.expungeable()
        if gone:
            self.box.expunge(gone)
        return changes

    def _read(self) -> list[Change]:
        read = self.box.read_after(self.last_uid)
        if self.box.uidvalidity != self.uidvalidity:
            # A rebuilt box (RFC 3501 UIDVALIDITY): read it again from the start.
            if self.uidvalidity:
                log.warning("sync box UIDVALIDITY changed; reading it again")
                self.book = ClaimBook(self.settings.claim_expiry)
                read = self.box.read_after(0)
            self.uidvalidity = self.box.uidvalidity
        self.last_uid = read.last_uid
        changes: list[Change] = []
        for m in read.messages:
            now_changed = self.book.apply(m)
            changes.extend(now_changed)
            for c in now_changed:
                if c.kind is not ChangeKind.WON and c.claim.node == self.node:
                    self.asserted_local.pop(c.claim.email, None)
            if m.node == self.node and m.email is not None:
                self.pending.pop(m.email, None)
                if self.book.owner(m.email) == self.node:
                    self.asserted_local[m.email] = m.local_time
        return changes

    def _send(self, kind: SyncKind, email: EmailKey | None = None) -> None:
        now = self.clock()
        s = self.settings
        out = send(self.smtp, s.sender, s.sync_address, kind, self.node, now, email)
        # An attempt counts, sent or not: a node cut from SMTP tries its time-sync again
        # after `claim_reassert`, not at every step (a connection and a warning each).
        self.last_sent = now
        if not out.sent:
            # Unknown or refused: reading the box tells whether it arrived; a claim that
            # never shows up is sent again after `claim_reassert` (`pending`).
            log.warning("sync %s for %s not sent: %s", kind.value, email, out.detail)


__all__ = ["Claimer", "IslandSettings", "sync_clock"]
