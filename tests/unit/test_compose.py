"""postroom.core.compose: the messages Postroom sends, built from the ones it received."""

from __future__ import annotations

import copy
import email
import uuid
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage, Message

import pytest

from postroom.core import correlation as corr
from postroom.core.compose import (
    UnsafeHeaderValue,
    auto_response,
    forward_to_agent,
    notice,
    reply_to_customer,
    with_text,
)
from postroom.core.headers import POLICY, address_list, decode_text
from postroom.mail.message import parse
from tests.unit.conftest import corpus_files, parsed

SECRET = b"rewrite-test-secret"
GUID = uuid.UUID("0b8f3c1e-7d2a-4f5b-9c6e-1a2b3c4d5e6f")
AGENT = "alice@agents.example.test"
OUTBOUND = "outbound@example.test"
BOX = "support@example.test"
TOKEN = corr.mint_token(SECRET, GUID, AGENT)
FWD_ID = corr.forward_message_id(TOKEN, 1, "pr.example.test")
OUTLOOK_ID = "<DB9PR03MB7387E0C0C1B1D1A1F1E1A1B1C1D1E1F1@DB9PR03MB7387.eurprd03.prod.outlook.com>"

CUSTOMER_MAIL = (
    "Return-Path: <carol@customer.test>\r\n"
    "Delivered-To: support@example.test\r\n"
    "X-Original-To: support@example.test\r\n"
    "Received: from mx.customer.test by mx.example.test; Mon, 2 Mar 2026 10:00:00 +0100\r\n"
    "DKIM-Signature: v=1; a=rsa-sha256; d=customer.test; s=s1; b=abc\r\n"
    "ARC-Seal: i=1; a=rsa-sha256; d=customer.test; b=xyz\r\n"
    "From: =?utf-8?q?Carol_M=C3=BCller?= <carol@customer.test>\r\n"
    "To: Support <support@example.test>\r\n"
    "Cc: boss@customer.test\r\n"
    "Bcc: secret@customer.test\r\n"
    "Reply-To: carol.private@customer.test\r\n"
    "Subject: =?utf-8?q?Wo_ist_mein_Paket=3F?=\r\n"
    "Date: Mon, 2 Mar 2026 09:59:58 +0100\r\n"
    "Message-ID: <carol-1@customer.test>\r\n"
    "In-Reply-To: <older@customer.test>\r\n"
    f"References: <root@customer.test> {OUTLOOK_ID}\r\n"
    "Disposition-Notification-To: carol@customer.test\r\n"
    "X-Postroom-Interaction: 11111111-1111-1111-1111-111111111111\r\n"
    "X-Postroom-Box: attacker@evil.test\r\n"
    "List-Unsubscribe: <mailto:leave@customer.test>\r\n"
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/mixed; boundary="b1"\r\n'
    "\r\n"
    "--b1\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Hallo, wo ist mein Paket? Grüße\r\n"
    "--b1\r\n"
    'Content-Type: application/pdf; name="Rechnung.pdf"\r\n'
    'Content-Disposition: attachment; filename="Rechnung.pdf"\r\n'
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "JVBERi0xLjQKJcOkw7zDtsOfCg==\r\n"
    "--b1--\r\n"
).encode()

AGENT_REPLY = (
    "Return-Path: <alice@agents.example.test>\r\n"
    f"Delivered-To: outbound+{TOKEN}@example.test\r\n"
    f"X-Original-To: outbound+{TOKEN}@example.test\r\n"
    "Received: from agents.example.test by mx.example.test\r\n"
    "DKIM-Signature: v=1; d=agents.example.test; b=def\r\n"
    "ARC-Message-Signature: i=1; b=x\r\n"
    "From: Alice Agent <alice@agents.example.test>\r\n"
    "Sender: alice.assistant@agents.example.test\r\n"
    f"To: Support <outbound+{TOKEN}@example.test>\r\n"
    "Cc: team-lead@agents.example.test\r\n"
    "Bcc: archive@agents.example.test\r\n"
    f"Subject: RE: Wo ist mein Paket? [PR:{TOKEN}]\r\n"
    "Date: Mon, 2 Mar 2026 11:00:00 +0100\r\n"
    "Message-ID: <alice-99@agents.example.test>\r\n"
    f"In-Reply-To: {FWD_ID}\r\n"
    f"References: <root@customer.test> <carol-1@customer.test> {FWD_ID}\r\n"
    "Thread-Topic: Wo ist mein Paket?\r\n"
    "Thread-Index: AdC0xOxFwE/tigzGSJa9glHhu/rfhw==\r\n"
    "Disposition-Notification-To: alice@agents.example.test\r\n"
    "Return-Receipt-To: alice@agents.example.test\r\n"
    "X-Postroom-Interaction: 0b8f3c1e-7d2a-4f5b-9c6e-1a2b3c4d5e6f\r\n"
    "X-MS-Exchange-Organization-AuthAs: Internal\r\n"
    "X-Originating-IP: [192.0.2.10]\r\n"
    f"X-Custom-Tracking: reply-to outbound+{TOKEN}@example.test\r\n"
    "X-Mailer: Microsoft Outlook 16.0\r\n"
    "Importance: High\r\n"
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/mixed; boundary="r1"\r\n'
    "\r\n"
    "--r1\r\n"
    'Content-Type: multipart/alternative; boundary="r2"\r\n'
    "\r\n"
    "--r2\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n"
    "\r\n"
    "Liebe Carol, es ist unterwegs. Gr=C3=BC=C3=9Fe\r\n"
    "\r\n"
    "> Hallo, wo ist mein Paket?\r\n"
    "--r2\r\n"
    "Content-Type: text/html; charset=utf-8\r\n"
    "\r\n"
    "<p>Liebe Carol, es ist <b>unterwegs</b>.</p><blockquote>Hallo</blockquote>\r\n"
    "--r2--\r\n"
    "--r1\r\n"
    'Content-Type: image/png; name="tracking.png"\r\n'
    'Content-Disposition: attachment; filename="tracking.png"\r\n'
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "iVBORw0KGgo=\r\n"
    "--r1--\r\n"
).encode()


def customer_mail() -> EmailMessage:
    return parse(CUSTOMER_MAIL).msg


def agent_reply() -> EmailMessage:
    return parse(AGENT_REPLY).msg


def forward(original: EmailMessage, **overrides: object) -> EmailMessage:
    kwargs: dict[str, object] = {
        "agent": AGENT,
        "agent_name": "Alice Agent",
        "reply_to": corr.reply_address(OUTBOUND, TOKEN),
        "message_id": FWD_ID,
        "tag": corr.subject_tag(TOKEN),
        "guid": GUID,
        "box_address": BOX,
        "box_name": "Example Support",
    }
    kwargs.update(overrides)
    return forward_to_agent(original, **kwargs)  # type: ignore[arg-type]


def reply(agent_msg: EmailMessage, **overrides: object) -> EmailMessage:
    kwargs: dict[str, object] = {
        "box_address": BOX,
        "box_name": "Example Support",
        "customer": "carol.private@customer.test",
        "original_message_id": "<carol-1@customer.test>",
        "original_references": ["<root@customer.test>", OUTLOOK_ID],
        "message_id": "<re-1@pr.example.test>",
        "subject": "Wo ist mein Paket?",
        "outbound": OUTBOUND,
    }
    kwargs.update(overrides)
    return reply_to_customer(agent_msg, **kwargs)  # type: ignore[arg-type]


def reparse(msg: EmailMessage) -> EmailMessage:
    """What the receiving side sees: our bytes, parsed again.

    With POLICY, not the stock policy.default: a stock parser already crashes on some of the
    originals (RFC 2231 ISO-2022-JP filenames, otobo Test12), and a forward passes those
    parameters on untouched.
    """
    out = email.message_from_bytes(msg.as_bytes(), policy=POLICY)
    assert isinstance(out, EmailMessage)
    return out


def header_block(msg: EmailMessage) -> str:
    raw = msg.as_bytes()
    return raw[: raw.index(b"\n\n")].decode("ascii")


def leaves(msg: Message) -> list[tuple[str, str | None, bytes]]:
    """(content type, filename, decoded bytes) of every leaf part: what a reader sees.

    Line ends of 8-bit/QP text are canonicalised (RFC 2046 §4.1.1: CRLF on the wire, LF
    once serialised with policy.default); base64 payloads must match byte for byte.
    """
    out = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if part.get("Content-Transfer-Encoding", "").lower() != "base64":
            data = data.replace(b"\r\n", b"\n")
        out.append((part.get_content_type(), part.get_filename(), data))
    return out


def names(msg: Message) -> set[str]:
    return {k.lower() for k in msg.keys()}


def text_of(part: Message) -> str:
    payload = part.get_payload(decode=True)
    return decode_text(payload if isinstance(payload, bytes) else b"", part.get_content_charset())[0].replace("\r\n", "\n")


def same_content(out: Message, original: Message) -> bool:
    """The forward shows what the customer sent: every leaf that is not a body text is
    byte for byte the same; each body text (plain, HTML) is the original's with the
    header block in front (or the block is a part of its own before the original body,
    possibly inside its multipart/mixed)."""
    # A multipart the parser could not split is a leaf; writing it out may add a newline.
    got = [(c, n, d.rstrip(b"\n")) for c, n, d in leaves(out)]
    want = [(c, n, d.rstrip(b"\n")) for c, n, d in leaves(original)]
    if len(got) == len(want) + 1 and got[0][0] == "text/plain" and got[1:] == want:
        return "Customer mail, forwarded by Postroom" in got[0][2].decode()  # a part of its own
    if len(got) != len(want):
        return False
    texts = iter([p for p in out.walk() if not p.is_multipart()])
    originals = iter([p for p in original.walk() if not p.is_multipart()])
    for (ctype, name, data), (ctype0, name0, data0), part, part0 in zip(got, want, texts, originals, strict=True):
        if (ctype, name) != (ctype0, name0):
            return False
        if data == data0:
            continue
        if ctype not in ("text/plain", "text/html"):
            return False
        new, old = text_of(part), text_of(part0)
        if "Customer mail, forwarded by Postroom" not in new:
            return False
        if ctype == "text/plain" and not new.endswith(old.rstrip("\n")) and old.strip() not in new:
            return False
    return True


# --------------------------------------------------------------------------------------
# forward_to_agent
# --------------------------------------------------------------------------------------


def test_forward_readdresses_to_the_agent_and_carries_the_token() -> None:
    out = reparse(forward(customer_mail()))
    assert str(out["To"]) == "Alice Agent <alice@agents.example.test>"
    assert str(out["Reply-To"]) == f"outbound+{TOKEN}@example.test"
    assert str(out["Subject"]) == f"Wo ist mein Paket? [PR:{TOKEN}]"
    assert str(out["Message-ID"]) == FWD_ID
    assert str(out["References"]) == f"<root@customer.test> {OUTLOOK_ID} <carol-1@customer.test>"
    assert str(out["X-Postroom-Interaction"]) == str(GUID)
    assert str(out["X-Postroom-Original-Message-ID"]) == "<carol-1@customer.test>"
    assert str(out["X-Postroom-Box"]) == BOX
    assert str(out["X-Auto-Response-Suppress"]) == "OOF, AutoReply"


def test_forward_comes_from_us_in_the_form_mailing_lists_use() -> None:
    out = reparse(forward(customer_mail()))
    [sender] = out["From"].addresses
    assert sender.display_name == "Carol Müller via Example Support"
    assert sender.addr_spec == f"outbound+{TOKEN}@example.test"
    assert "sender" not in names(out)
    heads = " ".join(str(out[h] or "") for h in ("From", "To", "Cc", "Reply-To", "Sender")).lower()
    assert "customer.test" not in heads


def test_forward_from_never_spells_an_address_of_the_writer() -> None:
    bare = parse(b"From: carol@customer.test\nTo: support@example.test\nSubject: s\n\nhi\n").msg
    out = reparse(forward(bare, box_name=None))
    assert out["From"].addresses[0].display_name == f"carol at customer.test via {BOX}"


def test_forward_keeps_who_wrote_and_when_in_a_header_block() -> None:
    out = reparse(forward(customer_mail()))
    text = out.get_body(("plain",)).get_content()
    block, _, body = text.partition("\n\n")
    assert "From: Carol Müller <carol@customer.test>" in block
    assert "To: Support <support@example.test>" in block
    assert "Cc: boss@customer.test" in block
    assert "Date: Mon, 2 Mar 2026 09:59:58 +0100" in block
    assert "Subject: Wo ist mein Paket?" in block
    assert "Your answer goes to: carol.private@customer.test (the mail's Reply-To)" in block
    assert "WARNING" not in block  # the same domain
    assert "secret@customer.test" not in text  # Bcc is never shown
    assert body.startswith("Hallo, wo ist mein Paket?")
    assert str(out["Date"]) == "Mon, 02 Mar 2026 09:59:58 +0100"
    assert str(out["In-Reply-To"]) == "<older@customer.test>"


def test_forward_warns_when_answers_would_go_to_another_domain() -> None:
    hijack = CUSTOMER_MAIL.replace(b"Reply-To: carol.private@customer.test", b"Reply-To: Billing <pay@elsewhere.test>")
    text = reparse(forward(parse(hijack).msg)).get_body(("plain",)).get_content()
    assert "Your answer goes to: pay@elsewhere.test (the mail's Reply-To)" in text
    assert "WARNING: pay@elsewhere.test is in another domain than the sender's address carol@customer.test" in text


def test_the_header_block_is_text_however_hostile_the_names() -> None:
    hostile = CUSTOMER_MAIL.replace(
        b"From: =?utf-8?q?Carol_M=C3=BCller?= <carol@customer.test>",
        b'From: "<script>alert(1)</script> \xe2\x80\xae" <carol@customer.test>',
    ).replace(b"Content-Type: text/plain; charset=utf-8\r\n", b"Content-Type: text/html; charset=utf-8\r\n")
    out = reparse(forward(parse(hostile).msg))
    html = out.get_body(("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "\u202e" not in html and "\u202e" not in str(out["From"])


def test_forward_removes_trace_recipients_signatures_and_untrusted_plumbing() -> None:
    out = reparse(forward(customer_mail()))
    for name in ("cc", "bcc", "delivered-to", "return-path", "x-original-to", "dkim-signature",
                 "arc-seal", "received", "disposition-notification-to", "list-unsubscribe"):
        assert name not in names(out), name
    # Incoming X-Postroom-* are untrusted: only ours, once each.
    assert out.get_all("X-Postroom-Box") == [BOX]
    assert out.get_all("X-Postroom-Interaction") == [str(GUID)]
    assert len(out.get_all("Reply-To")) == 1


def test_forward_keeps_the_body_and_attachments_as_they_were() -> None:
    original = customer_mail()
    out = reparse(forward(original))
    assert same_content(out, original)
    assert out.get_body(("plain",)).get_content().rstrip().endswith(original.get_body(("plain",)).get_content().rstrip())


def test_forward_does_not_rfc2047_encode_long_message_ids() -> None:
    # CPython's policy.default writes References: =?utf-8?q?=3CDB9PR...?= for ids longer
    # than a line, which no mail client decodes: threading would silently break.
    raw = forward(customer_mail()).as_bytes()
    assert OUTLOOK_ID.encode() in raw
    assert b"=?utf-8?q?=3C" not in raw


def test_forward_neutralises_header_smuggling_through_splitlines_characters() -> None:
    # CPython gh-117313: the generator splits unparsed header values at \x1c, \x0c...
    hostile = CUSTOMER_MAIL.replace(
        b"MIME-Version: 1.0\r\n", b"X-Note: hi\x1cReply-To: evil@evil.test\x0cBcc: evil@evil.test\r\nMIME-Version: 1.0\r\n"
    )
    out = reparse(forward(parse(hostile).msg))
    assert out.get_all("Reply-To") == [f"outbound+{TOKEN}@example.test"]
    assert "bcc" not in names(out)
    assert b"evil@evil.test" in forward(parse(hostile).msg).as_bytes()  # kept, as text


def test_forward_accepts_a_stock_policy_default_message() -> None:
    original = email.message_from_bytes(CUSTOMER_MAIL, policy=policy.default)
    assert isinstance(original, EmailMessage)
    out = reparse(forward(original))
    assert str(out["Message-ID"]) == FWD_ID
    assert OUTLOOK_ID.encode() in forward(original).as_bytes()


def test_forward_of_a_mail_without_message_id_or_subject() -> None:
    out = reparse(forward(parse(b"From: x@customer.test\nTo: support@example.test\n\nhi\n").msg))
    assert str(out["Subject"]) == f"[PR:{TOKEN}]"
    assert "references" not in names(out)
    assert "x-postroom-original-message-id" not in names(out)


# The handful of real messages the brief names: HTML-only, attachments, ISO-2022-JP,
# RFC 2231 filename continuations, plus an mbox-line Outlook mail and a TNEF one.
FORWARD_SAMPLES = [
    "inbound/hunnysoft-m2003.eml",  # HTML-only
    "inbound/mikelmail-attachment_emails-attachment_nonascii_filename.eml",
    "inbound/freescout-message-5-iso-2022-jp.eml",
    "inbound/rt-rfc2231-attachment-filename-continuations.eml",
    "inbound/mikelmail-attachment_emails-attachment_with_quoted_filename.eml",
    "inbound/mimekit-tnef-rich-text.eml",
    "inbound/otobo-parser-PostMaster-Test12.box",
]


@pytest.mark.parametrize("rel", FORWARD_SAMPLES)
def test_forward_keeps_real_mail_readable_as_it_was(rel: str) -> None:
    original = parsed(rel).msg
    before = original.as_bytes()
    out = reparse(forward(original))
    assert original.as_bytes() == before, "input mutated"
    assert same_content(out, original)
    assert [a.get_filename() for a in out.iter_attachments()] == [
        a.get_filename() for a in original.iter_attachments()
    ]
    assert corr.token_from_subject(str(out["Subject"])) == TOKEN
    assert str(out["Message-ID"]) == FWD_ID


def test_rfc2231_filename_survives_the_forward() -> None:
    out = reparse(forward(parsed("inbound/rt-rfc2231-attachment-filename-continuations.eml").msg))
    [filename] = [a.get_filename() for a in out.iter_attachments()]
    assert filename and filename.endswith(".txt") and not filename.isascii()


def test_every_inbound_corpus_mail_forwards_serialises_and_reparses() -> None:
    rels = corpus_files("inbound")
    if not rels:
        pytest.skip("no corpus")
    failures = []
    for rel in rels:
        try:
            original = parsed(rel).msg
        except Exception:  # noqa: BLE001 - refusals are test_message_parse's business
            continue
        try:
            out = reparse(forward(original))
            assert str(out["Message-ID"]) == FWD_ID
            assert out.get_all("Reply-To") == [f"outbound+{TOKEN}@example.test"]
            assert corr.token_from_subject(str(out["Subject"])) == TOKEN
            # No address of the customer's (nor of anyone they copied) in the fields
            # a "Reply All" reads; who wrote is in the header block instead.
            heads = " ".join(str(out.get(h) or "") for h in ("From", "To", "Cc", "Reply-To", "Sender", "Mail-Followup-To"))
            theirs = {a for h in ("From", "To", "Cc", "Reply-To") for v in original.get_all(h) or () for _n, a in address_list(str(v))}
            assert not [a for a in theirs if a in heads.lower() and a != AGENT], heads
            assert same_content(out, original), "content changed"
            shown = "".join(text_of(p) for p in out.walk() if p.get_content_maintype() == "text")
            assert "Customer mail, forwarded by Postroom" in shown
        except Exception as exc:  # noqa: BLE001 - collect, then report them all
            failures.append(f"{rel}: {exc!r}")
    assert not failures, "\n".join(failures)


# --------------------------------------------------------------------------------------
# reply_to_customer
# --------------------------------------------------------------------------------------


def test_reply_comes_from_the_box_threaded_to_the_customer() -> None:
    out = reparse(reply(agent_reply()))
    assert str(out["From"]) == f"Example Support <{BOX}>"
    assert str(out["Reply-To"]) == BOX
    assert str(out["To"]) == "carol.private@customer.test"
    assert str(out["In-Reply-To"]) == "<carol-1@customer.test>"
    assert str(out["References"]) == f"<root@customer.test> {OUTLOOK_ID} <carol-1@customer.test>"
    assert str(out["Message-ID"]) == "<re-1@pr.example.test>"
    assert str(out["Subject"]) == "RE: Wo ist mein Paket?"
    assert str(out["Date"]) == "Mon, 02 Mar 2026 11:00:00 +0100"
    assert str(out["Importance"]) == "High"


def test_reply_strips_the_agent_mailbox_and_our_plumbing() -> None:
    out = reply(agent_reply())
    got = names(reparse(out))
    for name in ("cc", "bcc", "sender", "delivered-to", "return-path", "received", "dkim-signature",
                 "arc-message-signature", "x-postroom-interaction", "thread-index", "thread-topic",
                 "disposition-notification-to", "return-receipt-to", "x-original-to",
                 "x-ms-exchange-organization-authas", "x-originating-ip", "x-custom-tracking"):
        assert name not in got, name
    head = header_block(out).lower()
    assert TOKEN not in head
    assert "outbound" not in head
    assert "[pr:" not in head
    assert "agents.example.test" not in head
    assert corr.find_tokens_in_text(head) == []


def test_reply_keeps_the_agents_body_as_written() -> None:
    original = agent_reply()
    out = reparse(reply(original))
    assert leaves(out) == leaves(original)
    assert "> Hallo, wo ist mein Paket?" in out.get_body(("plain",)).get_content()


@pytest.mark.parametrize("agent_subject", [f"[PR:{TOKEN}]", "", None])
def test_reply_subject_falls_back_to_re_original(agent_subject: str | None) -> None:
    msg = agent_reply()
    del msg["Subject"]
    if agent_subject is not None:
        msg["Subject"] = agent_subject
    assert str(reparse(reply(msg))["Subject"]) == "Re: Wo ist mein Paket?"


def test_reply_date_is_set_only_when_the_agent_sent_none() -> None:
    msg = agent_reply()
    del msg["Date"]
    when = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    assert str(reparse(reply(msg, date=when))["Date"]) == "Mon, 02 Mar 2026 12:00:00 +0000"
    assert "date" not in names(reply(msg))
    assert str(reply(agent_reply(), date=when)["Date"]) == "Mon, 02 Mar 2026 11:00:00 +0100"


def test_reply_drops_stored_ids_unfit_to_echo_instead_of_failing() -> None:
    out = reparse(reply(agent_reply(), original_message_id="<yes>", original_references=["junk", "<a b@c>"]))
    assert str(out["In-Reply-To"]) == "<yes>"
    assert str(out["References"]) == "<yes>"
    out = reparse(reply(agent_reply(), original_message_id=None, original_references=[]))
    assert "in-reply-to" not in names(out) and "references" not in names(out)


REPLY_SAMPLES = [
    "replies/talon-iphone.eml",
    "replies/talon-outlook.eml",
    "replies/talon-gmail.eml",
    "replies/mimekit-issue358.txt",
]


@pytest.mark.parametrize("rel", REPLY_SAMPLES)
def test_real_replies_rewrite_cleanly(rel: str) -> None:
    original = parsed(rel).msg
    before = original.as_bytes()
    out = reply(original)
    assert original.as_bytes() == before, "input mutated"
    again = reparse(out)
    assert leaves(again) == leaves(original)
    assert names(again) <= {
        "from", "reply-to", "to", "subject", "message-id", "in-reply-to", "references", "date",
        "mime-version", "content-type", "content-transfer-encoding", "content-disposition",
        "content-language", "importance", "x-priority", "priority", "accept-language",
    }


# --------------------------------------------------------------------------------------
# auto_response and notice
# --------------------------------------------------------------------------------------


def test_auto_response_is_an_rfc3834_reply() -> None:
    out = reparse(auto_response(
        customer_mail(), box_address=BOX, box_name="Example Support",
        customer="carol.private@customer.test", text="Thanks {name}!", message_id="<ar-1@pr.example.test>",
        subject_template="Re: {subject}", customer_text=True,
    ))
    assert str(out["From"]) == f"Example Support <{BOX}>"
    assert str(out["To"]) == "carol.private@customer.test"
    assert str(out["Subject"]) == "Re: Wo ist mein Paket?"
    assert str(out["Auto-Submitted"]) == "auto-replied"
    assert str(out["X-Auto-Response-Suppress"]) == "All"
    assert "precedence" not in names(out)
    assert str(out["In-Reply-To"]) == "<carol-1@customer.test>"
    assert str(out["References"]) == f"<root@customer.test> {OUTLOOK_ID} <carol-1@customer.test>"
    assert out.get_content_type() == "text/plain"
    assert out.get_content_charset() == "utf-8"
    # Answered at the Reply-To address, still greeted by the From name.
    assert out.get_content().strip() == "Thanks Carol Müller!"


def test_auto_response_placeholders() -> None:
    text = "Dear {name}, re: {subject}. Ref {reference}. {box}. {unknown} {0} {} {{x}} {name"
    out = reparse(auto_response(
        customer_mail(), box_address=BOX, box_name=None, customer="carol@customer.test", text=text,
        message_id="<ar-1@pr.example.test>", subject_template="[{reference}] {subject} {nope}",
        reference="AB12", customer_text=True,
    ))
    body = out.get_content().rstrip("\n")
    assert body == (
        f"Dear Carol Müller, re: Wo ist mein Paket?. Ref AB12. {BOX}. {{unknown}} {{0}} {{}} {{{{x}}}} {{name"
    )
    assert str(out["Subject"]) == "[AB12] Wo ist mein Paket? {nope}"


def test_auto_response_name_falls_back_to_the_local_part_and_strips_our_tag() -> None:
    original = parse(
        f"From: dave@customer.test\nSubject: Re: help [PR:{TOKEN}]\nMessage-ID: <d@c>\n\nx\n".encode()
    ).msg
    out = reparse(auto_response(
        original, box_address=BOX, box_name="Support", customer="dave@customer.test",
        text="Hi {name} / {box}", message_id="<ar-2@pr.example.test>",
        subject_template="Re: {subject}", customer_text=True,
    ))
    assert out.get_content().strip() == "Hi dave / Support"
    assert str(out["Subject"]) == "Re: Re: help"


def test_auto_response_carries_no_customer_words_unless_the_template_opts_in() -> None:
    spam = CUSTOMER_MAIL.replace(b"=?utf-8?q?Wo_ist_mein_Paket=3F?=", b"CHEAP PILLS http://spam.test").replace(
        b"=?utf-8?q?Carol_M=C3=BCller?=", b"Visit spam.test now"
    )
    out = reparse(auto_response(
        parse(spam).msg, box_address=BOX, box_name="Support", customer="carol@customer.test",
        text="Dear {name}, about {subject}: ref {reference}, {box}", message_id="<ar-3@pr.example.test>",
        subject_template="Re: {subject} [{reference}]", reference="AB12",
    ))
    assert "spam.test" not in out.as_string() and "PILLS" not in out.as_string()
    assert out.get_content().strip() == "Dear customer, about your message: ref AB12, Support"
    assert str(out["Subject"]) == "Re: your message [AB12]"


def test_notice_is_auto_generated_and_can_carry_the_offending_mail() -> None:
    offending = agent_reply()
    before = offending.as_bytes()
    out = notice(
        from_address=OUTBOUND, to=AGENT, subject="Not delivered: RE: Wo ist mein Paket?",
        text="Postroom did not send your message.", message_id="<n-1@pr.example.test>",
        in_reply_to="<alice-99@agents.example.test>", attach=offending,
    )
    assert offending.as_bytes() == before
    again = reparse(out)
    assert str(again["Auto-Submitted"]) == "auto-generated"
    assert str(again["In-Reply-To"]) == "<alice-99@agents.example.test>"
    [attached] = list(again.iter_attachments())
    assert attached.get_content_type() == "message/rfc822"
    inner = attached.get_content()
    assert str(inner["Message-ID"]) == "<alice-99@agents.example.test>"
    assert leaves(inner) == leaves(offending)
    assert "Postroom did not send" in again.get_body(("plain",)).get_content()


def test_notice_without_attachment_is_plain_text() -> None:
    out = reparse(notice(from_address=OUTBOUND, to=AGENT, subject="s", text="Grüße",
                         message_id="<n-2@pr.example.test>"))
    assert out.get_content_type() == "text/plain"
    assert out.get_content().strip() == "Grüße"
    assert "in-reply-to" not in names(out)


# --------------------------------------------------------------------------------------
# Cross-cutting: no mutation, no injection, everything serialises
# --------------------------------------------------------------------------------------


def test_no_builder_mutates_its_input() -> None:
    original, agent_msg = customer_mail(), agent_reply()
    before = (original.as_bytes(), agent_msg.as_bytes())
    forward(original)
    reply(agent_msg)
    auto_response(original, box_address=BOX, box_name=None, customer="c@customer.test", text="x",
                  message_id="<a@pr.example.test>")
    notice(from_address=OUTBOUND, to=AGENT, subject="s", text="t", message_id="<n@pr.example.test>",
           attach=agent_msg)
    assert (original.as_bytes(), agent_msg.as_bytes()) == before


INJECT = "x@example.test\r\nBcc: victim@evil.test"


@pytest.mark.parametrize(
    "build",
    [
        lambda: forward(customer_mail(), agent=INJECT),
        lambda: forward(customer_mail(), agent_name="Alice\nBcc: victim@evil.test"),
        lambda: forward(customer_mail(), reply_to=INJECT),
        lambda: forward(customer_mail(), message_id="<a@b>\r\nBcc: victim@evil.test"),
        lambda: forward(customer_mail(), tag="[PR:x]\rBcc: victim@evil.test"),
        lambda: forward(customer_mail(), box_address=INJECT),
        lambda: forward(customer_mail(), agent="a@b\x1cBcc: victim@evil.test"),
        lambda: reply(agent_reply(), customer=INJECT),
        lambda: reply(agent_reply(), box_name="Support\r\nBcc: victim@evil.test"),
        lambda: reply(agent_reply(), message_id="<r@b>\nBcc: victim@evil.test"),
        lambda: reply(agent_reply(), subject="s\r\nBcc: victim@evil.test"),
        lambda: auto_response(customer_mail(), box_address=BOX, box_name=None, customer=INJECT, text="t",
                              message_id="<a@pr.example.test>"),
        lambda: auto_response(customer_mail(), box_address=BOX, box_name=None, customer="c@customer.test",
                              text="t", message_id="<a@pr.example.test>",
                              subject_template="Re\r\nBcc: victim@evil.test"),
        lambda: notice(from_address=OUTBOUND, to=INJECT, subject="s", text="t", message_id="<n@pr.example.test>"),
        lambda: notice(from_address=OUTBOUND, to=AGENT, subject="s\nBcc: victim@evil.test", text="t",
                       message_id="<n@pr.example.test>"),
        lambda: notice(from_address=OUTBOUND, to=AGENT, subject="s", text="t", message_id="no-brackets@x"),
    ],
)
def test_line_breaks_in_values_are_refused(build) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnsafeHeaderValue):
        build()
    assert issubclass(UnsafeHeaderValue, ValueError)


def test_a_customer_subject_with_line_breaks_cannot_inject_into_our_messages() -> None:
    original = parse(
        b"From: c@customer.test\nSubject: =?utf-8?q?hi=0D=0ABcc=3A_victim=40evil.test?=\n"
        b"Message-ID: <c@customer.test>\n\nbody\n"
    ).msg
    for out in (
        forward(original),
        auto_response(original, box_address=BOX, box_name=None, customer="c@customer.test",
                      text="{subject}", message_id="<a@pr.example.test>"),
    ):
        assert "bcc" not in names(reparse(out))


def test_non_ascii_addresses_get_idna_domains_or_are_refused() -> None:
    out = reparse(forward(customer_mail(), agent="alice@bücher.example"))
    assert str(out["To"]).endswith("<alice@xn--bcher-kva.example>")
    with pytest.raises(UnsafeHeaderValue):
        forward(customer_mail(), agent="jürgen@example.test")  # needs SMTPUTF8 (RFC 6531)


def test_messages_use_the_tolerant_policy_and_serialise_with_crlf_for_smtp() -> None:
    out = forward(customer_mail())
    assert out.policy is POLICY
    wire = out.as_bytes(policy=POLICY.clone(linesep="\r\n"))
    assert b"\r\n\r\n" in wire and b"\n\n" not in wire.replace(b"\r\n", b"")
    assert isinstance(email.message_from_bytes(wire, policy=policy.default), EmailMessage)


# --------------------------------------------------------------------------------------
# The forward's header block over the MIME shapes customers send
# --------------------------------------------------------------------------------------

SIGNED = (
    b"From: Carol <carol@customer.test>\r\nTo: support@example.test\r\nSubject: signed\r\n"
    b"Message-ID: <s@customer.test>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/signed; micalg=pgp-sha256; protocol="application/pgp-signature"; boundary="sig"\r\n'
    b"\r\n--sig\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nSigned words.\r\n"
    b"--sig\r\nContent-Type: application/pgp-signature; name=signature.asc\r\n\r\n"
    b"-----BEGIN PGP SIGNATURE-----\r\nabc\r\n-----END PGP SIGNATURE-----\r\n--sig--\r\n"
)


def test_a_signed_body_is_kept_byte_for_byte_after_the_block() -> None:
    original = parse(SIGNED).msg
    out = reparse(forward(original))
    assert out.get_content_type() == "multipart/mixed"
    block, signed = out.get_payload()
    assert "Customer mail, forwarded by Postroom" in block.get_content()
    assert signed.get_content_type() == "multipart/signed"
    signed_part = signed.get_payload(0).as_bytes()
    assert signed_part == original.get_payload(0).as_bytes()
    assert b"Signed words." in signed_part


def test_every_signed_corpus_mail_keeps_its_signed_entity() -> None:
    rels = [r for r in corpus_files() if not r.startswith("malformed/")]
    signed = []
    for rel in rels:
        try:
            original = parsed(rel).msg
        except Exception:  # noqa: BLE001 - refusals are test_message_parse's business
            continue
        if original.get_content_type() == "multipart/signed":
            signed.append(rel)
            out = reparse(forward(original))
            inner = out.get_payload()[1]
            assert inner.get_payload(0).as_bytes() == original.get_payload(0).as_bytes(), rel
    if not rels:
        pytest.skip("no corpus")
    assert signed, "the corpus has signed mail"


def test_alternative_parts_each_get_the_block_and_html_is_told_utf8() -> None:
    raw = (
        b"From: Carol <carol@customer.test>\r\nTo: support@example.test\r\nSubject: alt\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=a\r\n\r\n"
        b"--a\r\nContent-Type: text/plain; charset=iso-8859-1; format=flowed\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=FC=DFe \r\naus K=F6ln\r\n"
        b"--a\r\nContent-Type: text/html; charset=iso-8859-1\r\n\r\n"
        b'<html><head><meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1"></head>'
        b"<body bgcolor=white><p>Gr\xfc\xdfe</p></body></html>\r\n--a--\r\n"
    )
    out = reparse(forward(parse(raw).msg))
    plain, html = out.get_payload()
    assert plain.get_param("format") == "flowed" and plain.get_content_charset() == "utf-8"
    assert plain.get_content().startswith("---------- Customer mail, forwarded by Postroom")
    assert "Grüße \naus Köln" in plain.get_content()
    text = html.get_content()
    assert "<body bgcolor=white><div" in text and "charset=utf-8" in text and "iso-8859-1" not in text
    assert "<p>Grüße</p>" in text


def test_html_only_mail_gets_the_block_inside_its_body() -> None:
    raw = b"From: c@customer.test\r\nSubject: h\r\nContent-Type: text/html\r\n\r\n<p>Only HTML</p>\r\n"
    out = reparse(forward(parse(raw).msg))
    text = out.get_content()
    assert out.get_content_type() == "text/html"
    assert text.index("forwarded by Postroom") < text.index("<p>Only HTML</p>")


def test_a_mail_with_no_text_gets_a_text_part_for_the_block() -> None:
    raw = (
        b"From: c@customer.test\r\nSubject: scan\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: application/pdf; name=scan.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n"
    )
    original = parse(raw).msg
    out = reparse(forward(original))
    block, pdf = out.get_payload()
    assert "From: c@customer.test" in block.get_content()
    assert pdf.get_content_type() == "application/pdf" and pdf.get_filename() == "scan.pdf"
    assert pdf.get_payload(decode=True) == original.get_payload(decode=True)


# --------------------------------------------------------------------------------------
# reply_to_customer takes every token out; with_text keeps the attachments
# --------------------------------------------------------------------------------------


def test_reply_takes_tokens_out_of_quoted_text_html_and_attached_mail() -> None:
    fwd = forward(customer_mail())
    msg = agent_reply()
    body, png = msg.get_payload()
    plain, html = body.get_payload()
    address = corr.reply_address(OUTBOUND, TOKEN)
    plain.set_content(f"Answer.\n\nOn Monday Carol via Support <{address}> wrote:\n> Subject: x [PR:{TOKEN}]\n")
    html.set_content(f'<p>Answer</p><a href="mailto:{address}">{FWD_ID}</a>', subtype="html")
    msg.add_attachment(fwd)  # the agent attached the forward itself
    out = reply(msg)
    data = out.as_bytes().decode("utf-8", "replace")
    assert corr.find_tokens_in_text(data) == [] and "outbound+" not in data
    again = reparse(out)
    assert f"Carol via Support <{BOX}> wrote:" in again.get_body(("plain",)).get_content()
    assert [p.get_content_type() for p in again.iter_attachments()] == ["image/png", "message/rfc822"]


def test_with_text_replaces_the_words_and_keeps_attachments() -> None:
    held = reply(agent_reply())
    out = reparse(with_text(held, "Dear Carol,\nit ships today.\n"))
    assert out.get_body(("plain", "html")).get_content() == "Dear Carol,\nit ships today.\n"
    assert out.get_body(("html",)) is None
    assert [(p.get_filename(), p.get_payload(decode=True)) for p in out.iter_attachments()] == [
        ("tracking.png", b"\x89PNG\r\n\x1a\n")
    ]
    for name in ("From", "To", "Subject", "Message-ID", "In-Reply-To", "References"):
        assert str(out[name]) == str(held[name]), name


def test_with_text_of_a_plain_reply_stays_plain() -> None:
    plain = parse(b"From: a@b.test\r\nTo: c@d.test\r\nSubject: s\r\nMessage-ID: <x@y>\r\n\r\nold\r\n").msg
    out = reparse(with_text(plain, "new"))
    assert out.get_content_type() == "text/plain" and out.get_content().strip() == "new"


def test_every_corpus_reply_goes_out_with_no_token_left() -> None:
    """Real replies, the plain ones given our tokens in a quote, come out token-free and
    readable (hunnysoft-m0022's 150 KB line once took minutes in a quadratic pattern)."""
    if not corpus_files("replies"):
        pytest.skip("no corpus")
    rels = corpus_files("replies") + ["inbound/hunnysoft-m0022.eml"]
    address = corr.reply_address(OUTBOUND, TOKEN)
    failures = []
    for rel in rels:
        try:
            original = parsed(rel).msg
        except Exception:  # noqa: BLE001 - refusals are test_message_parse's business
            continue
        if original.get_content_type() != "text/plain" or original.get_content_disposition() == "attachment":
            seeded = original
        else:
            seeded = copy.deepcopy(original)
            try:
                seeded.set_content(f"Answer.\n\n> From: {address}\n> Subject: x [PR:{TOKEN}]\n" + text_of(original))
            except Exception:  # noqa: BLE001 - a part we cannot rewrite: keep it as it is
                seeded = original
        try:
            out = reply(seeded)
            data = out.as_bytes()
            reparse(out)
            shown = "".join(text_of(p) for p in reparse(out).walk() if p.get_content_maintype() == "text")
            assert TOKEN not in shown.lower() and TOKEN.encode() not in data.lower(), "token left"
        except UnsafeHeaderValue:
            continue
        except Exception as exc:  # noqa: BLE001 - collect, then report them all
            failures.append(f"{rel}: {exc!r}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    "addr, name",
    [
        ("ann@customer.test", None), ("Ann.Lee+order-7@mail.customer.test", "Ann Lee"), ("o'brien@x.test", "O'Brien"),
        ("a!#$%&'*+/=?^_`{|}~-z@x-y.test", None), ("x@localhost", "Ünïcode Name"), ("a.b.c@1.2.3", "a, b"),
        ("UPPER@EXAMPLE.TEST", ""), ("support@example.test", 'Support "Team"'),
        # Not plain: the header parser's way, as before.
        ('"quoted local"@x.test', None), ("a..b@x.test", None), (".a@x.test", None), ("a@-x.test", None),
        ("a@[127.0.0.1]", None), ("a@x_y.test", None),
    ],
)
def test_a_plain_address_is_taken_apart_as_the_header_parser_takes_it(addr: str, name: str | None) -> None:
    """compose._mailbox's plain path (decision 0054): the same Address, the same text."""
    from email.errors import MessageError
    from email.headerregistry import Address

    from postroom.core.compose import _PLAIN_ADDR_RE, _mailbox

    _mailbox.cache_clear()
    try:
        parsed = Address(display_name=name or "", addr_spec=addr)
    except (ValueError, IndexError, TypeError, MessageError):
        assert not _PLAIN_ADDR_RE.fullmatch(addr)
        with pytest.raises(UnsafeHeaderValue):
            _mailbox(addr, name, what="t")
        return
    ours = _mailbox(addr, name, what="t")
    assert (ours.username, ours.domain, ours.display_name, ours.addr_spec, str(ours)) == (
        parsed.username, parsed.domain, parsed.display_name, parsed.addr_spec, str(parsed)
    )
    assert ours == parsed
