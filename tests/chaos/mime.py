"""Hypothesis strategies for hostile mail, as raw bytes (no I/O).

Messages are written byte by byte, never through `email`, which would repair them: nested
multiparts with missing, mismatched, unterminated, empty or enormous boundaries;
message/rfc822 inside; charsets that are odd, misspelt or lying; transfer encodings that
are wrong for their payload; RFC 2047 encoded words, broken ones included; 8-bit bytes and
NULs in headers; header fields of up to 200 kB; From, Message-ID, Date or the whole header
block missing; LF, CRLF or bare-CR line endings.

`hostile_mail()` draws a `Fuzzed`: the bytes, and whether the message carries an
unmistakable sign of automatic mail (RFC 3834 Auto-Submitted, Precedence, a null
Return-Path, a DSN, list headers). The sign is always the first header field, so a
correct parser cannot lose it in whatever damage follows.
"""

from __future__ import annotations

import base64
import quopri
from dataclasses import dataclass

from hypothesis import strategies as st

CHARSETS = [
    "utf-8", "us-ascii", "iso-8859-1", "iso-8859-15", "windows-1252", "windows-1251", "koi8-r",
    "iso-2022-jp", "shift_jis", "gb2312", "gb18030", "big5", "euc-kr", "ks_c_5601-1987", "utf-7",
    "utf-16", "x-unknown", "uft-8", "unicode-1-1-utf-7", "x-mac-cyrillic", '"utf-8"', "utf-8'en'", "",
]
ENCODINGS = ["7bit", "8bit", "binary", "base64", "quoted-printable", "x-uuencode", "7-bit", "plain", "bogus", ""]
LEAF_TYPES = [
    "text/plain", "text/html", "application/octet-stream", "image/png", "application/ms-tnef",
    "message/delivery-status", "text/rfc822-headers", "text", "garbage;;;", "", "text/plain/extra",
]
MULTIPART = ["mixed", "alternative", "related", "report; report-type=delivery-status", "digest", "signed", "x-weird"]
# One unmistakable sign each (RFC 3834 §2, RFC 2919/2369, the null reverse-path). Not
# X-Auto-Response-Suppress: Outlook puts it on ordinary mail too (core/autoreply.py).
AUTOMATIC = [
    b"Auto-Submitted: auto-replied",
    b"Auto-Submitted: auto-generated",
    b"Precedence: bulk",
    b"Precedence: junk",
    b"Precedence: list",
    b"Return-Path: <>",
    b"List-Id: <support-team.lists.example.org>",
]

# Stands for a Message-ID unique to the example; the test fills it in (Hypothesis would
# draw the same few ids again and again, and every repeat would be folded into the first).
UNIQUE = b"<@UNIQUE@>"

# Bytes a header value may hold (no line breaks: folding is drawn separately).
_header_bytes = st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
_words = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FFF, exclude_categories=("Cs", "Cc")), max_size=40)


@st.composite
def encoded_word(draw: st.DrawFn) -> bytes:
    """RFC 2047 `=?charset?B|Q?text?=`, honest or broken."""
    charset = draw(st.sampled_from(CHARSETS)).strip('"') or "utf-8"
    text = draw(_words)
    try:
        payload = text.encode(charset)
    except (LookupError, UnicodeEncodeError):
        payload = text.encode("utf-8")  # a lying charset label
    flavour = draw(st.sampled_from(["B", "Q", "b", "X", "broken"]))
    if flavour in ("B", "b"):
        body = base64.b64encode(payload)
        if draw(st.booleans()):
            body = body[: max(0, len(body) - draw(st.integers(0, 3)))]  # bad padding
    elif flavour == "Q":
        body = quopri.encodestring(payload, header=True).replace(b"=\n", b"")
    elif flavour == "X":
        body = payload.replace(b"?", b"")
    else:
        return b"=?" + charset.encode() + b"?B?" + draw(_header_bytes)  # never closed
    return b"=?" + charset.encode() + b"?" + flavour.encode() + b"?" + body.replace(b"?=", b"") + b"?="


header_value = st.one_of(
    _words.map(lambda t: t.encode("utf-8")),
    st.lists(encoded_word(), min_size=1, max_size=4).map(b" ".join),
    _header_bytes,
    st.tuples(_words, _words).map(lambda ab: ab[0].encode() + b"\x00" + ab[1].encode()),  # NUL
    st.integers(1000, 200_000).map(lambda n: b"x" * n),  # a huge header
    st.lists(_words, min_size=2, max_size=6).map(lambda ws: b"\r\n\t".join(w.encode() or b"-" for w in ws)),  # folded
)

good_address = st.one_of(
    st.just(b"Carol Customer <carol@example.org>"),
    st.just(b"carol@example.org"),
    encoded_word().map(lambda w: w + b" <carol@example.org>"),
    _words.map(lambda t: b'"' + t.encode().replace(b'"', b"") + b'" <carol@example.org>'),
)
bad_address = st.one_of(
    st.just(b"undisclosed-recipients:;"),
    st.just(b"<>"),
    st.just(b'"Broken <carol@example.org'),
    st.just(b"carol@"),
    header_value,
)


def often(common: st.SearchStrategy, rare: st.SearchStrategy, odds: int = 3) -> st.SearchStrategy:
    """`common` `odds` times out of `odds + 1` (Hypothesis would otherwise favour
    whichever branch it finds simplest)."""
    return st.sampled_from([True] * odds + [False]).flatmap(lambda pick: common if pick else rare)


address = often(good_address, bad_address)

boundary = st.one_of(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789'()+_,-./:=? ", min_size=1, max_size=70),
    st.just(""),
    st.integers(71, 3000).map(lambda n: "b" * n),  # longer than RFC 2046 allows
    st.just("--"),
)


def _encode(payload: bytes, encoding: str) -> bytes:
    if encoding == "base64":
        return base64.encodebytes(payload)
    if encoding == "quoted-printable":
        return quopri.encodestring(payload)
    return payload


@st.composite
def leaf(draw: st.DrawFn) -> tuple[list[bytes], bytes]:
    ctype = draw(st.sampled_from(LEAF_TYPES))
    charset = draw(st.sampled_from(CHARSETS))
    encoding = draw(st.sampled_from(ENCODINGS))
    payload = draw(st.one_of(_words.map(lambda t: t.encode("utf-8")), st.binary(max_size=300)))
    if draw(st.booleans()):
        payload = _encode(payload, encoding)  # else the label lies about the payload
    headers = []
    if ctype or draw(st.booleans()):
        headers.append(f"Content-Type: {ctype}; charset={charset}".encode())
    if encoding:
        headers.append(b"Content-Transfer-Encoding: " + encoding.encode())
    if draw(st.booleans()):
        headers.append(b'Content-Disposition: attachment; filename="' + draw(header_value)[:200] + b'"')
    return headers, payload


def _multipart(children: st.SearchStrategy[tuple[list[bytes], bytes]]) -> st.SearchStrategy[tuple[list[bytes], bytes]]:
    @st.composite
    def build(draw: st.DrawFn) -> tuple[list[bytes], bytes]:
        subtype = draw(st.sampled_from(MULTIPART))
        b = draw(boundary)
        parts = draw(st.lists(children, max_size=4))
        flaw = draw(st.sampled_from(["none", "none", "no-param", "mismatch", "no-close", "no-open", "junk-between"]))
        param = b"" if flaw == "no-param" else b'; boundary="' + b.encode() + b'"'
        used = (b + "x").encode() if flaw == "mismatch" else b.encode()
        body = b"This is a multi-part message in MIME format.\n"
        for i, (hdrs, payload) in enumerate(parts):
            if not (flaw == "no-open" and i == 0):
                body += b"\n--" + used + b"\n"
            body += b"\n".join(hdrs) + b"\n\n" + payload
            if flaw == "junk-between":
                body += b"\n--" + used + b"-junk\n"
        if flaw != "no-close":
            body += b"\n--" + used + b"--\n"
        return [b"Content-Type: multipart/" + subtype.encode() + param], body

    return build()


mime_tree = st.recursive(
    leaf(),
    lambda children: st.one_of(
        _multipart(children),
        children.map(lambda c: ([b"Content-Type: message/rfc822"], b"\n".join(c[0]) + b"\n\n" + c[1])),
    ),
    max_leaves=12,
)


@dataclass(frozen=True)
class Fuzzed:
    raw: bytes
    automatic: bytes | None  # the sign of automatic mail it carries first, if any

    def __repr__(self) -> str:  # what Hypothesis prints for a failing example
        return f"Fuzzed(automatic={self.automatic!r}, raw={self.raw[:4000]!r}{'...' if len(self.raw) > 4000 else ''})"


@st.composite
def hostile_mail(draw: st.DrawFn) -> Fuzzed:
    if draw(st.sampled_from([False] * 19 + [True])):
        return Fuzzed(draw(st.binary(min_size=1, max_size=400)), None)  # not a message at all
    sign = draw(often(st.none(), st.sampled_from(AUTOMATIC), odds=2))
    fields: list[bytes] = [sign] if sign else []
    if draw(st.sampled_from([True] * 5 + [False])):  # From missing one time in six
        fields.append(b"From: " + draw(address))
    if draw(st.sampled_from([False] * 3 + [True])):
        fields.append(b"Reply-To: " + draw(address))
    fields.append(b"To: " + draw(often(st.just(b"support@example.test"), address)))
    if draw(st.sampled_from([True] * 5 + [False])):
        fields.append(b"Subject: " + draw(often(_words.map(str.encode), header_value, odds=1)))
    if draw(st.sampled_from([True] * 5 + [False])):
        reused = st.sampled_from([b"<same-1@example.org>", b"<same-2@example.org>"])  # B-3: folded
        fields.append(b"Message-ID: " + draw(often(st.just(UNIQUE), st.one_of(reused, header_value), odds=4)))
    if draw(st.booleans()):
        fields.append(b"Date: " + draw(st.one_of(st.just(b"Wed, 25 Nov 2026 09:00:00 +0000"), header_value)))
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from([b"In-Reply-To", b"References", b"Cc", b"Importance", b"X-Priority",
                                     b"Content-Language", b"X-Mailer", b"Thread-Index", b"X-Odd"]))
        fields.append(name + b": " + draw(header_value))
    if draw(st.booleans()):
        fields.append(b"MIME-Version: 1.0")
    content, body = draw(mime_tree)
    fields += content
    eol = draw(st.sampled_from([b"\r\n", b"\n", b"\r\n", b"\n", b"\r"]))
    head = eol.join(f.replace(b"\r\n", b"\n").replace(b"\n", eol) for f in fields)
    return Fuzzed(head + eol + eol + body.replace(b"\n", eol), sign)
