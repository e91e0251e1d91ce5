"""HTML mail as readable plain text: the one converter every part of Postroom uses.

Used where a person or a rule needs the words of an HTML-only mail: the text rules match
(``mail.message``), the held reply an approver reads (``web``), what a simulated mail
client quotes (``sim``).  Not a sanitiser: the output is text, never HTML, so nothing in
it is ever interpreted.

HTML's own whitespace rules apply (runs of spaces and newlines in text are one space,
except inside ``<pre>``); block elements and ``<br>`` end lines; ``script``, ``style``,
``head``, ``title`` and ``template`` contribute nothing; entities are decoded, ``&nbsp;``
becomes a plain space.  A ``<`` that starts no tag is text.

Customer HTML is hostile input, so the tokenizer is a few regular expressions that each
stop at the next ``<`` or run to the end once: linear in the input.  (The stdlib's
HTMLParser re-scans the rest of the document for every ``<`` it cannot close yet:
``"<p<a" * 40000`` took more than a minute.)
"""

from __future__ import annotations

import re
from html import unescape

__all__ = ["html_to_text"]

_BLOCK = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "fieldset",
        "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header",
        "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table", "tr", "ul",
    }
)
_SKIP = frozenset({"script", "style", "head", "title", "template", "noscript"})
_MARKUP = re.compile(
    r"<!--.*?(?:-->|\Z)"  # a comment (an unclosed one runs to the end, once)
    r"|<(/?)([A-Za-z][A-Za-z0-9:-]*)(?:[\s/][^<>]*)?>"  # a start or end tag
    r"|<[!?][^<>]*>",  # a doctype, CDATA opener, processing instruction
    re.S,
)
_SPACE_RE = re.compile(r"[ \t\r\n\f]+")
_PRE_SPACE, _PRE_TAB = "\x02", "\x03"


def html_to_text(markup: str) -> str:
    """The readable text of an HTML document or fragment; never raises."""
    chunks: list[str] = []
    pre = 0
    pos = 0
    skip_until: str | None = None  # the end tag that ends a skipped element
    for m in _MARKUP.finditer(markup):
        if m.start() < pos:
            continue  # inside a skipped element
        if skip_until is None:
            _data(chunks, markup[pos : m.start()], pre)
        pos = m.end()
        closing, name = m.group(1), (m.group(2) or "").lower()
        if skip_until is not None:
            if closing and name == skip_until:
                skip_until = None
            continue
        if not name:
            continue
        if name in _SKIP and not closing:
            if m.group(0).endswith("/>"):
                continue
            skip_until = name
        elif name in _BLOCK:
            chunks.append("\n")
            if name == "pre":
                pre = max(0, pre - 1) if closing else pre + 1
    if skip_until is None:
        _data(chunks, markup[pos:], pre)
    text = "".join(chunks).replace("\xa0", " ")
    lines = [line.strip(" \t") for line in text.split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")
    return text.replace(_PRE_SPACE, " ").replace(_PRE_TAB, "\t")


def _data(chunks: list[str], raw: str, pre: int) -> None:
    if not raw:
        return
    data = unescape(raw)
    if pre:  # spaces kept through the line trimming in html_to_text
        chunks.append(data.replace(" ", _PRE_SPACE).replace("\t", _PRE_TAB))
    else:
        chunks.append(_SPACE_RE.sub(" ", data))
