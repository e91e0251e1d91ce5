"""Reception (fig. 5): new mail in an incoming box becomes a queued interaction.

For each message beyond the box's UID cursor, in one transaction: the tracking record,
the auto-response (as an outbox row, so it is sent at most once), the journal, and the
cursor move. The message itself stays on the server. A message we cannot or must not
take is quarantined: recorded with its reason, then moved to a folder beside the inbox.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime

from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.db.models import Q
from django.utils import timezone

from postroom.core import autoreply
from postroom.core.alerts import AlertKind
from postroom.core.approval import at_reception
from postroom.core.compose import UnsafeHeaderValue
from postroom.core.dedupe import dedupe_key
from postroom.core.lifecycle import Discarded, State
from postroom.core.priority import PriorityInput, importance
from postroom.core.rules import evaluate
from postroom.engine import batchreads
from postroom.engine import quarantine as held
from postroom.engine.alerts import raise_alert
from postroom.engine.autoresponse import auto_response_skip_reason, queue_auto_response
from postroom.engine.faults import checkpoint
from postroom.engine.notices import queue_notice
from postroom.engine.rebind import rebind
from postroom.engine.site import Site
from postroom.mail.facts import facts_from_mail
from postroom.mail.imap import FetchedMessage, ImapSession, MailboxUnavailable
from postroom.mail.message import ParsedMail, UnreadableMessage, parse
from postroom.store import contacts, journal, search
from postroom.store.fence import LeaseLost, hold_lease, is_fence_error
from postroom.store.models import (
    Agent,
    Interaction,
    Mailbox,
    Outgoing,
    Quarantined,
)
from postroom.store.quarantine import released_before
from postroom.store.rulebook import active_rules
from postroom.store.rulebook import held as held_rules
from postroom.store.transitions import apply

log = logging.getLogger(__name__)

QUARANTINE_FOLDER = held.QUARANTINE_FOLDER
BATCH = 50
# Errors that say nothing about the message: the database or the server is away for a
# moment. The message is left where it is (cursor not moved) and looked at again after
# the watcher's backoff, never quarantined as "internal error" (issue 7, window 6).
TRANSIENT = (OperationalError, InterfaceError, MailboxUnavailable, LeaseLost)
# What a taker reads once for a whole FETCH batch (the outbound box's: engine/replies.py
# `read_ahead`, decision 0050): made before the batch's transaction, entered inside it.
Ahead = Callable[[Mailbox, ImapSession, dict[int, FetchedMessage], Site, datetime], AbstractContextManager[object]]


def transient(exc: BaseException) -> bool:
    """Says nothing about the message: a passing failure, or this node may no longer
    write about the box (its lease on it, or its own, is gone: decision 0031)."""
    return isinstance(exc, TRANSIENT) or is_fence_error(exc)


def hold_box(box: Mailbox) -> None:
    """In the caller's transaction: the box is still this watcher's (`box.lease`, set by
    the engine's watcher; absent when a test drives the engine without nodes)."""
    lease = getattr(box, "lease", None)
    if lease is not None:
        hold_lease(*lease)

def sync_cursor(box: Mailbox, session: ImapSession, now: datetime | None = None) -> None:
    """A new UIDVALIDITY (the box was rebuilt or restored) means every UID is new: what is
    in progress is re-bound to the new UIDs, then the box is read again from the start
    (the dedupe key stops doubles), all in one transaction."""
    if box.uidvalidity != session.uidvalidity:
        with transaction.atomic():
            hold_box(box)
            if box.uidvalidity is not None:
                log.warning("%s: UIDVALIDITY changed %s → %s", box.address, box.uidvalidity, session.uidvalidity)
                rebind(box, session, box.uidvalidity, now or timezone.now())
            box.uidvalidity = session.uidvalidity
            box.last_uid = 0
            Mailbox.objects.filter(pk=box.pk).update(uidvalidity=box.uidvalidity, last_uid=0)


def advance_cursor(box: Mailbox, uid: int) -> None:
    """Move the box's cursor past `uid`, in the transaction that took the message.

    Inside a FETCH batch (`take_batch`) only in memory: the batch writes the cursor once,
    at its end, in the same transaction (decision 0040)."""
    box.last_uid = max(box.last_uid, uid)
    if getattr(box, "in_batch", False):
        return
    hold_box(box)
    Mailbox.objects.filter(pk=box.pk, last_uid__lt=uid).update(last_uid=uid)


def ingest(
    box: Mailbox,
    session: ImapSession,
    site: Site,
    now: Callable[[], datetime],
    take: Callable[[Mailbox, ImapSession, FetchedMessage, Site, datetime], None],
    *,
    per_batch: bool = False,
    ahead: Ahead | None = None,
) -> int:
    """Run `take` on every message beyond the cursor; returns how many were looked at.

    With `per_batch` each FETCH batch is taken in ONE write transaction, every message in
    a savepoint of its own: one commit (one fsync under SQLite's synchronous=FULL) per
    batch instead of one per mail, and a kill mid-batch leaves the whole batch or none of
    it (the cursor moves with the rows). Only for takers that do nothing irreversible
    before their commit: the incoming boxes' (decision 0039) and the outbound box's, whose
    replies, notices and dead-box moves are all rows acted on after the commit (decision
    0050; `ahead`: what its batch reads once)."""
    sync_cursor(box, session, now())
    held.tend(box, session, site, now())
    uids = session.new_uids(box.last_uid)
    for start in range(0, len(uids), BATCH):
        batch = uids[start : start + BATCH]
        fetched = session.fetch(batch, max_size=site.max_message_bytes)
        if per_batch:
            incoming = take is take_incoming
            if incoming:  # kept for delivery's forwards (decision 0053)
                site.originals.keep(box, session.uidvalidity, fetched.values())
            take_batch(box, session, batch, fetched, site, now, take, read_ahead=incoming, ahead=ahead)
            if incoming:
                checkpoint("received")
        else:
            for uid in batch:
                take_one(box, session, uid, fetched.get(uid), site, now, take, savepoint=False)
    return len(uids)


def take_batch(
    box: Mailbox,
    session: ImapSession,
    batch: list[int],
    fetched: dict[int, FetchedMessage],
    site: Site,
    now: Callable[[], datetime],
    take: Callable[[Mailbox, ImapSession, FetchedMessage, Site, datetime], None],
    *,
    read_ahead: bool = False,
    ahead: Ahead | None = None,
) -> None:
    """One FETCH batch in one transaction (decision 0039), its journal rows inserted in
    one statement and the cursor written once, both at its end (decision 0040): every
    message of the batch is taken, quarantined or gone, so the cursor ends past the
    batch's highest UID, as it did message by message.

    With `read_ahead` (incoming boxes, decision 0043) what the batch's mails ask of the
    database is read once for all of them (`batchreads.Reads`) and their new rows are
    inserted one table at a time. Another node may commit the same mail meanwhile: then
    the unique indexes refuse the batch's insert, the batch rolls back whole, and it is
    taken again mail by mail, where each mail sees the other node's row (window 4)."""
    try:
        _take_batch(box, session, batch, fetched, site, now, take, read_ahead=read_ahead, ahead=ahead)
    except IntegrityError:
        if not read_ahead:
            raise
        log.info("%s uids %s-%s: a mail was taken elsewhere meanwhile; the batch again, mail by mail",
                 box.address, batch[0], batch[-1])
        _take_batch(box, session, batch, fetched, site, now, take, read_ahead=False)


def _take_batch(
    box: Mailbox,
    session: ImapSession,
    batch: list[int],
    fetched: dict[int, FetchedMessage],
    site: Site,
    now: Callable[[], datetime],
    take: Callable[[Mailbox, ImapSession, FetchedMessage, Site, datetime], None],
    *,
    read_ahead: bool,
    ahead: Ahead | None = None,
) -> None:
    before = box.last_uid
    # Made before the write transaction (what needs no database), entered inside it.
    taker_reads = ahead(box, session, fetched, site, now()) if ahead is not None else nullcontext()
    # Parsing needs no database: done before the write transaction, so the senders'
    # claims and outcome writes do not wait behind it (SQLite has one writer).
    mails = batchreads.parse_all(fetched, site) if read_ahead else None
    box.in_batch = True  # type: ignore[attr-defined]
    try:
        with transaction.atomic():
            with journal.batched(), held_rules():
                reads = batchreads.Reads(box, session, fetched, site, now(), mails) if read_ahead else None
                with batchreads.reading(reads), taker_reads:
                    for uid in batch:
                        if reads is not None and uid in reads.flush_before:
                            journal.flush()  # this mail reads the earlier ones' rows
                        take_one(box, session, uid, fetched.get(uid), site, now, take, savepoint=True)
                        checkpoint("receiving")  # inside the batch: a kill here leaves none of it
            box.in_batch = False  # type: ignore[attr-defined]
            advance_cursor(box, max(batch))
    except BaseException:
        box.last_uid = before  # nothing of the batch is written: read it again
        raise
    finally:
        box.in_batch = False  # type: ignore[attr-defined]


def take_one(
    box: Mailbox,
    session: ImapSession,
    uid: int,
    message: FetchedMessage | None,
    site: Site,
    now: Callable[[], datetime],
    take: Callable[[Mailbox, ImapSession, FetchedMessage, Site, datetime], None],
    *,
    savepoint: bool,
) -> None:
    if message is None:  # expunged between SEARCH and FETCH
        with transaction.atomic():
            advance_cursor(box, uid)
        return
    try:
        if savepoint:
            # A failing message rolls back to here, not the batch (the rows of the
            # messages before it stay, to commit with the batch).
            with journal.savepoint():
                take(box, session, message, site, now())
        else:
            take(box, session, message, site, now())
    except Exception as exc:
        if transient(exc):
            raise
        if isinstance(exc, IntegrityError) and batchreads.current() is not None:
            raise  # taken elsewhere meanwhile: the batch again, mail by mail (take_batch)
        # One bad message never stops the box (B-7): quarantine it with the reason.
        log.exception("%s uid %s: could not be taken", box.address, uid)
        quarantine(box, session, message, "internal error while taking the message", now())


def take_incoming(box: Mailbox, session: ImapSession, message: FetchedMessage, site: Site, now: datetime) -> None:
    reads = batchreads.current()
    if (
        message.uid in reads.taken
        if reads is not None
        else Interaction.objects.filter(mailbox=box, uidvalidity=session.uidvalidity, uid=message.uid).exists()
    ):
        with transaction.atomic():
            advance_cursor(box, message.uid)
        return
    if message.truncated or message.size > site.max_message_bytes:
        # Only the header was fetched: never take that for the mail (window 3).
        quarantine(box, session, message, f"message of {message.size} bytes is over the limit of {site.max_message_bytes}", now)
        return
    try:
        mail = reads.parsed(message.uid) if reads is not None else parse(message.raw)
    except UnreadableMessage as exc:
        quarantine(box, session, message, f"unreadable: {exc}", now)
        return
    verdict = autoreply.classify(mail.msg)
    own = autoreply.is_own(mail.msg, site.message_id_domain)
    # A person released it from quarantine: it is customer mail, whatever it looks like
    # (it is still never answered automatically unless it looks human).
    if (own or verdict.kind in ("bounce", "loop")) and not released_before(box.pk, mail.message_id or ""):
        reason = "our own mail came back (loop)" if own else f"{verdict.kind}: {verdict.reason}"
        quarantine(box, session, message, reason, now)
        return
    customer = mail.from_addr or (mail.reply_to[0] if mail.reply_to else None)
    if not customer:
        quarantine(box, session, message, "no sender address", now)
        return
    if reads is not None:
        # Read ahead (decision 0043): no savepoint of its own (decision 0054). Its rows
        # wait for the batch's INSERT, where a mail another node took meanwhile meets the
        # unique indexes; an insert made at once (a rule's delete or copy) refused here
        # goes the same way: take_one lets the IntegrityError through and the batch is
        # taken again mail by mail (take_batch), where this except below handles it.
        create_interaction(box, session, message, mail, customer, verdict, site, now)
        return
    try:
        with journal.savepoint():
            create_interaction(box, session, message, mail, customer, verdict, site, now)
    except IntegrityError:
        # Another watcher took this mail first, under this UID or as the same mail in
        # another box (the unique indexes waited for its commit): look again, now it is
        # a duplicate whose copy is recorded (issue 7, window 4).
        log.info("%s uid %s: taken by another watcher at the same moment", box.address, message.uid)
        with transaction.atomic(), batchreads.reading(None):
            if Interaction.objects.filter(mailbox=box, uidvalidity=session.uidvalidity, uid=message.uid).exists():
                advance_cursor(box, message.uid)
            else:
                create_interaction(box, session, message, mail, customer, verdict, site, now)


def create_interaction(
    box: Mailbox,
    session: ImapSession,
    message: FetchedMessage,
    mail: ParsedMail,
    customer: str,
    verdict: autoreply.Verdict,
    site: Site,
    now: datetime,
) -> Interaction | None:
    # Plain read first (nearly always empty); lock only the rare duplicate we update. The
    # unique index on dedupe_key is what makes this check safe under concurrency.
    key = dedupe_key(mail.message_id, mail.from_addr, mail.date, mail.subject)
    reads = batchreads.current()
    first = None
    if key and (reads.maybe_known(message.uid, key) if reads is not None else True):
        first = Interaction.objects.select_for_update(of=("self",)).filter(dedupe_key=key).first()
    if first is not None:
        take_copy(first, box, session, message, mail, now)
        advance_cursor(box, message.uid)
        return None
    facts = facts_from_mail(mail)
    rules = evaluate(active_rules(), facts)
    contact = reads.contact(customer) if reads is not None else contacts.lookup(customer)
    priority = site.priority_policy(
        PriorityInput(
            box_default=box.default_priority,
            contact_level=contact.level if contact else None,
            contact_priority=contact.priority if contact else 0,
            importance_header=importance(facts.headers),
            rules_set=rules.priority_set,
            rules_add=rules.priority_add,
        )
    )
    approval_reason = at_reception(
        site.approval,
        box=box.address,
        priority=priority.value,
        contact_level=contact.level if contact else None,
        contact_requires=bool(contact and contact.requires_approval),
        rule_requires=rules.require_approval,
    )
    earlier = (
        reads.follow_up(message.uid, mail, customer)
        if reads is not None and message.uid not in reads.flush_before
        else follow_up_of(mail, customer, box)
    )
    target = Agent.objects.filter(address__iexact=rules.agent).first() if rules.agent else None
    ix = Interaction(
        node_id=site.node_id,
        mailbox=box,
        uidvalidity=session.uidvalidity,
        uid=message.uid,
        message_id=mail.message_id or "",
        dedupe_key=key,
        raw_sha256=hashlib.sha256(message.raw).hexdigest(),
        references=list(mail.references),
        to_addr=", ".join(mail.to),
        reply_to=mail.reply_to[0] if mail.reply_to else "",
        customer=customer,
        customer_name=mail.from_name or "",
        subject=mail.subject[:998],
        arrival_time=message.internaldate,
        priority=priority.value,
        priority_reasons=[list(r) for r in priority.reasons],
        queue=rules.queue or (box.skills or [site.unassigned_queue])[0],
        rules=rules.as_record(),
        approval=approval_reason is not None,
        target_agent=target,
        follows=earlier,
        # Sticky routing (iceMail): a follow-up waits a while for the agent who answered.
        preferred_agent=earlier.agent if earlier and earlier.agent_id else None,
        preferred_until=now + site.follow_up_wait if earlier and earlier.agent_id else None,
    )
    if reads is not None and not (rules.delete or rules.forward_copies):
        # Inserted with the batch's others (decision 0043): nothing below reads it back.
        journal.defer(ix)
    else:
        ix.save(force_insert=True)
    journal.record(
        "received", now, interaction=ix, uid=message.uid, size=message.size, classified=verdict.kind,
        follows=str(earlier.guid) if earlier else None,
    )
    search.keep_customer_text(ix, mail.text)  # the journal's full text (decision 0023)
    if rules.hits or rules.misses:
        journal.record("rules", now, interaction=ix, **rules.as_record())
    if approval_reason:
        journal.record("approval_required", now, interaction=ix, reason=approval_reason)
    # Mail a rule deletes is not answered: it is spam or noise by the site's own say-so.
    skip = "deleted by a routing rule" if rules.delete else ""
    skip = skip or auto_response_skip_reason(box, verdict, rules.auto_response, ix=ix, site=site, now=now)
    if not skip:
        try:
            queue_auto_response(ix, box, mail, site, now, template=rules.auto_response)
        except UnsafeHeaderValue as exc:
            skip = f"cannot address an auto-response: {exc}"[:200]
    if skip:
        ix.auto_response_skipped = skip
        if ix.pk is not None:  # else it is inserted with the field set
            ix.save(update_fields=["auto_response_skipped"])
    for address in rules.forward_copies:
        queue_copy(ix, mail, address, site, now)
    if rules.delete:
        apply(ix, Discarded(rule=rules.set_by("delete") or ""), now, reason=rules.delete)
    else:
        journal.record("queued", now, interaction=ix, priority=ix.priority, queue=ix.queue)
    advance_cursor(box, message.uid)
    return ix


def take_copy(first: Interaction, box: Mailbox, session: ImapSession, message: FetchedMessage, mail: ParsedMail, now: datetime) -> None:
    """The same mail again: one mail sent to two of our boxes (B-3), a re-delivery, or the
    box rebuilt under a new UIDVALIDITY. One interaction, one auto-response; the copy is
    remembered so it leaves the server with the original (or at once, if the interaction
    is already closed)."""
    here = [box.pk, session.uidvalidity, message.uid]
    if first.mailbox_id == box.pk and first.uidvalidity != session.uidvalidity and first.state is not State.CLOSED:
        # The original itself, under the rebuilt box's new UID (issue 7, window 7).
        Interaction.objects.filter(pk=first.pk).update(uidvalidity=session.uidvalidity, uid=message.uid)
        journal.record("rebound", now, interaction=first, mailbox=box, uid=message.uid, was=[first.uidvalidity, first.uid])
        return
    if (first.mailbox_id, first.uidvalidity, first.uid) == tuple(here) or here in (first.copies or ()):
        return
    # A copy of this box seen under an older UIDVALIDITY is this one now.
    copies = [c for c in first.copies or () if not (c[0] == box.pk and c[1] != session.uidvalidity)]
    if here not in copies:
        copies.append(here)
    Interaction.objects.filter(pk=first.pk).update(copies=copies, copies_pending=first.state is State.CLOSED)
    journal.record("duplicate_ignored", now, interaction=first, mailbox=box, uid=message.uid, message_id=mail.message_id)


def follow_up_of(mail: ParsedMail, customer: str, box: Mailbox) -> Interaction | None:
    """The earlier interaction this mail continues: its References name our reply or the
    customer's earlier mail, and it comes from the same customer (no hijacking, B-12)."""
    ids = [i for i in (mail.in_reply_to, *mail.references) if i]
    if not ids:
        return None
    replied = Outgoing.objects.filter(message_id__in=ids, kind=Outgoing.REPLY).values_list("interaction_id", flat=True)
    return (
        Interaction.objects.filter(customer__iexact=customer)
        .filter(Q(pk__in=list(replied)) | Q(message_id__in=ids))
        .select_related("agent")
        .order_by("-arrival_time")
        .first()
    )


def queue_copy(ix: Interaction, mail: ParsedMail, address: str, site: Site, now: datetime) -> None:
    """A rule's "forward a copy": the original, attached to a short notice."""
    queue_notice(
        site,
        now,
        key=f"copy:{ix.guid}:{address.lower()}",
        to=address,
        subject=f"Copy: {ix.subject}",
        text=f"A routing rule sends you a copy of this email to {ix.mailbox.address}.\n",
        interaction=ix,
        attach=mail.msg,
    )


def quarantine(box: Mailbox, session: ImapSession, message: FetchedMessage, reason: str, now: datetime) -> None:
    """Record why, raise the alert, then move the message aside on the server. Never
    deletes it. A failed move is retried at the box's next passes (engine/quarantine.py)."""
    log.warning("%s uid %s quarantined: %s", box.address, message.uid, reason)
    with transaction.atomic():
        row, created = Quarantined.objects.get_or_create(
            mailbox=box,
            uidvalidity=session.uidvalidity,
            uid=message.uid,
            defaults={
                "folder": box.folder,
                "reason": reason[:1000],
                "size": message.size,
                "message_id": message_id_of(message.raw),
                "internaldate": message.internaldate,
            },
        )
        if created:
            journal.record("quarantined", now, mailbox=box, uid=message.uid, reason=reason)
            waiting = Quarantined.objects.filter(mailbox=box, released_at=None).count()
            raise_alert(
                AlertKind.QUARANTINED,
                box.address,
                f"{waiting} message(s) in quarantine in {box.address}; the latest, uid {message.uid}: {reason}",
                now,
            )
        advance_cursor(box, message.uid)
    # After the commit (of the whole FETCH batch, when reception takes one): a crash before
    # the move leaves the message in place and the row says "not moved", so the next pass
    # moves it; and so does a failed move (held.tend), so it never undoes the batch.
    if row.moved_at is None:
        transaction.on_commit(lambda: held.move_aside([row], session, now), robust=True)


def message_id_of(raw: bytes) -> str:
    """The Message-ID of bytes that may not parse as a mail at all ("" when none)."""
    try:
        return (parse(raw).message_id or "")[:998]
    except UnreadableMessage:
        return ""
