"""Reply handling (figs. 9 and 10): mail arriving in the outbound box.

Every message there gets one ledger row. A reply is accepted only when it carries a
correlation token whose MAC verifies for the agent the interaction was delivered to, the
site's mail server vouches that it comes from that agent (``core.senderauth``: a From
header alone proves nothing, decision 0014), and the interaction still waits for a reply;
then the rewritten reply, with every token taken out of it, is queued under the key
`reply:<guid>`, which exists at most once per interaction. An approver's answer to an
approval request is read the same way, its token bound to that one approval round.
Anything else goes to the dead box. Only senders the mail server vouches for are told why
(subject and reason, never the mail itself, at most a few an hour): an outsider writing
as an agent gets Postroom to send nothing at all.

While a node works on its local store (island mode, decisions 0036 and 0045) the two
sides know different interactions: a genuine token (its MAC verifies for the vouched
sender) that names an interaction this store does not know is **left** (`Left`: ledgered
`waiting`, nothing sent, nobody told), never dead-boxed, and read again once every island
is merged (`rewind_waiting`). The node on its local store takes only replies to its own
interactions and leaves everything else for the database's side.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid

from django.db import IntegrityError, connection, transaction
from django.db.models import QuerySet

from postroom.core import autoreply
from postroom.core.approval import ACCEPTED_FORMS, Decision, at_reply, read_mail_decision
from postroom.core.compose import UnsafeHeaderValue, reply_to_customer
from postroom.core.correlation import (
    candidate_tokens,
    parse_token,
    verify_token,
)
from postroom.core.islandlocal import answer_message_id
from postroom.core.lifecycle import AWAITING_REPLY, ReplyAccepted, ReplyHeld
from postroom.core.senderauth import vouch
from postroom.engine import localstore, nodes
from postroom.engine.approvals import approval_bound, request_by_mail
from postroom.engine.autoresponse import reply_target
from postroom.engine.faults import checkpoint
from postroom.engine.notices import queue_notice
from postroom.engine.reception import advance_cursor, hold_box
from postroom.engine.site import Site
from postroom.mail.imap import FetchedMessage, ImapSession
from postroom.mail.message import ParsedMail, UnreadableMessage, body_text, parse
from postroom.store import journal
from postroom.store.commands import CommandError, decide_approval
from postroom.store.compiled import CompiledIn
from postroom.store.islandmerge import merged_into
from postroom.store.models import Agent, Approval, Interaction, Mailbox, OutboundMessage, Outgoing
from postroom.store.search import keep_reply_text
from postroom.store.transitions import apply

log = logging.getLogger(__name__)


class Refused(Exception):
    """Mail in the outbound box that is not acted on: `reason` for the ledger and journal,
    `notify` the people to tell (only ever senders the mail server vouched for)."""

    def __init__(
        self,
        reason: str,
        interaction: Interaction | None = None,
        notify: tuple[str, ...] = (),
        *,
        notice_subject: str | None = None,
        notice_text: str = "",
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.interaction = interaction
        self.notify = notify
        self.notice_subject = notice_subject
        self.notice_text = notice_text


class Left(Refused):
    """Mail that is not this store's to decide now (island mode, decision 0045): ledgered
    `waiting`, nothing sent, nobody told; read again once every island is merged."""


# Why the node on its local store leaves mail it does not accept.
ON_LOCAL_STORE = "left for the database's side (this node works on its local store)"


class Ahead:
    """What a FETCH batch of the outbound box reads once (decision 0050), a context manager
    for `reception.ingest`'s `ahead`. Made before the batch's write transaction: every
    message parsed (no database: SQLite's one writer does not wait behind parsing). Entered
    inside it: which of the batch's UIDs are ledgered already (one query, not one per
    message), and on PostgreSQL the interactions its tokens name locked, in id order,
    before any reply takes its lock: the batch holds them to its commit, and a sender's
    outcome write (decision 0047) or a routing round locks in id order too, so they never
    wait on each other crosswise. Each reply's checks still read the database as it stands
    when that reply is taken (an earlier reply of the same batch included)."""

    def __init__(
        self, box: Mailbox, session: ImapSession, fetched: dict[int, FetchedMessage], site: Site, now: datetime
    ) -> None:
        self.box, self.session, self.uids = box, session, list(fetched)
        self.ledgered: set[int] = set()
        self.mails: dict[int, ParsedMail | UnreadableMessage] = {}
        self.guids: set[uuid.UUID] = set()
        for uid, message in fetched.items():
            if message.truncated:
                continue
            try:
                mail = parse(message.raw)
            except UnreadableMessage as exc:
                self.mails[uid] = exc
                continue
            except Exception:  # noqa: BLE001 - taken alone: it fails (and is quarantined) there
                continue
            self.mails[uid] = mail
            try:
                self.guids.update(token_guids(box, mail))
            except Exception:  # noqa: BLE001 - match() meets it again, alone
                continue
        self._previous: Ahead | None = None
        self.locked: set[uuid.UUID] = set()  # the interactions the batch holds (PostgreSQL)

    def __enter__(self) -> Ahead:
        box, session = self.box, self.session
        self.ledgered = set(
            OutboundMessage.objects.filter(mailbox=box, uidvalidity=session.uidvalidity, uid__in=self.uids).values_list(
                "uid", flat=True
            )
        )
        if self.guids and connection.vendor == "postgresql":
            locked = Interaction.objects.select_for_update(of=("self",)).filter(guid__in=self.guids).order_by("pk")
            list(locked.values_list("pk", flat=True))
            self.locked = set(self.guids)
        self._previous = getattr(_batch, "ahead", None)
        _batch.ahead = self
        return self

    def __exit__(self, *exc: object) -> None:
        _batch.ahead = self._previous

    def holds(self, ix: Interaction) -> bool:
        """Whether `ix`, read inside this batch's write transaction, is as the database has
        it until the batch commits: on SQLite the batch holds the one write lock (BEGIN
        IMMEDIATE) from its start, on PostgreSQL the row lock taken on entering, before any
        reply is read. Only this batch's own replies can change it then, and each reads
        it again (`match`) after the ones before it."""
        conn = transaction.get_connection()
        if not conn.in_atomic_block:
            return False
        if conn.vendor == "sqlite":
            return getattr(conn, "transaction_mode", None) in ("IMMEDIATE", "EXCLUSIVE")
        return ix.guid in self.locked

    def mail(self, message: FetchedMessage) -> ParsedMail:
        found = self.mails.pop(message.uid, None)
        if isinstance(found, UnreadableMessage):
            raise found
        return found if found is not None else parse(message.raw)


_batch = threading.local()  # per watcher thread: its box's batch


def read_ahead(
    box: Mailbox, session: ImapSession, fetched: dict[int, FetchedMessage], site: Site, now: datetime
) -> Ahead:
    """`reception.ingest`'s `ahead` for the outbound box: its batch's `Ahead`."""
    return Ahead(box, session, fetched, site, now)


def mail_candidates(box: Mailbox, mail: ParsedMail) -> list[tuple[str, str]]:
    """The correlation tokens `mail` may carry for the outbound box `box` (its recipients'
    plus-addresses, In-Reply-To, References, the subject tag), as (source, token)."""
    return candidate_tokens(
        recipients=[*mail.delivered_to, *mail.to, *mail.cc],
        outbound=box.address,
        in_reply_to=mail.in_reply_to,
        references=list(mail.references),
        subject=mail.subject,
    )


def token_guids(box: Mailbox, mail: ParsedMail) -> list[uuid.UUID]:
    """The interaction guids the mail's candidate tokens name (MACs unchecked)."""
    return [parsed.guid for _source, token in mail_candidates(box, mail) if (parsed := parse_token(token)) is not None]


def take_outbound(box: Mailbox, session: ImapSession, message: FetchedMessage, site: Site, now: datetime) -> None:
    ahead: Ahead | None = getattr(_batch, "ahead", None)
    if (
        message.uid in ahead.ledgered
        if ahead is not None
        else OutboundMessage.objects.filter(mailbox=box, uidvalidity=session.uidvalidity, uid=message.uid).exists()
    ):
        with transaction.atomic():
            advance_cursor(box, message.uid)
        return
    # On its local store the node knows only the interactions it took in itself: what it
    # does not accept is the database's side's to judge (now, or after the merge), so it
    # refuses nothing and tells nobody (two sides would dead-box and notify twice).
    island = localstore.on_local()

    def turn_down(refusal: Refused, mail: ParsedMail | None) -> None:
        if island or isinstance(refusal, Left):
            leave(box, session, message, mail, refusal.reason if not island else f"{ON_LOCAL_STORE}: {refusal.reason}")
        else:
            refuse(box, session, message, mail, refusal, site, now)

    mail: ParsedMail | None = None
    if message.truncated:
        if island:
            turn_down(Refused("too large"), None)
        else:
            refuse_oversize(box, session, message, site, now)
        return
    try:
        mail = ahead.mail(message) if ahead is not None else parse(message.raw)
        ix = match(box, mail, site)
    except UnreadableMessage as exc:
        turn_down(Refused(f"unreadable: {exc}"), None)
        return
    except Refused as refusal:
        turn_down(refusal, mail)
        return
    # Approvals are decided on the web and kept on the database: on the local store an
    # approver's answer, or a reply that needs an approval, waits for the merge.
    if isinstance(ix, ApprovalMail):
        if island:
            turn_down(Refused("approvals wait for the database"), mail)
        else:
            take_decision(box, session, message, mail, ix, site, now)
        return
    if island and held_for_approval(ix, site):
        turn_down(Refused("approvals wait for the database"), mail)
        return
    try:
        # A savepoint inside the outbound box's FETCH batch (decision 0050): a reply turned
        # down below leaves no row of its acceptance, its journal rows included.
        with journal.savepoint():
            accept(box, session, message, mail, ix, site, now)
            # After the commit that keeps the reply: the batch's, or this one's alone.
            transaction.on_commit(lambda: checkpoint("reply-committed"))
    except UnsafeHeaderValue as exc:
        # e.g. a customer address that needs SMTPUTF8: the reply cannot be sent as is.
        turn_down(Refused(f"cannot address the reply: {exc}", ix, (mail.from_addr or "",)), mail)
    except IntegrityError:
        # reply:<guid> already exists: a second reply to the same interaction.
        turn_down(Refused("the interaction already has a reply", ix, (mail.from_addr or "",)), mail)


def held_for_approval(ix: Interaction, site: Site) -> bool:
    return bool(
        at_reply(site.approval, required_at_reception=ix.approval, agent=ix.agent.address, probationary=ix.agent.probationary)
    )


def leave(box: Mailbox, session: ImapSession, message: FetchedMessage, mail: ParsedMail | None, reason: str) -> None:
    """Ledger the message `waiting` and move on: it stays in the outbound box, untouched,
    until `rewind_waiting` has it read again (decision 0045)."""
    log.info("outbound uid %s left for later: %s", message.uid, reason)
    with transaction.atomic():
        ledger(box, session, message, mail, OutboundMessage.WAITING, reason)
        advance_cursor(box, message.uid)


def ledger(
    box: Mailbox,
    session: ImapSession,
    message: FetchedMessage,
    mail: ParsedMail | None,
    outcome: str,
    reason: str,
    interaction: Interaction | None = None,
) -> tuple[OutboundMessage, bool]:
    """The outbound box's ledger row of `message` (one per UID of this UIDVALIDITY), and
    whether this call made it."""
    return OutboundMessage.objects.get_or_create(
        mailbox=box,
        uidvalidity=session.uidvalidity,
        uid=message.uid,
        defaults={
            "message_id": (mail.message_id if mail else "") or "",
            "sender": (mail.from_addr if mail else "") or "",
            "subject": (mail.subject if mail else "")[:998],
            "interaction": interaction,
            "outcome": outcome,
            "reason": reason[:500],
        },
    )


def rewind_waiting(box: Mailbox, site: Site) -> int:
    """Once no node is on its local store or unmerged (`nodes.islands_out`), the mail left
    `waiting` in the outbound box is read again: its ledger rows go and the box's cursor
    moves back before the first of them (messages ledgered since are skipped as usual).
    Its interactions are known now if an island took them in (the merge wrote them, or
    named them: `merged_into`). In the watcher's pass, under its lease on the box; how
    many were let go."""
    if box.kind != Mailbox.OUTBOUND or localstore.on_local():
        return 0
    waiting = OutboundMessage.objects.filter(mailbox=box, uidvalidity=box.uidvalidity, outcome=OutboundMessage.WAITING)
    first = waiting.order_by("uid").values_list("uid", flat=True).first()
    if first is None or (site.island is not None and nodes.islands_out()):
        return 0
    with transaction.atomic():
        hold_box(box)
        count, _ = waiting.delete()
        box.last_uid = min(box.last_uid, first - 1)
        Mailbox.objects.filter(pk=box.pk, last_uid__gt=box.last_uid).update(last_uid=box.last_uid)
    log.info("%s: %d message(s) left during an island read again", box.address, count)
    return count


def refuse_oversize(box: Mailbox, session: ImapSession, message: FetchedMessage, site: Site, now: datetime) -> None:
    """Over max_message_bytes only the header was fetched: it must never pass for the
    reply (issue 7, window 3). The whole message goes to the dead box (cleanup copies it
    from the server) and the agent, if it is one, is told to send it smaller."""
    try:
        mail: ParsedMail | None = parse(message.raw)
    except UnreadableMessage:
        mail = None
    interaction = None
    notify: tuple[str, ...] = ()
    sender = (mail.from_addr or "").lower() if mail else ""
    try:
        found = match(box, mail, site) if mail else None
        if found is not None:
            # match() only answers for a sender the mail server vouched for.
            interaction = found if isinstance(found, Interaction) else found.interaction
            notify = (sender,)
    except Refused as refusal:
        interaction, notify = refusal.interaction, refusal.notify
    reason = (
        f"the message is too large ({message.size} bytes; the limit is {site.max_message_bytes}): "
        "send it again smaller, e.g. with a link instead of a large attachment"
    )
    refuse(box, session, message, mail, Refused(reason, interaction, notify), site, now)


def approval_answered(ix: Interaction, token: str, sender: str, site: Site) -> Approval | None:
    """The approval round of `ix` whose request to `sender` carried `token`, if any."""
    for approval in ix.approvals.order_by("-pk"):
        if verify_token(site.keys.approval, token, sender, bound=approval_bound(approval)):
            return approval
    return None


def match(box: Mailbox, mail: ParsedMail, site: Site) -> Interaction | ApprovalMail:
    """The interaction this mail answers (or the approval it decides), or Refused with the
    reason (fig. 9 504, fig. 10 556)."""
    verdict = autoreply.classify(mail.msg)
    if verdict.kind != "human":
        # An agent's out-of-office or a bounce must never reach the customer as a reply.
        raise Refused(f"{verdict.kind}: {verdict.reason}")
    sender = (mail.from_addr or "").lower()
    candidates = mail_candidates(box, mail)
    named = named_interactions(candidates)
    agent = sending_agent(sender, named.values())
    vouched = vouch(
        mail.msg, site.sender_auth, sender=sender or None, logins=(agent.mailbox_login,) if agent else ()
    )
    # Whom a refusal is told to: an agent the mail server vouches for. Anyone else gets no
    # reaction at all (no backscatter, no way to make Postroom write to an agent).
    known_agent = agent is not None and vouched.ok

    def tell(*who: str) -> tuple[str, ...]:
        return who if known_agent else ()

    found: Interaction | None = None
    former: Interaction | None = None
    # A genuine token (minted for this sender) of an interaction this store does not know.
    unknown = False
    for _source, token in candidates:
        ix = named.get(token)
        if ix is None and (parsed := parse_token(token)) is not None:
            # An island's interaction merged into the shared record of the same email keeps
            # the tokens the island gave out (decision 0045).
            ix = merged_into(parsed.guid)
        if ix is None:
            unknown = unknown or bool(sender and verify_token(site.keys.token, token, sender))
            continue
        # A reply's token is the assigned agent's (`keys.token`), an approval answer's its
        # round's (`keys.approval`, bound to the round): no token is both, so the common
        # case, a reply, is told first and needs no read of the approval rounds (0047).
        if ix.agent is not None and verify_token(site.keys.token, token, ix.agent.address):
            found = ix
            break
        approval = approval_answered(ix, token, sender, site) if sender else None
        if approval is not None:
            if not vouched.ok:
                raise Refused(vouched.how, ix)
            return ApprovalMail(ix, approval)
        if any(verify_token(site.keys.token, token, a) for a in ix.excluded_agents or ()):
            former = ix  # a token we gave an agent who no longer holds it
    if not vouched.ok:
        # Forged or unauthenticated: whatever the token, nothing is sent and nobody told.
        raise Refused(vouched.how, found or former)
    if found is None and former is not None:
        # fig. 8/9: the interaction was taken from this agent (no reply in time, transfer):
        # the late reply goes to the dead box and the agent is told.
        raise Refused("the interaction was reassigned before this reply arrived", former, tell(sender))
    if found is None and unknown and site.island is not None and not localstore.on_local() and nodes.islands_out():
        # Its interaction may be a cut-off node's, written here by the merge: judged then.
        raise Left("its token names an interaction a node on its local store may hold; read again after the merge")
    if found is None:
        raise Refused("no live interaction matches this mail", None, tell(sender))
    if sender != found.agent.address.lower():
        raise Refused(
            f"sent by {sender or 'nobody'}, but the interaction is assigned to {found.agent.address}",
            found,
            # Another agent answering (fig. 10 558-560): tell them and the assigned agent.
            tell(sender, found.agent.address),
        )
    if found.state not in AWAITING_REPLY:
        raise Refused(f"the interaction is {found.status}, not waiting for a reply", found, tell(sender))
    return found


def named_interactions(candidates: list[tuple[str, str]]) -> dict[str, Interaction]:
    """The interaction each candidate token names (by its guid; the MAC is checked by the
    caller), all read in one query (decision 0047)."""
    guids = {token: parsed.guid for _source, token in candidates if (parsed := parse_token(token)) is not None}
    if not guids:
        return {}
    found = {ix.guid: ix for ix in read_named(list(dict.fromkeys(guids.values())))}
    return {token: found[guid] for token, guid in guids.items() if guid in found}


def _named_queryset(guids: list[uuid.UUID]) -> QuerySet[Interaction]:
    return Interaction.objects.select_related("agent", "mailbox").filter(guid__in=guids)


# A reply names one interaction, mostly in several places; a mail naming more (anyone can
# write tokens into References) is read the ordinary way rather than kept compiled.
COMPILED_UP_TO = 4
_NAMED = CompiledIn(_named_queryset, Interaction._meta.get_field("guid"), up_to=COMPILED_UP_TO)


def read_named(guids: list[uuid.UUID]) -> list[Interaction]:
    """The interactions (with their agent and box) of `guids` (distinct): what
    `_named_queryset(guids)` reads, with the SQL Django compiled for the first call with as
    many guids in this thread (decision 0055: compiling the SELECT of the three tables'
    columns was half of `named_interactions`, a tenth of the outbound box's watcher)."""
    return _NAMED.objects(guids)  # type: ignore[return-value]


def sending_agent(sender: str, named: Iterable[Interaction]) -> Agent | None:
    """The agent whose address is `sender`: mostly the agent the named interaction is
    assigned to, read with it; anyone else is looked up."""
    if not sender:
        return None
    for ix in named:
        if ix.agent is not None and ix.agent.address.lower() == sender:
            return ix.agent
    return Agent.objects.filter(address__iexact=sender).first()


class ApprovalMail:
    """An approver's answer by mail to the request of one approval round."""

    def __init__(self, interaction: Interaction, approval: Approval) -> None:
        self.interaction = interaction
        self.approval = approval


def accept(
    box: Mailbox, session: ImapSession, message: FetchedMessage, mail: ParsedMail, ix: Interaction, site: Site, now: datetime
) -> None:
    # Locked (PostgreSQL) / under the write lock (SQLite IMMEDIATE): the interaction as
    # `match` read it, unless its version moved since; then it is read again (0047: the
    # full read with its agent and box was a fifth of this watcher). Inside a FETCH batch
    # that already holds it (decision 0055) nothing can have moved it: no query.
    ahead: Ahead | None = getattr(_batch, "ahead", None)
    if ahead is None or not ahead.holds(ix):
        same = Interaction.objects.select_for_update(of=("self",)).filter(pk=ix.pk, version=ix.version)
        if not list(same.values_list("pk", flat=True)):
            ix = Interaction.objects.select_for_update(of=("self",)).select_related("agent", "mailbox").get(pk=ix.pk)
    if ix.state not in AWAITING_REPLY:
        raise IntegrityError("interaction no longer waits for a reply")
    # One reply per interaction (its key); its ID derived from the email's name (0036).
    message_id = answer_message_id(
        "re", ix.mailbox.address, ix.message_id, ix.raw_sha256, site.message_id_domain
    ) or make_msgid("re", domain=site.message_id_domain)
    reply = reply_to_customer(
        mail.msg,
        box_address=ix.mailbox.address,
        box_name=ix.mailbox.display_name or None,
        customer=reply_target(ix),
        original_message_id=ix.message_id or None,
        original_references=list(ix.references or []),
        message_id=message_id,
        subject=ix.subject,
        outbound=box.address,
    )
    # The ledger and outbox rows inserted as `create` / `save(force_insert=True)` would
    # (same statement, same values, at the same moment: a unique index refuses them here,
    # inside this reply's savepoint), without Django's query compiler building the INSERT
    # for every reply (decision 0059: the two writes were a third of `accept`).
    row = OutboundMessage(
        mailbox=box,
        uidvalidity=session.uidvalidity,
        uid=message.uid,
        message_id=mail.message_id or "",
        sender=mail.from_addr or "",
        subject=mail.subject[:998],
        interaction=ix,
        outcome=OutboundMessage.ACCEPTED,
    )
    journal.insert(OutboundMessage, [row])
    held = at_reply(
        site.approval, required_at_reception=ix.approval, agent=ix.agent.address, probationary=ix.agent.probationary
    )
    if held:
        hold(ix, row, reply, held, site, now)
    else:
        queued = Outgoing(
            key=f"reply:{ix.guid}",
            kind=Outgoing.REPLY,
            interaction=ix,
            envelope_from=ix.mailbox.address,
            recipients=[reply_target(ix)],
            message_id=message_id,
            raw=reply.as_bytes(),
            next_attempt_at=now,
        )
        journal.insert(Outgoing, [queued])
        # What `save`'s post_save receiver (store/search.py) does for a reply queued
        # elsewhere, with the text of the reply composed here.
        keep_reply_text(ix, body_text(reply))
        apply(ix, ReplyAccepted(), now, uid=message.uid, message_id=mail.message_id)
    advance_cursor(box, message.uid)
    checkpoint("reply-accepted")  # inside the transaction: the acceptance rolls back


def hold(ix: Interaction, row: OutboundMessage, reply: EmailMessage, reason: str, site: Site, now: datetime) -> None:
    """fig. 10 564-568: the reply waits for an approver, who gets it by mail and on the web."""
    approvers = ix.agent.approvers()
    approval = Approval.objects.create(
        interaction=ix, reply=row, raw=reply.as_bytes(), approvers=approvers, reason_held=reason, requested_at=now
    )
    apply(ix, ReplyHeld(), now, reason=reason, approvers=approvers)
    request_by_mail(ix, approval, reply, site, now)


def take_decision(
    box: Mailbox, session: ImapSession, message: FetchedMessage, mail: ParsedMail, found: ApprovalMail, site: Site, now: datetime
) -> None:
    """An approver answered an approval request by mail: record the decision; the approval
    step acts on it exactly as on a decision made on the web. An answer that is not
    understood, late, or not allowed goes to the dead box and the approver is told."""
    sender = (mail.from_addr or "").lower()
    ix, approval = found.interaction, found.approval
    decision = read_mail_decision(mail.text)
    problem = ""
    if approval.state != Approval.PENDING:
        if ix.approvals.filter(pk__gt=approval.pk).exists():
            problem = "it answers an earlier approval round; the reply waiting now is a newer one"
        else:
            problem = f"the approval was already {approval.state} by {approval.decided_by or 'someone'}"
    elif decision.decision is None:
        problem = f"not understood: {decision.problem}"
    understood = not problem.startswith("not understood")
    with transaction.atomic():
        if not problem:
            assert decision.decision is not None
            try:
                decide_approval(
                    approval,
                    by_user=sender,
                    decision=decision.decision.value,
                    text=decision.text if decision.decision == Decision.EDIT else None,
                    reason=decision.text if decision.decision == Decision.REJECT else None,
                    via="mail",
                    now=now,
                )
            except CommandError as exc:
                # Not an approver, the writer, decided already on the web, ...
                problem = exc.message
        if not problem:
            OutboundMessage.objects.create(
                mailbox=box,
                uidvalidity=session.uidvalidity,
                uid=message.uid,
                message_id=mail.message_id or "",
                sender=sender,
                subject=mail.subject[:998],
                interaction=ix,
                outcome=OutboundMessage.DECISION,
                reason=decision.decision.value if decision.decision else "",
            )
            advance_cursor(box, message.uid)
            return
    journal.record("approval_mail_ignored", now, interaction=ix, reason=problem, by=sender, approval=approval.pk)
    refusal = Refused(
        f"approval answer {problem}",
        ix,
        (sender,),
        notice_subject=f"Approval answer {'not acted on' if understood else 'not understood'}: {mail.subject}",
        notice_text=(
            f"Postroom did not act on your answer to the approval request.\n\nReason: {problem}\n\n"
            f"Nothing was sent to the customer.\n\n{ACCEPTED_FORMS}"
        ),
    )
    refuse(box, session, message, mail, refusal, site, now)


def refuse(
    box: Mailbox,
    session: ImapSession,
    message: FetchedMessage,
    mail: ParsedMail | None,
    refusal: Refused,
    site: Site,
    now: datetime,
) -> None:
    """Ledger it as dead (the cleanup step moves it to the dead box) and notify agents."""
    log.warning("outbound uid %s to the dead box: %s", message.uid, refusal.reason)
    with transaction.atomic():
        row, created = ledger(box, session, message, mail, OutboundMessage.DEAD, refusal.reason, refusal.interaction)
        if created:
            journal.record(
                "dead_boxed",
                now,
                interaction=refusal.interaction,
                mailbox=box,
                reason=refusal.reason[:500],
                sender=(mail.from_addr if mail else "") or "",
            )
            for to in dict.fromkeys(refusal.notify):
                notify_refusal(to, refusal, mail, row, site, now)
        advance_cursor(box, message.uid)


REFUSAL_NOTICE_PREFIX = "notice:dead:"


def notify_refusal(
    to: str, refusal: Refused, mail: ParsedMail | None, row: OutboundMessage, site: Site, now: datetime
) -> None:
    """Tell `to` why their mail was not acted on: the subject and the reason, never the mail
    itself (it may be anyone's words), and at most `site.refusal_notices_per_hour` an hour."""
    recent = Outgoing.objects.filter(
        key__startswith=REFUSAL_NOTICE_PREFIX, key__endswith=f":{to}", created_at__gte=now - timedelta(hours=1)
    ).count()
    if recent >= site.refusal_notices_per_hour:
        journal.record("notice_suppressed", now, interaction=refusal.interaction, to=to, reason="rate limit")
        return
    subject = mail.subject if mail else "(unreadable message)"
    queue_notice(
        site,
        now,
        key=f"{REFUSAL_NOTICE_PREFIX}{row.pk}:{to}",
        to=to,
        subject=refusal.notice_subject or f"Not delivered: {subject}",
        text=refusal.notice_text
        or (
            "Postroom did not send your message to the customer.\n\n"
            f"Subject: {subject}\nReason: {refusal.reason}\n\n"
            "The message was kept in the dead box. Ask your supervisor if you think this is wrong.\n"
        ),
        interaction=refusal.interaction,
        in_reply_to=mail.message_id if mail else None,
    )
