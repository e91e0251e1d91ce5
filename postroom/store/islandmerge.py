"""The merge back of an islanded node's local records into PostgreSQL (decision 0036).

A node that worked on its local store (engine/localstore.py) while the database was away
writes what it did back once PostgreSQL answers again, before it registers (so the nodes
that took its boxes stay in island mode, claims first, until the merge is done). Each local
interaction is matched to the shared one by the email's name in claims (mailbox address,
Message-ID, sha256 of the raw mail): one record per interaction, keyed by the interaction's
GUID and carrying the node id. Which copy survives is `core/islandlocal.merge`; this
module does the reads and writes: the surviving record takes the winning claim's
`claim_node`/`claim_time`, the outbox rows sent locally are recorded as sent (their
Message-IDs are derived from the email's name, so they are the shared rows' IDs too), and
what was merged is journaled `island_merged` (with the Message-IDs sent on the island),
and an email another node holds is journaled `island_claimed_elsewhere`.

An interaction the island routed, forwarded or answered (`core/islandlocal.carries`,
decision 0045) arrives in the island's lifecycle state: its agent (matched by address),
answer and reply times, timers, deliveries and outcome; every outbox row the island had
for it that is not cancelled (sent ones recorded sent, ones that may have left `unknown`
so that the journal box settles them, waiting ones still to send), the outbound box's
ledger rows of the replies it took (a row the database's side left `waiting` for the
same message becomes the island's), and, journaled with `island_guid`, the island's GUID
of the interaction, under which the tokens it gave its agents still match
(`merged_into`). Merging twice (a node killed during the merge merges again at its next
start) adds nothing twice: each local record is merged in one transaction together with
its journal event, which names the local record's GUID (`local`); a later run skips what
it finds journaled, and finds a nameless record an earlier run inserted by its GUID.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.db.models import CharField, F, Value
from django.db.models.functions import Cast, Concat

from postroom.core.islandlocal import Copy, Merge, carries, merge
from postroom.core.lifecycle import CLAIMED_ELSEWHERE, ClaimReturned
from postroom.core.outbox import OutboxState
from postroom.store import journal
from postroom.store.models import (
    Agent,
    Interaction,
    JournalEvent,
    Mailbox,
    OutboundMessage,
    Outgoing,
)
from postroom.store.transitions import apply

log = logging.getLogger(__name__)

# Foreign keys a local record cannot carry over: the local store's agents and follow-ups
# are not the shared ones (its agent is matched by address where its state is carried).
_NOT_COPIED = frozenset({"id", "mailbox", "agent", "target_agent", "preferred_agent", "follows"})
# The lifecycle state an island's record brings when it routed the email (decision 0045),
# besides its agent and deliveries.
_LIFECYCLE = (
    "status", "routed_at", "answered_at", "delivered_at", "replied_at", "ended_at", "closed_at",
    "outcome", "wrapup_code", "resolution_code", "offer_due_at", "no_reply_due_at", "excluded_agents",
)
# The journal event of a merge, with the local record's GUID (`local`; `island_guid` too
# when the island's state was carried), and of an email another node holds.
MERGED = "island_merged"
_MERGED = (MERGED, "island_claimed_elsewhere")
# Mail that may have left: the node was killed (or cut off) during its SMTP transaction.
_MAYBE_SENT = (OutboxState.SENDING, OutboxState.UNKNOWN)


@dataclass
class MergeReport:
    done: dict[Merge, list[str]] = field(default_factory=dict)
    again: int = 0  # merged by an earlier run of this merge (cut short), left alone

    def add(self, action: Merge, what: str) -> None:
        self.done.setdefault(action, []).append(what)

    def summary(self) -> str:
        done = [f"{action.value}: {len(items)}" for action, items in self.done.items()]
        done += [f"merged before: {self.again}"] if self.again else []
        return ", ".join(done) or "nothing"


def merge_back(me: str, local: str, now: datetime) -> MergeReport:
    """Write the local store `local` (a database alias) into the default database."""
    report = MergeReport()
    boxes = {b.address.lower(): b for b in Mailbox.objects.all()}
    agents = {a.address.lower(): a for a in Agent.objects.all()}
    for lx in Interaction.objects.using(local).select_related("mailbox", "agent").order_by("id"):
        box = boxes.get(lx.mailbox.address.lower())
        rows = list(
            Outgoing.objects.using(local)
            .filter(interaction_id=lx.pk)
            .exclude(state__in=[OutboxState.CANCELLED, OutboxState.DEAD])
            .select_related("agent")
            .order_by("id")
        )
        sent = [r for r in rows if r.state == OutboxState.SENT]
        # Without the island's state, what of its mail counts: what left or may have left.
        left = [r for r in rows if r.state == OutboxState.SENT or r.state in _MAYBE_SENT]
        mine = Copy(lx.claim_node, lx.closed_at is not None, progressed=lx.routed_at is not None)
        with transaction.atomic():
            # The shared row is locked while the decision is made and carried out: a
            # node on the database that lost this email's claim to us closes it under the
            # same lock (engine/claimloss.py), so either it closed first and we reopen
            # it, or we merged first and it sees our claim on the record and leaves it.
            shared = None
            if box is not None and lx.message_id and lx.raw_sha256:
                shared = (
                    Interaction.objects.select_for_update(of=("self",))
                    .filter(mailbox=box, message_id=lx.message_id, raw_sha256=lx.raw_sha256)
                    .order_by("id")
                    .first()
                )
            if shared is None:
                # One this merge inserted before it was cut short (the node killed in the
                # middle of it merges again at its next start): the GUID is the local one.
                shared = Interaction.objects.select_for_update(of=("self",)).filter(guid=lx.guid).first()
            if shared is not None and JournalEvent.objects.filter(
                interaction=shared, kind__in=_MERGED, detail__local=str(lx.guid)
            ).exists():
                # Merged already, in a transaction that journaled it with this local
                # record's GUID: a merge cut short and run again does the rest only.
                report.again += 1
                continue
            action = merge(
                me,
                mine,
                None
                if shared is None
                else Copy(
                    shared.claim_node,
                    shared.closed_at is not None,
                    claimed_elsewhere=shared.outcome == CLAIMED_ELSEWHERE,
                ),
            )
            if action is Merge.INSERT and box is None:
                log.error(
                    "island merge: mailbox %s is not on the database; %s left out",
                    lx.mailbox.address,
                    lx.guid,
                )
                continue
            carry = carries(action, mine)
            agent = agents.get(lx.agent.address.lower()) if lx.agent is not None else None
            if carry and lx.agent is not None and agent is None:
                log.error("island merge: agent %s of %s is not on the database; its state is not carried",
                          lx.agent.address, lx.guid)
                carry = False
            match action:
                case Merge.INSERT:
                    assert box is not None
                    values = {
                        f.attname: getattr(lx, f.attname)
                        for f in Interaction._meta.concrete_fields
                        if f.name not in _NOT_COPIED
                    }
                    shared = Interaction.objects.create(
                        **{**values, "mailbox": box, "node_id": me, "agent": agent if carry else None}
                    )
                    _carry_rows(shared, rows if carry else left, agents, 0, now)
                    if carry:
                        _carry_ledger(shared, lx, local, boxes)
                    _journal(shared, lx, me, now, sent, carry, inserted=True)
                case Merge.TAKE_OVER | Merge.REOPEN:
                    assert shared is not None
                    if action is Merge.REOPEN:
                        # Out of `closed` through the lifecycle (journaled
                        # `claim_returned`), with the mail the losing node cancelled.
                        apply(shared, ClaimReturned(), now, node=me)
                        _restore_cancelled(shared, now)
                    offset = shared.deliveries
                    state: dict[str, object] = {}
                    if carry:
                        # Ours is the handling that stands: what the database's side
                        # started for its copy (its own routing: nothing of it left, the
                        # claim being ours) stops, and our state takes its place.
                        _cancel_their_work(shared)
                        state = {name: getattr(lx, name) for name in _LIFECYCLE}
                        state.update(agent=agent, deliveries=offset + lx.deliveries)
                    Interaction.objects.filter(pk=shared.pk).update(
                        node_id=me,
                        claim_node=me,
                        # The winning claim's time: ours, or as the node that lost it
                        # read it (we may not have read our own win yet).
                        claim_time=lx.claim_time or shared.claim_time,
                        auto_response_sent_at=shared.auto_response_sent_at
                        or lx.auto_response_sent_at,
                        version=F("version") + 1,
                        **state,
                    )
                    shared.refresh_from_db()
                    _carry_rows(shared, rows if carry else left, agents, offset if state else None, now)
                    if carry:
                        _carry_ledger(shared, lx, local, boxes)
                    _journal(shared, lx, me, now, sent, carry, inserted=False, reopened=action is Merge.REOPEN)
                case Merge.CLAIMED_ELSEWHERE:
                    assert shared is not None
                    journal.record(
                        "island_claimed_elsewhere",
                        now,
                        interaction=shared,
                        node=me,
                        local=str(lx.guid),
                        holder=shared.claim_node,
                        sent=[r.message_id for r in sent],
                    )
                case Merge.LEAVE:
                    pass
        report.add(action, str(lx.guid if shared is None else shared.guid))
    log.info("island merge: %s", report.summary())
    return report


def _restore_cancelled(ix: Interaction, now: datetime) -> None:
    """What the node that lost the claim cancelled for a reopened interaction.

    Its auto-response waits again: the losing node never sent it (nothing leaves before
    the claim is won), and if we sent it on the island, `_carry_rows` next finds it by
    its derived Message-ID and records it sent; if we won the claim but came back before
    sending it, it is still owed. The other cancelled rows stay as they were (what was
    stopped, for the record: the forward of the released agent, a reply the agent was
    told not to send) under keys of their own, since `reply:<guid>` is one per
    interaction and the reopened interaction's reply is still to come. A cancelled row
    never left (only waiting rows are cancelled; an unknown one is settled from the
    journal box first)."""
    cancelled = Outgoing.objects.filter(interaction=ix, state=OutboxState.CANCELLED)
    cancelled.filter(kind=Outgoing.AUTO_RESPONSE, key=f"auto_response:{ix.guid}").update(
        state=OutboxState.PENDING, next_attempt_at=now, claimed_by="", lease_until=None, last_error=""
    )
    cancelled.exclude(key__startswith="cancelled:").update(
        key=Concat(Value("cancelled:"), Cast("pk", CharField()), Value(":"), "key")
    )


def _journal(
    ix: Interaction, lx: Interaction, me: str, now: datetime, sent: list[Outgoing], carry: bool, **detail: object
) -> None:
    extra: dict[str, object] = {"island_guid": str(lx.guid), "state": lx.status} if carry else {}
    journal.record(
        MERGED, now, interaction=ix, node=me, local=str(lx.guid), sent=[r.message_id for r in sent], **detail, **extra
    )


def merged_into(guid: object) -> Interaction | None:
    """The shared record an island's interaction `guid` was merged into with its state:
    the tokens the island gave its agents name the island's GUID (decision 0045)."""
    pk = (
        JournalEvent.objects.filter(kind=MERGED, detail__island_guid=str(guid))
        .order_by("-id")
        .values_list("interaction_id", flat=True)
        .first()
    )
    return Interaction.objects.select_related("agent", "mailbox").filter(pk=pk).first() if pk else None


def _cancel_their_work(ix: Interaction) -> None:
    """What the database's side queued for its own copy and has not sent (its forward,
    an offer notice): the island's handling stands. Not the auto-response (one per email,
    the same Message-ID on both sides: settled by `_carry_rows`), not mail already carried
    from an island, not a lost claim's notice to an agent. Their keys are set aside as
    `_restore_cancelled` does (`reply:<guid>` is the record's one reply, still to come)."""
    theirs = (
        Outgoing.objects.filter(interaction=ix)
        .exclude(kind=Outgoing.AUTO_RESPONSE)
        .exclude(key__startswith="island:")
        .exclude(key__startswith="notice:claim_lost:")
    )
    stopped = list(
        theirs.filter(state__in=[OutboxState.PENDING, OutboxState.RETRY_WAIT]).values_list("pk", flat=True)
    )
    Outgoing.objects.filter(pk__in=stopped).update(
        state=OutboxState.CANCELLED, claimed_by="", lease_until=None,
        key=Concat(Value("cancelled:"), Cast("pk", CharField()), Value(":"), "key"),
    )


def _carry_rows(
    ix: Interaction, rows: list[Outgoing], agents: dict[str, Agent], offset: int | None, now: datetime
) -> None:
    """The island's mail for `ix`. A shared row with the same Message-ID (the derived
    auto-response and reply IDs) is the same mail: recorded sent if the island sent it,
    `unknown` if the island's attempt may have left (the journal box settles it before
    anything is sent again), else left as it is. Any other row is added under
    `island:<key>`: sent, unknown (it was being sent when the island stopped), or still to
    send (only when the island's state is carried, `offset` not None: a forward then
    keeps its delivery round, counted after the shared record's own)."""
    for row in rows:
        left = row.state in (OutboxState.SENDING, OutboxState.UNKNOWN)
        state = OutboxState.SENT if row.state == OutboxState.SENT else OutboxState.UNKNOWN if left else OutboxState.PENDING
        same = Outgoing.objects.filter(interaction=ix, message_id=row.message_id)
        if row.message_id and same.exists():
            if state is not OutboxState.PENDING:
                same.exclude(state=OutboxState.SENT).update(
                    state=state, sent_at=row.sent_at, claimed_by="", lease_until=None, last_error="",
                    next_attempt_at=now,
                )
            continue
        key = f"island:{row.key}"[:200]
        if (state is OutboxState.PENDING and offset is None) or Outgoing.objects.filter(key=key).exists():
            continue
        Outgoing.objects.create(
            key=key,
            kind=row.kind,
            interaction=ix,
            delivery=row.delivery + (offset or 0) if row.delivery is not None else None,
            agent=agents.get(row.agent.address.lower()) if row.agent is not None else None,
            envelope_from=row.envelope_from,
            recipients=row.recipients,
            message_id=row.message_id,
            raw=row.raw,
            state=state,
            attempts=row.attempts,
            next_attempt_at=now if state is not OutboxState.SENT else row.next_attempt_at,
            sent_at=row.sent_at,
            rate_key=row.rate_key,
        )


def _carry_ledger(ix: Interaction, lx: Interaction, local: str, boxes: dict[str, Mailbox]) -> None:
    """The outbound box's ledger rows of the replies the island took for `lx`: the same
    message is not read as a new one on the database's side, and one that side left
    `waiting` (its token named the island's interaction) is the island's now."""
    for row in OutboundMessage.objects.using(local).filter(interaction_id=lx.pk).select_related("mailbox"):
        box = boxes.get(row.mailbox.address.lower())
        if box is None:
            continue
        theirs = OutboundMessage.objects.filter(mailbox=box, uidvalidity=row.uidvalidity, uid=row.uid)
        values = {"interaction": ix, "outcome": row.outcome, "reason": row.reason, "removed_at": row.removed_at}
        if theirs.filter(outcome=OutboundMessage.WAITING).update(**values) or theirs.filter(interaction=ix).exists():
            continue  # left for us, or carried by an earlier merge
        if theirs.exists():
            log.warning("island merge: outbound uid %s was decided on the database too; its ruling stands", row.uid)
            continue
        OutboundMessage.objects.create(
            mailbox=box, uidvalidity=row.uidvalidity, uid=row.uid, message_id=row.message_id,
            sender=row.sender, subject=row.subject, **values,
        )


__all__ = ["MERGED", "MergeReport", "merge_back", "merged_into"]
