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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.db.models import CharField, F, Value
from django.db.models.functions import Cast, Concat

from postroom.core.islandlocal import Copy, Merge, merge
from postroom.core.lifecycle import CLAIMED_ELSEWHERE, ClaimReturned
from postroom.core.outbox import OutboxState
from postroom.store import journal
from postroom.store.models import Interaction, JournalEvent, Mailbox, Outgoing
from postroom.store.transitions import apply

log = logging.getLogger(__name__)

# Foreign keys a local record cannot carry over: the local store's agents and follow-ups
# are not the shared ones (routing waits for the database: decision 0036, "Not yet").
_NOT_COPIED = frozenset({"id", "mailbox", "agent", "target_agent", "preferred_agent", "follows"})
_MAYBE_SENT = (OutboxState.SENDING, OutboxState.UNKNOWN)
# What the merge journals for a local record it merged, with the record's GUID (`local`).
_MERGED = ("island_merged", "island_claimed_elsewhere")


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
    for lx in Interaction.objects.using(local).select_related("mailbox").order_by("id"):
        box = boxes.get(lx.mailbox.address.lower())
        sent = list(
            Outgoing.objects.using(local).filter(interaction_id=lx.pk, state=OutboxState.SENT)
        )
        # Mail that may have left: the node was killed during its SMTP transaction.
        maybe = list(
            Outgoing.objects.using(local).filter(interaction_id=lx.pk, state__in=_MAYBE_SENT)
        )
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
                Copy(lx.claim_node, lx.closed_at is not None),
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
            match action:
                case Merge.INSERT:
                    assert box is not None
                    values = {
                        f.attname: getattr(lx, f.attname)
                        for f in Interaction._meta.concrete_fields
                        if f.name not in _NOT_COPIED
                    }
                    shared = Interaction.objects.create(**{**values, "mailbox": box, "node_id": me})
                    _record_sent(shared, sent, maybe, now)
                    journal.record("island_merged", now, interaction=shared, node=me, local=str(lx.guid), inserted=True,
                                   sent=[r.message_id for r in sent])
                case Merge.TAKE_OVER | Merge.REOPEN:
                    assert shared is not None
                    if action is Merge.REOPEN:
                        # Back to the queue through the lifecycle (journaled
                        # `claim_returned`), with the mail the losing node cancelled.
                        apply(shared, ClaimReturned(), now, node=me)
                        _restore_cancelled(shared, now)
                    Interaction.objects.filter(pk=shared.pk).update(
                        node_id=me,
                        claim_node=me,
                        # The winning claim's time: ours, or as the node that lost it
                        # read it (we may not have read our own win yet).
                        claim_time=lx.claim_time or shared.claim_time,
                        auto_response_sent_at=shared.auto_response_sent_at
                        or lx.auto_response_sent_at,
                        version=F("version") + 1,
                    )
                    _record_sent(shared, sent, maybe, now)
                    journal.record("island_merged", now, interaction=shared, node=me, local=str(lx.guid), inserted=False,
                                   reopened=action is Merge.REOPEN, sent=[r.message_id for r in sent])
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
    the claim is won), and if we sent it on the island, `_record_sent` next finds it by
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


def _record_sent(ix: Interaction, sent: list[Outgoing], maybe: list[Outgoing], now: datetime) -> None:
    """The mail the island sent for `ix`: a shared row with its Message-ID is recorded
    sent (it must never leave again); one PostgreSQL never had is added, sent.

    Mail that may have left (`maybe`: a node killed while on its local store, in the
    middle of an SMTP transaction) is recorded unknown, due now: the journal box says
    whether it left before anything is sent again (decision 0007)."""
    for row in maybe:
        same = Outgoing.objects.filter(interaction=ix, message_id=row.message_id)
        if same.exists():
            same.filter(state__in=(OutboxState.PENDING, OutboxState.RETRY_WAIT)).update(
                state=OutboxState.UNKNOWN, next_attempt_at=now, claimed_by="", lease_until=None
            )
            continue
        Outgoing.objects.create(
            key=f"island:{row.key}"[:200], kind=row.kind, interaction=ix, envelope_from=row.envelope_from,
            recipients=row.recipients, message_id=row.message_id, raw=row.raw, state=OutboxState.UNKNOWN,
            attempts=row.attempts, next_attempt_at=now, rate_key=row.rate_key,
        )
    for row in sent:
        updated = (
            Outgoing.objects.filter(interaction=ix, message_id=row.message_id)
            .exclude(state=OutboxState.SENT)
            .update(
                state=OutboxState.SENT,
                sent_at=row.sent_at,
                claimed_by="",
                lease_until=None,
                last_error="",
            )
        )
        if updated or Outgoing.objects.filter(interaction=ix, message_id=row.message_id).exists():
            continue
        Outgoing.objects.create(
            key=f"island:{row.key}"[:200],
            kind=row.kind,
            interaction=ix,
            envelope_from=row.envelope_from,
            recipients=row.recipients,
            message_id=row.message_id,
            raw=row.raw,
            state=OutboxState.SENT,
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at,
            sent_at=row.sent_at,
            rate_key=row.rate_key,
        )


__all__ = ["MergeReport", "merge_back"]
