"""postroom.core.rawforward: the forward built from the original's bytes says what the
composer's forward says (decision 0048), or steps aside for the composer."""

from __future__ import annotations

import base64
import email
import html
import quopri
import uuid
from email import policy
from email.header import Header
from email.message import EmailMessage, Message
from email.utils import formataddr
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postroom.core import correlation as corr
from postroom.core.compose import ForwardTo, forward_message, forward_to_agent
from postroom.core.headerblock import BLOCK_TITLE
from postroom.core.headers import POLICY, decode_words, header_text, unfold
from postroom.core.rawforward import _header, forward_from_raw, why_not
from postroom.mail.message import UnreadableMessage, parse
from tests.unit.conftest import CORPUS, corpus_files

SECRET = b"rawforward-test-secret"
GUID = uuid.UUID("0b8f3c1e-7d2a-4f5b-9c6e-1a2b3c4d5e6f")
AGENT = "alice@agents.example.test"
TOKEN = corr.mint_token(SECRET, GUID, AGENT)
KW: dict[str, object] = {
    "agent": AGENT,
    "agent_name": "Alice Agent",
    "reply_to": corr.reply_address("outbound@example.test", TOKEN),
    "message_id": corr.forward_message_id(TOKEN, 1, "pr.example.test"),
    "tag": corr.subject_tag(TOKEN),
    "guid": GUID,
    "box_address": "support@example.test",
    "box_name": "Example Support",
}
TO = ForwardTo(**KW)  # type: ignore[arg-type]
SAMPLES = sorted((Path(__file__).resolve().parents[2] / "postroom_sim" / "samples").glob("*.eml"))
FIXTURES = sorted((Path(__file__).resolve().parents[1] / "fixtures" / "emails").rglob("*.eml"))


def composed(raw: bytes) -> bytes | None:
    try:
        original = parse(raw).msg
    except UnreadableMessage:
        return None
    return forward_to_agent(original, **KW).as_bytes()  # type: ignore[arg-type]


def from_raw(raw: bytes) -> bytes | None:
    return forward_from_raw(raw, TO)


def _text(value: object) -> str:
    return " ".join(decode_words(unfold(str(value))).split())


def view(raw: bytes) -> list[tuple[object, ...]]:
    """What a reader of the forward gets, part by part: the content type and its
    parameters, every header field's decoded text (as a multiset), the decoded body.
    (Not the parser's defects: the composer's generator writes a damaged enclosed
    message out repaired, the text path as it came; both read the same.)"""
    msg = email.message_from_bytes(raw, policy=POLICY)
    out: list[tuple[object, ...]] = []
    for part in msg.walk():
        # (The top-level Subject is compared in ``agree``.)
        fields = sorted(
            (k.lower(), _text(v)) for k, v in part.raw_items() if k.lower() not in ("content-type", "subject") or part is not msg
        )
        try:
            params = sorted((k.lower(), str(v)) for k, v in (part.get_params() or [])[1:])
        except (UnicodeError, LookupError):  # RFC 2231 in a charset CPython cannot read
            params = [("", _text(part.get("Content-Type")))]
        payload = None if part.is_multipart() else part.get_payload(decode=True)
        out.append((part.get_content_type(), params, fields, payload))
    return out


def agree(raw: bytes) -> bytes | None:
    """The text path's forward of ``raw`` after checking it against the composer's."""
    mine = from_raw(raw)
    if mine is None:
        return None
    theirs = composed(raw)
    assert theirs is not None, "the text path built what parse() refuses"
    assert view(mine) == view(theirs)
    stock = email.message_from_bytes(mine, policy=policy.default)
    assert isinstance(stock, EmailMessage)
    # The same Subject, decoded; the composer's header registry folds a long one right
    # after "Subject:", which a stock parser reads with a leading space (the text path
    # folds at the value's own spaces).
    # The Subject is the customer's, decoded, and the tag. (The composer's header registry
    # loses the space between two encoded words now and then, CPython's folding: its
    # Subject is compared without spaces.)
    subject = f"{header_text(parse(raw).msg, 'Subject') or ''} {KW['tag']}".strip()
    assert header_text(email.message_from_bytes(mine, policy=POLICY), "Subject") == subject
    assert str(stock["Subject"]) == subject
    theirs_subject = str(email.message_from_bytes(theirs, policy=policy.default)["Subject"])
    assert "".join(theirs_subject.split()) == "".join(subject.split())
    assert corr.token_from_subject(str(stock["Subject"])) == TOKEN
    assert str(stock["Message-ID"]) == KW["message_id"]
    assert stock.get_all("Reply-To") == [KW["reply_to"]]
    return mine


# --------------------------------------------------------------------------------------
# The mails Postroom sees most: the simulator's samples (what the benchmark sends)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_sample_takes_the_text_path_and_agrees(path: Path) -> None:
    raw = path.read_bytes()
    assert agree(raw) is not None
    assert agree(raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")) is not None


def test_attachments_and_a_plain_7bit_body_keep_their_bytes() -> None:
    raw = next(p for p in SAMPLES if p.name.startswith("07-")).read_bytes().replace(b"\r\n", b"\n")
    out = agree(raw)
    assert out is not None
    attachment = raw[raw.index(b"Content-Type: application/octet-stream") :]
    assert attachment in out  # the attachment part and the close delimiter, as they came
    ten = next(p for p in SAMPLES if p.name.startswith("10-")).read_bytes().replace(b"\r\n", b"\n")
    body = ten[ten.index(b"\n\n") + 2 :]
    mine = from_raw(ten)
    assert mine is not None and mine.endswith(body)
    assert BLOCK_TITLE.encode() in mine


def test_fixture_mails_agree_where_the_text_path_takes_them() -> None:
    taken = sum(agree(p.read_bytes()) is not None for p in FIXTURES)
    assert not FIXTURES or taken


def test_corpus_mails_agree_where_the_text_path_takes_them() -> None:
    rels = corpus_files()
    if not rels:
        pytest.skip("no corpus")
    failures, taken = [], 0
    for rel in rels:
        raw = (CORPUS / rel).read_bytes()
        try:
            taken += agree(raw) is not None
        except Exception as exc:  # noqa: BLE001 - collect, then report them all
            failures.append(f"{rel}: {exc!r}"[:300])
    assert not failures, "\n".join(failures)
    assert taken > len(rels) // 4  # most real mail is plain enough


# --------------------------------------------------------------------------------------
# What the text path leaves to the composer
# --------------------------------------------------------------------------------------

PLAIN = (
    b"From: Carol <carol@customer.test>\r\nTo: support@example.test\r\nSubject: Hi\r\n"
    b"Message-ID: <c1@customer.test>\r\n\r\nHello\r\n"
)


@pytest.mark.parametrize(
    "raw",
    [
        PLAIN.replace(b"Subject: Hi", b"Subject: H\xc3\xa9"),  # 8-bit header
        b"From carol@customer.test Mon Mar  2 10:00:00 2026\r\n" + PLAIN,  # mbox From_ line
        PLAIN.replace(b"\r\n", b"\r"),  # bare CRs
        PLAIN.replace(b"Subject: Hi", b"Subject: Hi\x0cReply-To: evil@evil.test"),  # gh-117313
        PLAIN.replace(b"Subject: Hi", b"Subject : Hi"),  # obsolete syntax the parser repairs
        PLAIN.replace(b"Subject: Hi\r\n", b"Subject: Hi\r\nnot a field\r\n"),  # a stray line
        PLAIN.replace(b"\r\n\r\nHello", b"\r\nContent-Type: text/plain; name*=utf-8''x\r\n\r\nHello"),
        PLAIN.replace(b"\r\n\r\nHello", b"\r\nContent-Type: image/png\r\n\r\nHello"),  # no text
        PLAIN.replace(b"\r\n\r\nHello", b"\r\nContent-Type: multipart/signed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n"),
        PLAIN.replace(b"\r\n\r\nHello", b"\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n"),  # unclosed
        PLAIN.replace(b"\r\n\r\nHello", b"\r\nContent-Transfer-Encoding: base64\r\n\r\nnot base64!\r\n"),
        b"To: support@example.test\r\nSubject: nobody\r\n\r\nHello\r\n",  # parse() refuses it
    ],
)
def test_the_composer_builds_what_the_text_path_cannot_be_sure_of(raw: bytes) -> None:
    assert from_raw(raw) is None


def test_a_plain_mail_agrees() -> None:
    assert agree(PLAIN) is not None


# --------------------------------------------------------------------------------------
# Many mails: the two builders agree on what every reader sees
# --------------------------------------------------------------------------------------

_WORDS = st.text(alphabet=st.sampled_from("abcXYZ 019.,;:!?'\"()<>@=-_/\\\tüéßø€日本"), max_size=40)
_LINES = st.lists(
    st.one_of(
        st.text(alphabet=st.sampled_from("abc XYZ019.,=-_<>&\"'\tüé€日 "), max_size=120),
        st.sampled_from(["", " ", "From here", ".", "--", "-- ", "=", "=3D", "x" * 1200, "<body>", "</body>"]),
    ),
    max_size=8,
)
_ATTACHMENT = (
    'Content-Type: application/pdf; name="a.pdf"\nContent-Disposition: attachment; filename="a.pdf"\n'
    "Content-Transfer-Encoding: base64\n\nJVBERi0xLjQKJcOkw7zDtsOfCg==\n"
)
_IMAGE = "Content-Type: image/png\nContent-ID: <img1@customer.test>\nContent-Transfer-Encoding: base64\n\niVBORw0KGgo=\n"


def _encode_body(text: str, charset: str | None, cte: str) -> bytes:
    data = text.encode(charset or "ascii")
    if cte == "quoted-printable":
        return quopri.encodestring(data)
    if cte == "base64":
        return base64.encodebytes(data)
    return data


@st.composite
def leaves(draw: st.DrawFn, subtype: str, text: str) -> str:
    charset = draw(st.sampled_from([None, "utf-8", "UTF-8", '"utf-8"', "iso-8859-1", "us-ascii", "windows-1252"]))
    cte = draw(st.sampled_from(["7bit", "8bit", "quoted-printable", "base64", None]))
    bare = charset.strip('"') if charset else None
    try:
        body = _encode_body(text, bare, cte or "7bit")
    except UnicodeEncodeError:
        charset, bare, cte = "utf-8", "utf-8", "quoted-printable"
        body = _encode_body(text, bare, cte)
    if cte in ("7bit", None) and (not body.isascii() or any(len(x) > 998 for x in body.splitlines())):
        cte = "8bit"
    ctype = f"text/{subtype}" + (f";{draw(st.sampled_from([' ', '', chr(10) + chr(9)]))}charset={charset}" if charset else "")
    if subtype == "plain":
        ctype += draw(st.sampled_from(["", "; format=flowed", '; format="flowed"; delsp=yes']))
    fields = []
    if ctype != "text/plain" or draw(st.booleans()):
        fields.append(f"{draw(st.sampled_from(['Content-Type', 'content-type', 'CONTENT-TYPE']))}: {ctype}")
    if cte is not None:
        fields.append(f"{draw(st.sampled_from(['Content-Transfer-Encoding', 'content-transfer-encoding']))}: {cte}")
    fields += draw(
        st.lists(
            st.sampled_from(
                [
                    "Content-ID: <part1@customer.test>",
                    "Content-Description: the words",
                    "Content-Language: de",
                    "Content-Class: urn:content-classes:message",
                    "MIME-Version: 1.0",
                    "X-Part-Note: kept",
                ]
            ),
            unique=True,
            max_size=3,
        )
    )
    disposition = draw(st.sampled_from([None, "inline", 'inline; filename="note.txt"']))
    if disposition:
        fields.append(f"Content-Disposition: {disposition}")
    fields = draw(st.permutations(fields))
    return "".join(f + "\n" for f in fields) + "\n" + body.decode("latin-1")


def _html(text: str, with_body: bool) -> str:
    words = html.escape(text).replace("\n", "<br>\n")
    if not with_body:
        return words
    return f'<html><head><meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1"></head><body bgcolor="#fff">{words}</body></html>'


@st.composite
def multipart(draw: st.DrawFn, subtype: str, parts: list[str]) -> str:
    boundary = draw(st.sampled_from(["b1", "=_mix 1", "----=_NextPart_000_0001_01D1", "a'b+c"])) + subtype[:3]
    quoted = boundary if boundary.isalnum() and draw(st.booleans()) else f'"{boundary}"'
    head = f"Content-Type: multipart/{subtype};{draw(st.sampled_from([' ', chr(10) + chr(9)]))}boundary={quoted}\n"
    preamble = draw(st.sampled_from(["", "This is a multi-part message in MIME format.\n", "\n"]))
    pad = draw(st.sampled_from(["", "  ", "\t"]))
    body = "".join(f"--{boundary}{pad}\n{part}\n" for part in parts)
    epilogue = draw(st.sampled_from(["", "\n", "epilogue\n"]))
    return f"{head}\n{preamble}{body}--{boundary}--\n{epilogue}"


@st.composite
def mails(draw: st.DrawFn) -> bytes:
    name = draw(_WORDS)
    subject = draw(_WORDS)
    text = "\n".join(draw(_LINES))
    head = [
        f"From: {formataddr((name, 'carol@customer.test'), charset='utf-8')}",
        "To: Support <support@example.test>, other@customer.test",
        "Subject: " + (subject if subject.isascii() and "\t" not in subject else Header(subject, "utf-8").encode()),
        "Message-ID: <c-1@customer.test>",
        "Date: Mon, 2 Mar 2026 09:59:58 +0100",
    ]
    head += draw(
        st.lists(
            st.sampled_from(
                [
                    "Received: from mx.customer.test\n by mx.example.test; Mon, 2 Mar 2026 10:00:00 +0100",
                    "Cc: boss@customer.test",
                    "Reply-To: carol@elsewhere.test",
                    "References: <a@customer.test>\n <b@customer.test>",
                    "In-Reply-To: <b@customer.test>",
                    "X-Mailer: Test 1.0",
                    "List-Unsubscribe: <mailto:x@customer.test>",
                    "List-Id: <list.customer.test>",
                    "MIME-Version: 1.0",
                    "X-Postroom-Box: attacker@evil.test",
                    "Thread-Topic:\n folded",
                    "Content-Length: 12",
                    "subject2:no space",
                ]
            ),
            unique=True,
        )
    )
    shape = draw(st.sampled_from(["plain", "html", "alternative", "mixed", "mixed-alternative", "related", "noheader"]))
    plain = draw(leaves("plain", text))
    rich = draw(leaves("html", _html(text, draw(st.booleans()))))
    if shape == "plain":
        body = plain
    elif shape == "html":
        body = rich
    elif shape == "noheader":
        body = draw(multipart("alternative", ["\n" + text.encode("ascii", "replace").decode(), rich]))
    elif shape == "alternative":
        body = draw(multipart("alternative", [plain, rich]))
    elif shape == "related":
        body = draw(multipart("alternative", [plain, draw(multipart("related", [rich, _IMAGE]))]))
    else:
        first = plain if shape == "mixed" else draw(multipart("alternative", [plain, rich]))
        extra = draw(st.sampled_from([[_ATTACHMENT], [_ATTACHMENT, 'Content-Type: text/plain\nContent-Disposition: attachment; filename="notes.txt"\n\nnotes\n'], []]))
        body = draw(multipart("mixed", [first, *extra]))
    raw = "\n".join(head) + "\n" + body
    data = raw.encode("latin-1") if not raw.isascii() else raw.encode("ascii")
    return data.replace(b"\n", b"\r\n") if draw(st.booleans()) else data


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mails())
def test_the_text_path_and_the_composer_agree_for_many_mails(raw: bytes) -> None:
    assert agree(raw) is not None, why_not(raw, TO)


def test_view_tells_a_changed_body_apart() -> None:
    # The comparison itself is not blind: one byte of the body changed is seen.
    mine = from_raw(PLAIN)
    assert mine is not None
    assert view(mine) != view(mine.replace(b"Hello", b"Hallo"))
    assert isinstance(email.message_from_bytes(mine, policy=POLICY), Message)


@given(st.lists(st.text(alphabet=st.sampled_from("abcXYZ019<>@.+-[]:\"'"), min_size=1, max_size=40), min_size=1, max_size=12))
def test_a_long_ascii_field_is_folded_at_its_own_spaces(words: list[str]) -> None:
    text = " ".join(words)
    out = _header("Subject", text).decode("ascii")
    assert out.startswith("Subject: ") and out.endswith("\n")
    assert unfold(out[len("Subject: ") : -1]) == text
    lines = out[:-1].split("\n")
    assert all(len(line) <= 78 or " " not in line.strip() for line in lines)
    parsed = email.message_from_bytes(out.encode() + b"\n", policy=policy.default)
    assert str(parsed["Subject"]) == text.strip() or "=?" in text


def test_one_value_or_the_keywords_compose_the_same_forward() -> None:
    """``forward_to_agent``'s keywords and ``forward_message``'s ``ForwardTo`` are the same
    forward (decision 0053's mend: one frozen value passed through, no behaviour change)."""
    for path in SAMPLES[:10]:
        original = parse(path.read_bytes()).msg
        assert forward_message(original, TO).as_bytes() == composed(path.read_bytes())
