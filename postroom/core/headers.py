"""Tolerant header reading, shared by the builders, ``core.autoreply`` and ``mail.message``.

Because core may only import the stdlib, this module owns ``POLICY`` (policy.default whose
header parsing never raises) and the readers ``raw_header_values``, ``header_text``,
``decode_words``, ``decode_text``, ``msg_ids`` and ``address_list``.  None of them raises
on hostile input (field bug B-18).  Building messages is ``core.compose``'s job.

A stdlib hazard (CPython 3.11) worth knowing: ``policy.default`` RFC 2047-encodes any
References/In-Reply-To/Message-ID word longer than the line (Outlook's 80-odd character
Message-IDs), which no MUA decodes there, so threading silently breaks.  ``POLICY`` folds
msg-id lists only between ids.
"""

from __future__ import annotations

import binascii
import codecs
import contextlib
import functools
import re
from collections.abc import Iterable
from email import policy as _policy
from email.header import Header
from email.headerregistry import Address, AddressHeader, HeaderRegistry, UnstructuredHeader
from email.message import Message
from email.utils import getaddresses
from urllib.parse import quote, unquote_to_bytes

__all__ = [
    "CONTROL_RE",
    "POLICY",
    "SPLITLINES_EXTRA",
    "address_list",
    "charset_codec",
    "charset_hint",
    "clean_text",
    "decode_text",
    "decode_words",
    "first_msg_id",
    "foreign_reply_to",
    "header_text",
    "msg_ids",
    "plain_addresses",
    "raw_header_fields",
    "raw_header_values",
    "put_header",
    "references",
    "settle_headers",
    "unfold",
    "values_text",
]

# --------------------------------------------------------------------------------------
# A tolerant policy
# --------------------------------------------------------------------------------------


class _MsgIdListHeader(UnstructuredHeader):
    """References / In-Reply-To (RFC 5322 §3.6.4): a list of msg-ids, folded only between ids."""

    @classmethod
    def parse(cls, value: str, kwds: dict[str, object]) -> None:
        super().parse(value, kwds)
        kwds["decoded"] = " ".join(value.split())

    def fold(self, *, policy: _policy.EmailPolicy) -> str:  # type: ignore[override]
        words = str(self).split()
        if not words or not all(w.isascii() for w in words):
            return super().fold(policy=policy)  # type: ignore[misc]
        limit = policy.max_line_length or 998
        lines: list[str] = []
        line = f"{self.name}:"  # type: ignore[attr-defined]
        started = False
        for word in words:
            if started and len(line) + 1 + len(word) > limit:
                lines.append(line)
                line = ""
            line += " " + word
            started = True
        lines.append(line)
        return policy.linesep.join(lines) + policy.linesep


_RFC2231_PARAM_RE = re.compile(
    r"""\s*;?\s*(?P<name>[!#$%&+.0-9A-Z^_`a-z{|}~-]+)\*(?:(?P<n>\d+)\*)?=\s*"""
    r"""(?:(?P<cs>[^'\s;"]*)'[^'\s;"]*')?(?P<val>[^\s;"]*)"""
)


def _rfc2231_as_utf8(value: str) -> str:
    """Re-express RFC 2231 extended parameters (``name*=charset''%XX``, ``name*0*=...``)
    as UTF-8, decoded our tolerant way.

    CPython decodes them with the stated charset and dies on anything it cannot read
    (UnicodeDecodeError is not caught in ``_header_value_parser``): ISO-2022-JP filenames
    with NEC characters, as Windows writes them, in otobo's Test12.
    """
    segments: dict[str, list[tuple[int, str, bytes]]] = {}
    for m in _RFC2231_PARAM_RE.finditer(value):
        entry = (int(m.group("n") or 0), m.group("cs") or "", unquote_to_bytes(m.group("val")))
        segments.setdefault(m.group("name").lower(), []).append(entry)
    if not segments:
        return value
    out = _RFC2231_PARAM_RE.sub("", value).rstrip("; \t")
    for name, parts in segments.items():
        parts.sort()
        charset = next((cs for _n, cs, _v in parts if cs), None)
        text = decode_text(b"".join(v for _n, _cs, v in parts), charset)[0]
        out += f"; {name}*=utf-8''{quote(text.encode('utf-8'), safe='')}"
    return out


# Parsed headers kept for reuse (``_TolerantHeaderRegistry``): the MIME headers that the
# stdlib reads at every ``get_content_type()``, ``get_param()``, ``get_filename()``...;
# bounded in number and in size (a parsed header is 10-20 KB of parse tree), so a hostile
# mail's huge headers are parsed at each read rather than kept.
_CACHED_NAMES = frozenset({"content-type", "content-disposition", "content-transfer-encoding"})
_CACHED_HEADERS = 256
_CACHED_VALUE_MAX = 300


class _TolerantHeaderRegistry(HeaderRegistry):
    """``HeaderRegistry`` that never raises while parsing a header.

    CPython 3.11's address parser raises AttributeError on groups such as
    ``To: unlisted-recipients:; (no To-header on input)`` (3 corpus files), RFC 2231
    parameters in a charset that does not decode raise UnicodeDecodeError, and other
    parsers have had IndexError/TypeError bugs.  Content-Type/-Disposition are retried
    with their RFC 2231 parameters re-read tolerantly, then without parameters (the
    stdlib's own methods need their structured attributes); anything else that cannot be
    parsed as its structured type is presented as unstructured text.  Only reading is
    affected: a parsed header is written back from its source text (``refold_source``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.map_to_type("references", _MsgIdListHeader)
        self.map_to_type("in-reply-to", _MsgIdListHeader)
        self._fallback = type("_TolerantUnstructuredHeader", (UnstructuredHeader, self.base_class), {})
        self._classes: dict[str, type] = {}
        self._cached = functools.lru_cache(maxsize=_CACHED_HEADERS)(self._parse)

    def __getitem__(self, name: str) -> type:
        # The stdlib builds a new class (``type(...)``) at every header read; one per name
        # is the same class, built once.
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes.setdefault(key, super().__getitem__(name))
        return cls

    def __call__(self, name: str, value: str) -> object:
        # policy.default parses a header again at every read: reception read each part's
        # Content-Type a dozen times per mail (decision 0040). A header object is
        # immutable and a pure function of (name, value), so the short MIME ones are
        # parsed once and shared, across mails too.
        if type(value) is str and len(value) <= _CACHED_VALUE_MAX and name.lower() in _CACHED_NAMES:
            return self._cached(name, value)
        return self._parse(name, value)

    def _parse(self, name: str, value: str) -> object:
        try:
            return super().__call__(name, value)
        except Exception:  # noqa: BLE001 - stdlib parser bugs; see class docstring
            pass
        if name.lower() in ("content-type", "content-disposition"):
            for retry in (_rfc2231_as_utf8, lambda v: v.split(";", 1)[0]):
                try:
                    return super().__call__(name, retry(value))
                except Exception:  # noqa: BLE001 - next retry
                    continue
        return self._fallback(name, value)


class _SpaceKeepingPolicy(_policy.EmailPolicy):
    """policy.default, whose folding sometimes loses a space between words (CPython 3.11).

    Folding a header that needs RFC 2047 words, the stdlib can end one encoded-word with
    a word and begin the next with the following word, the space between them written as
    the fold's whitespace, which a reader ignores between two encoded-words (RFC 2047
    §6.2): "Путін хуйло" arrives as "Путінхуйло". About one long non-ASCII Subject or
    display name in twenty-five. Every fold that wrote encoded-words is therefore read back
    the way a mail client reads it; if that is not what was folded, the header is written
    again with each value's spaces inside its encoded-words (``_encoded_anew``).
    """

    def _fold(self, name: str, value: object, refold_binary: bool = False) -> str:
        folded: str = super()._fold(name, value, refold_binary)  # type: ignore[misc]
        if "=?" not in folded or not _free_text(value) or _reads_as_written(folded, value):
            return folded
        return _encoded_anew(name, value, self) or folded


# Headers whose words a reader decodes as RFC 2047 text; never MIME parameters or msg-ids.
_TEXT_FIELDS = frozenset({"subject", "comments", "keywords"})


def _free_text(header: object) -> bool:
    if isinstance(header, AddressHeader):
        return True
    return isinstance(header, UnstructuredHeader) and str(getattr(header, "name", "")).lower() in _TEXT_FIELDS


def _reads_as_written(folded: str, header: object) -> bool:
    text = unfold(folded).partition(":")[2].strip()
    addresses = getattr(header, "addresses", None)
    if addresses is None:
        return decode_words(text) == str(header)
    wanted = [(a.display_name, a.addr_spec.lower()) for a in addresses]
    return address_list(text) == [(clean_text(n), a) for n, a in wanted]


def _encoded_anew(name: str, header: object, policy: _policy.EmailPolicy) -> str | None:
    """``Name: value`` folded with whole-value encoded-words (``email.header.Header``
    splits between characters, so every space stays inside a word; a continuation line
    may run past 78 characters, never past 998), or None for an address header with
    groups or an address without a local part, which keeps the stdlib's folding."""
    linesep = policy.linesep
    addresses = getattr(header, "addresses", None)
    if addresses is None:
        return f"{name}: {_encoded(str(header), linesep, name)}{linesep}"
    if any(g.display_name is not None for g in header.groups) or not all(a.username for a in addresses):  # type: ignore[attr-defined]
        return None
    entries = [
        f"{_encoded(a.display_name, linesep)} <{a.addr_spec}>"
        if not a.display_name.isascii() or "=?" in a.display_name
        else str(a)
        for a in addresses
    ]
    return f"{name}: " + f",{linesep} ".join(entries) + linesep


def _encoded(text: str, linesep: str, name: str | None = None) -> str:
    return Header(text, "utf-8", header_name=name).encode(linesep=linesep)


#: policy.default, plus: header parsing never raises; headers we pass through are written
#: back as they came (``refold_source="none"``: refolding a long unparsed header would
#: RFC 2047-encode URLs and msg-ids); msg-id lists fold only between ids; folding keeps
#: every space (``_SpaceKeepingPolicy``).
POLICY: _policy.EmailPolicy = _SpaceKeepingPolicy(header_factory=_TolerantHeaderRegistry(), refold_source="none")


# Printable ASCII words with single spaces between them: a header object holding such a
# text, when it fits on one line, folds to ``Name: text`` exactly (``settle_headers``).
_SETTLED_RE = re.compile(r"[!-~]+(?: [!-~]+)*")
_SETTLED_LINE = 78  # policy.default's max_line_length


def _settled(name: str, text: str) -> bool:
    return len(name) + 2 + len(text) <= _SETTLED_LINE and "=?" not in text and _SETTLED_RE.fullmatch(text) is not None


def put_header(msg: Message, name: str, value: object) -> None:
    """``msg[name] = value``, stored as text when its folded form is that text anyway
    (see ``settle_headers``): the header registry neither parses nor folds it."""
    if isinstance(value, list | tuple):  # of Address: an address list, as AddressHeader writes it
        text = ", ".join(str(a) for a in value) if all(isinstance(a, Address) for a in value) else ""
    else:
        text = str(value) if isinstance(value, str | Address) else ""
    # A second Subject, From... is refused by ``msg[name]`` (RFC 5322 §3.6), not written.
    if text and _settled(name, text) and not (msg.policy.header_max_count(name) and name in msg):
        msg.set_raw(name, text)
    else:
        msg[name] = value


def settle_headers(msg: Message) -> None:
    """Store each header object that code set on ``msg`` (and its parts) as its text
    when writing it out would give that text anyway: printable ASCII, one short line,
    no encoded-word (``=?``).  Folding a header object is the email package's slowest
    path (its parse tree refolded token by token: a third of a forward's build, issue 9);
    a text header is written as is (``refold_source="none"``).  Anything else (non-ASCII,
    RFC 2047 words, long lines to fold) keeps its object and policy.default's folding.
    """
    for part in msg.walk():
        items = list(part.raw_items())
        if all(type(v) is str for _k, v in items):
            continue  # all parsed (kept as their source text) or settled already
        for name in {k for k, _ in items}:
            del part[name]
        for name, value in items:
            if type(value) is not str:
                text = str(value)
                if _settled(name, text):
                    value = text
            part.set_raw(name, value)


# --------------------------------------------------------------------------------------
# Tolerant header reading
# --------------------------------------------------------------------------------------

_FOLD_RE = re.compile(r"\r?\n(?=[ \t])|\r(?=[ \t])")
# Characters str.splitlines() treats as line breaks besides CR/LF (CPython gh-117313).
SPLITLINES_EXTRA = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
_ENCODED_WORD_RE = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_SURROGATES_RE = re.compile("[\udc80-\udcff]")


def _has_surrogates(text: str) -> bool:
    return _SURROGATES_RE.search(text) is not None


def _unsurrogate(text: str, hint: str | None = None) -> str:
    """Undo the parser's surrogateescape for 8-bit header bytes.

    Tries UTF-8 (RFC 6532), then ``hint`` (the message's body charset: old mailers wrote
    raw Big5/KOI8-R/Shift_JIS headers in the body's charset), then cp1252.  Also decodes
    raw ISO-2022-JP (RFC 1468) that old Japanese mailers put in headers without
    encoded-words: it is 7-bit, so only its escape sequences give it away.
    """
    if ("\x1b$" in text or "\x1b(" in text) and text.isascii():
        text = decode_text(text.encode("ascii"), "iso-2022-jp")[0]
    if not _has_surrogates(text):
        return text
    raw = text.encode("utf-8", "surrogateescape")
    for candidate in ("utf-8", charset_codec(hint)):
        if candidate is None:
            continue
        with contextlib.suppress(UnicodeError, LookupError):
            return raw.decode(candidate)
    return raw.decode("cp1252", "replace")


def charset_hint(msg: Message) -> str | None:
    """The charset of the message's first text part: how to read raw 8-bit header bytes."""
    try:
        for index, part in enumerate(msg.walk()):
            if index > 20:
                break
            if part.get_content_maintype() == "text":
                charset = part.get_content_charset()
                if charset:
                    return str(charset)
    except Exception:  # noqa: BLE001 - only a hint
        return None
    return None


def unfold(value: str) -> str:
    if "\n" not in value and "\r" not in value:
        return value  # one line: nothing to unfold (most values; issue 9)
    return _FOLD_RE.sub("", value)


def raw_header_values(msg: Message, name: str) -> list[str]:
    """Every value of header ``name`` as it arrived (unfolded, not decoded); never raises."""
    wanted = name.lower()
    out: list[str] = []
    for key, value in msg.raw_items():
        if key.lower() == wanted:
            out.append(unfold(value if isinstance(value, str) else str(value)))
    return out


def raw_header_fields(
    msg: Message, names: Iterable[str] | None = None, *, limit: int | None = None
) -> dict[str, list[str]]:
    """Several fields' values as ``raw_header_values`` gives each (unfolded, not decoded,
    in order), gathered in one pass over the header; keys lowercased.

    With ``names``: exactly those fields (``[]`` for one absent). Without: every field
    among the first ``limit`` (all when None), in the order they first come; each with
    all its values, also those past ``limit``. Never raises.
    """
    fields: dict[str, list[str]]
    if names is not None:
        fields = {name.lower(): [] for name in names}
        items: Iterable[tuple[str, object]] = msg.raw_items()
    else:
        fields = {}
        items = list(msg.raw_items())
        for index, (name, _value) in enumerate(items):
            if limit is not None and index >= limit:
                break
            fields.setdefault(name.lower(), [])
    for name, value in items:
        values = fields.get(name.lower())
        if values is not None:
            values.append(unfold(value if isinstance(value, str) else str(value)))
    return fields


# MIME charset labels real mail uses that Python does not know, or knows as a narrower set
# than the sender meant (the superset decodes everything the subset does).
_CHARSET_ALIASES = {
    "uft-8": "utf-8", "utf8": "utf-8", "unicode-1-1-utf-7": "utf-7", "x-unicode-2-0-utf-7": "utf-7",
    "iso-8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252", "iso8859-1": "cp1252",
    "ks_c_5601-1987": "cp949", "ks_c_5601": "cp949", "ksc5601": "cp949", "euc-kr": "cp949",
    "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "cp936": "gb18030",
    "big5": "big5hkscs", "x-x-big5": "big5hkscs",
    "shift_jis": "cp932", "shift-jis": "cp932", "x-sjis": "cp932", "sjis": "cp932",
    "windows-31j": "cp932", "iso-2022-jp": "iso2022_jp_ext",
    "x-mac-cyrillic": "mac_cyrillic", "x-mac-roman": "mac_roman", "macintosh": "mac_roman",
    "tis-620": "cp874", "windows-874": "cp874", "iso-8859-8-i": "iso8859_8",
}
# Codecs that are not a character set, or would interpret the bytes as code.
_UNSAFE_CODECS = frozenset(
    {"unicode_escape", "raw_unicode_escape", "undefined", "idna", "punycode", "mbcs", "oem"}
)


def charset_codec(charset: str | None) -> str | None:
    """The Python codec for a MIME charset label (RFC 2045/2231), or None if unknown/unsafe."""
    if not charset:
        return None
    # RFC 2231 §5 allows "charset*language"; quotes and stray spaces are common.
    label = charset.split("*", 1)[0].strip().strip("\"'").strip().lower()
    label = _CHARSET_ALIASES.get(label, label)
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError, TypeError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _UNSAFE_CODECS:
        return None
    return info.name


_ISO2022JP_ESC = re.compile(rb"\x1b(\$B|\$@|\$\(Q|\$\(O|\(B|\(J|\(I)")


def _iso2022jp_lenient(data: bytes) -> str:
    """ISO-2022-JP as Windows writes it (CP50220: NEC row 13, ①, ㈱...), which Python's
    strict codecs refuse.  Two-byte runs are read as JIS X 0213, a superset (RFC 1468)."""
    out: list[str] = []
    mode, pos = b"(B", 0
    for m in [*_ISO2022JP_ESC.finditer(data), None]:
        chunk = data[pos : m.start() if m else len(data)]
        if mode in (b"$B", b"$@", b"$(Q", b"$(O"):
            even = len(chunk) // 2 * 2
            out.append(bytes(b | 0x80 for b in chunk[:even]).decode("euc_jis_2004", "replace"))
            out.append(chunk[even:].decode("ascii", "replace"))
        elif mode == b"(I":  # JIS X 0201 half-width katakana
            out.append(bytes(b | 0x80 for b in chunk).decode("cp932", "replace"))
        else:
            out.append(chunk.decode("ascii", "replace"))
        if m:
            mode, pos = m.group(1), m.end()
    return "".join(out)


def decode_text(data: bytes, charset: str | None) -> tuple[str, str | None]:
    """Decode bytes in the declared charset, never raising.

    Order: the declared charset, strictly; UTF-8, strictly (the commonest lie); the
    declared charset with replacement characters; cp1252 (a superset of latin-1's
    printable range) with replacement.  The second item says which fallback was needed.
    """
    codec = charset_codec(charset or "us-ascii")  # RFC 2045 §5.2 default
    # UTF-8 only helps with 8-bit data: 7-bit charsets (ISO-2022-JP, UTF-7) that failed
    # need their own lenient reading, not ASCII.
    for candidate in (codec, "utf-8" if not data.isascii() else None):
        if candidate is None:
            continue
        try:
            text = data.decode(candidate)
        except (UnicodeError, LookupError, ValueError):
            continue
        # 8-bit UTF-8 under a missing or ASCII label is too common to be worth a note.
        quiet = candidate == codec or codec == "ascii"
        return text, None if quiet else f"decoded as {candidate}"
    if codec is not None and codec.startswith("iso2022_jp"):
        return _iso2022jp_lenient(data), "ISO-2022-JP read as CP50220"
    if codec is not None and codec != "ascii":
        return data.decode(codec, "replace"), f"{codec} with replacement characters"
    return data.decode("cp1252", "replace"), f"charset {charset!r} did not fit: cp1252"


def decode_words(text: str, hint: str | None = None) -> str:
    """Decode RFC 2047 encoded-words, tolerating what real mail does wrong.

    Whitespace between adjacent encoded-words is dropped (RFC 2047 §6.2); adjacent words in
    the same charset are joined as bytes first, because senders split multi-byte
    characters across words; unknown charsets fall back to UTF-8, then cp1252.
    """
    if text.isascii() and "=?" not in text and "\x1b" not in text:
        # Nothing to decode (no encoded-word, no 8-bit byte, no ISO-2022-JP escape): the
        # text as it is, which is what the loop below gives it back as (issue 9).
        return text
    text = _unsurrogate(text, hint)
    pieces: list[tuple[str | None, str | bytes]] = []  # (charset, bytes) or (None, text)
    pos = 0
    for m in _ENCODED_WORD_RE.finditer(text):
        between = text[pos : m.start()]
        if between and not (between.isspace() and pieces and pieces[-1][0] is not None):
            pieces.append((None, between))
        charset, enc, payload = m.group(1).lower(), m.group(2).lower(), m.group(3)
        try:
            if enc == "b":
                data = binascii.a2b_base64(payload + "=" * (-len(payload) % 4))
            else:
                data = binascii.a2b_qp(payload.replace("_", " ").encode("ascii", "replace"))
        except (binascii.Error, ValueError):
            pieces.append((None, m.group(0)))
        else:
            if pieces and pieces[-1][0] == charset:
                prev = pieces[-1][1]
                assert isinstance(prev, bytes)
                pieces[-1] = (charset, prev + data)
            else:
                pieces.append((charset, data))
        pos = m.end()
    if pos < len(text):
        pieces.append((None, text[pos:]))
    out: list[str] = []
    for charset, chunk in pieces:
        if charset is None:
            assert isinstance(chunk, str)
            out.append(chunk)
        else:
            assert isinstance(chunk, bytes)
            out.append(decode_text(chunk, charset)[0])
    return "".join(out)


def clean_text(text: str) -> str:
    """NUL, CR/LF and other control characters become spaces (tabs too); trimmed."""
    return CONTROL_RE.sub(" ", text.replace("\t", " ")).strip()


def header_text(msg: Message, name: str) -> str | None:
    """The first ``name`` header decoded to text, control characters removed; None if absent."""
    return values_text(msg, raw_header_values(msg, name))


def values_text(msg: Message, values: list[str]) -> str | None:
    """``header_text`` of the field of ``msg`` whose values (as ``raw_header_values``
    gives them) these are, for a reader that gathered several fields in one pass."""
    if not values:
        return None
    hint = charset_hint(msg) if _has_surrogates(values[0]) else None
    return clean_text(decode_words(values[0], hint))


def msg_ids(value: str | None) -> list[str]:
    """The ``<msg-id>`` tokens of a Message-ID/In-Reply-To/References value, in order, once each.

    Tolerates missing angle brackets (``id@host``) and whitespace inside brackets (old
    folding bugs); drops empties such as ``<>``.
    """
    if not value:
        return []
    value = _unsurrogate(value)
    found = [re.sub(r"\s+", "", m) for m in re.findall(r"<([^<>]*)>", value)]
    if not found:
        found = [w.strip("<>,;") for w in value.split() if "@" in w]
    out: list[str] = []
    for mid in found:
        if mid and mid.isprintable() and f"<{mid}>" not in out:
            out.append(f"<{mid}>")
    return out


# A plain address list (issue 9: the email package's address parser was the largest piece
# of reception's parsing, each From read three times per mail): entries separated by
# commas, each a dot-atom at a host name, bare or in angle brackets after a display name
# of plain words (RFC 5322 atext and dots, runs of spaces between them) or a quoted string without
# quotes, backslashes or CR/LF in it. `getaddresses` gives such a value exactly these
# (name, addr-spec) pairs (tests/unit/test_plain_addresses.py: fixtures, corpus and
# Hypothesis); anything else is left to it.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_ADDR_SPEC = rf"{_DOT_ATOM}@{_LABEL}(?:\.{_LABEL})*"
_WORD = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+"  # a display name's atoms may hold dots (obs-phrase)
_PLAIN_ENTRY_RE = re.compile(
    rf' *(?:(?P<bare>{_ADDR_SPEC})'
    rf'|(?:(?P<words>{_WORD}(?: +{_WORD})*)|"(?P<quoted>[ !#-\[\]-~]*)") *<(?P<addr>{_ADDR_SPEC})>) *'
)


def plain_addresses(value: str) -> list[tuple[str, str]] | None:
    """``getaddresses([value])`` for a plain address list (see above), without the email
    package's parser; None for anything else (the caller asks ``getaddresses``)."""
    if not value.isascii():
        return None
    out: list[tuple[str, str]] = []
    pos, end = 0, len(value)
    while True:
        m = _PLAIN_ENTRY_RE.match(value, pos)
        if m is None:
            return None
        bare, words = m.group("bare"), m.group("words")
        if bare is not None:
            out.append(("", bare))
        elif words is not None:
            out.append((" ".join(words.split()), m.group("addr")))  # runs of spaces as one
        else:
            out.append((m.group("quoted"), m.group("addr")))
        pos = m.end()
        if pos == end:
            return out
        if value[pos] != ",":
            return None
        pos += 1


def address_list(value: str | None, hint: str | None = None) -> list[tuple[str, str]]:
    """(display name, lowercased addr-spec) pairs from an address header value; never raises.

    Entries without an ``@`` (groups, ``undisclosed-recipients:;``, garbage) are dropped.
    Display names are RFC 2047-decoded after splitting, so an encoded comma cannot split an
    entry.
    """
    if not value:
        return []
    try:
        text = unfold(value)
        pairs = plain_addresses(text)
        if pairs is None:
            pairs = getaddresses([_unsurrogate(text, hint)])
    except Exception:  # noqa: BLE001 - stdlib parser bugs must not stop ingest
        return []
    out: list[tuple[str, str]] = []
    for name, addr in pairs:
        addr = clean_text(addr).strip("<>").lower()
        local, at, domain = addr.rpartition("@")
        if not at or not local or not domain or " " in addr:
            continue
        out.append((clean_text(decode_words(name, hint)), addr))
    return out


def first_msg_id(msg: Message, name: str) -> str | None:
    """The first msg-id in the first ``name`` header that has one."""
    for value in raw_header_values(msg, name):
        ids = msg_ids(value)
        if ids:
            return ids[0]
    return None


def references(msg: Message) -> list[str]:
    """Every msg-id of every References header, in order, once each."""
    return msg_ids(" ".join(raw_header_values(msg, "References")))


def foreign_reply_to(sender: str, reply_to: str) -> bool:
    """True when answers would go to another domain than the writer's (a hijack sign):
    neither domain is the other or a subdomain of it."""
    a = sender.rpartition("@")[2].strip().lower().rstrip(".")
    b = reply_to.rpartition("@")[2].strip().lower().rstrip(".")
    if not a or not b:
        return False
    return not (a == b or a.endswith("." + b) or b.endswith("." + a))
