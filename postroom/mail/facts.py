"""A parsed mail as the plain ``MessageFacts`` that routing rules and priority look at."""

from __future__ import annotations

import re

from postroom.core.headers import decode_words, unfold
from postroom.core.rules import MAX_TEXT, MessageFacts
from postroom.mail.message import ParsedMail

__all__ = ["facts_from_mail"]

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# A header block is small; a mail with thousands of headers is hostile or broken, and
# rules only ever ask for a few by name.
_MAX_HEADERS = 500


def facts_from_mail(mail: ParsedMail) -> MessageFacts:
    """Addresses as parsed (lower-cased), every header decoded, the body text capped.

    The body is cut to ``core.rules.MAX_TEXT`` characters here too, so a huge mail does
    not keep a second huge copy alive while rules run.
    """
    hint = mail.charset_hint  # charset_hint(mail.msg), as parse read it
    items = list(mail.msg.raw_items())
    # The names of the first _MAX_HEADERS fields, in order; then every value of each in
    # one pass over the fields (`raw_header_values` per name went over all of them for
    # every name: issue 9).
    headers: dict[str, list[str]] = {}
    for index, (name, _value) in enumerate(items):
        if index >= _MAX_HEADERS:
            break
        headers.setdefault(name.lower(), [])
    for name, value in items:
        values = headers.get(name.lower())
        if values is not None:
            values.append(_decoded(unfold(value if isinstance(value, str) else str(value)), hint))
    return MessageFacts(
        to=tuple(mail.to),
        cc=tuple(mail.cc),
        from_addr=mail.from_addr,
        subject=mail.subject,
        body_text=mail.text[:MAX_TEXT],
        headers=headers,
    )


def _decoded(value: str, hint: str | None) -> str:
    try:
        text = decode_words(value, hint)
    except Exception:  # noqa: BLE001 - a header that will not decode is matched as it came
        text = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return _CONTROL.sub(" ", text).strip()[:MAX_TEXT]
