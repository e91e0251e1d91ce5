"""postroom.mail.message.parse: any bytes in, a ParsedMail or UnreadableMessage out.

Measured on the corpus when written: 1,187 of 1,260 files parse; 73 are refused, all for a
named reason (the 24 header-less reply bodies, the binary Outlook .msg, and hand-made MIME
samples with neither From nor Message-ID).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest

from postroom.mail.message import ParsedMail, UnreadableMessage, addresses, parse
from tests.unit.conftest import parsed, read

# Seven files on which email.message_from_bytes(policy=default) + header access +
# get_body().get_content() raise (corpus README, "Stdlib pitfalls").
STDLIB_PITFALLS = [
    "bounces/mimekit-delivery-status.txt",
    "malformed/mimekit-delivery-status-no-blank-line.txt",
    "replies/notmuch-lkml-1382298770.002930.eml",
    "inbound/mikelmail-plain_emails-raw_email10.eml",
    "inbound/phpmmp-issue230.eml",
    "malformed/zbateson-invalid-charset.eml",
    "inbound/otobo-parser-PostMaster-Test12.box",
]

REFUSAL_REASONS = (
    "does not start with an RFC 5322 header field",
    "neither a parseable From nor a Message-ID",
    "binary OLE2/CFB file",
)


def check_fields(p: ParsedMail) -> None:
    assert p.message_id is None or (p.message_id.startswith("<") and p.message_id.endswith(">"))
    assert p.from_addr is None or (p.from_addr == p.from_addr.lower() and "@" in p.from_addr)
    assert p.from_name is None or isinstance(p.from_name, str)
    for field in (p.reply_to, p.to, p.cc, p.delivered_to, p.references):
        assert isinstance(field, list) and all(isinstance(x, str) for x in field)
    for addr in (*p.reply_to, *p.to, *p.cc, *p.delivered_to):
        assert addr == addr.lower() and "@" in addr
    assert all(r.startswith("<") and r.endswith(">") for r in p.references)
    assert isinstance(p.subject, str) and not any(c in p.subject for c in "\x00\r\n")
    assert p.in_reply_to is None or p.in_reply_to.startswith("<")
    assert p.date is None or (isinstance(p.date, datetime) and p.date.tzinfo is not None)
    assert isinstance(p.size, int) and p.size > 0
    assert isinstance(p.text, str) and "\x00" not in p.text and "\r" not in p.text
    assert isinstance(p.defects, list) and all(isinstance(d, str) for d in p.defects)
    p.text.encode("utf-8")  # no lone surrogates: storable in PostgreSQL
    p.subject.encode("utf-8")


def test_the_whole_corpus_parses_or_is_cleanly_refused(parsed_corpus: dict[str, ParsedMail | Exception]) -> None:
    assert len(parsed_corpus) == 1260
    wrong, refused = [], []
    for rel, result in parsed_corpus.items():
        if isinstance(result, ParsedMail):
            try:
                check_fields(result)
            except AssertionError as exc:
                wrong.append(f"{rel}: bad field {exc}")
        elif isinstance(result, UnreadableMessage):
            refused.append(rel)
            if not result.reason.startswith(REFUSAL_REASONS):
                wrong.append(f"{rel}: unexpected refusal {result.reason!r}")
        else:
            wrong.append(f"{rel}: raised {result!r}")
    assert not wrong, "\n".join(wrong)
    # Measured: 73.  Nothing under replies/ outside bodies-only/ is refused.
    assert len(refused) <= 73, refused
    assert [r for r in refused if r.startswith("replies/") and "/bodies-only/" not in r] == []
    assert all(r in refused for r in parsed_corpus if "/bodies-only/" in r)


@pytest.mark.parametrize("rel", STDLIB_PITFALLS)
def test_the_stdlib_pitfalls_parse(rel: str) -> None:
    p = parsed(rel)
    check_fields(p)
    assert p.from_addr and p.message_id


def test_group_syntax_in_to_does_not_crash_and_keeps_cc() -> None:
    p = parsed("replies/notmuch-lkml-1382298770.002930.eml")
    assert p.to == []
    assert "linux-kernel-u79uwxl29ty76z2rm5mhxa@public.gmane.org" in p.cc
    assert str(p.msg["To"]).startswith("unlisted-recipients")  # header access is safe too


def test_unknown_and_lying_charsets_fall_back() -> None:
    p = parsed("inbound/mikelmail-plain_emails-raw_email10.eml")  # charset=X-UNKNOWN
    assert "Envoyé" in p.text
    assert any("x-unknown" in d for d in p.defects)
    p = parsed("inbound/phpmmp-issue230.eml")  # x-mac-cyrillic
    assert p.text.startswith("ACADEMIC NEWSLETTER")


def test_iso_2022_jp_with_windows_characters() -> None:
    p = parsed("inbound/otobo-parser-PostMaster-Test12.box")
    names = [a.get_filename() for a in p.msg.iter_attachments()]
    assert "報告書①..txt" in names  # RFC 2231 in ISO-2022-JP with an NEC character
    assert p.subject == "test äöüß"


@pytest.mark.parametrize(
    ("rel", "subject"),
    [
        ("inbound/rt-8859-15-msg1.eml", "test äöüßÄÖÜß€"),
        ("inbound/freescout-message-5-iso-2022-jp.eml", "ご注文商品を本日お届けします"),
        ("inbound/redmine-subject_japanese_3.eml", "① 丸数字テスト"),
        ("inbound/otobo-parser-PostMaster-Test13.box", "Заявка на генерацию 402 240108 (3)"),
        ("inbound/redmine-gmail-iso8859-2.eml", "Nikad više"),
        ("inbound/hunnysoft-m0006.eml", "Die Hasen und die Frösche (Microsoft Outlook 00)"),
        ("inbound/spamscope-mail_test_12.eml", "代开各地增值税发票"),
        ("inbound/mikelmail-plain_emails-raw_email.eml", "NOTE: 한국말로 하는 것"),
        ("inbound/rt-new-ticket-from-gb18030.eml", "测试"),
        ("inbound/mikelmail-rfc6532-utf8_headers.eml", "Säying Hello"),
        ("autoreplies/bounceparser-polish-autoreply.msg", "[Automatyczna odpowiedź] test"),
        ("malformed/freescout-message-4-null-bytes.eml", "активизация виндойс"),
    ],
)
def test_decoded_subjects(rel: str, subject: str) -> None:
    assert parsed(rel).subject == subject


def test_raw_8bit_big5_subject_is_read_in_the_body_charset() -> None:
    p = parsed("inbound/spamassassin-nice-cjk-big5-base64.1.eml")
    assert p.subject.startswith("[SLAT-talk] 鉅靡6月17日新片又到")


def test_nul_bytes_are_stripped() -> None:
    p = parsed("malformed/freescout-message-4-null-bytes.eml")
    assert "\x00" not in p.text and "Уважаемые" in p.text
    p = parse(b"From: a@b.test\nSubject: a\x00b\nMessage-ID: <1@b.test>\n\nte\x00xt\n")
    assert p.subject == "a b" and p.text == "text\n"


def test_bare_cr_and_mbox_lines() -> None:
    p = parsed("malformed/sisimai-mac-lhost-gmail-01.eml")
    assert p.subject == "Delivery Status Notification (Failure)"
    assert "bare-CR line endings converted" in p.defects
    p = parsed("autoreplies/sisimai-rfc3834-05.eml")
    assert "mbox From_ line removed" in p.defects and p.from_addr == "foo@bar.net"


def test_the_binary_outlook_msg_is_refused() -> None:
    with pytest.raises(UnreadableMessage) as info:
        parse(read("malformed/spamscope-mail_outlook_1.msg"))
    assert "OLE2" in info.value.reason


def test_a_damaged_header_block_is_repaired_not_lost_to_the_body() -> None:
    p = parsed("inbound/mikelmail-plain_emails-raw_email_incorrect_header.eml")
    assert p.from_addr == "xxx@xxx.xxx" and p.message_id == "<4D6AA7EB.6490534@xxx.xxx>"
    p = parsed("malformed/mikelmail-rfc2822-example13.eml")  # obsolete "From  :" syntax
    assert p.from_addr == "jdoe@machine.example" and p.subject == "Saying Hello"


# --------------------------------------------------------------------------------------
# Synthetic edges
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"", b"   \r\n\r\n", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600, b"\x00\x01\x02\x03binary",
     b"Just some text\nwithout any header\n", b"Subject: only a subject\n\nbody\n",
     b"From: nobody\n\nno address, no id\n", "not bytes", None],
)
def test_nothing_usable_is_refused_cleanly(raw: object) -> None:
    with pytest.raises(UnreadableMessage) as info:
        parse(raw)  # type: ignore[arg-type]
    assert info.value.reason


def test_a_message_id_alone_is_enough() -> None:
    p = parse(b"Message-ID: <only@x.test>\nSubject: s\n\nbody\n")
    assert p.message_id == "<only@x.test>" and p.from_addr is None


def test_fields() -> None:
    raw = (
        b"From: =?utf-8?q?J=C3=B6rg?= <Joerg@Example.TEST>\r\n"
        b"Reply-To: a@x.test, \"B, b\" <B@X.test>\r\n"
        b"To: Support <support@example.test>, undisclosed-recipients:;\r\n"
        b"Cc: c@x.test\r\n"
        b"Delivered-To: Support@Example.test\r\n"
        b"X-Original-To: outbound+tok@example.test\r\n"
        b"Subject: =?utf-8?b?R3LDvMOfZQ==?=\r\n"
        b"\tfolded\r\n"
        b"Message-ID: naked-id@x.test\r\n"
        b"In-Reply-To: <p@x.test> (comment)\r\n"
        b"References: <r1@x.test>\r\n <p@x.test> <r1@x.test> <>\r\n"
        b"Date: Mon, 2 Mar 2026 10:00:00 -0000\r\n"
        b"\r\n"
        b"Body\r\n"
    )
    p = parse(raw)
    assert p.from_addr == "joerg@example.test" and p.from_name == "Jörg"
    assert p.reply_to == ["a@x.test", "b@x.test"]
    assert p.to == ["support@example.test"] and p.cc == ["c@x.test"]
    assert p.delivered_to == ["support@example.test", "outbound+tok@example.test"]
    assert p.subject == "Grüße folded"
    assert p.message_id == "<naked-id@x.test>"
    assert p.in_reply_to == "<p@x.test>"
    assert p.references == ["<r1@x.test>", "<p@x.test>"]
    assert p.date == datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    assert p.size == len(raw) and p.text == "Body\n"
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.subject = "x"  # type: ignore[misc]


def test_dates() -> None:
    p = parse(b"From: a@b.test\nDate: Tue, 3 Mar 2026 08:00:00 +0530\n\nx\n")
    assert p.date == datetime(2026, 3, 3, 8, 0, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    assert parse(b"From: a@b.test\nDate: not a date\n\nx\n").date is None
    assert parse(b"From: a@b.test\nDate: Mon, 2 Mar 99999 10:00:00 +0000\n\nx\n").date is None
    assert parse(b"From: a@b.test\n\nx\n").date is None


def test_empty_in_reply_to_is_none() -> None:
    assert parse(b"From: a@b.test\nIn-Reply-To: \n\nx\n").in_reply_to is None
    p = parsed("malformed/mikelmail-error-empty_in_reply_to.eml")
    assert p.in_reply_to is None


def test_html_only_mail_gets_crude_text() -> None:
    raw = (
        b"From: a@b.test\nMIME-Version: 1.0\nContent-Type: text/html; charset=windows-1252\n\n"
        b"<html><head><title>T</title><style>p{color:red}</style></head><body>"
        b"<p>Gr\xfc\xdfe &amp; hello</p><script>alert(1)</script><br>line 2<div>x</div></body></html>"
    )
    assert [line for line in parse(raw).text.splitlines() if line] == ["Grüße & hello", "line 2", "x"]


def test_text_prefers_plain_and_skips_attachments_and_report_fields() -> None:
    raw = (
        b"From: a@b.test\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n"
        b"--b\nContent-Type: text/plain; name=a.txt\nContent-Disposition: attachment\n\nattached\n"
        b"--b\nContent-Type: multipart/alternative; boundary=c\n\n"
        b"--c\nContent-Type: text/html\n\n<p>html</p>\n--c\nContent-Type: text/plain\n\nplain\n--c--\n"
        b"--b--\n"
    )
    assert parse(raw).text.strip() == "plain"
    report = (
        b"From: MAILER-DAEMON@x.test\nMIME-Version: 1.0\n"
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n"
        b"Your mail could not be delivered.\n"  # old DSNs put their prose in the preamble
        b"--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x.test\n\n"
        b"Final-Recipient: rfc822; a@b.test\nAction: failed\n--b--\n"
    )
    assert parse(report).text.strip() == "Your mail could not be delivered."


def test_8bit_headers_are_decoded() -> None:
    p = parse("From: Jörg <j@x.test>\nSubject: Grüße\n\nx\n".encode())
    assert (p.from_name, p.subject) == ("Jörg", "Grüße")
    p = parse("From: J\xf6rg <j@x.test>\nSubject: Gr\xfc\xdfe\n\nx\n".encode("latin-1"))
    assert (p.from_name, p.subject) == ("Jörg", "Grüße")


def test_addresses_helper() -> None:
    assert addresses('"Doe, J" <J.Doe@X.test>, b@y.test, junk, <b@y.test>') == ["j.doe@x.test", "b@y.test"]
    assert addresses("undisclosed-recipients:;") == []
    assert addresses(None) == [] and addresses("") == []
    assert addresses("=?utf-8?q?a=2C_b?= <c@d.test>") == ["c@d.test"]
