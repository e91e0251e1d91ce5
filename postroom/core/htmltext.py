"""HTML mail as readable plain text: the one converter every part of Postroom uses.

Used where a person or a rule needs the words of an HTML-only mail: the text rules match
(``mail.message``), the held reply an approver reads (``web``), what a simulated mail
client quotes (``sim``), and the header block of a forward.  Not a sanitiser: the output
is text, never HTML, so nothing in it is ever interpreted.

HTML's own whitespace rules apply (runs of spaces and newlines in text are one space,
except inside ``<pre>``); block elements and ``<br>`` end lines; ``script``, ``style``,
``head`` and ``template`` contribute nothing; entities are decoded, ``&nbsp;`` becomes a
plain space.  Broken markup never raises: whatever the parser gives up on is stripped of
anything tag-like.
"""

from __future__ import annotations

import re
from html import unescape
from html.parser import HTMLParser

__all__ = ["html_to_text"]

_BLOCK = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "fieldset",
        "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header",
        "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table", "tr", "ul",
    }
)
_SKIP = frozenset({"script", "style", "head", "title", "template", "noscript"})
_SPACE_RE = re.compile(r"[ \t\r\n\f]+")
_PRE_SPACE, _PRE_TAB = "\x02", "\x03"


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._skipping = 0
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skipping += 1
        elif tag in _BLOCK:
            self.chunks.append("\n")
            if tag == "pre":
                self._pre += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK:  # <br/>, <hr/>
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in _BLOCK and tag != "br":
            self.chunks.append("\n")
            if tag == "pre":
                self._pre = max(0, self._pre - 1)

    def handle_data(self, data: str) -> None:
        if self._skipping:
            return
        if self._pre:  # spaces kept through the line trimming below
            self.chunks.append(data.replace(" ", _PRE_SPACE).replace("\t", _PRE_TAB))
        else:
            self.chunks.append(_SPACE_RE.sub(" ", data))


def html_to_text(markup: str) -> str:
    """The readable text of an HTML document or fragment; never raises."""
    parser = _Text()
    try:
        parser.feed(markup)
        parser.close()
        text = "".join(parser.chunks)
    except Exception:  # noqa: BLE001 - hostile markup: fall back to stripping tags
        text = unescape(re.sub(r"<[^>]*>", " ", markup))
    text = text.replace("\xa0", " ")
    lines = [line.strip(" \t") for line in text.split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")
    return text.replace(_PRE_SPACE, " ").replace(_PRE_TAB, "\t")
