"""The header block at the top of a forward's body: what the header no longer says.

A forward to an agent carries no customer address in From, To, Cc or Reply-To (decision
0015), so who wrote, to whom, when, and where the answer will go are shown in the body,
in the plain and the HTML alternative, with a warning when the answer would go to
another domain than the sender's (a Reply-To hijack).  The values come from the
customer's header: they are shown as text, never as markup, without bidi controls that
could reorder them, and cut to a sane length.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import EmailMessage, Message

from postroom.core.headers import (
    address_list,
    charset_hint,
    clean_text,
    foreign_reply_to,
    header_text,
    raw_header_values,
)
from postroom.core.mimetext import (
    OPAQUE,
    part_text,
    readable_parts,
    set_text,
    text_part,
    wrap_with_text,
)

__all__ = ["BLOCK_TITLE", "ForwardFacts", "add_header_block", "block_into"]

# Bidirectional-text controls would let a display name re-order the header block.
_BIDI_RE = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_MAX_SHOWN = 20  # addresses per line of the header block


@dataclass(frozen=True)
class ForwardFacts:
    """What the header block shows, read tolerantly from the customer's header."""

    sender: tuple[str, str] | None  # (display name, address) of From
    to: tuple[tuple[str, str], ...]
    cc: tuple[tuple[str, str], ...]
    reply_to: tuple[str, str] | None
    date: str
    subject: str

    @classmethod
    def of(cls, msg: Message) -> ForwardFacts:
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


BLOCK_TITLE = "Customer mail, forwarded by Postroom"


def _block_text(facts: ForwardFacts) -> str:
    rows = [f"---------- {BLOCK_TITLE} ----------"]
    rows += [f"{label}: {value}" for label, value, _warn in facts.lines()]
    return "\n".join(rows) + "\n\n"


def _block_html(facts: ForwardFacts) -> str:
    warning = ' style="color:#b00020;font-weight:bold"'
    rows = "".join(
        f"<div{warning if warn else ''}><b>{html.escape(label)}:</b> {html.escape(value)}</div>"
        for label, value, warn in facts.lines()
    )
    return (
        '<div style="border:1px solid #ccc;padding:6px 8px;margin:0 0 12px;'
        'font:13px/1.4 sans-serif;color:#333">'
        f'<div style="color:#666">{html.escape(BLOCK_TITLE)}</div>{rows}</div>'
    )


# Bounded, and unable to run past the next tag: hostile HTML ("<body<body<body...") must
# cost linear time.
_BODY_TAG_RE = re.compile(r"<body\b[^<>]{0,2000}>", re.I)
_META_CHARSET_RE = re.compile(r"(<meta\b[^<>]{0,1000}?charset\s*=\s*[\"']?)([A-Za-z0-9_.:-]+)", re.I)

def _with_block(part: Message, text: str, facts: ForwardFacts) -> str:
    return block_into(part.get_content_subtype(), text, facts)


def block_into(subtype: str, text: str, facts: ForwardFacts) -> str:
    """``text``, a text/``subtype`` body, with the header block at its top (HTML: after
    the body tag, its meta charset made UTF-8, as the text is written out as UTF-8)."""
    if subtype == "html":
        match = _BODY_TAG_RE.search(text)
        at = match.end() if match else 0
        return _META_CHARSET_RE.sub(r"\g<1>utf-8", text[:at]) + _block_html(facts) + text[at:]
    return _block_text(facts) + text


def add_header_block(msg: EmailMessage, facts: ForwardFacts) -> None:
    """Put the header block at the top of the body: into each alternative of the text
    the agent reads (plain and HTML), or, where the body must stay byte for byte as it is
    (signed, encrypted) or has no text, in a text part of its own before it."""
    parts = readable_parts(msg) if msg.get_content_type() not in OPAQUE else None
    if parts:
        try:
            # Every new text first, then the writes: a part that cannot be read leaves
            # the body untouched and the block goes in a part of its own.
            texts = [_with_block(part, part_text(part), facts) for part in parts]
        except Exception:  # noqa: BLE001 - hostile MIME: any failure means "not readable"
            texts = []
        if texts:
            for part, text in zip(parts, texts, strict=True):
                set_text(part, text)
            return
    if msg.get_content_type() == "multipart/mixed" and isinstance(msg.get_payload(), list):
        # No text to put it in (an image alone, an unreadable alternative): the block
        # becomes the first part, the body the mixed parts after it (RFC 2046 §5.1.3).
        msg.get_payload().insert(0, text_part(_block_text(facts)))
        return
    wrap_with_text(msg, _block_text(facts))
