"""core.headers.plain_addresses and the shortcuts of issue 9's ninth round (decision 0057):
a plain address list read without the email package's parser gives what
``getaddresses`` gives, both ways, on the fixtures, the samples, the corpus and
Hypothesis's values; ``decode_words`` and ``unfold`` give back text that has nothing to
decode or unfold as it was."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC
from email import message_from_bytes, policy
from email.utils import getaddresses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.core import headers
from postroom.core.headers import address_list, decode_words, plain_addresses, unfold
from postroom.mail.message import ParsedMail
from tests.unit.conftest import CORPUS, corpus_available, corpus_files

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted((ROOT / "tests" / "fixtures" / "emails").rglob("*.eml")) + sorted(
    (ROOT / "postroom_sim" / "samples").glob("*.eml")
)
ADDRESS_FIELDS = ("from", "to", "cc", "bcc", "reply-to", "sender", "delivered-to", "x-original-to", "return-path")


def reference_address_list(value: str | None, hint: str | None = None) -> list[tuple[str, str]]:
    """address_list as it was before decision 0057: always the email package's parser."""
    if not value:
        return []
    try:
        pairs = getaddresses([headers._unsurrogate(headers._FOLD_RE.sub("", value), hint)])
    except Exception:  # noqa: BLE001
        return []
    out: list[tuple[str, str]] = []
    for name, addr in pairs:
        addr = headers.clean_text(addr).strip("<>").lower()
        local, at, domain = addr.rpartition("@")
        if not at or not local or not domain or " " in addr:
            continue
        out.append((headers.clean_text(decode_words(name, hint)), addr))
    return out


def both_ways(value: str) -> bool:
    """The same answer either way; True when the plain path took it."""
    plain = plain_addresses(value)
    if plain is not None:
        assert plain == getaddresses([value]), value
    assert address_list(value) == reference_address_list(value), value
    return plain is not None


def address_values(raw: bytes) -> list[str]:
    msg = message_from_bytes(raw, policy=policy.compat32)
    return [unfold(str(v)) for k, v in msg.raw_items() if k.lower() in ADDRESS_FIELDS]


def test_fixtures_and_samples_both_ways() -> None:
    values = [v for path in FILES for v in address_values(path.read_bytes())]
    taken = sum(both_ways(v) for v in values)
    assert len(values) > 50
    assert taken > len(values) // 2  # the common shapes are the plain ones


@pytest.mark.skipif(not corpus_available(), reason="no corpus")
def test_corpus_both_ways() -> None:
    values = [v for rel in corpus_files() for v in address_values((CORPUS / rel).read_bytes())]
    assert sum(both_ways(v) for v in values) > 0


@pytest.mark.parametrize(
    "value",
    [
        "a@b.c",
        "Oliver Bennett <customer2+i-00000@customer.test>",
        '"Smith, J" <j@x.org>',
        ' a@b.c , "" <x@y>',
        "A  B<a@b>",
        "J. Smith <a@b>",
        "... <b@c>",
        "=?utf-8?q?J=C3=B6rg?= <a@b.c>",
        "x@y, z@w",
        "o'brien@example.test",
    ],
)
def test_plain_shapes(value: str) -> None:
    assert both_ways(value)


@pytest.mark.parametrize(
    "value",
    [
        "a@b,",  # a trailing comma: the parser's empty entry
        "a..b@c",
        '"a\\"b" <x@y>',
        "Name (comment) <a@b>",
        "undisclosed-recipients:;",
        "a@[127.0.0.1]",
        "a@b <c@d>",
        "Jörg <j@x.org>",
        "a@-b.c",
        "a@b_c.d",
        '"A" B <x@y>',
        "<a@b>",
        "a@b\t",
        "Tom\tJones <t@j.org>",
        "",
        " ",
    ],
)
def test_other_shapes_go_to_the_parser(value: str) -> None:
    assert plain_addresses(value) is None
    assert address_list(value) == reference_address_list(value)


_ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
_ODD = " .@<>\",;:()[]\\\t\r\nö"
atoms = st.text(alphabet=_ATEXT, min_size=1, max_size=6)
odd = st.text(alphabet=_ATEXT + _ODD, max_size=8)
labels = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,4}[A-Za-z0-9])?", fullmatch=True)
addr_specs = st.builds(
    lambda local, host: ".".join(local) + "@" + ".".join(host),
    st.lists(atoms, min_size=1, max_size=3),
    st.lists(labels, min_size=1, max_size=3),
)
names = st.one_of(
    st.lists(st.text(alphabet=_ATEXT + ".", min_size=1, max_size=6), min_size=1, max_size=3).map(
        lambda ws: " ".join(ws)
    ),
    st.text(alphabet=_ATEXT + " .,<>@:;()", max_size=10).map(lambda t: f'"{t}"'),
    odd,
)
entries = st.one_of(
    addr_specs,
    st.builds(lambda n, sp, a: f"{n}{sp}<{a}>", names, st.sampled_from(["", " ", "  "]), addr_specs),
    odd,
)


def _mutate(value: str, data: st.DataObject) -> str:
    if not value or not data.draw(st.booleans()):
        return value
    at = data.draw(st.integers(0, len(value)))
    return value[:at] + data.draw(st.sampled_from(list(_ODD) + ["..", "@", ",", '"'])) + value[at:]


@settings(max_examples=800, deadline=None)
@given(st.lists(entries, min_size=1, max_size=3), st.sampled_from([",", ", ", " , "]), st.data())
def test_hypothesis_both_ways(parts: list[str], sep: str, data: st.DataObject) -> None:
    value = _mutate(sep.join(parts), data)
    both_ways(value)
    both_ways(" " + value + " ")


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=40))
def test_decode_words_gives_plain_ascii_back(text: str) -> None:
    # The loop decode_words skips for such text finds no encoded-word and returns it.
    if "=?" not in text and "\x1b" not in text:
        assert decode_words(text) == text
        assert decode_words(text, "koi8-r") == text
    assert unfold(text) == headers._FOLD_RE.sub("", text)


def _messages() -> list[bytes]:
    raws = [p.read_bytes() for p in FILES]
    if corpus_available():
        raws += [(CORPUS / rel).read_bytes() for rel in corpus_files()]
    return raws


def _parsed_corpus() -> Iterator[ParsedMail]:
    """Each readable message of the fixtures and the corpus, parsed by mail.message.parse
    (the unreadable ones left out, as the engine quarantines them)."""
    from postroom.mail.message import UnreadableMessage, parse

    for raw in _messages():
        try:
            yield parse(raw)
        except UnreadableMessage:
            continue


def test_facts_and_classify_read_the_header_as_field_by_field() -> None:
    """mail.facts and autoreply._facts read every field in one pass (decision 0057): the
    same values as reading field by field with raw_header_values / header_text did."""
    from postroom.core import autoreply
    from postroom.core.headers import charset_hint, header_text, raw_header_values
    from postroom.mail.facts import _MAX_HEADERS, _decoded, facts_from_mail

    checked = 0
    for mail in _parsed_corpus():
        msg = mail.msg
        assert mail.charset_hint == charset_hint(msg)
        hint = charset_hint(msg)
        wanted: dict[str, tuple[str, ...]] = {}
        for index, name in enumerate(msg.keys()):
            if index >= _MAX_HEADERS:
                break
            if name.lower() not in wanted:
                wanted[name.lower()] = tuple(_decoded(v, hint) for v in raw_header_values(msg, name))
        assert facts_from_mail(mail).headers == wanted
        f = autoreply._facts(msg)
        froms = [p for v in raw_header_values(msg, "From") for p in reference_address_list(v)]
        auto = header_text(msg, "Auto-Submitted")
        assert (f.subject, f.from_name, f.from_addr, f.from_raw, f.precedence, f.has) == (
            header_text(msg, "Subject") or "",
            (froms[0][0] if froms else "").lower(),
            froms[0][1] if froms else "",
            " ".join(raw_header_values(msg, "From")).lower(),
            (header_text(msg, "Precedence") or "").lower(),
            frozenset(name.lower() for name in msg),
        )
        assert f.auto_submitted == (auto.split(";", 1)[0].strip().lower() if auto is not None else None)
        checked += 1
    assert checked > 40


def test_raw_header_fields_is_raw_header_values_per_name() -> None:
    """core.headers.raw_header_fields (stop 21's mend: one reader for mail.facts and
    autoreply._facts) gives each field what raw_header_values gives it, by names and
    for the first `limit` fields; on the fixtures and the corpus."""
    from postroom.core.headers import raw_header_fields, raw_header_values

    checked = 0
    for mail in _parsed_corpus():
        msg = mail.msg
        names = list(dict.fromkeys(name.lower() for name in msg.keys()))
        asked = ["From", "subject", "X-Absent", *names[:3]]
        assert raw_header_fields(msg, asked) == {n.lower(): raw_header_values(msg, n) for n in asked}
        assert raw_header_fields(msg) == {n: raw_header_values(msg, n) for n in names}
        assert list(raw_header_fields(msg, limit=2)) == list(dict.fromkeys(k.lower() for k in msg.keys()[:2]))
        checked += 1
    assert checked > 40


def test_parse_reads_the_header_as_field_by_field() -> None:
    """mail.message.parse reads its eleven fields in one pass (raw_header_fields,
    decision 0061): the same ParsedMail fields as reading each with raw_header_values /
    header_text, on the fixtures and the corpus."""
    from email.utils import parsedate_to_datetime

    from postroom.core.headers import address_list, header_text, msg_ids, raw_header_values
    from postroom.mail.message import addresses

    def listed(msg, *names: str) -> list[str]:
        out: list[str] = []
        for name in names:
            for value in raw_header_values(msg, name):
                out += [a for a in addresses(value) if a not in out]
        return out

    def first_id(values: list[str]) -> str | None:
        return next((ids[0] for ids in map(msg_ids, values) if ids), None)

    def date(msg):
        value = header_text(msg, "Date")
        if not value:
            return None
        try:
            parsed = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)

    checked = 0
    for mail in _parsed_corpus():
        msg = mail.msg
        froms = [p for v in raw_header_values(msg, "From") for p in address_list(v, mail.charset_hint)]
        assert (mail.from_name, mail.from_addr) == ((froms[0][0] or None, froms[0][1]) if froms else (None, None))
        assert mail.message_id == first_id(raw_header_values(msg, "Message-ID"))
        assert mail.reply_to == listed(msg, "Reply-To")
        assert (mail.to, mail.cc) == (listed(msg, "To"), listed(msg, "Cc"))
        assert mail.delivered_to == listed(msg, "Delivered-To", "X-Original-To")
        assert mail.subject == (header_text(msg, "Subject") or "")
        assert mail.in_reply_to == first_id(raw_header_values(msg, "In-Reply-To"))
        assert mail.references == msg_ids(" ".join(raw_header_values(msg, "References")))
        assert mail.date == date(msg)
        checked += 1
    assert checked > 40


def test_the_auto_response_reads_the_original_as_field_by_field() -> None:
    """compose._auto_response_parts reads the original's From, Reply-To, Subject,
    Message-ID and References in one pass (decision 0061): the name, subject, In-Reply-To
    and References it writes are what the field-by-field reads (raw_header_values,
    header_text, first_msg_id, references) give, on fixtures and corpus."""
    from postroom.core import compose
    from postroom.core.headers import (
        clean_text,
        first_msg_id,
        header_text,
        raw_header_values,
        references,
    )

    checked = 0
    for mail in _parsed_corpus():
        msg, customer = mail.msg, mail.from_addr or "carol@customer.test"
        try:
            headers, body = compose._auto_response_parts(
                msg, box_address="support@example.test", box_name=None, customer=customer,
                text="{name}", message_id="<ar.1@example.test>", subject_template="Re: {subject}", reference=None,
                date=None, customer_text=True,
            )
        except compose.UnsafeHeaderValue:
            continue
        to = compose._mailbox(customer, what="customer")
        senders = [p for h in raw_header_values(msg, "From") for p in address_list(h)]
        replies = [p for h in raw_header_values(msg, "Reply-To") for p in address_list(h)]
        name = next((d for d, a in senders + replies if d and a == to.addr_spec.lower()), "")
        name = name or next((d for d, _a in senders if d), "")
        assert body == (name or to.username)[: compose._MAX_CUSTOMER_WORDS]
        subject = compose.strip_subject_tag(header_text(msg, "Subject") or "")[: compose._MAX_CUSTOMER_WORDS]
        got = dict(headers)
        assert got["Subject"] == clean_text(compose._fill("Re: {subject}", {"subject": subject}))
        mid = (compose._echo_ids([first_msg_id(msg, "Message-ID")]) or [None])[0]
        assert got.get("In-Reply-To") == mid
        refs = compose._echo_ids([*references(msg), mid]) if mid else []
        assert got.get("References") == (" ".join(refs) if refs else None)
        checked += 1
    assert checked > 40
