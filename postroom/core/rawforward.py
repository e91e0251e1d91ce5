"""The forward to an agent built from the original's bytes (issue 9, decision 0048).

``core.compose.forward_to_agent`` parses the whole original under policy.default, copies
it, rewrites its text parts and serialises the result again: per forward, most of the
worker's delivery time.  The bytes say all it needs, so here the top-level header block
is rewritten as text (the kept fields written as the composer writes them, ``Name: value``
with their folding, then the fields of ``compose.forward_plan``, the same plan the
composer uses), the text parts the agent reads (``mimetext.readable_parts``) are given
the header block and written out as UTF-8 exactly as ``mimetext.set_text`` writes them,
and every other byte of the body (attachments, the MIME skeleton, preamble and epilogue)
is copied as it came, its line ends made LF as the composer's generator makes them.

``forward_from_raw`` returns None for anything it cannot do with certainty that it means
what the composer's forward means; the caller then builds the forward with the composer.
That is: a header block that is not printable ASCII (8-bit or encoded-needing headers, the
``str.splitlines`` characters anywhere in the mail), lines the parser would repair
(an mbox ``From `` line, a stray or obsolete header line, bare CRs), a Content-Type or
Content-Transfer-Encoding it does not read strictly (comments, RFC 2231 parameters,
duplicates, quoted pairs), a multipart whose delimiters are not clean, a body with no
text part to put the block in (the composer then adds a part of its own), a signed or
encrypted body, base64 text that is not strictly base64, or an original with neither a
From nor a Message-ID (which ``mail.message.parse`` refuses).
"""

from __future__ import annotations

import binascii
import quopri
import re
from collections.abc import Callable
from dataclasses import dataclass
from email import quoprimime
from email.headerregistry import Address
from email.message import Message
from email.utils import quote

from postroom.core.compose import ForwardPlan, ForwardTo, forward_keeps, forward_plan
from postroom.core.headerblock import block_into
from postroom.core.headers import _SETTLED_LINE as _LINE
from postroom.core.headers import POLICY, _settled, decode_text, first_msg_id
from postroom.core.mimetext import _KEEP_ON_REWRITE, OPAQUE

__all__ = ["forward_from_raw", "why_not"]

# The first line of an RFC 5322 header field: a field name (no spaces before the colon).
_FIELD_RE = re.compile(rb"[!-9;-~]+:")
# What a header block may hold: printable ASCII, tabs, LF.
_CLEAN_HEAD_RE = re.compile(rb"[\t\n -~]*")
# Characters str.splitlines() breaks at that the composer replaces in every header it
# copies (CPython gh-117313); the ASCII ones are the only ones a parsed header can hold.
_SPLITLINES_ASCII_RE = re.compile(rb"[\x0b\x0c\x1c-\x1e]")
_TOKEN = r"[!#$%&'+.0-9A-Za-z^_`{|}~-]+"
_CONTENT_TYPE_RE = re.compile(
    rf"[ \t]*({_TOKEN})/({_TOKEN})[ \t]*((?:;[ \t]*[A-Za-z0-9._-]+=(?:\"[^\"\\\n]*\"|{_TOKEN})[ \t]*)*)"
)
_LOOSE_TYPE_RE = re.compile(rf"[ \t]*({_TOKEN})/({_TOKEN})[ \t]*(?:;.*)?", re.S)
_PARAM_RE = re.compile(rf";[ \t]*([A-Za-z0-9._-]+)=(?:\"([^\"\\\n]*)\"|({_TOKEN}))")
_DISPOSITION_RE = re.compile(r"[a-z0-9_-]*")
_FOLD_RE = re.compile(r"\n(?=[ \t])")
_IDENTITY_CTES = frozenset({"", "7bit", "8bit", "binary"})
_MAX_DEPTH = 8


class _CannotTell(Exception):
    """The text path cannot be sure; the composer builds this forward."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class _Field:
    name: str  # as written
    lname: str
    value: str  # unfolded, for reading
    line: bytes  # as the composer writes it: "Name: value" with its folding, LF-ended


@dataclass(frozen=True)
class _Leaf:
    """A text part the agent reads, at data[start:end] (its header and body)."""

    start: int
    end: int
    fields: list[_Field]
    body: bytes
    subtype: str
    params: list[tuple[str, str]]
    cte: str


def forward_from_raw(raw: bytes, to: ForwardTo) -> bytes | None:
    """The forward of the mail ``raw`` (what ``forward_message(parse(raw).msg, to)
    .as_bytes()`` gives, up to the order of header fields, the MIME skeleton's
    whitespace and the quoting of parameters), or None when only the composer can tell.

    Raises what ``compose.forward_plan`` raises for our own values (UnsafeHeaderValue)."""
    made = _forward(raw, to)
    return made if isinstance(made, bytes) else None


def why_not(raw: bytes, to: ForwardTo) -> str | None:
    """Why ``forward_from_raw`` leaves ``raw`` to the composer (None: it does not)."""
    made = _forward(raw, to)
    return made.reason if isinstance(made, _CannotTell) else None


def _forward(raw: bytes, to: ForwardTo) -> bytes | _CannotTell:
    try:
        data = _lf(raw)
        fields, body_at = _fields(data, 0, len(data), top=True)
    except _CannotTell as exc:
        return exc
    original = Message()
    for field in fields:
        original.set_raw(field.name, field.value)
    plan = forward_plan(original, to)
    try:
        if plan.facts.sender is None and first_msg_id(original, "Message-ID") is None:
            raise _CannotTell("parse() refuses a mail with neither From nor Message-ID")
        return _build(data, fields, body_at, plan)
    except _CannotTell as exc:
        return exc


def _lf(raw: bytes) -> bytes:
    if not _FIELD_RE.match(raw):
        raise _CannotTell("does not start with a header field (BOM, mbox From_, blank)")
    if _SPLITLINES_ASCII_RE.search(raw):
        raise _CannotTell("str.splitlines characters")
    crs = raw.count(b"\r")
    if not crs:
        return raw
    if crs != raw.count(b"\r\n"):
        raise _CannotTell("bare CR")
    return raw.replace(b"\r\n", b"\n")


def _fields(data: bytes, start: int, end: int, *, top: bool = False) -> tuple[list[_Field], int]:
    """The header fields of the entity at data[start:end] and where its body starts."""
    if data.startswith(b"\n", start) and not top:
        return [], start + 1  # no header at all (a part without Content-Type)
    stop = data.find(b"\n\n", start, end)
    if stop < 0:
        raise _CannotTell("no blank line after the header")
    head = data[start : stop + 1]
    if not _CLEAN_HEAD_RE.fullmatch(head):
        raise _CannotTell("8-bit or control characters in a header")
    out: list[_Field] = []
    lines: list[bytes] = []
    for line in head[:-1].split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if not lines or not line.strip():
                raise _CannotTell("continuation without a field, or a blank one")
            lines.append(line)
            continue
        if not _FIELD_RE.match(line):
            raise _CannotTell("a line that is no header field")
        if lines:
            out.append(_field(lines))
        lines = [line]
    if lines:
        out.append(_field(lines))
    return out, stop + 2


def _field(lines: list[bytes]) -> _Field:
    name, _colon, rest = lines[0].partition(b":")
    # As the parser stores it (leading blanks of the value dropped) and the composer's
    # generator writes it back ("Name: " and the value's own lines).
    value = b"\n".join([rest.lstrip(b" \t"), *lines[1:]]).decode("ascii")
    text = name.decode("ascii")
    return _Field(text, text.lower(), _FOLD_RE.sub("", value), f"{text}: {value}\n".encode("ascii"))


def _only(fields: list[_Field], lname: str) -> str | None:
    found = [f.value for f in fields if f.lname == lname]
    if len(found) > 1:
        raise _CannotTell(f"{lname} twice")
    return found[0] if found else None


def _content_type(fields: list[_Field]) -> tuple[str, str, list[tuple[str, str]]]:
    """Type, subtype and parameters; the parameters only of the types whose parameters
    matter here (multipart: the boundary; text: charset and what is kept)."""
    value = _only(fields, "content-type")
    if value is None:
        return "text", "plain", []
    m = _CONTENT_TYPE_RE.fullmatch(value)
    if m is None:
        loose = _LOOSE_TYPE_RE.fullmatch(value)
        if loose is None or loose.group(1).lower() in ("text", "multipart", "message"):
            raise _CannotTell("a Content-Type not read strictly")
        return loose.group(1).lower(), loose.group(2).lower(), []  # an attachment's: name*=...
    params = [(p.group(1).lower(), p.group(2) if p.group(2) is not None else p.group(3)) for p in _PARAM_RE.finditer(m.group(3))]
    names = [n for n, _v in params]
    if len(set(names)) != len(names) or any(not v for _n, v in params):
        raise _CannotTell("a parameter twice or empty")
    return m.group(1).lower(), m.group(2).lower(), params


def _cte(fields: list[_Field]) -> str:
    value = _only(fields, "content-transfer-encoding")
    if value is None:
        return ""
    cte = value.lower()
    if cte not in _IDENTITY_CTES and cte not in ("quoted-printable", "base64"):
        raise _CannotTell(f"Content-Transfer-Encoding {value!r}")
    return cte


def _readable(data: bytes, start: int, end: int, depth: int, fields: list[_Field] | None = None, body_at: int = 0) -> list[_Leaf] | None:
    """``mimetext.readable_parts`` over the bytes: the text parts an agent's client shows
    as the body, None when there are none; _CannotTell when unsure.

    The whole tree is walked, not only the parts that hold the body: every multipart must
    split cleanly and no part may be an enclosed message, so that the parts copied as
    they came mean what the composer's re-serialised copies of them mean (CPython's
    generator writes a damaged multipart or an enclosed message out differently from how
    it came; those forwards are the composer's)."""
    if depth > _MAX_DEPTH:
        raise _CannotTell("nested too deep")
    if fields is None:
        fields, body_at = _fields(data, start, end)
    maintype, subtype, params = _content_type(fields)
    ctype = f"{maintype}/{subtype}"
    if maintype == "message":
        raise _CannotTell("an enclosed message")
    if maintype == "multipart":
        if _cte(fields) not in _IDENTITY_CTES or subtype == "digest":
            raise _CannotTell("an encoded multipart, or a digest")
        boundary = dict(params).get("boundary", "").rstrip()
        if not boundary:
            raise _CannotTell("a multipart without a boundary")
        found = [_readable(data, s, e, depth + 1) for s, e in _children(data, body_at, end, boundary)]
        if ctype in OPAQUE:
            return None
        if subtype == "alternative":
            return [leaf for leaves in found for leaf in (leaves or ())] or None
        return found[0]
    if ctype in OPAQUE:
        return None
    disposition = (_only(fields, "content-disposition") or "").split(";", 1)[0].strip().lower()
    if not _DISPOSITION_RE.fullmatch(disposition):
        raise _CannotTell("a Content-Disposition not read strictly")
    if ctype in ("text/plain", "text/html") and disposition != "attachment":
        return [_Leaf(start, end, fields, data[body_at:end], subtype, params, _cte(fields))]
    return None


def _children(data: bytes, start: int, end: int, boundary: str) -> list[tuple[int, int]]:
    """The parts of a multipart body at data[start:end], as the parser splits it: each
    between the line end after a delimiter line and the line end before the next."""
    delimiter = re.compile(rb"^--" + re.escape(boundary.encode("ascii")) + rb"(--)?[ \t]*$", re.M)
    spans: list[tuple[int, int]] = []
    at: int | None = None
    for m in delimiter.finditer(data, start, end):
        if at is not None:
            if m.start() - 1 < at:
                raise _CannotTell("two delimiter lines in a row")
            spans.append((at, m.start() - 1))
        if m.group(1):
            break
        if m.end() >= end:
            raise _CannotTell("a delimiter at the end")
        at = m.end() + 1
    else:
        raise _CannotTell("no close delimiter")
    if not spans:
        raise _CannotTell("a multipart without parts")
    return spans


def _payload(leaf: _Leaf) -> bytes:
    if leaf.cte == "quoted-printable":
        return quopri.decodestring(leaf.body)
    if leaf.cte == "base64":
        try:
            return binascii.a2b_base64(b"".join(leaf.body.splitlines()), strict_mode=True)
        except binascii.Error as exc:
            raise _CannotTell("base64 the composer would read tolerantly") from exc
    return leaf.body


def _header(name: str, value: object) -> bytes:
    """A field we set: as ``put_header``, ``settle_headers`` and the generator write it
    when that is one line of text; else folded here at the value's own spaces, its
    non-ASCII words as RFC 2047 encoded words (UTF-8, base64), when the value is
    single-spaced printable text without ``=?`` (the same value once unfolded and
    decoded, RFC 5322 §2.2.3, RFC 2047 §6.2, without the header registry's parse and
    refold, a third of a forward's build: From "writer via box" with the token's long
    address and a writer's accented name, a German subject); else by the header
    registry, as the composer does."""
    text = str(value)
    if _settled(name, text):
        return f"{name}: {text}\n".encode("ascii")
    words = _words(value, text)
    if words is None:
        return POLICY.fold_binary(*POLICY.header_store_parse(name, value))
    lines, line = [], f"{name}:"
    for word in words:
        if len(line) + 1 + len(word) > _LINE and line != f"{name}:":
            lines.append(line)
            line = ""
        line += " " + word
    lines.append(line)
    return ("\n".join(lines) + "\n").encode("ascii")


_PRINTABLE_RE = re.compile(r"[^\x00-\x20\x7f-\x9f\u2028\u2029](?: ?[^\x00-\x20\x7f-\x9f\u2028\u2029])*")
_ENCODED_BYTES = 45  # 60 base64 characters: encoded words of at most 72 (RFC 2047 §2: 75)


def _words(value: object, text: str) -> list[str] | None:
    """The words of a field's value as written, encoded where not ASCII; None when the
    header registry must write it (a literal ``=?``, odd spacing, control characters,
    a non-ASCII address, too long)."""
    if "=?" in text or len(text) > 900 or not _PRINTABLE_RE.fullmatch(text):
        return None
    if text.isascii():
        return text.split(" ")
    if isinstance(value, Address):
        if not value.addr_spec.isascii() or not value.display_name:
            return None
        # A display name is a phrase: encoded whole, so no comma or quote of it is left
        # bare between the words (RFC 2047 §5(3)).
        return [*_encode(value.display_name), f"<{value.addr_spec}>"]
    if not isinstance(value, str):
        return None
    out: list[str] = []
    run: list[str] = []
    for word in [*text.split(" "), None]:
        if word is not None and not word.isascii():
            run.append(word)
            continue
        if run:
            # Adjacent encoded words decode with no space between them (§6.2): a run of
            # non-ASCII words is encoded with its spaces inside.
            out += _encode(" ".join(run))
            run = []
        if word is not None:
            out.append(word)
    return out


def _encode(text: str) -> list[str]:
    words, chunk = [], b""
    for char in text:
        data = char.encode("utf-8")
        if len(chunk) + len(data) > _ENCODED_BYTES:
            words.append(chunk)
            chunk = b""
        chunk += data
    words.append(chunk)
    return [f"=?utf-8?b?{binascii.b2a_base64(w, newline=False).decode('ascii')}?=" for w in words]


def _rewritten(leaf: _Leaf, plan: ForwardPlan, keep_field: Callable[[str], bool] | None = None) -> tuple[bytes, bytes]:
    """The leaf's new header fields and body (``mimetext.set_text`` of the text with the
    block): the part's other fields kept, its content fields but the descriptive ones
    replaced by a UTF-8 Content-Type (same subtype and parameters) and the encoding."""
    charset = dict(leaf.params).get("charset")
    text = block_into(leaf.subtype, decode_text(_payload(leaf), charset.lower() if charset else None)[0], plan.facts)
    ascii_ok = text.isascii() and all(len(line) <= 998 for line in text.splitlines())
    body = b"\n".join(text.encode("utf-8").splitlines()) + b"\n"
    if not ascii_ok:
        body = quoprimime.body_encode(body.decode("latin-1"), POLICY.max_line_length).encode("ascii")
    content_type = f'text/{leaf.subtype}; charset="utf-8"' + "".join(
        f'; {n}="{quote(v)}"' for n, v in leaf.params if n != "charset"
    )
    kept = [f.line for f in leaf.fields if not f.lname.startswith("content-") and (keep_field is None or keep_field(f.lname))]
    described = [f.line for f in leaf.fields if f.lname in _KEEP_ON_REWRITE]
    head = b"".join(
        [
            *kept,
            _header("Content-Type", content_type),
            _header("Content-Transfer-Encoding", "7bit" if ascii_ok else "quoted-printable"),
            *described,
        ]
    )
    return head, body


def _build(data: bytes, fields: list[_Field], body_at: int, plan: ForwardPlan) -> bytes:
    leaves = _readable(data, 0, len(data), 0, fields, body_at)
    if not leaves:
        raise _CannotTell("no text part for the block (the composer adds one)")
    ours = b"".join(_header(name, value) for name, value in plan.headers)
    if leaves[0].start == 0:  # the mail is its own text part
        head, body = _rewritten(leaves[0], plan, forward_keeps)
        return head + ours + b"\n" + body
    pieces = [f.line for f in fields if forward_keeps(f.lname)]
    pieces += [ours, b"\n"]
    at = body_at
    for leaf in leaves:
        head, body = _rewritten(leaf, plan)
        pieces += [data[at : leaf.start], head, b"\n", body]
        # The part's body ended before the line end that belongs to the next delimiter;
        # the new body ends in one of its own, as the generator writes it.
        at = leaf.end
    pieces.append(data[at:])
    return b"".join(pieces)
