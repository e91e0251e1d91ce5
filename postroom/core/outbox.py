"""The outbox row's lifecycle, and what one SMTP transaction's outcome means for it.

Pure: no clock, no database, no sockets; `now` and the policy come in as arguments. The
engine (`engine/outbox.py`) runs these decisions against the `Outgoing` table by
compare-and-set, and the SMTP adapter (`mail/smtp.py`) reports its outcomes in these
terms. The design is docs/decisions/0007-exactly-once-sending.md; in short:

    pending ──claim──▶ sending(lease) ──250──────────────────▶ sent
    retry_wait ─due─▶      │         ──not sent, 4xx─────────▶ retry_wait (backoff) | dead (cap)
                           │         ──not sent, 5xx─────────▶ dead
                           │         ──no answer after the dot▶ unknown ─(grace)─▶ check
                           └─lease expired (claimant died)──────────────────(grace)─▶ check
    check: the journal box holds the Message-ID → sent; it does not → send again (or dead at the cap)
    pending | retry_wait | unknown ──the mail is no longer wanted──▶ cancelled

"Unknown" is the case SMTP cannot settle by itself: the final dot was written and the
server's answer never arrived. The server may have queued the message (its 250 was lost)
or not. Every outgoing mail has the journal box as one more envelope recipient of the
same transaction, so a 250 means the journal copy is queued too; after a grace period for
local delivery, the journal box answers the question. A row is never sent while another
claimant's lease is live, never sent again while its first attempt may have succeeded,
and never declared dead while a copy may have left.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final


class OutboxState(enum.StrEnum):
    # Built and keyed; waiting for its first attempt (`due`).
    PENDING = "pending"
    # Claimed by one engine until `lease_until`; its SMTP transaction may be under way.
    SENDING = "sending"
    # The server said 250 (or the journal box shows it did).
    SENT = "sent"
    # Definitely not sent (refused with 4xx, or no connection); next attempt at `due`.
    RETRY_WAIT = "retry_wait"
    # Maybe sent: the final dot went out and no answer came back. At `due` the journal
    # box is searched for the Message-ID before anything else happens.
    UNKNOWN = "unknown"
    # Never left and never will by itself: refused for good or out of attempts.
    DEAD = "dead"
    # No longer wanted (a forward whose delivery round ended before it was sent).
    CANCELLED = "cancelled"


FINAL: Final = frozenset({OutboxState.SENT, OutboxState.DEAD, OutboxState.CANCELLED})
# States whose row is claimed once `due` has come.
DUE_STATES: Final = (OutboxState.PENDING, OutboxState.RETRY_WAIT, OutboxState.UNKNOWN)
# States of a row on its way: not settled yet.
IN_FLIGHT: Final = (OutboxState.PENDING, OutboxState.SENDING, OutboxState.RETRY_WAIT, OutboxState.UNKNOWN)
# States a row can be cancelled from: not in anyone's hands, not settled.
CANCELLABLE: Final = (OutboxState.PENDING, OutboxState.RETRY_WAIT, OutboxState.UNKNOWN)


class Result(enum.StrEnum):
    """What one SMTP transaction tells us."""

    SENT = "sent"  # the server answered 250 to the final dot
    TEMPORARY = "temporary"  # not sent; worth trying again (4xx, no connection, ...)
    PERMANENT = "permanent"  # not sent; trying again cannot help (5xx)
    UNKNOWN = "unknown"  # maybe sent: the answer to the final dot never arrived


class Phase(enum.IntEnum):
    """How far an SMTP transaction got; decides what a broken connection means."""

    CONNECT = 1  # connect, EHLO, STARTTLS, AUTH: nothing of the message yet
    ENVELOPE = 2  # RSET, MAIL, RCPT, DATA: the server holds no message
    BODY = 3  # writing the message: without its final dot the server discards it
    FINAL_DOT = 4  # the final ".\r\n" is (being) written: from here the server may say 250


def after_failure(phase: Phase) -> Result:
    """A broken or timed-out connection at `phase` (RFC 5321 §4.1.1.4: the message is only
    the server's once the final dot is received; it may be queued from then on)."""
    return Result.UNKNOWN if phase >= Phase.FINAL_DOT else Result.TEMPORARY


def may_retry_fresh(phase: Phase, reused: bool) -> bool:
    """A reused session may have died while idle (the server's timeout); one fresh
    connection at once is worth it, but only while the server holds nothing of ours."""
    return reused and phase <= Phase.ENVELOPE


def classify_codes(codes: list[int] | tuple[int, ...], *, after_dot: bool = False) -> Result:
    """Reply codes to a result. Before the dot: 5xx from everyone is permanent, anything
    else temporary. After the dot: 2xx sent, 4xx temporary, 5xx permanent, and anything
    else (a garbled or impossible reply) unknown, because the server may have queued it."""
    if after_dot:
        code = codes[0] if codes else 0
        if 200 <= code < 300:
            return Result.SENT
        if 400 <= code < 500:
            return Result.TEMPORARY
        if 500 <= code < 600:
            return Result.PERMANENT
        return Result.UNKNOWN
    if codes and all(500 <= c < 600 for c in codes):
        return Result.PERMANENT
    return Result.TEMPORARY


@dataclass(frozen=True)
class Policy:
    """The sending policy of a site ([outbox] and [journal] in the configuration)."""

    max_attempts: int = 12
    # How long a claim holds a row. Every SMTP transaction and journal search the
    # claimant makes ends well inside it (see `mail/smtp.py`), so an expired lease means
    # the claimant is gone (or hopelessly stalled) and whatever it sent has been sent.
    lease: timedelta = timedelta(minutes=5)
    # From a possible 250 until its journal copy is certainly searchable (local delivery).
    grace: timedelta = timedelta(minutes=1)
    backoff_first: timedelta = timedelta(seconds=5)
    backoff_max: timedelta = timedelta(hours=1)


def backoff(attempts: int, policy: Policy) -> timedelta:
    """5 s, 10 s, 20 s, ... up to an hour, after the `attempts`-th attempt."""
    factor = 2 ** min(max(0, attempts - 1), 30)
    return min(policy.backoff_max, policy.backoff_first * factor)


@dataclass(frozen=True)
class Row:
    """What the decisions need to know about one outbox row."""

    state: OutboxState
    attempts: int = 0
    due: datetime | None = None  # next_attempt_at: when PENDING/RETRY_WAIT/UNKNOWN act
    lease_until: datetime | None = None
    holder: str = ""


class Claim(enum.StrEnum):
    SEND = "send"  # nothing of it can have left: send it
    CHECK = "check"  # it may have left: search the journal box first


def due_for(row: Row, now: datetime, policy: Policy) -> Claim | None:
    """Whether `row` may be claimed at `now`, and what the claimant must do first."""
    if row.state in (OutboxState.PENDING, OutboxState.RETRY_WAIT):
        return Claim.SEND if row.due is not None and row.due <= now else None
    if row.state is OutboxState.UNKNOWN:
        return Claim.CHECK if row.due is not None and row.due <= now else None
    if row.state is OutboxState.SENDING and row.lease_until is not None:
        # The claimant's last possible final dot was before lease_until; its journal
        # copy is searchable a grace period later.
        return Claim.CHECK if row.lease_until <= expired_before(now, policy) else None
    return None


def expired_before(now: datetime, policy: Policy) -> datetime:
    """A SENDING row whose lease ended at or before this may be claimed (for a check)."""
    return now - policy.grace


def claim(row: Row, now: datetime, holder: str, policy: Policy) -> Row:
    """`holder` takes `row` until now + lease (the caller checked `due_for`)."""
    return replace(row, state=OutboxState.SENDING, lease_until=now + policy.lease, holder=holder)


def before_send(row: Row, policy: Policy) -> Row:
    """The holder is about to start an SMTP transaction: one more attempt, or dead when
    the cap is reached (every earlier attempt is known not to have delivered)."""
    if row.attempts >= policy.max_attempts:
        return replace(row, state=OutboxState.DEAD, lease_until=None, holder="")
    return replace(row, attempts=row.attempts + 1)


def after_send(row: Row, result: Result, now: datetime, policy: Policy) -> Row:
    """What the holder records once its transaction is over."""
    settled = replace(row, lease_until=None, holder="")
    if result is Result.SENT:
        return replace(settled, state=OutboxState.SENT)
    if result is Result.PERMANENT:
        return replace(settled, state=OutboxState.DEAD)
    if result is Result.UNKNOWN:
        # Never dead from here, even at the cap: the journal box decides first.
        return replace(settled, state=OutboxState.UNKNOWN, due=now + policy.grace)
    if row.attempts >= policy.max_attempts:
        return replace(settled, state=OutboxState.DEAD)
    return replace(settled, state=OutboxState.RETRY_WAIT, due=now + backoff(row.attempts, policy))


def wait_for_claim(row: Row, now: datetime, retry: timedelta) -> Row:
    """Island mode: the email's claim is not won yet, so nothing was tried (decision 0036).
    The row goes back unclaimed, its attempts untouched, due again after `retry`."""
    return replace(row, state=OutboxState.RETRY_WAIT, lease_until=None, holder="", due=now + retry)


def release(seen: Row) -> Row:
    """A row claimed (and its attempt counted) with others of a sender's batch but never
    tried, because the batch stopped before it (decision 0049): it goes back exactly as
    it was before the claim, its state, attempts and due time, held by nobody. Only before
    any SMTP byte of it was written: from then on its outcome is `after_send`'s."""
    return replace(seen, lease_until=None, holder="")


def after_check(row: Row, found: bool) -> Row:
    """The journal box was searched. Found: it left, record it sent. Not found: the holder
    goes on to `before_send` under the same lease."""
    if found:
        return replace(row, state=OutboxState.SENT, lease_until=None, holder="")
    return row


def check_failed(row: Row, now: datetime, policy: Policy) -> Row:
    """The journal box could not be searched: still unknown; look again later."""
    return replace(
        row, state=OutboxState.UNKNOWN, lease_until=None, holder="", due=now + backoff(row.attempts, policy)
    )


def cancel(row: Row) -> Row | None:
    """No longer wanted: cancelled, if nobody holds it and it is not settled (else None:
    its holder finds out when it records the outcome)."""
    if row.state not in CANCELLABLE:
        return None
    return replace(row, state=OutboxState.CANCELLED, lease_until=None, holder="")


def resend(row: Row, now: datetime) -> Row | None:
    """A person sends a dead row again (it never left, so this cannot double it)."""
    if row.state is not OutboxState.DEAD:
        return None
    return replace(row, state=OutboxState.PENDING, attempts=0, due=now, lease_until=None, holder="")
