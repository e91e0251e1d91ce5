"""What reception reads about a FETCH batch, one query each (decision 0043).

Taking a mail asks the database five things: is this UID taken, is this mail (its dedupe
key) known, who is the sender (contacts), which earlier interaction does it continue, and
how many auto-responses went to its addressee lately. Asked mail by mail that was most of
reception's statements (decision 0040's profile). `Reads` asks each once for the whole
batch, before its first mail is taken, inside the batch's transaction; reception then
answers from memory and keeps the batch's new rows for one `bulk_create` per table
(`journal.defer`).

What the batch's own earlier mails change is accounted for: its queued auto-responses
count towards the rate limit (`journal.deferred`), and a mail whose dedupe key or whose
References name an earlier mail of the same batch is read from the database after the
rows kept so far are written (`flush_before`), as if taken alone. What another node
commits meanwhile is what it always was: the unique indexes refuse the second
interaction (decision 0011) and the batch is taken again mail by mail (reception).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from django.db.models import Q

from postroom.core.dedupe import dedupe_key
from postroom.engine.site import Site
from postroom.mail.imap import FetchedMessage, ImapSession
from postroom.mail.message import ParsedMail, UnreadableMessage, parse
from postroom.store import contacts, journal
from postroom.store.models import Contact, Interaction, Mailbox, Outgoing

__all__ = ["Reads", "current", "parse_all", "reading"]

_local = threading.local()


def current() -> Reads | None:
    """The batch being taken by this thread, if reception reads it ahead."""
    return getattr(_local, "reads", None)


@contextmanager
def reading(reads: Reads | None) -> Iterator[None]:
    """Reception answers from `reads` inside the block (None: from the database)."""
    before = current()
    _local.reads = reads
    try:
        yield
    finally:
        _local.reads = before


def reference_ids(mail: ParsedMail) -> list[str]:
    """The Message-IDs a mail says it continues."""
    return [i for i in (mail.in_reply_to, *mail.references) if i]


def rate_target(mail: ParsedMail) -> str:
    """Where its auto-response would go (autoresponse.reply_target), lower-cased."""
    return (mail.reply_to[0] if mail.reply_to else mail.from_addr or "").lower()


def parse_all(fetched: dict[int, FetchedMessage], site: Site) -> dict[int, ParsedMail | UnreadableMessage]:
    """The batch's mails parsed (or what parsing raised), by UID: no database, so
    reception does it before the batch's write transaction (decision 0049)."""
    mails: dict[int, ParsedMail | UnreadableMessage] = {}
    for uid, message in fetched.items():
        if message.truncated or message.size > site.max_message_bytes:
            continue  # quarantined unread (reception)
        try:
            mails[uid] = parse(message.raw)
        except UnreadableMessage as exc:
            mails[uid] = exc
    return mails


class Reads:
    def __init__(
        self, box: Mailbox, session: ImapSession, fetched: dict[int, FetchedMessage], site: Site, now: datetime,
        mails: dict[int, ParsedMail | UnreadableMessage] | None = None,
    ) -> None:
        # `mails`: `parse_all(fetched, site)`, made before the transaction.
        self.mails = parse_all(fetched, site) if mails is None else mails
        parsed = {uid: m for uid, m in sorted(self.mails.items()) if isinstance(m, ParsedMail)}
        # Mails that must see the rows of the batch's earlier mails in the database.
        self.flush_before: set[int] = set()
        keys: dict[int, str] = {}
        for uid, mail in list(parsed.items()):
            try:
                keys[uid] = dedupe_key(mail.message_id, mail.from_addr, mail.date, mail.subject)
                rate_target(mail), reference_ids(mail)
            except Exception:  # noqa: BLE001 - the mail's own take meets it again, alone
                # Hostile mail must not stop the box: this one is read from the database
                # as if taken alone, and fails (is quarantined) alone if it fails again.
                del parsed[uid]
                self.flush_before.add(uid)
        self.taken = set(
            Interaction.objects.filter(mailbox=box, uidvalidity=session.uidvalidity, uid__in=list(fetched))
            .values_list("uid", flat=True)
        )
        wanted = [k for k in keys.values() if k]
        self.known = set(Interaction.objects.filter(dedupe_key__in=wanted).values_list("dedupe_key", flat=True))
        seen_keys: set[str] = set()
        seen_ids: set[str] = set()
        for uid, mail in parsed.items():
            key = keys[uid]
            if key and key in seen_keys:
                self.flush_before.add(uid)
            if any(i in seen_ids for i in reference_ids(mail)):
                self.flush_before.add(uid)
            seen_keys.add(key)
            if mail.message_id:
                seen_ids.add(mail.message_id)
        self.contacts: dict[str, Contact | None] = contacts.lookup_many(
            [m.from_addr or (m.reply_to[0] if m.reply_to else None) for m in parsed.values()]
        )
        self.sent: list[tuple[str, datetime]] = []
        self.rate_keys: set[str] = set()
        if site.auto_response_limit:
            self.rate_keys = {rate_target(m) for m in parsed.values()} - {""}
            self.sent = list(
                Outgoing.objects.filter(
                    kind=Outgoing.AUTO_RESPONSE,
                    rate_key__in=self.rate_keys,
                    created_at__gte=now - site.auto_response_window,
                ).values_list("rate_key", "created_at")
            )
        self._follows(parsed)

    def _follows(self, parsed: dict[int, ParsedMail]) -> None:
        """The interactions the batch's mails may continue (reception.follow_up_of's two
        queries, for every mail at once)."""
        ids = {i for m in parsed.values() for i in reference_ids(m)}
        self.replied: dict[str, set[int]] = {}
        for message_id, ix in Outgoing.objects.filter(message_id__in=ids, kind=Outgoing.REPLY).values_list(
            "message_id", "interaction_id"
        ):
            self.replied.setdefault(message_id, set()).add(ix)
        replied = {ix for found in self.replied.values() for ix in found}
        self.earlier: list[Interaction] = (
            list(
                Interaction.objects.filter(Q(pk__in=replied) | Q(message_id__in=ids)).select_related("agent")
            )
            if ids
            else []
        )

    def parsed(self, uid: int) -> ParsedMail:
        """The mail as parsed ahead (raises what parsing raised)."""
        mail = self.mails[uid]
        if isinstance(mail, UnreadableMessage):
            raise mail
        return mail

    def maybe_known(self, uid: int, key: str) -> bool:
        """May an interaction with this dedupe key exist? (Then the database says.)"""
        return key in self.known or uid in self.flush_before

    def contact(self, address: str) -> Contact | None:
        if address not in self.contacts:
            self.contacts.update(contacts.lookup_many([address]))
        return self.contacts[address]

    def recent_auto_responses(self, address: str, since: datetime) -> int:
        """autoresponse.recent_auto_responses: as read before the batch, plus the batch's."""
        key = address.lower()
        if key in self.rate_keys:
            before = sum(1 for k, at in self.sent if k == key and at >= since)
            queued = journal.deferred(Outgoing)
        else:  # not read ahead: the database has what is written, flushed rows included
            before = Outgoing.objects.filter(rate_key=key, created_at__gte=since, kind=Outgoing.AUTO_RESPONSE).count()
            queued = journal.deferred(Outgoing, unwritten=True)
        return before + sum(1 for row in queued if row.kind == Outgoing.AUTO_RESPONSE and row.rate_key == key)

    def follow_up(self, uid: int, mail: ParsedMail, customer: str) -> Interaction | None:
        ids = set(reference_ids(mail))
        replied = {ix for i in ids for ix in self.replied.get(i, ())}
        candidates = [
            ix
            for ix in self.earlier
            if ix.customer.lower() == customer.lower() and (ix.pk in replied or ix.message_id in ids)
        ]
        return max(candidates, key=lambda ix: (ix.arrival_time, ix.pk), default=None)
