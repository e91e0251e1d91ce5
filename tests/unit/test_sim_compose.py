"""The simulator's pure parts: agent replies per mail client, and the customer samples."""

from __future__ import annotations

import base64
import email
import random
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage

import pytest

from postroom_sim import (
    SAMPLES_DIR,
    STYLES,
    compose_reply,
    is_auto_submitted,
    original_text,
    prepare_customer_mail,
    sample_paths,
)
from postroom_sim.run import parse_agent, parse_customer

FORWARDED = (
    b"Return-Path: <support@example.test>\r\n"
    b"Delivered-To: alice@example.test\r\n"
    b"From: Oliver Bennett via Support <support@example.test>\r\n"
    b"To: Alice Agent <alice@example.test>\r\n"
    b"Reply-To: Support <outbound+t0k3n@example.test>\r\n"
    b"Subject: [PR:4F7Q2] Order #40117 still not here\r\n"
    b"Date: Mon, 04 Mar 2024 09:12:47 +0000\r\n"
    b"Message-ID: <fwd.4f7q2.1@example.test>\r\n"
    b"References: <cust.1@customer.test>\r\n"
    b"X-Postroom-Interaction: 4F7Q2\r\n"
    b"X-Postroom-Token: t0k3n\r\n"
    b"X-Custom-Thing: keep-out\r\n"
    b"Thread-Index: AdqcfzuIcZkzFVQeQ5qYb9t3B0U1Xw==\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Hello,\r\n"
    b"\r\n"
    b"I ordered walking boots \xe2\x80\x94 order #40117 \xe2\x80\x94 two weeks ago.\r\n"
    b"> something they quoted themselves\r\n"
    b"\r\n"
    b"Thanks,\r\n"
    b"Oliver\r\n"
)
NOW = datetime(2024, 3, 4, 10, 30, tzinfo=UTC)
TEXT = "Hi Oliver,\n\nthe parcel left our warehouse today \u2014 sorry for the wait.\n\nAlice"


def _parse(data: bytes) -> EmailMessage:
    return email.message_from_bytes(data, policy=policy.default)  # type: ignore[return-value]


def _reply(style: str, raw: bytes = FORWARDED, **kw: object) -> EmailMessage:
    kw.setdefault("text", TEXT)
    return compose_reply(
        _parse(raw),
        agent_addr="alice@example.test",
        agent_name="Alice Agent",
        style=style,  # type: ignore[arg-type]
        date=NOW,
        rng=random.Random(7),
        **kw,  # type: ignore[arg-type]
    )


def _wire(msg: EmailMessage) -> EmailMessage:
    """What the receiving side parses: the reply's bytes, read back."""
    data = msg.as_bytes(policy=policy.SMTP)
    back = _parse(data)
    assert not back.defects
    for part in back.walk():
        assert not part.defects, (part.get_content_type(), part.defects)
    return back


def _plain(msg: EmailMessage) -> str:
    body = msg.get_body(preferencelist=("plain",))
    assert body is not None
    return body.get_content().replace("\r\n", "\n")


# -- every style ------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_reply_addresses_threads_and_identity(style: str) -> None:
    reply = _wire(_reply(style))

    assert [a.addr_spec for a in reply["To"].addresses] == ["outbound+t0k3n@example.test"]
    assert reply["From"].addresses[0].addr_spec == "alice@example.test"
    assert reply["From"].addresses[0].display_name == "Alice Agent"
    assert reply["Cc"] is None
    assert reply["In-Reply-To"] == "<fwd.4f7q2.1@example.test>"
    if style == "outlook":
        assert reply["References"] is None
        assert reply["Thread-Topic"] == "[PR:4F7Q2] Order #40117 still not here"
        assert reply["Thread-Index"]
    else:
        assert reply["References"].split() == [
            "<cust.1@customer.test>",
            "<fwd.4f7q2.1@example.test>",
        ]

    mid = reply["Message-ID"]
    assert mid.startswith("<") and mid.endswith("@example.test>")
    assert mid != "<fwd.4f7q2.1@example.test>"
    assert reply["Date"].datetime == NOW
    assert reply["MIME-Version"] is not None


@pytest.mark.parametrize("style", STYLES)
def test_reply_copies_no_custom_header(style: str) -> None:
    reply = _wire(_reply(style))
    names = {name.lower() for name in reply.keys()}  # noqa: SIM118 (headers, not a dict)
    assert not any(n.startswith("x-postroom") for n in names)
    assert {n for n in names if n.startswith("x-")} <= {"x-mailer"}
    assert "reply-to" not in names and "delivered-to" not in names and "return-path" not in names
    for part in reply.walk():
        assert not any(k.lower().startswith("x-postroom") for k in part.keys())  # noqa: SIM118


@pytest.mark.parametrize("style", STYLES)
def test_reply_subject_keeps_tag(style: str) -> None:
    reply = _wire(_reply(style))
    prefix = "RE: " if style == "outlook" else "Re: "
    assert reply["Subject"] == prefix + "[PR:4F7Q2] Order #40117 still not here"


@pytest.mark.parametrize("style", STYLES)
def test_reply_subject_is_not_prefixed_twice(style: str) -> None:
    raw = FORWARDED.replace(b"Subject: [PR:4F7Q2]", b"Subject: Re: [PR:4F7Q2]")
    reply = _wire(_reply(style, raw))
    prefix = "RE: " if style == "outlook" else "Re: "
    assert reply["Subject"] == prefix + "[PR:4F7Q2] Order #40117 still not here"


@pytest.mark.parametrize("style", STYLES)
def test_reply_body_holds_agent_text_and_the_original(style: str) -> None:
    body = _plain(_wire(_reply(style)))
    assert "the parcel left our warehouse today \u2014 sorry for the wait." in body
    if style == "outlook":  # unquoted original below a header block
        assert "I ordered walking boots \u2014 order #40117 \u2014 two weeks ago." in body
        assert "\n> something they quoted themselves" in body
    else:
        assert "\n> I ordered walking boots \u2014 order #40117 \u2014 two weeks ago." in body
        assert "\n>> something they quoted themselves" in body


@pytest.mark.parametrize("style", STYLES)
def test_reply_non_ascii_name_and_text_survive(style: str) -> None:
    reply = compose_reply(
        _parse(FORWARDED),
        agent_addr="juergen@example.test",
        agent_name="Jürgen Weiß",
        style=style,  # type: ignore[arg-type]
        text="Grüße aus München",
        date=NOW,
    )
    back = _wire(reply)
    assert back["From"].addresses[0].display_name == "Jürgen Weiß"
    assert "Grüße aus München" in _plain(back)
    data = reply.as_bytes(policy=policy.SMTP)
    head = data.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()


# -- each client's own shape ------------------------------------------------------------


def test_thunderbird_quotes_above_the_reply_in_flowed_text() -> None:
    reply = _wire(_reply("thunderbird"))
    assert reply.get_content_type() == "text/plain"
    assert reply.get_param("format") == "flowed"
    assert reply["User-Agent"] == "Mozilla Thunderbird"
    body = _plain(reply)
    assert body.startswith("On 3/4/24 9:12 AM, Oliver Bennett via Support wrote:\n> Hello,\n>\n")
    assert body.index("> Oliver") < body.index("Hi Oliver,")
    assert all(line == line.rstrip() for line in body.split("\n"))


def test_thunderbird_can_top_post() -> None:
    body = _plain(_wire(_reply("thunderbird", top_post=True)))
    assert body.startswith("Hi Oliver,")
    assert body.index("Alice") < body.index("wrote:")


def test_apple_puts_the_attribution_inside_the_quote() -> None:
    reply = _wire(_reply("apple"))
    assert reply.get_content_type() == "text/plain"
    assert reply["X-Mailer"].startswith("Apple Mail (")
    assert reply["Mime-Version"].startswith("1.0 (Mac OS X Mail")
    body = _plain(reply)
    assert body.startswith("Hi Oliver,")
    assert (
        "\n> On Mar 4, 2024, at 9:12 AM, Oliver Bennett via Support <support@example.test> wrote:\n"
        in body
    )


def test_gmail_is_multipart_alternative_with_a_gmail_quote() -> None:
    reply = _wire(_reply("gmail"))
    assert reply.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in reply.iter_parts()] == ["text/plain", "text/html"]
    assert reply["User-Agent"] is None and reply["X-Mailer"] is None
    body = _plain(reply)
    assert body.startswith("Hi Oliver,")
    assert (
        "\nOn Mon, Mar 4, 2024 at 9:12 AM Oliver Bennett via Support <support@example.test> wrote:\n"
        in body
    )
    markup = reply.get_body(preferencelist=("html",)).get_content()
    assert 'class="gmail_quote"' in markup
    assert "I ordered walking boots \u2014 order #40117" in markup
    assert "&gt; something they quoted themselves" in markup


def test_outlook_top_posts_a_header_block() -> None:
    reply = _wire(_reply("outlook"))
    assert reply.get_content_type() == "multipart/alternative"
    assert reply["X-Mailer"] == "Microsoft Outlook 16.0"
    body = _plain(reply)
    assert body.startswith("Hi Oliver,")
    block = (
        "From: Oliver Bennett via Support <support@example.test>\n"
        "Sent: Monday, March 4, 2024 9:12 AM\n"
        "To: Alice Agent <alice@example.test>\n"
        "Subject: [PR:4F7Q2] Order #40117 still not here\n"
    )
    assert block in body
    assert body.index("Alice\n") < body.index(block) < body.index("I ordered walking boots")
    markup = reply.get_body(preferencelist=("html",)).get_content()
    assert "<b>Sent:</b> Monday, March 4, 2024 9:12 AM" in markup


def test_outlook_thread_index_extends_the_parents() -> None:
    parent = base64.b64decode("AdqcfzuIcZkzFVQeQ5qYb9t3B0U1Xw==")
    child = base64.b64decode(_reply("outlook")["Thread-Index"])
    assert len(child) == len(parent) + 5 and child.startswith(parent)

    raw = FORWARDED.replace(b"Thread-Index: AdqcfzuIcZkzFVQeQ5qYb9t3B0U1Xw==\r\n", b"")
    fresh = base64.b64decode(_reply("outlook", raw)["Thread-Index"])
    assert len(fresh) == 22 and fresh[0] == 1


# -- odd parents --------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_without_reply_to_the_reply_goes_to_from(style: str) -> None:
    raw = FORWARDED.replace(b"Reply-To: Support <outbound+t0k3n@example.test>\r\n", b"")
    reply = _wire(_reply(style, raw))
    assert [a.addr_spec for a in reply["To"].addresses] == ["support@example.test"]


@pytest.mark.parametrize("style", STYLES)
def test_parent_with_in_reply_to_but_no_references(style: str) -> None:
    raw = FORWARDED.replace(b"References: <cust.1@customer.test>", b"In-Reply-To: <older@x.test>")
    reply = _wire(_reply(style, raw))
    if style != "outlook":
        assert reply["References"].split() == ["<older@x.test>", "<fwd.4f7q2.1@example.test>"]


@pytest.mark.parametrize("style", STYLES)
def test_html_only_parent_is_quoted_as_text(style: str) -> None:
    head, _, _ = FORWARDED.partition(b"\r\n\r\n")
    head = head.replace(b"Content-Type: text/plain; charset=utf-8", b"Content-Type: text/html")
    head = head.replace(b"Content-Transfer-Encoding: 8bit", b"Content-Transfer-Encoding: 7bit")
    raw = head + (
        b"\r\n\r\n<html><head><style>p {color: red}</style></head><body>"
        b"<p>Where is my parcel?</p><p>Regards,<br>Oliver</p></body></html>\r\n"
    )
    body = _plain(_wire(_reply(style, raw)))
    assert "Where is my parcel?" in body
    assert "color: red" not in body and "<p>" not in body


def test_compat32_message_is_accepted() -> None:
    legacy = email.message_from_bytes(FORWARDED)  # compat32 Message
    reply = compose_reply(
        legacy, agent_addr="alice@example.test", agent_name="Alice", style="gmail", text="ok"
    )
    assert reply["In-Reply-To"] == "<fwd.4f7q2.1@example.test>"


def test_unknown_style_is_refused() -> None:
    with pytest.raises(ValueError):
        compose_reply(
            _parse(FORWARDED),
            agent_addr="a@example.test",
            agent_name="A",
            style="eudora",  # type: ignore[arg-type]
            text="x",
        )


def test_replies_get_fresh_message_ids() -> None:
    fwd = _parse(FORWARDED)
    ids = {
        compose_reply(fwd, agent_addr="a@example.test", agent_name="A", style=s, text="x")[
            "Message-ID"
        ]
        for s in STYLES
        for _ in range(3)
    }
    assert len(ids) == 3 * len(STYLES)


def test_original_text_and_auto_submitted() -> None:
    assert original_text(_parse(FORWARDED)).startswith("Hello,\n\nI ordered walking boots")
    notice = _parse(b"Auto-Submitted: auto-generated\r\nSubject: n\r\n\r\nx\r\n")
    human = _parse(b"Auto-Submitted: no\r\nSubject: n\r\n\r\nx\r\n")
    plain = _parse(b"Subject: n\r\n\r\nx\r\n")
    assert is_auto_submitted(notice)
    assert not is_auto_submitted(human)
    assert not is_auto_submitted(plain)


# -- samples ----------------------------------------------------------------------------


def test_there_are_about_a_dozen_samples_and_a_license() -> None:
    assert len(sample_paths()) >= 12
    license_text = (SAMPLES_DIR / "LICENSE.txt").read_text()
    assert "MIT" in license_text and "Postroom" in license_text


@pytest.mark.parametrize("path", sample_paths(), ids=lambda p: p.name)
def test_sample_parses_and_is_complete(path) -> None:  # type: ignore[no-untyped-def]
    msg = _parse(path.read_bytes())
    assert not msg.defects
    for name in ("From", "To", "Subject", "Message-ID", "Date", "MIME-Version"):
        assert msg[name], name
    assert msg["From"].addresses[0].domain == "customer.test"
    assert msg["From"].addresses[0].display_name
    assert {a.addr_spec for a in msg["To"].addresses} <= {
        "support@example.test",
        "sales@example.test",
    }
    assert msg["Date"].datetime is not None
    assert msg["X-Mailer"] or msg["User-Agent"] or "mail.customer.test" in msg["Message-ID"]
    body = msg.get_body(preferencelist=("plain", "html"))
    assert body is not None and body.get_content().strip()


def test_samples_cover_the_cases() -> None:
    msgs = {p.name: _parse(p.read_bytes()) for p in sample_paths()}
    by_type = {name: m.get_content_type() for name, m in msgs.items()}
    charsets = {
        (part.get_content_charset() or "").lower(): part["Content-Transfer-Encoding"]
        for m in msgs.values()
        for part in m.walk()
        if part.get_content_maintype() == "text"
    }
    assert "quoted-printable" in str(charsets.get("utf-8")) or any(
        m.get_body(("plain",))["Content-Transfer-Encoding"] == "quoted-printable"
        and "ü" in m.get_body(("plain",)).get_content()
        for m in msgs.values()
        if m.get_body(("plain",)) is not None
    )
    assert "iso-8859-1" in charsets
    assert "multipart/alternative" in by_type.values()
    attachments = [a for m in msgs.values() for a in m.iter_attachments()]
    assert any(a.get_content_type() == "application/octet-stream" for a in attachments)
    assert 100 < len(attachments[0].get_content()) < 2000
    assert any("sales@example.test" in str(m["To"]) for m in msgs.values())
    assert any(m["In-Reply-To"] and "\n> " in _plain(m) for m in msgs.values())
    assert any(len(_plain(m).strip().splitlines()) == 1 for m in msgs.values())
    assert len({m["From"].addresses[0].addr_spec for m in msgs.values()}) == len(msgs)


# -- re-addressing a sample (send_customer_mail's pure half) ---------------------------------


def test_prepare_customer_mail_readdresses_and_keeps_the_body() -> None:
    path = SAMPLES_DIR / "04-refund-request-de.eml"
    data, mid = prepare_customer_mail(
        path, from_addr="kunde7@customer.test", to_addr="support@example.test", date=NOW
    )
    assert b"\n" not in data.replace(b"\r\n", b"")
    msg = _parse(data)
    assert msg["Message-ID"] == mid and mid.endswith("@customer.test>")
    assert msg["From"].addresses[0].addr_spec == "kunde7@customer.test"
    assert msg["From"].addresses[0].display_name == "Jürgen Weiß"  # the sample's name stays
    assert msg["To"] == "support@example.test"
    assert msg["Date"].datetime == NOW
    assert msg["Subject"] == "Rückerstattung für Bestellung 40211"
    assert [k.lower() for k in msg.keys()].count("message-id") == 1  # noqa: SIM118
    original = path.read_bytes().replace(b"\n", b"\r\n").split(b"\r\n\r\n", 1)[1]
    assert data.split(b"\r\n\r\n", 1)[1] == original
    assert "Kaffeemühle" in msg.get_content()


def test_prepare_customer_mail_gives_each_send_a_new_identity() -> None:
    path = SAMPLES_DIR / "10-one-liner.eml"
    a, mid_a = prepare_customer_mail(path, from_addr="x@customer.test", to_addr="s@example.test")
    b, mid_b = prepare_customer_mail(path, from_addr="x@customer.test", to_addr="s@example.test")
    assert mid_a != mid_b and a != b


def test_prepare_customer_mail_with_name_subject_and_8bit_body() -> None:
    data, _ = prepare_customer_mail(
        SAMPLES_DIR / "05-facture-fr-latin1.eml",
        from_addr="Zoë Durand <zoe@customer.test>",
        to_addr="Support <support@example.test>",
        subject="Facture erronée",
        message_id="fixed@customer.test",
    )
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.isascii()
    assert b"d\xe9m\xe9nag\xe9" in body  # the raw ISO-8859-1 bytes are kept
    msg = _parse(data)
    assert msg["Message-ID"] == "<fixed@customer.test>"
    assert msg["From"].addresses[0].display_name == "Zoë Durand"
    assert msg["Subject"] == "Facture erronée"
    assert "déménagé" in msg.get_content()


def test_cli_specs() -> None:
    assert parse_agent("alice@example.test:pw:outlook") == ("alice@example.test", "pw", "outlook")
    assert parse_agent("bob@example.test:p:w") == ("bob@example.test", "p:w", "thunderbird")
    assert parse_customer("a@customer.test:pw") == "a@customer.test"
    assert parse_customer("a@customer.test") == "a@customer.test"


WITH_COPIES = FORWARDED.replace(
    b"To: Alice Agent <alice@example.test>\r\n",
    b"To: Alice Agent <alice@example.test>, Team <team@example.test>\r\n"
    b"Cc: Boss <boss@example.test>, alice@example.test\r\n",
)


@pytest.mark.parametrize("style", STYLES)
def test_reply_all_adds_everyone_but_the_agent(style: str) -> None:
    msg = _wire(_reply(style, WITH_COPIES, reply_all=True))
    to = [a.addr_spec for a in msg["To"].addresses]
    cc = [a.addr_spec for a in msg["Cc"].addresses] if msg["Cc"] else []
    everyone = to + cc
    assert to[0] == "outbound+t0k3n@example.test"
    assert "alice@example.test" not in everyone
    assert {"team@example.test", "boss@example.test"} <= set(everyone)
    assert len(everyone) == len(set(everyone))
    # Thunderbird and Apple Mail answer the From as well as the Reply-To.
    assert ("support@example.test" in to) == (style in ("thunderbird", "apple"))


@pytest.mark.parametrize("style", STYLES)
def test_plain_reply_has_no_cc(style: str) -> None:
    msg = _wire(_reply(style, WITH_COPIES))
    assert msg["Cc"] is None
    assert [a.addr_spec for a in msg["To"].addresses] == ["outbound+t0k3n@example.test"]
