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
from postroom.core.compose import forward_to_agent
from postroom.core.headerblock import BLOCK_TITLE
from postroom.core.headers import POLICY, decode_words, unfold
from postroom.core.rawforward import forward_from_raw
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
SAMPLES = sorted((Path(__file__).resolve().parents[2] / "postroom_sim" / "samples").glob("*.eml"))
FIXTURES = sorted((Path(__file__).resolve().parents[1] / "fixtures" / "emails").rglob("*.eml"))


def composed(raw: bytes) -> bytes | None:
    try:
        original = parse(raw).msg
    except UnreadableMessage:
        return None
    return forward_to_agent(original, **KW).as_bytes()  # type: ignore[arg-type]


def from_raw(raw: bytes) -> bytes | None:
    return forward_from_raw(raw, **KW)  # type: ignore[arg-type]


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
        fields = sorted((k.lower(), _text(v)) for k, v in part.raw_items() if k.lower() != "content-type")
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
    assert str(stock["Subject"]) == str(email.message_from_bytes(theirs, policy=policy.default)["Subject"])
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
    st.text(alphabet=st.sampled_from("abc XYZ019.,=-_<>&\"'\tüé€日 "), max_size=120), max_size=8
)


def _encode_body(text: str, charset: str | None, cte: str) -> bytes:
    data = text.encode(charset or "ascii")
    if cte == "quoted-printable":
        return quopri.encodestring(data)
    if cte == "base64":
        return base64.encodebytes(data)
    return data


def _leaf(text: str, subtype: str, charset: str | None, cte: str, extra: str = "") -> str | None:
    try:
        body = _encode_body(text, charset, cte)
    except UnicodeEncodeError:
        return None
    if cte == "7bit" and (not body.isascii() or any(len(x) > 998 for x in body.splitlines())):
        return None
    ctype = f"text/{subtype}" + (f"; charset={charset}" if charset else "") + extra
    return f"Content-Type: {ctype}\nContent-Transfer-Encoding: {cte}\n\n" + body.decode("latin-1")


@st.composite
def mails(draw: st.DrawFn) -> bytes:
    name = draw(_WORDS)
    subject = draw(_WORDS)
    lines = draw(_LINES)
    text = "\n".join(lines)
    charset = draw(st.sampled_from([None, "utf-8", "UTF-8", "iso-8859-1", "us-ascii"]))
    cte = draw(st.sampled_from(["7bit", "8bit", "quoted-printable", "base64"]))
    shape = draw(st.sampled_from(["plain", "html", "alternative", "mixed", "mixed-alternative"]))
    flowed = draw(st.sampled_from(["", "; format=flowed", '; format="flowed"; delsp=yes']))
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
                    "Content-Language: de-DE",
                    "MIME-Version: 1.0",
                    "X-Postroom-Box: attacker@evil.test",
                    "Thread-Topic:\n folded",
                ]
            ),
            unique=True,
        )
    )
    html_text = f"<html><head><meta charset=\"{charset or 'us-ascii'}\"></head><body>{html.escape(text)}</body></html>"
    if shape in ("plain", "html"):
        leaf = _leaf(text if shape == "plain" else html_text, shape, charset, cte, flowed if shape == "plain" else "")
        if leaf is None:
            leaf = _leaf(text, "plain", "utf-8", "quoted-printable")
        assert leaf is not None
        raw = "\n".join(head) + "\n" + leaf
    else:
        plain = _leaf(text, "plain", charset, cte, flowed) or _leaf(text, "plain", "utf-8", "base64")
        rich = _leaf(html_text, "html", charset, cte) or _leaf(html_text, "html", "utf-8", "quoted-printable")
        assert plain is not None and rich is not None
        alternative = f'Content-Type: multipart/alternative; boundary="alt-1"\n\npreamble\n--alt-1\n{plain}\n--alt-1  \n{rich}\n--alt-1--\n'
        attachment = 'Content-Type: application/pdf; name="a.pdf"\nContent-Disposition: attachment; filename="a.pdf"\nContent-Transfer-Encoding: base64\n\nJVBERi0xLjQKJcOkw7zDtsOfCg==\n'
        if shape == "alternative":
            body = alternative
        else:
            first = plain if shape == "mixed" else alternative
            body = f'Content-Type: multipart/mixed;\n\tboundary="=_mix"\n\n--=_mix\n{first}\n--=_mix\n{attachment}--=_mix--\nepilogue\n'
        raw = "\n".join(head) + "\nMIME-Version: 1.0\n" + body
    crlf = draw(st.booleans())
    data = raw.encode("latin-1") if not raw.isascii() else raw.encode("ascii")
    return data.replace(b"\n", b"\r\n") if crlf else data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mails())
def test_the_text_path_and_the_composer_agree_for_many_mails(raw: bytes) -> None:
    assert agree(raw) is not None


def test_view_tells_a_changed_body_apart() -> None:
    # The comparison itself is not blind: one byte of the body changed is seen.
    mine = from_raw(PLAIN)
    assert mine is not None
    assert view(mine) != view(mine.replace(b"Hello", b"Hallo"))
    assert isinstance(email.message_from_bytes(mine, policy=POLICY), Message)
