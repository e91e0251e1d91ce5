"""Header rewriting: the messages Postroom sends, built from the messages it received.

Pure functions over ``email.message.EmailMessage``.  Every builder returns a NEW message and
never mutates its input.  Four builders:

* ``forward_to_agent`` – the customer's mail, body untouched, readdressed to an agent, with
  our Reply-To / Message-ID / subject tag carrying the correlation token.
* ``reply_to_customer`` – the agent's reply, body untouched, made to come from the contact
  centre and threaded to the customer's original; nothing of the agent's own mailbox or our
  plumbing survives in the header.
* ``auto_response`` – an RFC 3834 auto-reply to the customer.
* ``notice`` – an auto-generated notice (dead box, no reply), optionally carrying the
  offending mail as message/rfc822.

Because core may only import the stdlib, this module also owns the tolerant header
*reading* that the builders, ``core.autoreply`` and ``mail.message`` share: ``POLICY``,
``raw_header_values``, ``header_text``, ``decode_words``, ``msg_ids`` and ``address_list``.
They never raise on hostile input (field bug B-18).

Two stdlib hazards (CPython 3.11) shape the code here and are worth knowing:

* ``policy.default`` RFC 2047-encodes any References/In-Reply-To/Message-ID word longer
  than the line (Outlook's 80-odd character Message-IDs), which no MUA decodes there, so
  threading silently breaks.  ``POLICY`` folds msg-id lists only between ids.
* The generator re-splits unparsed header values with ``str.splitlines()``, which also
  splits at ``\\x0b \\x0c \\x1c \\x1d \\x1e \\x85 \\u2028 \\u2029`` (CPython gh-117313).  A
  customer could smuggle a ``Reply-To:`` line into the copy we forward.  Every header we
  pass through is copied with those characters replaced by spaces.
"""

from __future__ import annotations

import binascii
import codecs
import contextlib
import copy
import re
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from email import policy as _policy
from email.errors import MessageError
from email.headerregistry import Address, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import format_datetime, getaddresses
from urllib.parse import quote, unquote_to_bytes

from postroom.core.correlation import find_tokens_in_text, strip_subject_tag

__all__ = [
    "POLICY",
    "UnsafeHeaderValue",
    "address_list",
    "auto_response",
    "charset_codec",
    "charset_hint",
    "decode_text",
    "decode_words",
    "forward_to_agent",
    "header_text",
    "msg_ids",
    "notice",
    "raw_header_values",
    "reply_to_customer",
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

    def __call__(self, name: str, value: str) -> object:
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


#: policy.default, plus: header parsing never raises; headers we pass through are written
#: back as they came (``refold_source="none"``: refolding a long unparsed header would
#: RFC 2047-encode URLs and msg-ids); msg-id lists fold only between ids.
POLICY: _policy.EmailPolicy = _policy.default.clone(
    header_factory=_TolerantHeaderRegistry(), refold_source="none"
)


# --------------------------------------------------------------------------------------
# Tolerant header reading
# --------------------------------------------------------------------------------------

_FOLD_RE = re.compile(r"\r?\n(?=[ \t])|\r(?=[ \t])")
# Characters str.splitlines() treats as line breaks besides CR/LF (CPython gh-117313).
_SPLITLINES_EXTRA = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
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


def _unfold(value: str) -> str:
    return _FOLD_RE.sub("", value)


def raw_header_values(msg: Message, name: str) -> list[str]:
    """Every value of header ``name`` as it arrived (unfolded, not decoded); never raises."""
    wanted = name.lower()
    out: list[str] = []
    for key, value in msg.raw_items():
        if key.lower() == wanted:
            out.append(_unfold(value if isinstance(value, str) else str(value)))
    return out


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


def _clean_text(text: str) -> str:
    """NUL, CR/LF and other control characters become spaces (tabs too); trimmed."""
    return _CONTROL_RE.sub(" ", text.replace("\t", " ")).strip()


def header_text(msg: Message, name: str) -> str | None:
    """The first ``name`` header decoded to text, control characters removed; None if absent."""
    values = raw_header_values(msg, name)
    if not values:
        return None
    hint = charset_hint(msg) if _has_surrogates(values[0]) else None
    return _clean_text(decode_words(values[0], hint))


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


def address_list(value: str | None, hint: str | None = None) -> list[tuple[str, str]]:
    """(display name, lowercased addr-spec) pairs from an address header value; never raises.

    Entries without an ``@`` (groups, ``undisclosed-recipients:;``, garbage) are dropped.
    Display names are RFC 2047-decoded after splitting, so an encoded comma cannot split an
    entry.
    """
    if not value:
        return []
    try:
        pairs = getaddresses([_unsurrogate(_unfold(value), hint)])
    except Exception:  # noqa: BLE001 - stdlib parser bugs must not stop ingest
        return []
    out: list[tuple[str, str]] = []
    for name, addr in pairs:
        addr = _clean_text(addr).strip("<>").lower()
        local, at, domain = addr.rpartition("@")
        if not at or not local or not domain or " " in addr:
            continue
        out.append((_clean_text(decode_words(name, hint)), addr))
    return out


# --------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------


class UnsafeHeaderValue(ValueError):
    """A value for a header we write contains a line break or control character."""


# Printable ASCII without "<", ">" or spaces.  Ids we mint must have the "@" of RFC 5322
# §3.6.4; ids we echo back need not, because the other side matches them literally.
_MSG_ID_RE = re.compile(r"^<[!-;=?-~]+@[!-;=?-~]+>$")
_ECHO_ID_RE = re.compile(r"^<[!-;=?-~]+>$")

_FORWARD_DROP = frozenset(
    {
        # Replaced below.
        "to", "reply-to", "subject", "message-id", "references", "sender",
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
    if _CONTROL_RE.search(value.replace("\t", " ")):
        raise UnsafeHeaderValue(f"{what} contains a line break or control character")
    return value


def _mailbox(addr: str, name: str | None = None, *, what: str) -> Address:
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
    if any(ch in value for ch in _SPLITLINES_EXTRA):
        value = "".join(" " if ch in _SPLITLINES_EXTRA else ch for ch in value)
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
            text = _unfold(value) if isinstance(value, str) else str(value)
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
        msg[name] = " ".join(echo)


def _first_id(msg: Message, name: str) -> str | None:
    for value in raw_header_values(msg, name):
        ids = msg_ids(value)
        if ids:
            return ids[0]
    return None


def _references(msg: Message) -> list[str]:
    return msg_ids(" ".join(raw_header_values(msg, "References")))


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
) -> EmailMessage:
    """The customer's mail readdressed to an agent; body and parts untouched.

    From and Date stay the customer's, so the agent sees who wrote and when.  Reply-To is
    the outbound box's plus-address and the Message-ID carries the token, because agents'
    clients drop X- headers.  ``X-Auto-Response-Suppress`` asks Exchange/Outlook not to
    answer it with an out-of-office (MS-OXCMAIL §2.2.3.2.14) and ``Sender`` names the box
    that actually sent it (RFC 5322 §3.6.2).
    """
    to = _mailbox(agent, agent_name, what="agent")
    reply = _mailbox(reply_to, what="reply_to")
    sender = _mailbox(box_address, what="box_address")
    mid = _check_msg_id(message_id, "message_id")
    _check(tag, "tag")
    original_mid = _first_id(original, "Message-ID")
    references = [*_references(original), original_mid]
    subject = header_text(original, "Subject") or ""

    def keep(name: str, _value: str) -> bool:
        if name in _FORWARD_DROP or name.startswith(_FORWARD_DROP_PREFIXES):
            return False
        return not (name.startswith("list-") and name not in _FORWARD_KEEP_LIST)

    new = _copy(original, keep)
    new["To"] = to
    new["Reply-To"] = reply
    new["Sender"] = sender
    new["Subject"] = f"{subject} {tag}".strip()
    new["Message-ID"] = mid
    _set_ids(new, "References", references)
    new["X-Postroom-Interaction"] = str(guid)
    for echo in _echo_ids([original_mid]):
        new["X-Postroom-Original-Message-ID"] = echo
    new["X-Postroom-Box"] = sender.addr_spec
    new["X-Auto-Response-Suppress"] = "OOF, AutoReply"
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
    Any kept header that mentions ``outbound`` or a token is dropped as well.

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
    new["From"] = sender
    new["Reply-To"] = Address(addr_spec=sender.addr_spec)
    new["To"] = to
    new["Subject"] = clean_subject
    new["Message-ID"] = mid
    if parent:
        new["In-Reply-To"] = parent
    _set_ids(new, "References", [*refs, parent])
    if "Date" not in new and date is not None:
        new["Date"] = format_datetime(date)
    return new


_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _fill(template: str, values: dict[str, str]) -> str:
    """``{name}``-style substitution that leaves unknown placeholders (and stray braces) as is."""
    return _PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def _text_body(msg: EmailMessage, text: str) -> None:
    # 7bit when it is, else quoted-printable: no 8BITMIME dependency (RFC 6152) on the way out.
    ascii_ok = text.isascii() and all(len(line) <= 998 for line in text.splitlines())
    msg.set_content(text, charset="utf-8", cte="7bit" if ascii_ok else "quoted-printable")


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
) -> EmailMessage:
    """An RFC 3834 auto-reply to the customer, threaded to their mail.

    Placeholders in ``text`` and ``subject_template``: ``{name}`` (the customer's display
    name, else the writer's From name, else the local part of their address), ``{subject}`` (their subject, our tag
    stripped), ``{reference}`` (``reference`` or empty), ``{box}`` (the box's name, else its
    address).  Unknown placeholders are left as written; this never raises on a template.
    ``Auto-Submitted: auto-replied`` (RFC 3834 §5) and ``X-Auto-Response-Suppress: All``
    keep other responders quiet; no ``Precedence`` (RFC 3834 §3.1.8 says not to rely on it).
    """
    sender = _mailbox(box_address, box_name, what="box_address")
    to = _mailbox(customer, what="customer")
    mid = _check_msg_id(message_id, "message_id")
    if not isinstance(text, str) or "\x00" in text:
        raise UnsafeHeaderValue("text must be a string without NUL")
    # The name that goes with the customer's address (From, or Reply-To when we answer
    # there), else the writer's name from From, else the address's local part.
    senders = [p for h in raw_header_values(original, "From") for p in address_list(h)]
    replies = [p for h in raw_header_values(original, "Reply-To") for p in address_list(h)]
    name = next((d for d, a in senders + replies if d and a == to.addr_spec.lower()), "")
    name = name or next((d for d, _a in senders if d), "")
    values = {
        "name": name or to.username,
        "subject": strip_subject_tag(header_text(original, "Subject") or ""),
        "reference": reference or "",
        "box": box_name or sender.addr_spec,
    }
    subject = _clean_text(_fill(_check(subject_template, "subject_template"), values))
    original_mid = (_echo_ids([_first_id(original, "Message-ID")]) or [None])[0]

    new = EmailMessage(policy=POLICY)
    new["From"] = sender
    new["To"] = to
    new["Subject"] = subject
    new["Message-ID"] = mid
    if date is not None:
        new["Date"] = format_datetime(date)
    if original_mid:
        new["In-Reply-To"] = original_mid
        _set_ids(new, "References", [*_references(original), original_mid])
    new["Auto-Submitted"] = "auto-replied"
    new["X-Auto-Response-Suppress"] = "All"
    _text_body(new, _fill(text, values))
    return new


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
    new["From"] = from_
    new["To"] = to_
    new["Subject"] = subject
    new["Message-ID"] = mid
    if date is not None:
        new["Date"] = format_datetime(date)
    if parent:
        new["In-Reply-To"] = parent
        new["References"] = parent
    new["Auto-Submitted"] = "auto-generated"
    new["X-Auto-Response-Suppress"] = "All"
    _text_body(new, text)
    if attach is not None:
        new.add_attachment(_copy(attach))
    return new
