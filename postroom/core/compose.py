"""Building the messages Postroom sends, from the messages it received.

Pure functions over ``email.message.EmailMessage``.  Every builder returns a NEW message and
never mutates its input.  Four builders:

* ``forward_to_agent`` – the customer's mail, body untouched, readdressed to an agent, with
  our Reply-To / Message-ID / subject tag carrying the correlation token.
* ``reply_to_customer`` – the agent's reply, body untouched, made to come from the contact
  centre and threaded to the customer's original; nothing of the agent's own mailbox or our
  plumbing survives in the header.
* ``auto_response`` – an RFC 3834 auto-reply to the customer.
* ``notice`` – an auto-generated notice (dead box, no reply), optionally carrying a
  message of ours as message/rfc822.

Reading headers is ``core.headers``'s job.  One stdlib hazard (CPython 3.11) shapes the
code here: the generator re-splits unparsed header values with ``str.splitlines()``, which
also splits at ``\\x0b \\x0c \\x1c \\x1d \\x1e \\x85 \\u2028 \\u2029`` (CPython gh-117313).  A
customer could smuggle a ``Reply-To:`` line into the copy we forward.  Every header we
pass through is copied with those characters replaced by spaces.
"""

from __future__ import annotations

import copy
import html
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from email.errors import MessageError
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import format_datetime, getaddresses

from postroom.core.correlation import find_tokens_in_text, strip_subject_tag, strip_tokens
from postroom.core.headers import (
    CONTROL_RE,
    POLICY,
    SPLITLINES_EXTRA,
    address_list,
    charset_hint,
    clean_text,
    decode_text,
    decode_words,
    first_msg_id,
    foreign_reply_to,
    header_text,
    raw_header_values,
    references,
    unfold,
)

__all__ = [
    "UnsafeHeaderValue",
    "auto_response",
    "forward_to_agent",
    "notice",
    "reply_to_customer",
    "with_text",
]

class UnsafeHeaderValue(ValueError):
    """A value for a header we write contains a line break or control character."""


# Printable ASCII without "<", ">" or spaces.  Ids we mint must have the "@" of RFC 5322
# §3.6.4; ids we echo back need not, because the other side matches them literally.
_MSG_ID_RE = re.compile(r"^<[!-;=?-~]+@[!-;=?-~]+>$")
_ECHO_ID_RE = re.compile(r"^<[!-;=?-~]+>$")

_FORWARD_DROP = frozenset(
    {
        # Replaced below.  From and Reply-To become ours: an agent's "Reply All" must not
        # reach the customer outside Postroom (issue 7 #13), and a From in the customer's
        # domain fails DMARC at agent mailboxes hosted elsewhere.
        "from", "to", "reply-to", "subject", "message-id", "references", "sender",
        "x-auto-response-suppress",
        # Recipients the agent must not see, or answer with "reply all".
        "cc", "bcc", "mail-followup-to", "mail-reply-to",
        # Trace of the first hop: not ours to resend (RFC 5321 §4.4).
        "received", "return-path", "delivered-to", "x-original-to", "envelope-to",
        "x-envelope-to", "authentication-results", "received-spf", "errors-to",
        # Signatures that break (or would vouch for us) once we change the header.
        "dkim-signature", "domainkey-signature", "x-google-dkim-signature",
        # A read-receipt request would make the agent's client write to the customer
        # directly (RFC 8098 §2.1).
        "disposition-notification-to", "return-receipt-to", "x-confirm-reading-to",
        # Mailbox-store artefacts; a stale Content-Length misleads mbox readers.
        "content-length", "lines", "status", "x-status", "x-uid", "x-keywords",
    }
)
_FORWARD_DROP_PREFIXES = ("arc-", "x-postroom-", "resent-", "x-mozilla-")
# List-Post/-Unsubscribe etc. would let the agent's client write to the list as the agent.
_FORWARD_KEEP_LIST = frozenset({"list-id"})

# The agent's reply leaves our network: keep only what describes the content.
_REPLY_KEEP = frozenset(
    {
        "mime-version", "content-type", "content-transfer-encoding", "content-disposition",
        "content-id", "content-description", "content-language", "content-location",
        "content-base", "date", "importance", "priority", "x-priority", "sensitivity",
        "accept-language",
    }
)
# Removing these would corrupt the MIME structure, so they are never dropped for content.
_STRUCTURAL = frozenset({"mime-version", "content-type", "content-transfer-encoding"})


def _check(value: str, what: str) -> str:
    if not isinstance(value, str):
        raise UnsafeHeaderValue(f"{what} must be a string")
    if CONTROL_RE.search(value.replace("\t", " ")):
        raise UnsafeHeaderValue(f"{what} contains a line break or control character")
    return value


def _mailbox(addr: str, name: str | None = None, *, what: str) -> Address:
    _check(addr, what)
    if name is not None:
        _check(name, what + " display name")
    addr = addr.strip()
    local, at, domain = addr.rpartition("@")
    if at and not domain.isascii():
        # IDNA for the domain (RFC 5890); a non-ASCII local part needs SMTPUTF8 (RFC 6531),
        # which Postroom does not speak, and is refused below.
        try:
            addr = f"{local}@{domain.encode('idna').decode('ascii')}"
        except UnicodeError as exc:
            raise UnsafeHeaderValue(f"{what} has an invalid domain: {addr!r}") from exc
    try:
        return Address(display_name=name or "", addr_spec=addr)
    except (ValueError, IndexError, TypeError, MessageError) as exc:
        raise UnsafeHeaderValue(f"{what} is not an ASCII addr-spec: {addr!r}") from exc


def _mailboxes(value: str, *, what: str) -> list[Address]:
    _check(value, what)
    pairs = getaddresses([value])
    if not pairs or any("@" not in a for _, a in pairs):
        raise UnsafeHeaderValue(f"{what} is not an address list: {value!r}")
    return [_mailbox(a, n or None, what=what) for n, a in pairs]


def _check_msg_id(value: str, what: str) -> str:
    _check(value, what)
    if not _MSG_ID_RE.match(value.strip()):
        raise UnsafeHeaderValue(f"{what} is not a <msg-id>: {value!r}")
    return value.strip()


def _sanitised(value: str) -> str:
    if any(ch in value for ch in SPLITLINES_EXTRA):
        value = "".join(" " if ch in SPLITLINES_EXTRA else ch for ch in value)
    return value


def _copy(msg: Message, keep: Callable[[str, str], bool] | None = None) -> EmailMessage:
    """Deep copy under POLICY, keeping top-level headers for which ``keep(lower_name, value)``.

    Every header of every part is re-stored with ``set_raw`` (written back exactly as it
    came) after the ``splitlines`` characters are neutralised (see module docstring).
    """
    if isinstance(msg, EmailMessage):
        new = copy.deepcopy(msg)
    else:  # a compat32 Message: rebuild it as an EmailMessage from its own serialisation
        new = BytesParser(policy=POLICY).parsebytes(msg.as_bytes())
        assert isinstance(new, EmailMessage)
    for index, part in enumerate(new.walk()):
        part.policy = POLICY
        items = list(part.raw_items())
        for name in {k for k, _ in items}:
            del part[name]
        for name, value in items:
            text = unfold(value) if isinstance(value, str) else str(value)
            if index == 0 and keep is not None and not keep(name.lower(), text):
                continue
            # A header object (set by code, not parsed) folds itself from its parse tree.
            part.set_raw(name, _sanitised(value) if isinstance(value, str) else value)
    return new


def _echo_ids(ids: Iterable[str | None]) -> list[str]:
    """Ids fit to write back into In-Reply-To/References, in order, once each; others dropped."""
    out: list[str] = []
    for i in ids:
        if isinstance(i, str) and _ECHO_ID_RE.match(i.strip()) and i.strip() not in out:
            out.append(i.strip())
    return out


def _set_ids(msg: EmailMessage, name: str, ids: Iterable[str | None]) -> None:
    echo = _echo_ids(ids)
    if echo:
        msg[name] = " ".join(echo)


def forward_to_agent(
    original: EmailMessage,
    *,
    agent: str,
    agent_name: str | None,
    reply_to: str,
    message_id: str,
    tag: str,
    guid: uuid.UUID,
    box_address: str,
    box_name: str | None = None,
) -> EmailMessage:
    """The customer's mail readdressed to an agent, in the form mailing lists use for DMARC.

    No customer address is left in From, To, Cc or Reply-To, so neither "Reply" nor
    "Reply All" in the agent's client can write to the customer outside Postroom, and
    agent mailboxes hosted elsewhere do not refuse the copy under the customer's DMARC
    policy: From is ``"Carol Customer via Example Support" <outbound+TOKEN@…>``, the same
    address as Reply-To.  Who wrote, to whom, when, and where an answer will go (with a
    warning when Reply-To is in another domain than From) is shown in a header block at
    the top of the body (``_header_block``).  The Message-ID carries the token too,
    because agents' clients drop X- headers.  ``X-Auto-Response-Suppress`` asks
    Exchange/Outlook not to answer it with an out-of-office (MS-OXCMAIL §2.2.3.2.14).
    """
    to = _mailbox(agent, agent_name, what="agent")
    reply = _mailbox(reply_to, what="reply_to")
    box = _mailbox(box_address, what="box_address")
    if box_name is not None:
        _check(box_name, "box_name")
    mid = _check_msg_id(message_id, "message_id")
    _check(tag, "tag")
    original_mid = first_msg_id(original, "Message-ID")
    refs = [*references(original), original_mid]
    subject = header_text(original, "Subject") or ""
    facts = _ForwardFacts.of(original)

    def keep(name: str, _value: str) -> bool:
        if name in _FORWARD_DROP or name.startswith(_FORWARD_DROP_PREFIXES):
            return False
        return not (name.startswith("list-") and name not in _FORWARD_KEEP_LIST)

    new = _copy(original, keep)
    _add_header_block(new, facts)
    new["From"] = Address(
        display_name=f"{facts.writer_name()} via {box_name or box.addr_spec}"[:200],
        addr_spec=reply.addr_spec,
    )
    new["To"] = to
    new["Reply-To"] = reply
    new["Subject"] = f"{subject} {tag}".strip()
    new["Message-ID"] = mid
    _set_ids(new, "References", refs)
    new["X-Postroom-Interaction"] = str(guid)
    for echo in _echo_ids([original_mid]):
        new["X-Postroom-Original-Message-ID"] = echo
    new["X-Postroom-Box"] = box.addr_spec
    new["X-Auto-Response-Suppress"] = "OOF, AutoReply"
    return new


# Bidirectional-text controls would let a display name re-order the header block.
_BIDI_RE = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_MAX_SHOWN = 20  # addresses per line of the header block


@dataclass(frozen=True)
class _ForwardFacts:
    """What the header block shows, read tolerantly from the customer's header."""

    sender: tuple[str, str] | None  # (display name, address) of From
    to: tuple[tuple[str, str], ...]
    cc: tuple[tuple[str, str], ...]
    reply_to: tuple[str, str] | None
    date: str
    subject: str

    @classmethod
    def of(cls, msg: Message) -> _ForwardFacts:
        def pairs(name: str) -> tuple[tuple[str, str], ...]:
            return tuple(p for v in raw_header_values(msg, name) for p in address_list(v, charset_hint(msg)))

        senders, replies = pairs("From"), pairs("Reply-To")
        return cls(
            sender=senders[0] if senders else None,
            to=pairs("To"),
            cc=pairs("Cc"),
            reply_to=replies[0] if replies else None,
            date=header_text(msg, "Date") or "",
            subject=header_text(msg, "Subject") or "",
        )

    @property
    def answer_to(self) -> str | None:
        """Where Postroom sends the answer: Reply-To, else From (as reception stores it)."""
        if self.reply_to is not None:
            return self.reply_to[1]
        return self.sender[1] if self.sender else None

    def writer_name(self) -> str:
        """The writer's name for our From: never an address ("@" is spelt out)."""
        name, addr = self.sender or self.reply_to or ("", "")
        return _plain(name or addr or "Customer").replace("@", " at ")

    def lines(self) -> list[tuple[str, str, bool]]:
        """(label, value, is a warning) rows of the header block."""
        rows: list[tuple[str, str, bool]] = []
        if self.sender is not None:
            rows.append(("From", _shown([self.sender]), False))
        if self.to:
            rows.append(("To", _shown(self.to), False))
        if self.cc:
            rows.append(("Cc", _shown(self.cc), False))
        if self.date:
            rows.append(("Date", _plain(self.date), False))
        rows.append(("Subject", _plain(self.subject) or "(no subject)", False))
        answer = self.answer_to
        if answer is not None:
            via = " (the mail's Reply-To)" if self.reply_to is not None and self.sender is not None and answer != self.sender[1] else ""
            rows.append(("Your answer goes to", f"{answer}{via}", False))
            if self.sender is not None and foreign_reply_to(self.sender[1], answer):
                rows.append(("WARNING", f"{answer} is in another domain than the sender's address {self.sender[1]}", True))
        return rows


def _plain(text: str) -> str:
    return _BIDI_RE.sub("", clean_text(text))[:300]


def _shown(pairs: Iterable[tuple[str, str]]) -> str:
    items = list(pairs)
    shown = [f"{_plain(n)} <{a}>" if n else a for n, a in items[:_MAX_SHOWN]]
    more = len(items) - _MAX_SHOWN
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


_BLOCK_TITLE = "Customer mail, forwarded by Postroom"


def _block_text(facts: _ForwardFacts) -> str:
    rows = [f"---------- {_BLOCK_TITLE} ----------"]
    rows += [f"{label}: {value}" for label, value, _warn in facts.lines()]
    return "\n".join(rows) + "\n\n"


def _block_html(facts: _ForwardFacts) -> str:
    warning = ' style="color:#b00020;font-weight:bold"'
    rows = "".join(
        f"<div{warning if warn else ''}><b>{html.escape(label)}:</b> {html.escape(value)}</div>"
        for label, value, warn in facts.lines()
    )
    return (
        '<div style="border:1px solid #ccc;padding:6px 8px;margin:0 0 12px;'
        'font:13px/1.4 sans-serif;color:#333">'
        f'<div style="color:#666">{html.escape(_BLOCK_TITLE)}</div>{rows}</div>'
    )


_BODY_TAG_RE = re.compile(r"<body\b[^>]*>", re.I)
_META_CHARSET_RE = re.compile(r"(<meta\b[^>]*?charset\s*=\s*[\"']?)([A-Za-z0-9_.:-]+)", re.I)
# Bodies whose bytes must not change (a signature covers them) or that we cannot read.
_OPAQUE = frozenset(
    {"multipart/signed", "multipart/encrypted", "application/pkcs7-mime", "application/x-pkcs7-mime"}
)


def _add_header_block(msg: EmailMessage, facts: _ForwardFacts) -> None:
    """Put the header block at the top of the body: into each alternative of the text
    the agent reads (plain and HTML), or, where the body must stay byte for byte as it is
    (signed, encrypted) or has no text, in a text part of its own before it."""
    parts = _readable_parts(msg) if msg.get_content_type() not in _OPAQUE else None
    if parts:
        try:
            for part in parts:
                text = _part_text(part)
                if part.get_content_subtype() == "html":
                    match = _BODY_TAG_RE.search(text)
                    at = match.end() if match else 0
                    text = _META_CHARSET_RE.sub(r"\g<1>utf-8", text[:at]) + _block_html(facts) + text[at:]
                else:
                    text = _block_text(facts) + text
                _set_text(part, text)
            return
        except (LookupError, ValueError, TypeError, AttributeError):  # a part we cannot rewrite
            pass
    if msg.get_content_type() == "multipart/mixed" and isinstance(msg.get_payload(), list):
        # No text to put it in (an image alone, an unreadable alternative): the block
        # becomes the first part, the body the mixed parts after it (RFC 2046 §5.1.3).
        msg.get_payload().insert(0, _text_part(_block_text(facts)))
        return
    _wrap_with_text(msg, _block_text(facts))


def _readable_parts(part: Message) -> list[EmailMessage] | None:
    """The text/plain and text/html parts an agent's client shows as the body, or None
    when the body is something else (then the block goes in a part of its own)."""
    ctype = part.get_content_type()
    if ctype in _OPAQUE:
        return None
    if not part.is_multipart():
        if ctype in ("text/plain", "text/html") and part.get_content_disposition() != "attachment":
            return [part] if isinstance(part, EmailMessage) else None
        return None
    children = [p for p in part.get_payload() if isinstance(p, Message)] if isinstance(part.get_payload(), list) else []
    if not children:
        return None
    if ctype == "multipart/alternative":
        found = [r for child in children if (r := _readable_parts(child))]
        return [p for r in found for p in r] or None
    if ctype.startswith("message/"):
        return None
    # multipart/mixed, /related and the like: the body is the first part (RFC 2046 §5.1.3).
    return _readable_parts(children[0])


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        raise ValueError("no payload")
    try:
        charset = part.get_content_charset()
    except Exception:  # noqa: BLE001 - an unparseable parameter list
        charset = None
    return decode_text(payload, charset)[0]


_KEEP_ON_REWRITE = ("content-disposition", "content-id", "content-description", "content-language", "content-location", "content-base")


def _set_text(part: EmailMessage, text: str) -> None:
    """Replace a text part's content with ``text`` as UTF-8, keeping what describes the
    part (subtype, disposition, file name, Content-ID, format=flowed and other parameters)."""
    subtype = part.get_content_subtype()
    kept = [(k, v) for k, v in part.raw_items() if k.lower() in _KEEP_ON_REWRITE]
    # Content-Type parameters other than the charset (name, format=flowed, delsp...).
    params = [(k, v) for k, v in (part.get_params() or [])[1:] if k.lower() != "charset" and isinstance(v, str)]
    top_level_mime = "MIME-Version" in part
    ascii_ok = text.isascii() and all(len(line) <= 998 for line in text.splitlines())
    part.set_content(text, subtype=subtype, charset="utf-8", cte="7bit" if ascii_ok else "quoted-printable")
    if not top_level_mime:
        del part["MIME-Version"]  # set_content adds it even to an inner part
    for name in {k for k, _ in kept}:
        del part[name]
    for name, value in kept:
        part.set_raw(name, value)
    for name, value in params:
        part.set_param(name, value)


def _text_part(text: str) -> EmailMessage:
    part = EmailMessage(policy=POLICY)
    _text_body(part, text)
    del part["MIME-Version"]
    return part


def _wrap_with_text(msg: EmailMessage, text: str) -> None:
    """Make ``msg`` multipart/mixed: a text part with ``text``, then the body as it was."""
    inner = EmailMessage(policy=POLICY)
    for name, value in msg.raw_items():
        if name.lower().startswith("content-"):
            inner.set_raw(name, value)
    if not any(k.lower() == "content-type" for k in inner):
        inner.set_raw("Content-Type", "text/plain; charset=us-ascii")
    inner.set_payload(msg.get_payload())
    inner.preamble, inner.epilogue = msg.preamble, msg.epilogue
    for name in {k for k, _ in msg.raw_items() if k.lower().startswith("content-")}:
        del msg[name]
    msg.set_payload(None)
    msg.preamble = msg.epilogue = None
    msg.set_type("multipart/mixed")
    msg.set_boundary("=_postroom_" + uuid.uuid4().hex)
    msg.set_payload([_text_part(text), inner])
    if "MIME-Version" not in msg:
        msg["MIME-Version"] = "1.0"


def reply_to_customer(
    agent_reply: EmailMessage,
    *,
    box_address: str,
    box_name: str | None,
    customer: str,
    original_message_id: str | None,
    original_references: list[str],
    message_id: str,
    subject: str | None,
    outbound: str | None = None,
    date: datetime | None = None,
) -> EmailMessage:
    """The agent's reply as the customer must see it: from the box, threaded to their mail.

    The body (text, HTML, attachments, quoting) is kept as written.  The header is rebuilt
    from an allow-list (content description and Date) plus what we set, so nothing that
    identifies the agent's mailbox or our plumbing leaks: Cc/Bcc, Sender, trace fields,
    DKIM/ARC, X-Postroom-*, Thread-Index/Thread-Topic, read-receipt requests, X-Mailer...
    Any kept header that mentions ``outbound`` or a token is dropped as well, and every
    token is taken out of the text the agent quoted (``core.correlation.strip_tokens``):
    a token in a customer's hands is half of a forged reply.

    ``subject`` is the customer's original subject, used when the agent's is missing or
    only our tag.  ``date`` is used when the agent's reply carries no Date (core reads no
    clock).  In-Reply-To/References follow RFC 5322 §3.6.4.
    """
    sender = _mailbox(box_address, box_name, what="box_address")
    to = _mailboxes(customer, what="customer")
    mid = _check_msg_id(message_id, "message_id")
    # Stored ids from the customer's mail: anything unfit to echo is dropped, not fatal.
    parent = (_echo_ids([original_message_id]) or [None])[0]
    refs = _echo_ids(original_references)
    if subject is not None:
        _check(subject, "subject")
    outbound_l = outbound.strip().lower() if outbound else None
    if outbound_l:
        outbound_l = outbound_l.rpartition("@")[0] + "+"  # any plus-address of the box

    def keep(name: str, value: str) -> bool:
        if name not in _REPLY_KEEP:
            return False
        if name in _STRUCTURAL:
            return True
        low = value.lower()
        if outbound_l and outbound_l in low:
            return False
        return not (find_tokens_in_text(low) or "[pr:" in low)

    agent_subject = header_text(agent_reply, "Subject")
    clean_subject = strip_subject_tag(agent_subject) if agent_subject else ""
    if not clean_subject:
        clean_subject = f"Re: {subject or ''}".strip()

    new = _copy(agent_reply, keep)
    _scrub_tokens(new, replacement=sender.addr_spec)
    new["From"] = sender
    new["Reply-To"] = Address(addr_spec=sender.addr_spec)
    new["To"] = to
    new["Subject"] = clean_subject
    new["Message-ID"] = mid
    if parent:
        new["In-Reply-To"] = parent
    _set_ids(new, "References", [*refs, parent])
    if "Date" not in new and date is not None:
        new["Date"] = format_datetime(date)
    return new


def _scrub_tokens(msg: EmailMessage, *, replacement: str) -> None:
    """Take every correlation token out of the text parts of ``msg`` and out of the
    header of any message enclosed in it (an agent may attach the forward itself)."""
    for index, part in enumerate(msg.walk()):
        items = list(part.raw_items())
        shown = [decode_words(str(v)) for _k, v in items]
        if index and any(find_tokens_in_text(text) for text in shown):
            for name in {k for k, _ in items}:
                del part[name]
            for (name, value), text in zip(items, shown, strict=True):
                if find_tokens_in_text(text):
                    part[name] = clean_text(strip_tokens(text, replacement=replacement))
                else:
                    part.set_raw(name, value)
        if part.is_multipart() or part.get_content_maintype() != "text" or not isinstance(part, EmailMessage):
            continue
        try:
            text = _part_text(part)
        except (ValueError, LookupError):
            continue
        cleaned = strip_tokens(text, replacement=replacement)
        if cleaned != text:
            _set_text(part, cleaned)


def with_text(reply: EmailMessage, text: str) -> EmailMessage:
    """``reply`` with its words replaced by ``text`` (an approver's edit): the header and
    the attachments are kept, the old text and HTML alternatives are gone."""
    if not isinstance(text, str) or "\x00" in text:
        raise UnsafeHeaderValue("text must be a string without NUL")
    new = _copy(reply)
    related = reply.get_content_type() == "multipart/related"
    attachments = [
        copy.deepcopy(part)
        for part in reply.iter_attachments()
        # Inline images of an HTML body that is no longer there are left out with it.
        if not (related and part.get_content_disposition() != "attachment")
    ]
    mime_version = new.get("MIME-Version")
    new.clear_content()
    _text_body(new, text.replace("\r\n", "\n"))
    for part in attachments:
        if not new.is_multipart():
            new.make_mixed()
        new.attach(part)
    if mime_version is not None and "MIME-Version" not in new:
        new["MIME-Version"] = mime_version
    return new


_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# How much of a customer's own name or subject an opted-in template may echo.
_MAX_CUSTOMER_WORDS = 100


def _fill(template: str, values: dict[str, str]) -> str:
    """``{name}``-style substitution that leaves unknown placeholders (and stray braces) as is."""
    return _PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def _text_body(msg: EmailMessage, text: str) -> None:
    # 7bit when it is, else quoted-printable: no 8BITMIME dependency (RFC 6152) on the way out.
    ascii_ok = text.isascii() and all(len(line) <= 998 for line in text.splitlines())
    msg.set_content(text, charset="utf-8", cte="7bit" if ascii_ok else "quoted-printable")


def auto_response(
    original: EmailMessage,
    *,
    box_address: str,
    box_name: str | None,
    customer: str,
    text: str,
    message_id: str,
    subject_template: str = "Re: {subject}",
    reference: str | None = None,
    date: datetime | None = None,
    customer_text: bool = False,
) -> EmailMessage:
    """An RFC 3834 auto-reply to the customer, threaded to their mail.

    Placeholders in ``text`` and ``subject_template``: ``{reference}`` (``reference`` or
    empty), ``{box}`` (the box's name, else its address), and, only with
    ``customer_text``, ``{name}`` (the customer's display name, else the writer's From
    name, else the local part of their address) and ``{subject}`` (their subject, our tag
    stripped).  Those two are the sender's own words: whoever forges a From can make an
    auto-response carry them to anyone, so by default they read "customer" and "your
    message".  Unknown placeholders are left as written; this never raises on a template.
    ``Auto-Submitted: auto-replied`` (RFC 3834 §5) and ``X-Auto-Response-Suppress: All``
    keep other responders quiet; no ``Precedence`` (RFC 3834 §3.1.8 says not to rely on it).
    """
    sender = _mailbox(box_address, box_name, what="box_address")
    to = _mailbox(customer, what="customer")
    mid = _check_msg_id(message_id, "message_id")
    if not isinstance(text, str) or "\x00" in text:
        raise UnsafeHeaderValue("text must be a string without NUL")
    # The name that goes with the customer's address (From, or Reply-To when we answer
    # there), else the writer's name from From, else the address's local part.
    senders = [p for h in raw_header_values(original, "From") for p in address_list(h)]
    replies = [p for h in raw_header_values(original, "Reply-To") for p in address_list(h)]
    name = next((d for d, a in senders + replies if d and a == to.addr_spec.lower()), "")
    name = name or next((d for d, _a in senders if d), "")
    values = {
        "name": (name or to.username)[:_MAX_CUSTOMER_WORDS] if customer_text else "customer",
        "subject": strip_subject_tag(header_text(original, "Subject") or "")[:_MAX_CUSTOMER_WORDS]
        if customer_text
        else "your message",
        "reference": reference or "",
        "box": box_name or sender.addr_spec,
    }
    subject = clean_text(_fill(_check(subject_template, "subject_template"), values))
    original_mid = (_echo_ids([first_msg_id(original, "Message-ID")]) or [None])[0]

    new = EmailMessage(policy=POLICY)
    new["From"] = sender
    new["To"] = to
    new["Subject"] = subject
    new["Message-ID"] = mid
    if date is not None:
        new["Date"] = format_datetime(date)
    if original_mid:
        new["In-Reply-To"] = original_mid
        _set_ids(new, "References", [*references(original), original_mid])
    new["Auto-Submitted"] = "auto-replied"
    new["X-Auto-Response-Suppress"] = "All"
    _text_body(new, _fill(text, values))
    return new


def notice(
    *,
    from_address: str,
    to: str,
    subject: str,
    text: str,
    message_id: str,
    in_reply_to: str | None = None,
    attach: EmailMessage | None = None,
    date: datetime | None = None,
) -> EmailMessage:
    """A plain auto-generated notice (RFC 3834 §5: ``Auto-Submitted: auto-generated``).

    ``attach`` is added as a message/rfc822 part (RFC 2046 §5.2.1), copied with the same
    header hygiene as a forward, so a hostile header cannot break out of it.
    """
    from_ = _mailboxes(from_address, what="from_address")
    to_ = _mailboxes(to, what="to")
    _check(subject, "subject")
    mid = _check_msg_id(message_id, "message_id")
    parent = _check(in_reply_to, "in_reply_to") if in_reply_to else None
    parent = (_echo_ids([parent]) or [None])[0]
    if not isinstance(text, str) or "\x00" in text:
        raise UnsafeHeaderValue("text must be a string without NUL")

    new = EmailMessage(policy=POLICY)
    new["From"] = from_
    new["To"] = to_
    new["Subject"] = subject
    new["Message-ID"] = mid
    if date is not None:
        new["Date"] = format_datetime(date)
    if parent:
        new["In-Reply-To"] = parent
        new["References"] = parent
    new["Auto-Submitted"] = "auto-generated"
    new["X-Auto-Response-Suppress"] = "All"
    _text_body(new, text)
    if attach is not None:
        new.add_attachment(_copy(attach))
    return new
