"""Reading and rewriting the text parts of a MIME message, in place.

Pure helpers over ``email.message.EmailMessage`` for the builders in ``core.compose`` and
``core.headerblock``: which parts a mail client shows as the body, their text decoded
tolerantly, and that text replaced (as UTF-8, keeping what describes the part) or given a
part of its own in front of a body that must not change.
"""

from __future__ import annotations

import uuid
from email.message import EmailMessage, Message

from postroom.core.headers import POLICY, decode_text

__all__ = ["OPAQUE", "part_text", "readable_parts", "set_text", "text_body", "text_part", "wrap_with_text"]

# Bodies whose bytes must not change (a signature covers them) or that we cannot read.
OPAQUE = frozenset(
    {"multipart/signed", "multipart/encrypted", "application/pkcs7-mime", "application/x-pkcs7-mime"}
)


def text_body(msg: EmailMessage, text: str) -> None:
    """Make ``msg`` a text/plain UTF-8 body holding ``text``."""
    # 7bit when it is, else quoted-printable: no 8BITMIME dependency (RFC 6152) on the way out.
    ascii_ok = text.isascii() and all(len(line) <= 998 for line in text.splitlines())
    msg.set_content(text, charset="utf-8", cte="7bit" if ascii_ok else "quoted-printable")


def readable_parts(part: Message) -> list[EmailMessage] | None:
    """The text/plain and text/html parts an agent's client shows as the body, or None
    when the body is something else (then the block goes in a part of its own)."""
    ctype = part.get_content_type()
    if ctype in OPAQUE:
        return None
    if not part.is_multipart():
        if ctype in ("text/plain", "text/html") and part.get_content_disposition() != "attachment":
            return [part] if isinstance(part, EmailMessage) else None
        return None
    children = [p for p in part.get_payload() if isinstance(p, Message)] if isinstance(part.get_payload(), list) else []
    if not children:
        return None
    if ctype == "multipart/alternative":
        found = [r for child in children if (r := readable_parts(child))]
        return [p for r in found for p in r] or None
    if ctype.startswith("message/"):
        return None
    # multipart/mixed, /related and the like: the body is the first part (RFC 2046 §5.1.3).
    return readable_parts(children[0])


def part_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        raise ValueError("no payload")
    try:
        charset = part.get_content_charset()
    except Exception:  # noqa: BLE001 - an unparseable parameter list
        charset = None
    return decode_text(payload, charset)[0]


_KEEP_ON_REWRITE = ("content-disposition", "content-id", "content-description", "content-language", "content-location", "content-base")


def set_text(part: EmailMessage, text: str) -> None:
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


def text_part(text: str) -> EmailMessage:
    part = EmailMessage(policy=POLICY)
    text_body(part, text)
    del part["MIME-Version"]
    return part


def wrap_with_text(msg: EmailMessage, text: str) -> None:
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
    msg.set_payload([text_part(text), inner])
    if "MIME-Version" not in msg:
        msg["MIME-Version"] = "1.0"
