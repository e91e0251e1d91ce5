"""Safe parsing at the edge: raw RFC 5322 bytes -> ``ParsedMail``.

``parse()`` either returns a ``ParsedMail`` whose fields are plain, decoded, NUL-free values
or raises ``UnreadableMessage``; no other exception escapes, whatever the bytes (field bug
B-18: one byte 0xb5 stopped a helpdesk's channel for two days).  The raw bytes stay the
caller's to keep; a refused message is quarantined, never dropped.

What real mail does that this copes with (all of it is in the test corpus): an mbox
``From `` first line, bare-CR line endings, unknown or lying charsets (``x-unknown``,
``uft-8``, ISO-2022-JP bodies that are really UTF-8), 8-bit header bytes, address groups that
crash CPython 3.11's address parser, missing brackets around msg-ids, NUL bytes, damaged
header blocks that CPython would file under the body.

``ParsedMail.msg`` is parsed with ``core.headers.POLICY``: policy.default whose header
access never raises, so code further in may read ``msg["To"]`` without a try.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import parsedate_to_datetime

from postroom.core.headers import (
    POLICY,
    address_list,
    charset_hint,
    decode_text,
    msg_ids,
    raw_header_fields,
    values_text,
)
from postroom.core.htmltext import html_to_text

__all__ = ["ParsedMail", "UnreadableMessage", "addresses", "body_text", "parse"]

# Compound File Binary (OLE2): an Outlook .msg, a Word document... never RFC 5322.
_CFB_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_MBOX_FROM_RE = re.compile(rb"^From (?!\s*:)[^\r\n]*(\r\n|\r|\n)")
_HEADER_LINE_RE = re.compile(rb"^[!-9;-~]+[ \t]*:")  # RFC 5322 §2.2 field-name, obs WSP
_OBS_NAME_RE = re.compile(rb"^([!-9;-~]+)[ \t]+:")
_LEADING_BLANK_RE = re.compile(rb"^(?:[ \t]*(?:\r\n|\r|\n))+")
_BLANK_LINE_RE = re.compile(rb"\r?\n\r?\n")
_MAX_PARTS = 2000  # walk budget: the corpus has "infinite" multiparts and deep nesting
_UNREAD = object()  # a part's charset not read yet (`decoded_part`)


class UnreadableMessage(Exception):
    """Nothing usable can be made of these bytes; ``reason`` says why (for the quarantine)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ParsedMail:
    msg: EmailMessage
    message_id: str | None
    from_addr: str | None
    from_name: str | None
    reply_to: list[str]
    to: list[str]
    cc: list[str]
    delivered_to: list[str]
    subject: str
    in_reply_to: str | None
    references: list[str]
    date: datetime | None
    size: int
    text: str
    defects: list[str]
    # ``core.headers.charset_hint(msg)`` as parse read it: how to read the header's raw
    # 8-bit bytes (mail.facts reads every header with it).
    charset_hint: str | None = None


def addresses(header_value: str | None) -> list[str]:
    """Lowercased addr-specs of an address header value, in order, once each; never raises."""
    out: list[str] = []
    for _name, addr in address_list(header_value):
        if addr not in out:
            out.append(addr)
    return out


def parse(raw: bytes) -> ParsedMail:
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise UnreadableMessage(f"expected bytes, got {type(raw).__name__}")
    data = bytes(raw)
    try:
        return _parse(data)
    except UnreadableMessage:
        raise
    except Exception as exc:  # noqa: BLE001 - the contract: nothing but UnreadableMessage
        raise UnreadableMessage(f"{type(exc).__name__} while reading: {exc}"[:300]) from exc


def _parse(data: bytes) -> ParsedMail:
    size = len(data)
    notes: list[str] = []
    if not data.strip():
        raise UnreadableMessage("empty input")
    if data.startswith(_CFB_MAGIC):
        raise UnreadableMessage("binary OLE2/CFB file (an Outlook .msg?), not RFC 5322 text")

    data = _LEADING_BLANK_RE.sub(b"", data.removeprefix(b"\xef\xbb\xbf"))
    m = _MBOX_FROM_RE.match(data)
    if m:
        data = data[m.end() :]
        notes.append("mbox From_ line removed")
    crlf = data.count(b"\r\n")
    bare_cr = data.count(b"\r") - crlf
    if bare_cr > data.count(b"\n"):
        # Classic Mac OS line ends (RFC 5322 only knows CRLF): make them LF.
        data = re.sub(rb"\r(?!\n)", b"\n", data)
        notes.append("bare-CR line endings converted")
    if not _HEADER_LINE_RE.match(data):
        raise UnreadableMessage("does not start with an RFC 5322 header field")
    data = _repair_header_block(data, notes)

    msg = _single_part(data)
    if msg is None:
        msg = BytesParser(policy=POLICY).parsebytes(data)
    if not isinstance(msg, EmailMessage) or not msg.keys():
        raise UnreadableMessage("no RFC 5322 header block")

    if msg.is_multipart():
        hint = charset_hint(msg)
        own: object = _UNREAD
    else:
        # A single part (most mail): its charset is both the header's hint and the body's
        # charset; read once (decision 0066), as `charset_hint` and `decoded_part` read it.
        own = _charset(msg)
        try:
            text_part = msg.get_content_maintype() == "text"
        except Exception:  # noqa: BLE001 - charset_hint's: only a hint
            text_part = False
        hint = str(own) if text_part and own else None
    # The fields read here, in one pass over the header (`raw_header_values` per name went
    # over all of it for each: eleven passes a mail, decision 0061); the same values.
    fields = raw_header_fields(msg, _READ)
    from_pairs = [p for v in fields["from"] for p in address_list(v, hint)]
    from_name, from_addr = from_pairs[0] if from_pairs else (None, None)
    message_id = _first_id(fields["message-id"])
    if from_addr is None and message_id is None:
        raise UnreadableMessage("neither a parseable From nor a Message-ID")

    text = _body_text(msg, notes, own)
    return ParsedMail(
        msg=msg,
        message_id=message_id,
        from_addr=from_addr,
        from_name=from_name or None,
        reply_to=_addresses(fields, "reply-to"),
        to=_addresses(fields, "to"),
        cc=_addresses(fields, "cc"),
        delivered_to=_addresses(fields, "delivered-to", "x-original-to"),
        subject=values_text(msg, fields["subject"]) or "",
        in_reply_to=_first_id(fields["in-reply-to"]),
        references=msg_ids(" ".join(fields["references"])),
        date=_date(values_text(msg, fields["date"])),
        size=size,
        text=text,
        defects=_defects(msg, notes),
        charset_hint=hint,
    )


_READ = (
    "from", "message-id", "reply-to", "to", "cc", "delivered-to", "x-original-to", "subject", "in-reply-to",
    "references", "date",
)


# A header field's first line, as the feed parser takes it: a name of printable ASCII
# but ":" (never empty, never "From "), then the colon.
_FIELD_LINE_RE = re.compile(r"[!-9;-~]+:")


def _single_part(data: bytes) -> EmailMessage | None:
    """``BytesParser(policy=POLICY).parsebytes(data)`` for the common mail (decision
    0066): a header block of well-formed fields ended by an empty line, and a type that
    is neither multipart nor message. The feed parser then stores each field as
    ``policy.header_source_parse`` makes it of its lines and the rest as the payload,
    line by line through its generator; here the same, the rest in one piece. None for
    anything else (the parser's work, defects and all, is the parser's)."""
    text = data.decode("ascii", "surrogateescape")  # as parsebytes decodes
    # The feed parser's lines: ends at "\r\n", "\r" or "\n" (a StringIO(newline="")).
    source = io.StringIO(text, newline="")
    policy = POLICY
    factory = policy.message_factory
    if factory is None:
        return None
    msg = factory(policy=policy)
    field: list[str] = []
    while True:
        line = source.readline()
        if not line:
            return None  # no empty line ends the header block
        if line[0] in " \t":
            if not field:
                return None  # a first line that is a continuation: a defect
            field.append(line)
            continue
        if field:
            msg.set_raw(*policy.header_source_parse(field))
            field = []
        if line in ("\r\n", "\n", "\r"):
            break
        if _FIELD_LINE_RE.match(line) is None:
            return None  # anything else: a stray line, "From ", a missing separator...
        field = [line]
    if not msg.keys():
        return None
    try:
        if msg.get_content_maintype() in ("multipart", "message"):
            return None
    except Exception:  # noqa: BLE001 - the parser's to meet
        return None
    msg.set_payload(source.read())
    return msg


def _repair_header_block(data: bytes, notes: list[str]) -> bytes:
    """Make a damaged header block parseable instead of losing it to the body.

    CPython ends the header at the first line that is neither a field nor a continuation
    and files everything after it (From, Message-ID...) under the body.  Such a stray line
    becomes a continuation of the field before it, and the obsolete "Name  :" syntax
    (RFC 5322 §4.5) loses its spaces, which CPython does not accept either.
    """
    end = _BLANK_LINE_RE.search(data)
    if end is None:
        return data
    lines = data[: end.start()].split(b"\n")
    changed = False
    for i, line in enumerate(lines):
        obs = _OBS_NAME_RE.match(line)
        if obs:
            lines[i] = obs.group(1) + b":" + line[obs.end() :]
            changed = True
        elif i and not _HEADER_LINE_RE.match(line) and line[:1] not in (b" ", b"\t"):
            lines[i] = b" " + line
            changed = True
    if not changed:
        return data
    notes.append("damaged header block repaired")
    return b"\n".join(lines) + data[end.start() :]


def _first_id(values: list[str]) -> str | None:
    for value in values:
        ids = msg_ids(value)
        if ids:
            return ids[0]
    return None


def _addresses(fields: dict[str, list[str]], *names: str) -> list[str]:
    out: list[str] = []
    for name in names:
        for value in fields[name]:
            for addr in addresses(value):
                if addr not in out:
                    out.append(addr)
    return out


def _date(value: str | None) -> datetime | None:
    """The Date field's time (``value``: its text, as ``header_text`` gives it)."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    # "-0000" means UTC with no local offset known (RFC 5322 §3.3).
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _defects(msg: Message, notes: list[str]) -> list[str]:
    out = list(notes)
    for index, part in enumerate(msg.walk()):
        if index >= _MAX_PARTS:
            out.append(f"more than {_MAX_PARTS} MIME parts; stopped looking")
            break
        for defect in getattr(part, "defects", ()):
            name = type(defect).__name__
            if name not in out:
                out.append(name)
    return out


def _is_attachment(part: Message) -> bool:
    try:
        return part.get_content_disposition() == "attachment"
    except Exception:  # noqa: BLE001 - a broken Content-Disposition means "not sure"
        return False


def _leaves(part: Message, *, into_messages: bool, budget: list[int]) -> Iterator[Message]:
    """Leaf parts, depth first, within a part budget.

    Never enters message/delivery-status or disposition-notification (their "parts" are
    RFC 3464/8098 field blocks, not text); enters enclosed messages only if asked.
    """
    budget[0] -= 1
    if budget[0] < 0:
        return
    ctype = part.get_content_type()
    if ctype in ("message/delivery-status", "message/disposition-notification"):
        return
    if part.is_multipart():
        if ctype.startswith("message/") and not into_messages:
            return
        payload = part.get_payload()
        for sub in payload if isinstance(payload, list) else ():
            if isinstance(sub, Message):
                yield from _leaves(sub, into_messages=into_messages, budget=budget)
        return
    yield part


def _body_part(msg: EmailMessage) -> Message | None:
    try:
        body = msg.get_body(preferencelist=("plain", "html"))
    except Exception:  # noqa: BLE001 - fall through to a plain walk
        body = None
    if body is not None:
        return body
    # No text where get_body() looks (RFC 2046 §5.1.3 "first part" of multipart/mixed is an
    # attachment, multipart/report, a bare forward...): first readable text, our own
    # message's before an enclosed one's.
    for into_messages in (False, True):
        html: Message | None = None
        for part in _leaves(msg, into_messages=into_messages, budget=[_MAX_PARTS]):
            if part.get_content_maintype() != "text" or _is_attachment(part):
                continue
            if part.get_content_subtype() == "plain":
                return part
            if html is None and part.get_content_subtype() == "html":
                html = part
        if html is not None:
            return html
    return None


def body_text(msg: EmailMessage) -> str:
    """The text `parse` gives as `ParsedMail.text`, read from a message built in memory
    (a composed reply) without writing it out and parsing it again: the same text for
    every corpus message (tests/unit/test_reply_search_text.py), at a tenth of the cost."""
    return _body_text(msg, [])


def _body_text(msg: EmailMessage, notes: list[str], own: object = _UNREAD) -> str:
    """The body's text; `own`: the message's charset as `_charset` read it, if it was."""
    part = _body_part(msg)
    if part is None:
        # A multipart whose only prose is the preamble (old DSNs do this).
        preamble = msg.preamble if msg.is_multipart() else None
        return _normalise_text(preamble or "")
    text, charset, note = decoded_part(part, own if part is msg else _UNREAD)
    if note:
        notes.append(f"body charset {charset!r}: {note}")
    if part.get_content_subtype() == "html":
        text = html_to_text(text)
    return _normalise_text(text)


def _charset(part: Message) -> str | None:
    """The charset a part declares, None if it declares none or its parameters cannot be
    read."""
    try:
        return part.get_content_charset()
    except Exception:  # noqa: BLE001 - an unparseable parameter list
        return None


def decoded_part(part: Message, charset: object = _UNREAD) -> tuple[str, str | None, str | None]:
    """A leaf part's text, the charset it declared and what decoding had to forgive
    ("" for a part without a byte payload); `charset`: `_charset(part)` if the caller
    read it already."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return "", None, None
    if charset is _UNREAD:
        charset = _charset(part)
    text, note = decode_text(payload, charset)  # type: ignore[arg-type]
    return text, charset, note


def _normalise_text(text: str) -> str:
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
