"""A message taken apart for reading: its header summary, its text, its HTML (raw: the web
sanitizes it) and its attachments, numbered in MIME order so a page can link to each.

Reads any bytes `postroom.mail.message.parse` accepts; raises `UnreadableMessage`
otherwise. No database, no decisions: what to show, and how safely, is the web's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from email.message import Message

from postroom.core.headers import header_text
from postroom.mail.message import ParsedMail, UnreadableMessage, decoded_part, parse

__all__ = ["Attachment", "Readable", "UnreadableMessage", "attachment", "readable"]

_MAX_PARTS = 500


@dataclass(frozen=True)
class Attachment:
    index: int
    filename: str
    content_type: str
    size: int
    # Referenced from the HTML as cid:... (an inline image), if it has a Content-ID.
    content_id: str | None = None


@dataclass(frozen=True)
class Readable:
    subject: str
    sender: str
    to: list[str]
    cc: list[str]
    date: datetime | None
    message_id: str | None
    text: str
    html: str | None
    attachments: list[Attachment] = field(default_factory=list)


def _leaves(msg: Message) -> list[Message]:
    found: list[Message] = []
    for part in msg.walk():
        if len(found) >= _MAX_PARTS:
            break
        if part.is_multipart():
            continue
        found.append(part)
    return found


def _decoded(part: Message) -> str:
    return decoded_part(part)[0].replace("\x00", "")


def _body(msg: Message, subtype: str) -> Message | None:
    try:
        return msg.get_body(preferencelist=(subtype,))  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a broken structure has no body we trust
        return None


def _filename(part: Message, index: int) -> str:
    try:
        name = part.get_filename()
    except Exception:  # noqa: BLE001 - RFC 2231 garbage
        name = None
    if not name and part.get_content_type() == "message/rfc822":
        name = f"message-{index}.eml"
    name = (name or f"attachment-{index}").replace("\x00", "")
    # Only a name, never a path (the download's Content-Disposition gets it).
    return name.replace("\\", "/").rsplit("/", 1)[-1].strip() or f"attachment-{index}"


def _content_id(part: Message) -> str | None:
    value = part.get("Content-ID")
    if not value:
        return None
    return str(value).strip().strip("<>").strip() or None


def _attachment_parts(mail: ParsedMail) -> list[tuple[Message, Attachment]]:
    text, html = _body(mail.msg, "plain"), _body(mail.msg, "html")
    found = []
    for part in _leaves(mail.msg):
        if part is text or part is html:
            continue
        index = len(found) + 1
        payload = part.get_payload(decode=True)
        size = len(payload) if isinstance(payload, bytes) else len(str(part.get_payload()))
        found.append(
            (
                part,
                Attachment(
                    index=index,
                    filename=_filename(part, index),
                    content_type=part.get_content_type(),
                    size=size,
                    content_id=_content_id(part),
                ),
            )
        )
    return found


def readable(raw: bytes) -> Readable:
    mail = parse(raw)
    html_part = _body(mail.msg, "html")
    text_part = _body(mail.msg, "plain")
    return Readable(
        subject=mail.subject,
        sender=header_text(mail.msg, "From") or (mail.from_addr or ""),
        to=mail.to,
        cc=mail.cc,
        date=mail.date,
        message_id=mail.message_id,
        text=_decoded(text_part) if text_part is not None else mail.text,
        html=_decoded(html_part) if html_part is not None else None,
        attachments=[a for _, a in _attachment_parts(mail)],
    )


def attachment(raw: bytes, index: int) -> tuple[Attachment, bytes] | None:
    """Attachment number `index` (from 1) and its decoded bytes, or None."""
    for part, found in _attachment_parts(parse(raw)):
        if found.index == index:
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                # message/rfc822 and friends: the enclosed message as it was.
                inner = part.get_payload()
                payload = inner[0].as_bytes() if isinstance(inner, list) and inner else b""
            return found, payload
    return None


def inline_images(raw: bytes, limit: int = 2_000_000) -> dict[str, tuple[str, bytes]]:
    """Content-ID -> (content type, bytes) of the images the HTML may show inline, up to
    `limit` bytes in all."""
    found: dict[str, tuple[str, bytes]] = {}
    total = 0
    for part, att in _attachment_parts(parse(raw)):
        if not att.content_id or not att.content_type.startswith("image/"):
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes) and total + len(payload) <= limit:
            found[att.content_id] = (att.content_type, payload)
            total += len(payload)
    return found
