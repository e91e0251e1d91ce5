"""Delivery (fig. 7): an answered interaction's original goes to the agent's mailbox.

The original is the bytes reception fetched, kept in the engine's memory for this
(`engine.originals`, decision 0053), or else read from the incoming box over IMAP (it
never left the server; one FETCH for a round's originals in a box); its headers are
rewritten for the agent (as text, from its bytes, decision 0048; by the composer where
that cannot be sure), and the result is queued in the outbox under a key
that names the interaction and the delivery number, so a restart re-sends to the same
agent rather than building a second copy.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime

from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet

from postroom.core.compose import ForwardTo, forward_message
from postroom.core.correlation import forward_message_id, mint_token, reply_address, subject_tag
from postroom.core.lifecycle import State, Vanished
from postroom.core.outbox import IN_FLIGHT
from postroom.core.rawforward import forward_from_raw
from postroom.engine.connections import Sessions
from postroom.engine.faults import checkpoint
from postroom.engine.site import Site
from postroom.mail.imap import FetchedMessage, ImapSession
from postroom.mail.message import UnreadableMessage, parse
from postroom.store import locking
from postroom.store.compiled import Compiled
from postroom.store.models import Interaction, Mailbox, Outgoing
from postroom.store.transitions import StaleInteraction, apply, compare_and_set

log = logging.getLogger(__name__)


# How many answered interactions one delivery step takes.
BATCH = 50


def waiting() -> QuerySet[Interaction]:
    """Every answered interaction whose current round has none on its way (a forward of
    an earlier round or agent does not count: see engine/outbox.py), first things first."""
    on_its_way = Outgoing.objects.filter(
        Q(delivery=OuterRef("deliveries"), agent=OuterRef("agent")) | Q(delivery__isnull=True),
        kind=Outgoing.FORWARD,
        interaction=OuterRef("pk"),
        state__in=[s.value for s in IN_FLIGHT],
    )
    return (
        Interaction.objects.filter(status=State.ANSWERED)
        .exclude(Exists(on_its_way))
        .select_related("mailbox", "agent")
        .order_by("-priority", "arrival_time")
    )


# `waiting()`'s first BATCH rows, compiled once per thread and connection (decision 0067):
# the step runs after every routing round and once a second when idle, and Django's
# building of this query (a subquery, two joined tables) was most of its cost when nothing
# is due. Plain, and locked for the step's transaction where rows are shared.
_WAITING = Compiled(lambda: waiting()[:BATCH])
_WAITING_HELD = Compiled(lambda: locking.locked(waiting())[:BATCH])
_OUTBOUND = Compiled(lambda: Mailbox.objects.filter(kind=Mailbox.OUTBOUND))


def outbound_box() -> Mailbox:
    found = _OUTBOUND.objects()
    if len(found) == 1:
        return found[0]  # type: ignore[return-value]
    return Mailbox.objects.get(kind=Mailbox.OUTBOUND)  # none or several: its error


def deliver(site: Site, sessions: Sessions, now: datetime) -> bool:
    """Build the forward for every answered interaction whose current round has none on
    its way (`waiting`)."""
    did = False
    outbound: Mailbox | None = None
    # Every node runs this step: the batch is locked while its forwards are built
    # (another node skips those rows, decision 0030) and each build is a
    # compare-and-set anyway.
    with locking.batch_compiled(_WAITING, _WAITING_HELD) as batch:
        by_box: dict[int, list[Interaction]] = defaultdict(list)
        for ix in batch:
            by_box[ix.mailbox_id].append(ix)  # type: ignore[attr-defined]
        for items in by_box.values():
            built: list[tuple[Interaction, Outgoing]] = []
            # An unreachable box holds up its own interactions only (issue 7, window 10).
            with sessions.isolated(items[0].mailbox):
                # The box's UIDVALIDITY as read with these interactions (select_related),
                # not read again (decision 0060).
                box = items[0].mailbox
                session = sessions.get(box, recorded=box.uidvalidity)
                originals = kept_or_fetched(site, session, items)
                for ix in items:
                    outbound = outbound or outbound_box()
                    made = build_forward(ix, site, session, originals.get(ix.uid), now, outbound)
                    if isinstance(made, Outgoing):
                        built.append((ix, made))
                    else:
                        did = made or did
            did = queue_forwards(built) or did
    return did


def kept_or_fetched(site: Site, session: ImapSession, items: list[Interaction]) -> dict[int, FetchedMessage]:
    """The originals of one box's interactions by UID: the bytes reception kept
    (decision 0053), the rest in one FETCH (not a NOOP and a FETCH each). The session
    is still opened and checked first (`Sessions.get`: its NOOP, the box's UIDVALIDITY
    against the database's), so an unreachable or rebuilt box holds its forwards back
    as before."""
    found: dict[int, FetchedMessage] = {}
    fetch: list[int] = []
    for ix in items:
        if ix.uidvalidity != session.uidvalidity:
            continue
        kept = site.originals.get(ix.mailbox, ix.uidvalidity, ix.uid)
        if kept is None:
            fetch.append(ix.uid)
        else:
            found[ix.uid] = kept
    if fetch:
        found.update(session.fetch(fetch))
    return found


def queue_forwards(built: list[tuple[Interaction, Outgoing]]) -> bool:
    """The box's forwards queued in one write transaction (issue 9: one commit each, on
    SQLite an fsync each), after the IMAP work, so SQLite's single write lock is not held
    across the network. Each is still a compare-and-set on the interaction: one that
    changed since it was read (taken back, answered elsewhere) gets no forward."""
    if not built:
        return False
    with transaction.atomic():
        rows = [
            row
            for ix, row in built
            if compare_and_set(ix, {"deliveries": row.delivery}, status=State.ANSWERED) == 1
        ]
        Outgoing.objects.bulk_create(rows)
    if rows:
        checkpoint("forward-queued")
    return bool(rows)


def build_forward(
    ix: Interaction, site: Site, session: ImapSession, original: FetchedMessage | None, now: datetime, outbound: Mailbox
) -> Outgoing | bool:
    """The forward of `ix`, an outbox row not yet saved (`queue_forwards` saves it); or
    True when the original is gone (recorded), False when it cannot be read."""
    if ix.uidvalidity != session.uidvalidity:
        original = None
    elif original is None:
        session.refresh()  # announced to the watcher's session, not yet to this one
        original = session.fetch_one(ix.uid)
    if original is None:
        # Deleted on the server by someone else: nothing left to hand to an agent.
        try:
            with transaction.atomic():
                apply(ix, Vanished(), now, reason="original no longer in the incoming box")
        except StaleInteraction:
            pass
        return True
    token = mint_token(site.keys.token_key, ix.guid, ix.agent.address)
    seq = ix.deliveries + 1
    message_id = forward_message_id(token, seq, site.message_id_domain)
    to = ForwardTo(
        agent=ix.agent.address,
        agent_name=ix.agent.name,
        reply_to=reply_address(outbound.address, token),
        message_id=message_id,
        tag=subject_tag(token),
        guid=ix.guid,
        box_address=ix.mailbox.address,
        box_name=ix.mailbox.display_name or None,
    )
    # Built from the original's bytes (decision 0048); the composer does what that
    # cannot be sure of, as it did every forward before.
    raw = forward_from_raw(original.raw, to)
    if raw is None:
        try:
            mail = parse(original.raw)
        except UnreadableMessage as exc:  # it parsed at reception; the server changed it?
            log.error("interaction %s: original unreadable at delivery: %s", ix.guid, exc)
            return False
        raw = forward_message(mail.msg, to).as_bytes()
    return Outgoing(
        key=f"forward:{ix.guid}:{seq}",
        kind=Outgoing.FORWARD,
        interaction=ix,
        delivery=seq,
        agent=ix.agent,
        envelope_from=outbound.address,
        recipients=[ix.agent.address],
        message_id=message_id,
        raw=raw,
        next_attempt_at=now,
    )
