"""postroom.core.correlation: tokens survive real clients and MTAs, and cannot be forged."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.core.correlation import (
    TOKEN_LENGTH,
    ParsedToken,
    candidate_tokens,
    find_tokens_in_text,
    forward_message_id,
    mint_token,
    parse_token,
    reply_address,
    strip_subject_tag,
    strip_tokens,
    subject_tag,
    token_from_address,
    token_from_message_id,
    token_from_subject,
    verify_token,
)

SECRET = b"correlation-test-secret-0123456789"
GUID = uuid.UUID("5b0e6f52-43c4-4b7c-9d3e-2f3a1c9e8d71")
AGENT = "alice@agents.example.test"
OUTBOUND = "outbound@example.test"
ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"


def token(guid: uuid.UUID = GUID, agent: str = AGENT) -> str:
    return mint_token(SECRET, guid, agent)


def test_a_token_is_39_lowercase_base32_characters() -> None:
    t = token()
    assert len(t) == TOKEN_LENGTH == 39
    assert set(t) <= set(ALPHABET)
    assert len(reply_address(OUTBOUND, t).split("@")[0]) <= 64  # RFC 5321 §4.5.3.1.1


def test_it_round_trips_the_guid_and_verifies_for_its_agent() -> None:
    t = token()
    parsed = parse_token(t)
    assert parsed == ParsedToken(guid=GUID, mac=parsed.mac if parsed else b"")
    assert parsed is not None and len(parsed.mac) == 8
    assert verify_token(SECRET, t, AGENT)


def test_it_is_deterministic_and_differs_per_agent_and_guid() -> None:
    assert token() == token()
    assert token(agent="bob@agents.example.test") != token()
    assert token(guid=uuid.uuid4()) != token()


def test_a_wrong_agent_or_secret_is_rejected() -> None:
    t = token()
    assert not verify_token(SECRET, t, "mallory@agents.example.test")
    assert not verify_token(b"another secret", t, AGENT)


def test_the_agent_address_is_compared_case_insensitively() -> None:
    assert verify_token(SECRET, token(), "Alice@Agents.EXAMPLE.test")
    assert token(agent="ALICE@agents.example.test") == token()


def test_mtas_that_case_fold_the_token_do_not_break_it() -> None:
    t = token()
    assert parse_token(t.upper()) == parse_token(t)
    assert verify_token(SECRET, t.upper(), AGENT)
    address = reply_address(OUTBOUND, t).upper()
    assert token_from_address(address, OUTBOUND) == t


def test_flipping_any_character_is_rejected_or_names_another_guid() -> None:
    t = token()
    for i, original in enumerate(t):
        for ch in ALPHABET:
            if ch == original:
                continue
            forged = t[:i] + ch + t[i + 1 :]
            parsed = parse_token(forged)
            assert parsed is None or parsed != parse_token(t), (i, ch)
            assert not verify_token(SECRET, forged, AGENT), (i, ch)


def test_the_non_canonical_spellings_of_the_last_character_are_refused() -> None:
    # The last base32 character carries 2 data bits and 3 padding bits.
    t = token()
    last = ALPHABET.index(t[-1])
    siblings = [ALPHABET[(last & ~0b111) | low] for low in range(8)]
    for ch in siblings:
        assert (parse_token(t[:-1] + ch) is not None) == (ch == t[-1])


@pytest.mark.parametrize(
    "garbage",
    ["", " ", "x" * 39, "a" * 38, "a" * 40, "0" * 39, "1" * 39, token() + "a", token()[:-1] + "=",
     token()[:20] + "-" + token()[21:], "ü" * 39, None, 42, b"bytes"],
)
def test_garbage_is_not_a_token(garbage: object) -> None:
    assert parse_token(garbage) is None  # type: ignore[arg-type]
    assert not verify_token(SECRET, garbage, AGENT)  # type: ignore[arg-type]


def test_reply_address_and_back() -> None:
    t = token()
    address = reply_address(OUTBOUND, t)
    assert address == f"outbound+{t}@example.test"
    assert token_from_address(address, OUTBOUND) == t
    assert token_from_address(f'"Support" <{address}>', OUTBOUND) == t
    assert token_from_address(address, "Outbound@Example.Test") == t


@pytest.mark.parametrize(
    "address",
    [
        "outbound@example.test",
        "outbound+@example.test",
        "outbound+notatoken@example.test",
        "other+{t}@example.test",
        "outbound+{t}@elsewhere.test",
        "outbound-x+{t}@example.test",
        "{t}@example.test",
        "not an address",
        "",
    ],
)
def test_addresses_without_our_token_give_none(address: str) -> None:
    assert token_from_address(address.format(t=token()), OUTBOUND) is None


def test_reply_address_refuses_bad_input() -> None:
    with pytest.raises(ValueError):
        reply_address("no-at-sign", token())
    with pytest.raises(ValueError):
        reply_address(OUTBOUND, "not-a-token")


def test_forward_message_id_round_trip() -> None:
    t = token()
    mid = forward_message_id(t, 3, "pr.example.test")
    assert mid == f"<{t}.3@pr.example.test>"
    assert token_from_message_id(mid) == t
    assert token_from_message_id(mid.strip("<>")) == t  # clients that drop the brackets
    assert token_from_message_id(mid.upper()) == t
    assert token_from_message_id(f"< {t}.3@pr.example.test >") == t


@pytest.mark.parametrize(
    "mid",
    [None, "", "<>", "<CAF=x@mail.gmail.com>", "<{t}@pr.example.test>", "<{t}.x@pr.example.test>",
     "<a{t}.1@pr.example.test>", "<{t}.1>"],
)
def test_other_message_ids_carry_no_token(mid: str | None) -> None:
    assert token_from_message_id(mid.format(t=token()) if mid else mid) is None


def test_forward_message_id_refuses_bad_input() -> None:
    with pytest.raises(ValueError):
        forward_message_id("nope", 1, "pr.example.test")
    with pytest.raises(ValueError):
        forward_message_id(token(), 1, "bad domain>\r\nBcc: x")


def test_subject_tags() -> None:
    t = token()
    tag = subject_tag(t)
    assert tag == f"[PR:{t}]"
    subject = f"RE: AW: Where is my parcel? {tag}"
    assert token_from_subject(subject) == t
    assert token_from_subject(subject.upper()) == t
    assert strip_subject_tag(subject) == "RE: AW: Where is my parcel?"
    assert strip_subject_tag(f"{tag} Re: x {tag.upper()}") == "Re: x"
    assert token_from_subject("Re: [PR:nope] hello") is None
    assert token_from_subject(None) is None
    assert strip_subject_tag("no tag here") == "no tag here"


def test_the_last_subject_tag_wins() -> None:
    older, newer = token(guid=uuid.uuid4()), token()
    assert token_from_subject(f"Fwd: x {subject_tag(older)} {subject_tag(newer)}") == newer


def test_candidates_come_in_order_of_trust_each_once() -> None:
    t_rcpt, t_irt, t_ref_old, t_ref_new, t_subj = (token(guid=uuid.uuid4()) for _ in range(5))
    found = candidate_tokens(
        recipients=["someone@else.test", reply_address(OUTBOUND, t_rcpt)],
        outbound=OUTBOUND,
        in_reply_to=forward_message_id(t_irt, 1, "pr.example.test"),
        references=[
            "<unrelated@mail.gmail.com>",
            forward_message_id(t_ref_old, 1, "pr.example.test"),
            forward_message_id(t_ref_new, 2, "pr.example.test"),
        ],
        subject=f"Re: hello {subject_tag(t_subj)}",
    )
    assert found == [
        ("recipient", t_rcpt),
        ("in-reply-to", t_irt),
        ("references", t_ref_new),
        ("references", t_ref_old),
        ("subject", t_subj),
    ]


def test_a_token_found_twice_is_listed_once_under_its_most_trusted_source() -> None:
    t = token()
    mid = forward_message_id(t, 1, "pr.example.test")
    found = candidate_tokens(
        recipients=[reply_address(OUTBOUND, t).upper()],
        outbound=OUTBOUND,
        in_reply_to=mid,
        references=[mid],
        subject=f"Re: {subject_tag(t)}",
    )
    assert found == [("recipient", t)]


def test_no_candidates_in_an_ordinary_mail() -> None:
    assert candidate_tokens(
        recipients=["support@example.test"], outbound=OUTBOUND, in_reply_to=None,
        references=[], subject=None,
    ) == []


def test_tokens_can_be_found_in_free_text() -> None:
    t = token()
    assert find_tokens_in_text(f"X-Foo: see outbound+{t}@example.test") == [t]
    assert find_tokens_in_text("a" * 39 + "b") == []  # a longer run is not a token


@settings(database=None, max_examples=200)
@given(
    secret=st.binary(min_size=1, max_size=64),
    guid=st.uuids(),
    agent=st.emails(),
)
def test_property_round_trip(secret: bytes, guid: uuid.UUID, agent: str) -> None:
    t = mint_token(secret, guid, agent)
    parsed = parse_token(t)
    assert parsed is not None and parsed.guid == guid
    assert verify_token(secret, t, agent)
    assert verify_token(secret, t.upper(), agent.upper())
    assert token_from_address(reply_address(OUTBOUND, t), OUTBOUND) == t
    assert token_from_message_id(forward_message_id(t, 0, "pr.example.test")) == t
    assert token_from_subject(f"Re: {subject_tag(t)}") == t


# -- binding a round, rotating keys --------------------------------------------------------


def test_a_token_bound_to_one_round_does_not_verify_for_another() -> None:
    first = mint_token(SECRET, GUID, AGENT, bound=b"approval:1")
    assert verify_token(SECRET, first, AGENT, bound=b"approval:1")
    assert not verify_token(SECRET, first, AGENT, bound=b"approval:2")
    assert not verify_token(SECRET, first, AGENT)
    assert first != mint_token(SECRET, GUID, AGENT, bound=b"approval:2")


def test_any_key_of_a_ring_verifies() -> None:
    old, new = b"o" * 32, b"n" * 32
    minted_before = mint_token(old, GUID, AGENT)
    assert verify_token((new, old), minted_before, AGENT)
    assert not verify_token((new,), minted_before, AGENT)


# -- nothing of a token leaves in a reply ---------------------------------------------------


def test_strip_tokens_takes_out_every_form() -> None:
    t = token()
    tag = subject_tag(t)
    text = (
        f"On Mon, Carol via Support <{reply_address(OUTBOUND, t)}> wrote:\n"
        f"> Subject: Where is my order? {tag}\n"
        f"Message-ID: {forward_message_id(t, 3, 'postroom.example.test')}\n"
        f'<a href="mailto:{reply_address(OUTBOUND, t)}">write</a> and {t.upper()} bare\n'
    )
    out = strip_tokens(text, replacement="support@example.test")
    assert find_tokens_in_text(out) == []
    assert "outbound+" not in out and "[PR:" not in out
    assert "Carol via Support <support@example.test> wrote:" in out
    assert 'href="mailto:support@example.test"' in out
    assert "> Subject: Where is my order?\n" in out


def test_strip_tokens_leaves_other_text_alone() -> None:
    text = "Order a" * 3 + " user+tag@example.test <1234.5@host> [PR:short] " + "b" * 39 + " ok"
    assert strip_tokens(text, replacement="x@example.test") == text


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40), st.sampled_from(["plus", "tag", "mid", "bare"]))
def test_property_no_token_survives_stripping(before: str, after: str, form: str) -> None:
    t = token()
    inner = {
        "plus": reply_address(OUTBOUND, t),
        "tag": subject_tag(t),
        "mid": forward_message_id(t, 1, "postroom.example.test"),
        "bare": t,
    }[form]
    out = strip_tokens(f"{before} {inner} {after}", replacement="support@example.test")
    assert t not in out.lower()
