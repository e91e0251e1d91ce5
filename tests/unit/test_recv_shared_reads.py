"""Reception's MIME reads made once (decision 0066): ``autoreply._facts`` reads a single
part's type without walking it and asks ``get_param("report-type")`` only where the
Content-Type can name the parameter; ``mail.message.parse`` reads a single part's charset
once for the header's hint and the body. Each gives what the old code (kept here as the
reference) gave: on the fixtures, the samples, the corpus, the bench's ingest mails and
Hypothesis's Content-Type fields."""

from __future__ import annotations

from email.message import Message
from email.parser import BytesParser
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postroom.core import autoreply
from postroom.core.headers import POLICY, charset_hint, raw_header_fields, values_text
from postroom.mail import message as mailmessage
from postroom.mail.message import UnreadableMessage, parse
from tests.unit.conftest import CORPUS, corpus_available, corpus_files

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted((ROOT / "tests" / "fixtures" / "emails").rglob("*.eml")) + sorted(
    (ROOT / "postroom_sim" / "samples").glob("*.eml")
)


def _messages() -> list[bytes]:
    raws = [p.read_bytes() for p in FILES]
    if corpus_available():
        raws += [(CORPUS / rel).read_bytes() for rel in corpus_files()]
    from bench.common import make_messages

    raws += [raw for _marker, raw in make_messages(200, "support@example.test", "eq")]
    return raws


def reference_facts(msg: Message) -> autoreply._Facts:
    """autoreply._facts as it was before decision 0066: the report type always asked for,
    every message walked."""
    import re

    from postroom.core.headers import address_list

    try:
        content_type = msg.get_content_type()
        report_type = str(msg.get_param("report-type", "") or "").lower()
    except Exception:  # noqa: BLE001
        content_type, report_type = "text/plain", ""
    part_types: set[str] = set()
    try:
        for index, part in enumerate(msg.walk()):
            if index >= autoreply._MAX_PARTS:
                break
            part_types.add(part.get_content_type())
    except Exception:  # noqa: BLE001
        pass
    values = raw_header_fields(msg, autoreply._READ)
    froms = [pair for value in values["from"] for pair in address_list(value)]
    from_name, from_addr = froms[0] if froms else ("", "")
    auto = values_text(msg, values["auto-submitted"])
    return autoreply._Facts(
        content_type=content_type,
        report_type=report_type,
        part_types=frozenset(part_types),
        subject=values_text(msg, values["subject"]) or "",
        from_addr=from_addr,
        from_name=from_name.lower(),
        from_raw=" ".join(values["from"]).lower(),
        null_return_path=any(re.fullmatch(r"\s*<\s*>\s*", rp) for rp in values["return-path"]),
        auto_submitted=auto.split(";", 1)[0].strip().lower() if auto is not None else None,
        precedence=(values_text(msg, values["precedence"]) or "").lower(),
        has=frozenset(name.lower() for name in msg),
    )


def _same_parse(raw: bytes) -> None:
    try:
        mail = parse(raw)
    except UnreadableMessage:
        return
    assert mail.charset_hint == charset_hint(mail.msg)
    notes: list[str] = []
    # The body read the old way: the charset read again by decoded_part.
    assert mail.text == mailmessage._body_text(mail.msg, notes)
    assert all(note in mail.defects for note in notes)
    assert autoreply._facts(mail.msg) == reference_facts(mail.msg)


def test_facts_hint_and_body_as_before_on_fixtures_corpus_and_samples() -> None:
    raws = _messages()
    assert len(raws) > 100
    for raw in raws:
        _same_parse(raw)


def test_a_report_and_a_single_part_read_as_before() -> None:
    report = (
        b"From: MAILER-DAEMON@x.test\r\nMessage-ID: <r@x.test>\r\n"
        b'Content-Type: multipart/report; Report-Type="Delivery-Status"; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; x.test\r\n\r\nFinal-Recipient: rfc822; a@b.test\r\nAction: failed\r\n\r\n--b--\r\n"
    )
    facts = autoreply._facts(parse(report).msg)
    assert facts.report_type == "delivery-status"
    assert facts == reference_facts(parse(report).msg)
    assert autoreply.classify(parse(report).msg).kind == "bounce"
    single = b"From: a@b.test\r\nMessage-ID: <s@b.test>\r\nContent-Type: text/plain; charset=koi8-r\r\n\r\n\xf0\xd2\xc9\xd7\xc5\xd4\r\n"
    mail = parse(single)
    assert mail.charset_hint == "koi8-r"
    assert mail.text.strip() == "Привет"
    assert autoreply._facts(mail.msg).part_types == frozenset({"text/plain"})


_TOKENS = st.sampled_from(
    [
        "text/plain", "text/html", "multipart/report", "multipart/mixed", "application/ms-tnef", "message/rfc822",
        "TEXT/Plain", "text", "", " ", ";", "=", '"', "*", "*0", "*1", "*=", "=?utf-8?q?", "?=", "=?", "report-type",
        "Report-Type", "REPORT-TYPE", "report-type*", "report-type*0*", "charset", "charset*", "boundary", "b",
        "delivery-status", "feedback-report", "utf-8''%41", "us-ascii", "koi8-r", "x-unknown", "(comment)", "\\",
        "\u212a", "ß", "é", "\udcff", "%", "'", ",", "\t",
    ]
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_TOKENS, max_size=12), st.booleans(), st.binary(max_size=20))
def test_content_types_read_as_before(tokens: list[str], twice: bool, body: bytes) -> None:
    value = "".join(tokens)
    head = "From: a@b.test\r\nMessage-ID: <h@b.test>\r\nContent-Type: " + value + "\r\n"
    if twice:
        head += "Content-Type: text/plain; report-type=x\r\n"
    raw = head.encode("utf-8", "surrogateescape") + b"\r\n" + body
    msg = BytesParser(policy=POLICY).parsebytes(raw)
    try:
        expected: object = reference_facts(msg)
    except Exception as exc:  # noqa: BLE001 - then the new code raises alike
        expected = type(exc)
    try:
        got: object = autoreply._facts(msg)
    except Exception as exc:  # noqa: BLE001
        got = type(exc)
    assert got == expected
    _same_parse(raw)


def _as_parsed(msg: Message) -> dict[str, object]:
    """Everything a parsed message holds (the defects by type and text)."""
    state = dict(vars(msg))
    state["defects"] = [(type(d), str(d)) for d in msg.defects]
    state["type"] = type(msg)
    if isinstance(msg._payload, list):
        state["_payload"] = [_as_parsed(part) for part in msg._payload]
    return state


def _same_message(raw: bytes) -> bool:
    """``_single_part(raw)``, where it takes the mail, is the parser's message; True if
    it took it."""
    fast = mailmessage._single_part(raw)
    if fast is None:
        return False
    assert _as_parsed(fast) == _as_parsed(BytesParser(policy=POLICY).parsebytes(raw))
    assert fast.as_bytes() == BytesParser(policy=POLICY).parsebytes(raw).as_bytes()
    return True


def test_single_parts_parsed_as_the_parser_does_on_fixtures_corpus_and_samples() -> None:
    raws = _messages()
    taken = sum(_same_message(raw) for raw in raws)
    # The bench's mails and most of the corpus are single parts; a good share is taken.
    assert taken > len(raws) // 4
    from bench.common import make_messages

    samples = [raw for _m, raw in make_messages(50, "support@example.test", "sp")]
    assert sum(_same_message(raw) for raw in samples) >= 30  # the multiparts are the parser's


def test_parse_gives_what_the_parser_gave() -> None:
    """parse() with the single-part path equals parse() with the parser alone, field by
    field, on everything the path takes."""
    import dataclasses
    from unittest import mock

    for raw in _messages():
        try:
            fast = parse(raw)
        except UnreadableMessage as exc:
            fast_out: object = exc.reason
        else:
            fast_out = {**dataclasses.asdict(dataclasses.replace(fast, msg=None)), "msg": _as_parsed(fast.msg)}
        with mock.patch.object(mailmessage, "_single_part", lambda _data: None):
            try:
                slow = parse(raw)
            except UnreadableMessage as exc:
                slow_out: object = exc.reason
            else:
                slow_out = {**dataclasses.asdict(dataclasses.replace(slow, msg=None)), "msg": _as_parsed(slow.msg)}
        assert fast_out == slow_out


_LINES = st.sampled_from(
    [
        "From: a@b.test", "From a@b.test", "From : x", "Subject: hi", "Subject:x", "subject :x", ":x", "X y: z",
        " folded", "\tfolded", " ", "", "Content-Type: text/plain", "Content-Type: multipart/mixed; boundary=b",
        "Content-Type: message/rfc822", "Content-Type: message/delivery-status", "Content-Type: text/html; charset=x",
        "Content-Type:", "Content-Type: multipart", "CONTENT-TYPE: Multipart/Alternative", "--b", "--b--",
        "Message-ID: <m@b.test>", "body text", "\udcff\udce9", "=?utf-8?q?x?=", "\x0b", "\x0c", "\x1c", "\x85",
        "\u2028", "é", "To: =?utf-8?b?w6k=?= <c@d.test>",
    ]
)
_ENDS = st.sampled_from(["\r\n", "\n", "\r", ""])


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_LINES, _ENDS), min_size=1, max_size=14))
def test_single_parts_parsed_as_the_parser_does_on_hypothesis_mails(lines: list[tuple[str, str]]) -> None:
    raw = "".join(text + end for text, end in lines).encode("utf-8", "surrogateescape")
    _same_message(raw)
