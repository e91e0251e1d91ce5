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
import functools
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
from postroom.core.headerblock import ForwardFacts, add_header_block
from postroom.core.headers import (
    CONTROL_RE,
    POLICY,
    SPLITLINES_EXTRA,
    _settled,
    address_list,
    clean_text,
    decode_words,
    first_msg_id,
    header_text,
    msg_ids,
    put_header,
    raw_header_fields,
    references,
    settle_headers,
    unfold,
    values_text,
)
from postroom.core.mimetext import part_text, set_text, text_body

__all__ = [
    "ForwardPlan",
    "ForwardTo",
    "UnsafeHeaderValue",
    "auto_response",
    "auto_response_bytes",
    "forward_keeps",
    "forward_message",
    "forward_plan",
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


# RFC 5322 dot-atom "@" a host name (letters, digits, hyphens, dots): the addresses
# nearly every mail has, taken apart without the header parser.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDR_RE = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*")


@functools.lru_cache(maxsize=256)
def _mailbox(addr: str, name: str | None = None, *, what: str) -> Address:
    """``addr`` (with ``name``) as an Address, checked.  Kept per value (an Address is
    immutable; the same agents and boxes come back with every mail, and building one
    parses its addr-spec, issue 9)."""
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
        if _PLAIN_ADDR_RE.fullmatch(addr):
            # A dot-atom at a host name: what parsing the addr-spec gives, its two halves
            # as written (decision 0054: parsing was most of composing an auto-response,
            # every customer's address being new).
            local, _at, domain = addr.rpartition("@")
            return Address(display_name=name or "", username=local, domain=domain)
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
        put_header(msg, name, " ".join(echo))


def forward_keeps(name: str) -> bool:
    """Whether a forward keeps the original's top-level header ``name`` (lowercase)."""
    if name in _FORWARD_DROP or name.startswith(_FORWARD_DROP_PREFIXES):
        return False
    return not (name.startswith("list-") and name not in _FORWARD_KEEP_LIST)


@dataclass(frozen=True)
class ForwardPlan:
    """What a forward says besides the customer's body: the header block's facts and the
    header fields we set (name, value as ``put_header`` takes it), in the order they are
    written.  Shared by ``forward_to_agent`` and ``core.rawforward`` (decision 0048), so
    the two builders cannot differ in what they write."""

    facts: ForwardFacts
    headers: tuple[tuple[str, object], ...]


@dataclass(frozen=True)
class ForwardTo:
    """Our values in a forward (see ``forward_to_agent``): the agent it goes to, the
    Reply-To and Message-ID carrying the correlation token, the subject tag, the
    interaction and the incoming box. One value, passed as it is from the engine through
    ``core.rawforward`` to ``forward_plan``, which checks it."""

    agent: str
    agent_name: str | None
    reply_to: str
    message_id: str
    tag: str
    guid: uuid.UUID
    box_address: str
    box_name: str | None = None


def forward_plan(original: Message, to: ForwardTo) -> ForwardPlan:
    """The checked values and the original's facts for a forward (see ``forward_to_agent``).

    ``original`` need only carry the original's top-level header fields."""
    agent = _mailbox(to.agent, to.agent_name, what="agent")
    reply = _mailbox(to.reply_to, what="reply_to")
    box = _mailbox(to.box_address, what="box_address")
    if to.box_name is not None:
        _check(to.box_name, "box_name")
    mid = _check_msg_id(to.message_id, "message_id")
    _check(to.tag, "tag")
    original_mid = first_msg_id(original, "Message-ID")
    refs = [*references(original), original_mid]
    subject = header_text(original, "Subject") or ""
    facts = ForwardFacts.of(original)
    sender = Address(
        display_name=f"{facts.writer_name()} via {to.box_name or box.addr_spec}"[:200],
        addr_spec=reply.addr_spec,
    )
    headers: list[tuple[str, object]] = [
        ("From", sender),
        ("To", agent),
        ("Reply-To", reply),
        ("Subject", f"{subject} {to.tag}".strip()),
        ("Message-ID", mid),
    ]
    echo = _echo_ids(refs)
    if echo:
        headers.append(("References", " ".join(echo)))
    headers.append(("X-Postroom-Interaction", str(to.guid)))
    headers += [("X-Postroom-Original-Message-ID", e) for e in _echo_ids([original_mid])]
    headers.append(("X-Postroom-Box", box.addr_spec))
    headers.append(("X-Auto-Response-Suppress", "OOF, AutoReply"))
    return ForwardPlan(facts=facts, headers=tuple(headers))


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
    the top of the body (``core.headerblock``).  The Message-ID carries the token too,
    because agents' clients drop X- headers.  ``X-Auto-Response-Suppress`` asks
    Exchange/Outlook not to answer it with an out-of-office (MS-OXCMAIL §2.2.3.2.14).

    The engine builds most forwards from the original's bytes (``core.rawforward``,
    decision 0048); this builder is the reference and the fallback.
    """
    return forward_message(
        original,
        ForwardTo(
            agent=agent,
            agent_name=agent_name,
            reply_to=reply_to,
            message_id=message_id,
            tag=tag,
            guid=guid,
            box_address=box_address,
            box_name=box_name,
        ),
    )


def forward_message(original: EmailMessage, to: ForwardTo) -> EmailMessage:
    """``forward_to_agent`` with our values as one ``ForwardTo``."""
    plan = forward_plan(original, to)
    new = _copy(original, lambda name, _value: forward_keeps(name))
    add_header_block(new, plan.facts)
    for name, value in plan.headers:
        put_header(new, name, value)
    settle_headers(new)
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
    put_header(new, "From", sender)
    put_header(new, "Reply-To", Address(addr_spec=sender.addr_spec))
    put_header(new, "To", to)
    put_header(new, "Subject", clean_subject)
    put_header(new, "Message-ID", mid)
    if parent:
        put_header(new, "In-Reply-To", parent)
    _set_ids(new, "References", [*refs, parent])
    if "Date" not in new and date is not None:
        put_header(new, "Date", format_datetime(date))
    settle_headers(new)
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
            text = part_text(part)
        except Exception:  # noqa: BLE001 - a part no client can read carries no readable token
            continue
        cleaned = strip_tokens(text, replacement=replacement)
        if cleaned != text:
            set_text(part, cleaned)


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
    text_body(new, text.replace("\r\n", "\n"))
    for part in attachments:
        if not new.is_multipart():
            new.make_mixed()
        new.attach(part)
    if mime_version is not None and "MIME-Version" not in new:
        put_header(new, "MIME-Version", mime_version)
    return new


_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# How much of a customer's own name or subject an opted-in template may echo.
_MAX_CUSTOMER_WORDS = 100


def _fill(template: str, values: dict[str, str]) -> str:
    """``{name}``-style substitution that leaves unknown placeholders (and stray braces) as is."""
    return _PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), template)


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
    headers, body = _auto_response_parts(
        original, box_address=box_address, box_name=box_name, customer=customer, text=text,
        message_id=message_id, subject_template=subject_template, reference=reference, date=date,
        customer_text=customer_text,
    )
    new = EmailMessage(policy=POLICY)
    for name, value in headers:
        put_header(new, name, value)
    text_body(new, body)
    settle_headers(new)
    return new


# What ``text_body`` writes for 7bit text, after the headers set before it (the
# generator's order; tests/unit/test_settled_headers.py compares the two ways).
_TEXT_7BIT = (("Content-Type", 'text/plain; charset="utf-8"'), ("Content-Transfer-Encoding", "7bit"), ("MIME-Version", "1.0"))
# Printable ASCII, tabs and line feeds: what ``str.splitlines`` splits only at "\n".
_PLAIN_BODY_RE = re.compile(r"[\t\n -~]*")


def auto_response_bytes(
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
) -> bytes:
    """``auto_response(...).as_bytes()``, the same bytes (issue 9): written as text when
    every header is one short line of printable ASCII and the body is 7bit ASCII text, as
    the generator writes them (``settle_headers``); built as a message otherwise."""
    headers, body = _auto_response_parts(
        original, box_address=box_address, box_name=box_name, customer=customer, text=text,
        message_id=message_id, subject_template=subject_template, reference=reference, date=date,
        customer_text=customer_text,
    )
    lines = [(name, value if isinstance(value, str) else str(value)) for name, value in headers]
    # A long References (a thread of several mails) as the generator folds it (decision 0066).
    lines = [(name, value if _settled(name, value) else _folded_ids(name, value)) for name, value in lines]
    body_lines = body.splitlines()
    if (
        all(value is not None for _name, value in lines)
        and _PLAIN_BODY_RE.fullmatch(body) is not None
        and all(len(line) <= 998 for line in body_lines)
    ):
        head = "".join(f"{name}: {value}\n" for name, value in (*lines, *_TEXT_7BIT))
        return (head + "\n" + ("".join(f"{line}\n" for line in body_lines) or "\n")).encode("ascii")
    new = EmailMessage(policy=POLICY)
    for name, value in headers:
        put_header(new, name, value)
    text_body(new, body)
    settle_headers(new)
    return new.as_bytes()


# A msg-id whose halves are dot-atoms: one token of the header's parse tree, never split.
_SIMPLE_ID_RE = re.compile(rf"<{_ATEXT}(?:\.{_ATEXT})*@{_ATEXT}(?:\.{_ATEXT})*>")
_FOLD_AT = 78  # policy.default's max_line_length


def _folded_ids(name: str, value: str) -> str | None:
    """The value of a References field of plain msg-ids, one space between them, as the
    generator writes it when it is too long for one line (decision 0066): as many ids
    as fit in 78 characters on each line, each further line starting with the space
    before its first id. None for anything else (another field, an odd or too long
    msg-id, an encoded-word's ``=?``): the message's path."""
    if name != "References":
        return None
    ids = value.split(" ")
    if any(_SIMPLE_ID_RE.fullmatch(mid) is None or "=?" in mid for mid in ids):
        return None
    line = f"{name}: {ids[0]}"
    if len(line) > _FOLD_AT:
        return None
    out: list[str] = []
    for mid in ids[1:]:
        if len(mid) + 1 > _FOLD_AT:
            return None
        if len(line) + 1 + len(mid) <= _FOLD_AT:
            line += " " + mid
        else:
            out.append(line)
            line = " " + mid
    out.append(line)
    return "\n".join(out)[len(name) + 2 :]


def _auto_response_parts(
    original: EmailMessage,
    *,
    box_address: str,
    box_name: str | None,
    customer: str,
    text: str,
    message_id: str,
    subject_template: str,
    reference: str | None,
    date: datetime | None,
    customer_text: bool,
) -> tuple[list[tuple[str, object]], str]:
    """An auto-response's headers (in order, as ``put_header`` takes them) and its text."""
    sender = _mailbox(box_address, box_name, what="box_address")
    to = _mailbox(customer, what="customer")
    mid = _check_msg_id(message_id, "message_id")
    if not isinstance(text, str) or "\x00" in text:
        raise UnsafeHeaderValue("text must be a string without NUL")
    # The name that goes with the customer's address (From, or Reply-To when we answer
    # there), else the writer's name from From, else the address's local part.
    # The original's fields read here, in one pass over its header (decision 0061).
    fields = raw_header_fields(original, _ANSWERED_FIELDS)
    senders = [p for h in fields["from"] for p in address_list(h)]
    replies = [p for h in fields["reply-to"] for p in address_list(h)]
    name = next((d for d, a in senders + replies if d and a == to.addr_spec.lower()), "")
    name = name or next((d for d, _a in senders if d), "")
    values = {
        "name": (name or to.username)[:_MAX_CUSTOMER_WORDS] if customer_text else "customer",
        "subject": strip_subject_tag(values_text(original, fields["subject"]) or "")[:_MAX_CUSTOMER_WORDS]
        if customer_text
        else "your message",
        "reference": reference or "",
        "box": box_name or sender.addr_spec,
    }
    subject = clean_text(_fill(_check(subject_template, "subject_template"), values))
    first_mid = next((ids[0] for ids in map(msg_ids, fields["message-id"]) if ids), None)  # first_msg_id's
    original_mid = (_echo_ids([first_mid]) or [None])[0]

    headers: list[tuple[str, object]] = [("From", sender), ("To", to), ("Subject", subject), ("Message-ID", mid)]
    if date is not None:
        headers.append(("Date", format_datetime(date)))
    if original_mid:
        headers.append(("In-Reply-To", original_mid))
        refs = _echo_ids([*msg_ids(" ".join(fields["references"])), original_mid])  # references()'s
        if refs:
            headers.append(("References", " ".join(refs)))
    headers.append(("Auto-Submitted", "auto-replied"))
    headers.append(("X-Auto-Response-Suppress", "All"))
    return headers, _fill(text, values)


_ANSWERED_FIELDS = ("from", "reply-to", "subject", "message-id", "references")


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
    put_header(new, "From", from_)
    put_header(new, "To", to_)
    put_header(new, "Subject", subject)
    put_header(new, "Message-ID", mid)
    if date is not None:
        put_header(new, "Date", format_datetime(date))
    if parent:
        put_header(new, "In-Reply-To", parent)
        put_header(new, "References", parent)
    put_header(new, "Auto-Submitted", "auto-generated")
    put_header(new, "X-Auto-Response-Suppress", "All")
    text_body(new, text)
    if attach is not None:
        new.add_attachment(_copy(attach))
    settle_headers(new)
    return new
