"""Housekeeping on the mail server once the database says a thing is finished.

Replied and ended interactions: the agent's reply leaves the outbound box and the
customer's original (and any copy in another box) its incoming box (fig. 9 522-526), then
the interaction is closed. Nothing finished is ever destroyed: it is moved to the box's
archive folder (`Mailbox.archive_folder`, default `Postroom-Archive`, or the Trash if the
site says so), and mail a rule discarded to the box's trash folder (issue 7, window 8).
Refused outbound mail is copied into the dead box, then removed from the outbound box;
an approver's answer is archived once acted on. So is an agent's reply that was taken but
never sent because another node won the email's claim in island mode (decision 0036,
`unsent_replies_to_dead_box`): its interaction is closed, not replied, and the reply must
not wait in the outbound box for good.

Moves are made per box and folder as one UID set (one command for everything due, RFC
6851 MOVE; a bulk move is fifty times faster than one per message on Maildir). Each box is
isolated: if one cannot be reached, its interactions wait and every other box's are
cleaned. Each move is idempotent, and nothing is committed as done before its move: a
crash between two of them only repeats harmless work.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime

from django.db import transaction
from django.db.models import QuerySet

from postroom.core.claimloss import OUTCOME as CLAIMED_ELSEWHERE
from postroom.core.lifecycle import CleanedUp, State
from postroom.core.outbox import OutboxState
from postroom.engine.connections import Sessions
from postroom.engine.faults import checkpoint
from postroom.mail.imap import MailboxUnavailable
from postroom.store import journal, locking
from postroom.store.compiled import Compiled
from postroom.store.models import Interaction, Mailbox, OutboundMessage, Outgoing
from postroom.store.transitions import StaleInteraction, apply

log = logging.getLogger(__name__)

BATCH = 200


def unsent_replies() -> QuerySet[OutboundMessage]:
    """Agents' replies taken for an interaction closed as claimed elsewhere (see
    `unsent_replies_to_dead_box`)."""
    return OutboundMessage.objects.filter(
        outcome=OutboundMessage.ACCEPTED, removed_at=None, interaction__outcome=CLAIMED_ELSEWHERE
    )


def dead_rows() -> QuerySet[OutboundMessage]:
    """Refused outbound mail not yet copied into the dead box."""
    return OutboundMessage.objects.filter(outcome=OutboundMessage.DEAD, removed_at=None)


def decided_rows() -> QuerySet[OutboundMessage]:
    """Approvers' answers acted on, not yet archived."""
    return OutboundMessage.objects.filter(outcome=OutboundMessage.DECISION, removed_at=None)


def finished() -> QuerySet[Interaction]:
    """Replied and ended interactions, to be archived and closed."""
    return Interaction.objects.filter(status__in=[State.REPLIED, State.ENDED])


def late_copies() -> QuerySet[Interaction]:
    """Closed interactions with a copy still to archive."""
    return Interaction.objects.filter(copies_pending=True, status=State.CLOSED)


# Whether any of the above has a row, each asked with SQL compiled once per thread and
# connection (decision 0065): the step runs every few seconds and mostly finds nothing, and
# its five querysets (and their locked reads on PostgreSQL) were most of its time. With all
# five empty `clean` has nothing to do; otherwise it reads and holds its rows as before.
_WORK = tuple(Compiled(lambda q=q: q().values_list("pk")[:1]) for q in (
    unsent_replies, dead_rows, decided_rows, finished, late_copies
))


def any_work() -> bool:
    return any(read.rows() for read in _WORK)


def clean(sessions: Sessions, now: datetime) -> bool:
    if not any_work():
        return False
    # Every node runs this step; each batch is held by one (store/locking.py).
    did = unsent_replies_to_dead_box(sessions, now)
    dead = dead_rows().select_related("mailbox")
    with locking.batch(dead, 50) as rows:
        for row in rows:
            with sessions.isolated(row.mailbox):
                to_dead_box(row, sessions, now)
                did = True
    decided = decided_rows().select_related("mailbox")
    with locking.batch(decided, BATCH) as decisions:
        did = bool(archive_ledger_rows(decisions, sessions, now)) or did
    with locking.batch(finished().select_related("mailbox", "agent"), BATCH) as due:
        if due:
            close(due, sessions, now)
            did = True
    with locking.batch(late_copies(), BATCH) as leftovers:
        if leftovers:
            archive_late_copies(leftovers, sessions, now)
            did = True
    return did


class Moves:
    """Messages to move, grouped per (box, UIDVALIDITY, folder) so each group is one
    command; remembers which owners (interactions, ledger rows) had a group fail."""

    def __init__(self) -> None:
        self.groups: dict[tuple[int, int, str], dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
        self.boxes: dict[int, Mailbox] = {}
        self.failed: set[int] = set()

    def add(self, box: Mailbox, uidvalidity: int, uid: int, folder: str, owner: int) -> None:
        self.boxes[box.pk] = box
        self.groups[(box.pk, uidvalidity, folder)][uid].append(owner)

    def run(self, sessions: Sessions) -> None:
        for (box_pk, uidvalidity, folder), by_uid in self.groups.items():
            box = self.boxes[box_pk]
            owners = {o for owned in by_uid.values() for o in owned}
            try:
                session = sessions.get(box)
                # UIDs from another UIDVALIDITY name nothing in this folder any more (the
                # watcher re-binds live interactions first; see Sessions): skip them.
                if session.uidvalidity == uidvalidity:
                    session.move(by_uid.keys(), folder)
                sessions.succeeded(box)
            except MailboxUnavailable as exc:
                sessions.failed(box, exc)
                self.failed |= owners


def close(due: list[Interaction], sessions: Sessions, now: datetime) -> None:
    replies = list(
        OutboundMessage.objects.filter(
            interaction__in=due, outcome=OutboundMessage.ACCEPTED, removed_at=None
        ).select_related("mailbox")
    )
    waiting = {r.interaction_id for r in replies} - archive_ledger_rows(replies, sessions, now)
    if replies:
        checkpoint("cleanup-reply-removed")
    originals = Moves()
    copy_boxes = {b.pk: b for b in Mailbox.objects.filter(pk__in={c[0] for ix in due for c in ix.copies or ()})}
    for ix in due:
        # A rule said delete: to the trash, never destroyed; everything else is archived.
        folder = (ix.mailbox.trash_folder or "Trash") if ix.outcome == "discarded" else archive_of(ix.mailbox)
        originals.add(ix.mailbox, ix.uidvalidity, ix.uid, folder, ix.pk)
        for mailbox_id, uidvalidity, uid in ix.copies or ():
            if mailbox_id in copy_boxes:
                box = copy_boxes[mailbox_id]
                originals.add(box, uidvalidity, uid, archive_of(box), ix.pk)
    originals.run(sessions)
    checkpoint("cleanup-original-removed")
    # The batch's closes in one transaction (issue 9: one commit, not one per interaction),
    # their journal rows in one INSERT at its end (decision 0047). A close that loses its
    # compare-and-set wrote nothing (apply raises before any other write, its journal row
    # included), so it needs no savepoint of its own.
    with transaction.atomic(), journal.batched():
        for ix in due:
            if ix.pk in originals.failed or ix.pk in waiting:
                continue  # its box is unreachable: closed at a later round
            try:
                apply(ix, CleanedUp(), now)
            except StaleInteraction:
                log.info("interaction %s changed during cleanup; will look again", ix.guid)


def archive_ledger_rows(rows: list[OutboundMessage], sessions: Sessions, now: datetime) -> set[int]:
    """Archive these outbound-box messages; returns the interactions whose rows are done."""
    if not rows:
        return set()
    moves = Moves()
    for row in rows:
        moves.add(row.mailbox, row.uidvalidity, row.uid, archive_of(row.mailbox), row.pk)
    moves.run(sessions)
    done = [r for r in rows if r.pk not in moves.failed]
    OutboundMessage.objects.filter(pk__in=[r.pk for r in done]).update(removed_at=now)
    return {r.interaction_id for r in done if r.interaction_id}


def archive_late_copies(closed: list[Interaction], sessions: Sessions, now: datetime) -> None:
    """Copies that arrived after their interaction was closed (a re-delivery, a restored
    box): archived like the original was."""
    boxes = {b.pk: b for b in Mailbox.objects.filter(pk__in={c[0] for ix in closed for c in ix.copies})}
    moves = Moves()
    for ix in closed:
        for mailbox_id, uidvalidity, uid in ix.copies:
            if mailbox_id in boxes:
                moves.add(boxes[mailbox_id], uidvalidity, uid, archive_of(boxes[mailbox_id]), ix.pk)
    moves.run(sessions)
    for ix in closed:
        if ix.pk not in moves.failed:
            Interaction.objects.filter(pk=ix.pk).update(copies_pending=False)
            journal.record("late_copy_archived", now, interaction=ix)


# Why a reply taken for an email another node won stays unsent (the ledger's reason).
CLAIMED_ELSEWHERE_REASON = (
    "not sent: another node claimed the customer's email first (island mode) and answers it; "
    "the interaction here was closed as claimed elsewhere"
)


def unsent_replies_to_dead_box(sessions: Sessions, now: datetime) -> bool:
    """Fig. 8-10: a reply that cannot be sent goes to the dead box. An agent's reply taken
    for an interaction later closed as claimed elsewhere (engine/claimloss.py) never
    leaves: its outbox row was cancelled, or it waited for an approval that will not come.
    Its ledger row turns dead here (then `to_dead_box` moves it, as any refused mail), once
    its outbox row is settled: a reply that did leave (under this node's claim, in flight
    when the claim was lost) is archived as a replied one's is, and one still sending or
    unknown waits until the outbox knows. The agent was told by the claim-loss notice."""
    rows = unsent_replies().select_related("interaction", "mailbox")
    did = False
    for row in rows:
        assert row.interaction is not None
        states = {
            OutboxState(s)
            for s in Outgoing.objects.filter(interaction=row.interaction, kind=Outgoing.REPLY).values_list("state", flat=True)
        }
        if OutboxState.SENT in states:
            archive_ledger_rows([row], sessions, now)
            did = True
            continue
        if states - {OutboxState.CANCELLED, OutboxState.DEAD}:
            continue  # not settled yet: the outbox settles it, or `claimloss.sweep` cancels it
        with transaction.atomic():
            if not OutboundMessage.objects.filter(pk=row.pk, outcome=OutboundMessage.ACCEPTED).update(
                outcome=OutboundMessage.DEAD, reason=CLAIMED_ELSEWHERE_REASON
            ):
                continue  # another node's clean-up was quicker
            journal.record(
                "dead_boxed", now, interaction=row.interaction, mailbox=row.mailbox,
                reason=CLAIMED_ELSEWHERE_REASON, sender=row.sender,
            )
        log.warning("outbound uid %s to the dead box: %s (interaction %s)", row.uid, CLAIMED_ELSEWHERE_REASON, row.interaction.guid)
        did = True
    return did


def archive_of(box: Mailbox) -> str:
    return box.archive_folder or "Postroom-Archive"


def to_dead_box(row: OutboundMessage, sessions: Sessions, now: datetime) -> None:
    outbound = sessions.get(row.mailbox)
    if outbound.uidvalidity == row.uidvalidity:
        message = outbound.fetch_one(row.uid)
        if message is not None:
            dead_box = Mailbox.objects.get(kind=Mailbox.DEAD)
            dead = sessions.get(dead_box)
            # Copy first, delete second; a Message-ID already in the dead box means the
            # copy was made before a crash and must not be made twice.
            if not (row.message_id and dead.search_header("Message-ID", row.message_id)):
                dead.append(message.raw, dead_box.folder, message.internaldate)
            outbound.delete([row.uid])
    OutboundMessage.objects.filter(pk=row.pk).update(removed_at=now)
