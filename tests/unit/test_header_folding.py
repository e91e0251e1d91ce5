"""Headers we compose keep every space between words when they are folded with RFC 2047
encoded-words (``core.headers.POLICY``).

CPython 3.11's folder can end one encoded-word with a word and start the next encoded-word
with the following one, the space between them written as the fold itself; a reader
drops whitespace between two encoded-words (RFC 2047 §6.2), so the customer read
"Путінхуйло" for "Путін хуйло" (corpus phpmmp-m0021's subject, forwarded). These tests
read each written header back the way a mail client does: unfold, then decode.
"""

from __future__ import annotations

from email import message_from_bytes
from email.headerregistry import Address
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.core import compose
from postroom.core.headers import POLICY, address_list, header_text

SUBJECT = "occurs when divided into an array, and the last e of the array! Путін хуйло!!!!!!"
WORDS = ["Путін", "хуйло", "日本語", "テスト", "école", "naïve", "hello", "a", "longerword", "ÄÖÜ", "x" * 20, "=?x?="]


def _read(raw: bytes) -> EmailMessage:
    return message_from_bytes(raw, policy=POLICY)  # type: ignore[return-value]


def _written(subject: str, display_name: str) -> EmailMessage:
    msg = EmailMessage(policy=POLICY)
    msg["Subject"] = subject
    msg["To"] = Address(display_name=display_name, addr_spec="carol@example.test")
    msg.set_content("hi\n")
    return _read(msg.as_bytes())


@pytest.mark.parametrize("prefix", range(1, 80, 3))
def test_a_folded_subject_keeps_the_space_between_two_encoded_words(prefix: int) -> None:
    # Several of these lengths lost the space before the fix (the fold fell between
    # "Путін" and "хуйло").
    subject = "x" * prefix + " " + SUBJECT
    back = _written(subject, "Carol")
    assert header_text(back, "Subject") == subject


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(WORDS), min_size=1, max_size=16))
def test_subjects_and_display_names_read_back_as_written(words: list[str]) -> None:
    text = " ".join(words)
    name = text[:60].strip()
    back = _written(text, name)
    assert header_text(back, "Subject") == text
    assert address_list(_raw(back, "To")) == [(name, "carol@example.test")]
    for line in back.as_bytes().split(b"\n"):
        assert len(line) <= 998


def _raw(msg: EmailMessage, name: str) -> str:
    return next(str(v) for k, v in msg.raw_items() if k.lower() == name.lower())


def test_an_auto_response_to_a_long_non_ascii_subject_keeps_its_spaces() -> None:
    original = EmailMessage(policy=POLICY)
    original["From"] = "Іван Петренко <ivan@example.test>"
    original["To"] = "support@example.test"
    original["Subject"] = SUBJECT
    original["Message-ID"] = "<m1@example.test>"
    original.set_content("Добрий день\n")
    reply = compose.auto_response(
        _read(original.as_bytes()),
        box_address="support@example.test",
        box_name="Support",
        customer="ivan@example.test",
        text="We have your message.",
        message_id="<a1@pr.example.test>",
        subject_template="Re: {subject} — ваш запит",
        customer_text=True,
    )
    back = _read(reply.as_bytes())
    assert header_text(back, "Subject") == f"Re: {SUBJECT} — ваш запит"
