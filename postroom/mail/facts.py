"""A parsed mail as the plain ``MessageFacts`` that routing rules and priority look at."""

from __future__ import annotations

import re

from postroom.core.headers import decode_words, raw_header_fields
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
    # Every field among the first _MAX_HEADERS, with all its values, in one pass over the
    # header (`raw_header_values` per name went over all of it for every name: issue 9).
    fields = raw_header_fields(mail.msg, limit=_MAX_HEADERS)
    headers = {name: [_decoded(value, hint) for value in values] for name, values in fields.items()}
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
