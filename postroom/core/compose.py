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
import re
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from email.errors import MessageError
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import format_datetime, getaddresses

from postroom.core.correlation import find_tokens_in_text, strip_subject_tag
from postroom.core.headers import (
    CONTROL_RE,
    POLICY,
    SPLITLINES_EXTRA,
    address_list,
    clean_text,
    first_msg_id,
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
]

class UnsafeHeaderValue(ValueError):
    """A value for a header we write contains a line break or control character."""


# Printable ASCII without "<", ">" or spaces.  Ids we mint must have the "@" of RFC 5322
# §3.6.4; ids we echo back need not, because the other side matches them literally.
_MSG_ID_RE = re.compile(r"^<[!-;=?-~]+@[!-;=?-~]+>$")
_ECHO_ID_RE = re.compile(r"^<[!-;=?-~]+>$")

_FORWARD_DROP = frozenset(
    {
        # Replaced below.
        "to", "reply-to", "subject", "message-id", "references", "sender",
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
) -> EmailMessage:
    """The customer's mail readdressed to an agent; body and parts untouched.

    From and Date stay the customer's, so the agent sees who wrote and when.  Reply-To is
    the outbound box's plus-address and the Message-ID carries the token, because agents'
    clients drop X- headers.  ``X-Auto-Response-Suppress`` asks Exchange/Outlook not to
    answer it with an out-of-office (MS-OXCMAIL §2.2.3.2.14) and ``Sender`` names the box
    that actually sent it (RFC 5322 §3.6.2).
    """
    to = _mailbox(agent, agent_name, what="agent")
    reply = _mailbox(reply_to, what="reply_to")
    sender = _mailbox(box_address, what="box_address")
    mid = _check_msg_id(message_id, "message_id")
    _check(tag, "tag")
    original_mid = first_msg_id(original, "Message-ID")
    refs = [*references(original), original_mid]
    subject = header_text(original, "Subject") or ""

    def keep(name: str, _value: str) -> bool:
        if name in _FORWARD_DROP or name.startswith(_FORWARD_DROP_PREFIXES):
            return False
        return not (name.startswith("list-") and name not in _FORWARD_KEEP_LIST)

    new = _copy(original, keep)
    new["To"] = to
    new["Reply-To"] = reply
    new["Sender"] = sender
    new["Subject"] = f"{subject} {tag}".strip()
    new["Message-ID"] = mid
    _set_ids(new, "References", refs)
    new["X-Postroom-Interaction"] = str(guid)
    for echo in _echo_ids([original_mid]):
        new["X-Postroom-Original-Message-ID"] = echo
    new["X-Postroom-Box"] = sender.addr_spec
    new["X-Auto-Response-Suppress"] = "OOF, AutoReply"
    return new


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
    Any kept header that mentions ``outbound`` or a token is dropped as well.

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


_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


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
) -> EmailMessage:
    """An RFC 3834 auto-reply to the customer, threaded to their mail.

    Placeholders in ``text`` and ``subject_template``: ``{name}`` (the customer's display
    name, else the writer's From name, else the local part of their address), ``{subject}`` (their subject, our tag
    stripped), ``{reference}`` (``reference`` or empty), ``{box}`` (the box's name, else its
    address).  Unknown placeholders are left as written; this never raises on a template.
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
        "name": name or to.username,
        "subject": strip_subject_tag(header_text(original, "Subject") or ""),
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
