"""A reply's search text read from the composed message (``mail.message.body_text``,
decision 0050) is the text parsing its bytes again gives (what store/search.py indexed
before), for every corpus message taken as an agent's reply: real mail clients' replies
and every kind of inbound mail."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from postroom.core import compose
from postroom.mail.message import body_text, parse
from tests.unit.conftest import corpus_files, parsed


def test_the_composed_replys_text_is_the_text_of_its_bytes() -> None:
    rels = corpus_files("replies") + corpus_files("inbound")
    if not rels:
        pytest.skip("no corpus")
    compared, differ = 0, []
    for rel in rels:
        try:
            agent_reply = parsed(rel).msg
            reply = compose.reply_to_customer(
                agent_reply,
                box_address="support@example.test",
                box_name="Example Support",
                customer="Carol <carol@customer.test>",
                original_message_id="<carol-1@customer.test>",
                original_references=["<root@customer.test>"],
                message_id="<re.1@example.test>",
                subject="Wo ist mein Paket?",
                outbound="outbound@example.test",
                date=datetime(2026, 12, 7, 4, 30, tzinfo=UTC),
            )
        except Exception:  # noqa: BLE001 - unreadable or refused: no reply is queued
            continue
        raw = reply.as_bytes()  # as accept() does, before the text is read
        compared += 1
        if body_text(reply) != parse(raw).text:
            differ.append(rel)
    assert not differ, differ[:10]
    assert compared > 500
