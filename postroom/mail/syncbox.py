"""The sync box: island mode's claims travel as small mails to one address (patent fig. 4,
messaging function 222; claim 25) and every node reads that box in UID order.

This adapter speaks SMTP and IMAP and nothing else: it writes a claim, re-claim,
release or time-sync as a mail (the JSON body of `postroom.core.island.encode`, a
recognisable subject and the `X-Postroom-Sync` header) and reads the box back as
`SyncMessage`s stamped with the server's UID and INTERNALDATE. Who wins is decided in
`postroom.core.island.ClaimBook`, never here.

Anything else that lands in the box (a stray mail, a bounce, a body we cannot read) is
skipped with its reason logged and listed in `SyncRead.ignored`; it never stops a reader.
The box is emptied by `expunge` of the UIDs the claim book no longer needs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from postroom.core.island import EmailKey, Garbled, SyncKind, SyncMessage, decode, encode
from postroom.mail.imap import ImapSession
from postroom.mail.smtp import SmtpOutcome, SmtpSender

log = logging.getLogger(__name__)

HEADER = "X-Postroom-Sync"
SUBJECT_TAG = "[postroom-sync]"
# A sync message is a few hundred bytes; anything far larger is not one of ours, and is
# not fetched whole (a reader must not be slowed or filled up by a stray attachment).
MAX_SIZE = 64 * 1024


def compose(
    sender: str,
    to: str,
    kind: SyncKind,
    node: str,
    local_time: datetime,
    email: EmailKey | None = None,
) -> bytes:
    """The mail that carries one sync message."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    what = email.message_id if email else ""
    msg["Subject"] = f"{SUBJECT_TAG} {kind.value} {node} {what}".strip()
    msg["Date"] = format_datetime(local_time)
    msg["Message-ID"] = make_msgid("sync", domain=sender.rpartition("@")[2] or None)
    msg[HEADER] = "1"
    # Never answered by anyone's autoresponder (RFC 3834), ours included.
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(
        encode(kind, node, local_time, email).decode(), subtype="plain", charset="utf-8"
    )
    return msg.as_bytes()


def send(
    smtp: SmtpSender,
    sender: str,
    to: str,
    kind: SyncKind,
    node: str,
    local_time: datetime,
    email: EmailKey | None = None,
) -> SmtpOutcome:
    """Send one sync message. An unknown outcome is harmless: whether the claim counts
    is decided by reading the box, so the caller simply reads and, if it is not there,
    claims again."""
    return smtp.send(sender, [to], compose(sender, to, kind, node, local_time, email))


@dataclass
class SyncRead:
    messages: list[SyncMessage] = field(default_factory=list)
    ignored: dict[int, str] = field(default_factory=dict)  # UID -> why
    last_uid: int = 0  # the highest UID looked at, sync message or not


class SyncBox(ImapSession):
    """An open session on the sync box. Not thread-safe."""

    def read_after(self, uid: int) -> SyncRead:
        """Every message above `uid`, in UID order, as sync messages; the rest ignored
        with a reason. Callers keep `last_uid` with the box's UIDVALIDITY
        (`self.uidvalidity`): a new UIDVALIDITY means reading again from 0."""
        out = SyncRead(last_uid=uid)
        uids = self.new_uids(uid)
        if not uids:
            return out
        fetched = self.fetch(uids, max_size=MAX_SIZE)
        for u in uids:
            out.last_uid = max(out.last_uid, u)
            item = fetched.get(u)
            if item is None:
                continue  # expunged between SEARCH and FETCH
            try:
                out.messages.append(
                    decode(u, item.internaldate, _payload(item.raw, item.truncated))
                )
            except Garbled as exc:
                out.ignored[u] = str(exc)
                log.warning("sync box %s: UID %d ignored: %s", self.account.login, u, exc)
        return out

    def expunge(self, uids: list[int]) -> None:
        """Remove messages the claim book no longer needs (`ClaimBook.expungeable`)."""
        self.delete(uids)


def _payload(raw: bytes, truncated: bool) -> bytes:
    """The JSON body of one of our sync mails; `Garbled` with the reason for anything else."""
    if truncated:
        raise Garbled(f"larger than {MAX_SIZE} bytes")
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    if msg.get(HEADER) != "1":
        raise Garbled(f"no {HEADER} header (subject {str(msg.get('Subject', ''))[:80]!r})")
    part = msg.get_body(preferencelist=("plain",))
    if part is None:
        raise Garbled("no text/plain body")
    try:
        return str(part.get_content()).encode()
    except (LookupError, ValueError) as exc:  # an unknown charset, a broken encoding
        raise Garbled(f"unreadable body: {exc}") from exc


__all__ = ["HEADER", "SyncBox", "SyncRead", "compose", "send"]
