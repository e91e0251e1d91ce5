"""Headers we write as text (``core.headers.put_header``/``settle_headers``, issue 9) come
out byte for byte as policy.default's header registry would have folded them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.core import compose
from postroom.core import correlation as corr
from postroom.core.headers import POLICY, put_header, settle_headers
from tests.unit.conftest import corpus_files, parsed

VALUES: list[tuple[str, object]] = [
    ("Subject", "Where is my parcel? [PR:abc]"),
    ("Subject", "Re:  two  spaces and a trailing one "),
    ("Subject", "Wo ist mein Paket? Grüße"),
    ("Subject", "=?utf-8?q?caf=C3=A9?= literally"),
    ("Subject", "A subject long enough that policy.default has to fold it onto a second line, and more"),
    ("Subject", "(a comment?) \"quotes\" and \\backslash\\ ; , : @ < >"),
    ("From", Address("Carol Customer via Example Support", addr_spec="outbound+tok@example.test")),
    ("From", Address("Carol C. Customer, Jr. via Support", addr_spec="outbound+tok@example.test")),
    ("From", Address('Carol "the" Customer (x) via Support', addr_spec="outbound+tok@example.test")),
    ("From", Address("Zoë Kundin via Support", addr_spec="outbound+tok@example.test")),
    ("From", Address("A display name long enough to need folding when written out in full via Support", addr_spec="o@example.test")),
    ("To", [Address("Alice", addr_spec="alice@example.test"), Address(addr_spec="bob@example.test")]),
    ("To", Address(addr_spec="agent@example.test")),
    ("Reply-To", Address(addr_spec="outbound+tok@example.test")),
    ("Message-ID", "<f.abc.1@pr.example.test>"),
    ("References", "<a@x.test> <b@x.test>"),
    ("References", " ".join(f"<{'id' * 12}-{i}@outlook.example.test>" for i in range(4))),
    ("Date", "Mon, 07 Dec 2026 04:30:00 +0000"),
    ("X-Postroom-Interaction", str(uuid.UUID(int=7))),
    ("X-Auto-Response-Suppress", "OOF, AutoReply"),
]


def test_put_header_writes_what_the_registry_writes() -> None:
    for name, value in VALUES:
        ours, theirs = EmailMessage(policy=POLICY), EmailMessage(policy=POLICY)
        put_header(ours, name, value)
        theirs[name] = value
        assert ours.as_bytes() == theirs.as_bytes(), (name, value)
        assert str(ours[name]) == str(theirs[name]), (name, value)


def test_settle_headers_writes_what_the_registry_writes() -> None:
    settled = []
    for name, value in VALUES:
        msg = EmailMessage(policy=POLICY)
        msg[name] = value
        msg.set_content("Grüße\n", charset="utf-8", cte="quoted-printable")
        before = msg.as_bytes()
        settle_headers(msg)
        assert msg.as_bytes() == before, (name, value)
        settled.append(type(msg.raw_items().__next__()[1]) is str)
        # set_content's own headers are short ASCII: stored as text.
        assert all(type(v) is str for k, v in msg.raw_items() if k.startswith(("Content-", "MIME-")))
    # The short ASCII ones were stored as text, the rest kept their header objects.
    assert any(settled) and not all(settled)


def test_put_header_still_refuses_a_second_subject() -> None:
    msg = EmailMessage(policy=POLICY)
    put_header(msg, "Subject", "one")
    with pytest.raises(ValueError, match="at most 1 Subject"):
        put_header(msg, "Subject", "two")


def _registry_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compose, "put_header", lambda msg, name, value: msg.__setitem__(name, value))
    monkeypatch.setattr(compose, "settle_headers", lambda msg: None)


def _forward(original: EmailMessage) -> bytes:
    token = "t0k3nT0K3Nt0k3nT0K3N"
    return compose.forward_to_agent(
        original,
        agent="alice@example.test",
        agent_name="Alice Agent",
        reply_to=corr.reply_address("outbound@example.test", token),
        message_id=f"<f.{token}.1@example.test>",
        tag=corr.subject_tag(token),
        guid=uuid.UUID(int=1),
        box_address="support@example.test",
        box_name="Example Support",
    ).as_bytes()


def _auto_response(original: EmailMessage) -> bytes:
    return compose.auto_response(
        original,
        box_address="support@example.test",
        box_name="Example Support",
        customer="carol@customer.test",
        text="Thank you, {name}: we have your message about {subject}.",
        message_id="<ar.1@example.test>",
        date=datetime(2026, 12, 7, 4, 30, tzinfo=UTC),
        customer_text=True,
    ).as_bytes()


def _reply(original: EmailMessage) -> bytes:
    return compose.reply_to_customer(
        original,
        box_address="support@example.test",
        box_name="Example Support",
        customer="Carol <carol@customer.test>",
        original_message_id="<carol-1@customer.test>",
        original_references=["<root@customer.test>"],
        message_id="<re.1@example.test>",
        subject="Wo ist mein Paket?",
        outbound="outbound@example.test",
        date=datetime(2026, 12, 7, 4, 30, tzinfo=UTC),
    ).as_bytes()


def test_builders_write_the_corpus_as_the_registry_did(monkeypatch: pytest.MonkeyPatch) -> None:
    rels = corpus_files("inbound")
    if not rels:
        pytest.skip("no corpus")
    builders = (_forward, _auto_response, _reply)
    ours: dict[tuple[str, int], bytes | str] = {}
    originals = {}
    for rel in rels:
        try:
            originals[rel] = parsed(rel).msg
        except Exception:  # noqa: BLE001 - refusals are test_message_parse's business
            continue

    def build_all() -> dict[tuple[str, int], bytes | str]:
        out: dict[tuple[str, int], bytes | str] = {}
        for rel, original in originals.items():
            for i, build in enumerate(builders):
                try:
                    out[rel, i] = build(original)
                except Exception as exc:  # noqa: BLE001 - the same refusal on both sides
                    out[rel, i] = type(exc).__name__
        return out

    ours = build_all()
    _registry_only(monkeypatch)
    theirs = build_all()
    differ = [key for key in ours if ours[key] != theirs[key]]
    assert not differ, differ[:10]
    assert len(ours) > 100


# -- the auto-response written as text (decision 0049) ----------------------------------------

AUTO_VARIANTS: list[dict[str, object]] = [
    {},
    {"box_name": None},
    {"box_name": 'Support "Desk", Example'},
    {"box_name": "Kundendienst Müller"},
    {"box_name": "A box name long enough that the From line needs folding when it is written out"},
    {"subject_template": "Ihre Nachricht: {subject}"},
    {"subject_template": "[{reference}] We have your mail about {subject} and will answer it as soon as we can"},
    {"subject_template": "=?utf-8?q?x?= {reference}"},
    {"text": ""},
    {"text": "One line without its end"},
    {"text": "Tabs\there\n\nand blank lines\n\n\n"},
    {"text": "Grüße, {name}\n"},
    {"text": "A form feed\x0cin it\n"},
    {"text": "A carriage return\r\nin it\n"},
    {"text": "x" * 1200 + "\n"},
    {"customer_text": False},
    {"reference": None, "date": None},
    {"customer": "Carol.Customer+tag@customer.test"},
]


def _auto_args(original: EmailMessage, **change: object) -> dict[str, object]:
    args: dict[str, object] = {
        "box_address": "support@example.test",
        "box_name": "Example Support",
        "customer": "carol@customer.test",
        "text": "Thank you, {name}: we have your message about {subject}.\nReference {reference}, {box}.\n",
        "message_id": "<ar.1@example.test>",
        "subject_template": "Re: {subject} [{reference}]",
        "reference": "0A1B2C3D4E",
        "date": datetime(2026, 12, 7, 4, 30, tzinfo=UTC),
        "customer_text": True,
    }
    args.update(change)
    return {"original": original, **args}


def _both(args: dict[str, object]) -> tuple[bytes | str, bytes | str]:
    out: list[bytes | str] = []
    for build in (compose.auto_response_bytes, lambda **kw: compose.auto_response(**kw).as_bytes()):
        try:
            out.append(build(**args))
        except Exception as exc:  # noqa: BLE001 - the same refusal on both sides
            out.append(type(exc).__name__)
    return out[0], out[1]


def test_the_auto_response_written_as_text_is_the_message_built_byte_for_byte() -> None:
    rels = corpus_files("inbound")
    if not rels:
        pytest.skip("no corpus")
    compared = 0
    for rel in rels:
        try:
            original = parsed(rel).msg
        except Exception:  # noqa: BLE001 - refusals are test_message_parse's business
            continue
        for change in AUTO_VARIANTS if compared < 40 else AUTO_VARIANTS[:2]:
            fast, built = _both(_auto_args(original, **change))
            assert fast == built, (rel, change)
            compared += 1
    assert compared > 100


def test_a_plain_auto_response_is_written_as_text(monkeypatch: pytest.MonkeyPatch) -> None:
    original = EmailMessage(policy=POLICY)
    original["From"] = "Carol Customer <carol@customer.test>"
    original["Subject"] = "Where is my order?"
    original["Message-ID"] = "<c-1@customer.test>"
    original["References"] = "<root@customer.test>"
    original.set_content("Hello\n")
    built = compose.auto_response(**_auto_args(original)).as_bytes()

    def no_message(*_args: object, **_kw: object) -> None:
        raise AssertionError("built as a message")

    monkeypatch.setattr(compose, "text_body", no_message)
    assert compose.auto_response_bytes(**_auto_args(original)) == built
    assert b"\nIn-Reply-To: <c-1@customer.test>\n" in built
    assert b"\nReferences: <root@customer.test> <c-1@customer.test>\n" in built
    assert b"\nAuto-Submitted: auto-replied\n" in built


def _threaded(ids: list[str]) -> EmailMessage:
    original = EmailMessage(policy=POLICY)
    original["From"] = "Carol Customer <carol@customer.test>"
    original["Subject"] = "Where is my order?"
    original.set_raw("Message-ID", ids[-1])
    if ids[:-1]:
        original.set_raw("References", " ".join(ids[:-1]))
    original.set_content("Hello\n")
    return original


def test_a_long_references_is_folded_as_the_generator_folds_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decision 0066: a thread's References too long for one line is written as text,
    folded where the generator folds it; the bytes of the message built (the bench's
    threaded mails took the message's path for this alone)."""
    ids = [
        "<9d2f1c84-5a7b-4e3d-a1c6-2f8e0b7d4a95@customer.test>", "<20240528091502.4417.support@example.test>",
        "<6a8e3b15-0d4c-4f92-87b1-c5e2d9f0a371@customer.test>", "<bench-x-00490-b5e7e6b168c8@customer.test>",
    ]
    original = _threaded(ids)
    built = compose.auto_response(**_auto_args(original, customer_text=False)).as_bytes()

    def no_message(*_args: object, **_kw: object) -> None:
        raise AssertionError("built as a message")

    monkeypatch.setattr(compose, "text_body", no_message)
    assert compose.auto_response_bytes(**_auto_args(original, customer_text=False)) == built
    assert b"\nReferences: <9d2f1c84-5a7b-4e3d-a1c6-2f8e0b7d4a95@customer.test>\n <20240528" in built


_ID_PART = st.text(alphabet="abcXYZ019.-+=?_", min_size=1, max_size=40).filter(
    lambda s: not s.startswith(".") and not s.endswith(".") and ".." not in s
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_ID_PART, _ID_PART), min_size=1, max_size=9), st.integers(0, 60))
def test_references_of_any_lengths_as_the_message_built(parts: list[tuple[str, str]], pad: int) -> None:
    """Every References the text path writes is the built message's, byte for byte, at
    every length of ids (lines just under, at and over 78 characters, ids over 66, odd
    ones the message's path takes: ``=?``, a leading dot...)."""
    ids = [f"<{local}@{domain}{'x' * (pad if i == 0 else 0)}>" for i, (local, domain) in enumerate(parts)]
    fast, built = _both(_auto_args(_threaded(ids), customer_text=False))
    assert fast == built


def test_folded_ids_takes_only_what_it_folds_as_the_generator() -> None:
    assert compose._folded_ids("Subject", "<a@b> <c@d>") is None
    assert compose._folded_ids("References", "<a@b>  <c@d>") is None  # two spaces
    assert compose._folded_ids("References", "<a=?b@c> <c@d>") is None
    assert compose._folded_ids("References", "<" + "a" * 70 + "@b>") is None  # no room on the first line
    assert compose._folded_ids("References", "<a@b> <" + "c" * 80 + "@d>") is None
