"""postroom.mail.syncbox against the real Postfix and Dovecot: two nodes claim the same
email through the sync box; the claim that arrives first wins as both nodes read it;
foreign and garbled mail in the box is skipped with a reason; expired claims are
expunged."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest

from postroom.core.island import ChangeKind, ClaimBook, EmailKey, SyncKind
from postroom.mail.imap import ImapAccount
from postroom.mail.smtp import SmtpAccount, SmtpSender
from postroom.mail.syncbox import HEADER, SyncBox, compose, send

pytestmark = pytest.mark.mailstack

EMAIL = EmailKey("support@example.test", "<order-17@customer.test>", "ab" * 32)


@pytest.fixture
def users(new_user):
    return {who: new_user(who) for who in ("sync", "n1", "n2")}


def smtp(mailstack, login: tuple[str, str]) -> SmtpSender:
    account = SmtpAccount(
        "127.0.0.1", mailstack.submission_port, "starttls", *login, str(mailstack.cafile), 10.0
    )
    return SmtpSender(account)


def box(mailstack, login: tuple[str, str]) -> SyncBox:
    account = ImapAccount(
        "127.0.0.1", mailstack.imap_port, "starttls", *login, cafile=str(mailstack.cafile)
    )
    return SyncBox(account).open()


def wait_count(reader: SyncBox, count: int) -> None:
    """Until the box holds `count` messages (delivery is asynchronous)."""
    deadline = time.monotonic() + 30
    while len(reader.all_uids()) < count:
        assert time.monotonic() < deadline, f"the sync box never reached {count} messages"
        time.sleep(0.1)


def test_the_first_claim_to_arrive_wins_on_both_nodes(mailstack, users) -> None:
    sync = users["sync"][0]
    senders = {who: smtp(mailstack, users[who]) for who in ("n1", "n2")}
    readers = {who: box(mailstack, users["sync"]) for who in ("n1", "n2")}
    try:
        # n2 sends first and its claim is on the server before n1 sends: n2 must win,
        # though n1's local clock says it claimed earlier (arrival decides, not clocks).
        now = datetime.now(UTC)
        out = send(senders["n2"], users["n2"][0], sync, SyncKind.CLAIM, "n2", now, EMAIL)
        assert out.sent, out.detail
        wait_count(readers["n1"], 1)
        early = now - timedelta(minutes=5)
        out = send(senders["n1"], users["n1"][0], sync, SyncKind.CLAIM, "n1", early, EMAIL)
        assert out.sent, out.detail
        wait_count(readers["n1"], 2)
        books = {}
        for who, reader in readers.items():
            book = ClaimBook(timedelta(minutes=60))
            read = reader.read_after(0)
            assert [m.node for m in read.messages] == ["n2", "n1"]
            changes = book.apply_all(read.messages)
            assert [(c.kind, c.claim.node) for c in changes] == [(ChangeKind.WON, "n2")]
            books[who] = book
        assert books["n1"].live == books["n2"].live
        claim = books["n1"].live[EMAIL]
        assert claim.node == "n2"
        assert abs(claim.local_time - now) < timedelta(seconds=1)  # claim_time: its clock
    finally:
        for s in senders.values():
            s.close()
        for r in readers.values():
            r.close()


def test_foreign_and_garbled_mail_is_skipped_with_a_reason(mailstack, users, caplog) -> None:
    sync = users["sync"][0]
    sender = smtp(mailstack, users["n1"])
    reader = box(mailstack, users["sync"])
    try:
        stray = EmailMessage()
        stray["From"], stray["To"], stray["Subject"] = users["n1"][0], sync, "lunch?"
        stray.set_content("not a claim")
        garbled = EmailMessage()
        garbled["From"], garbled["To"], garbled["Subject"] = users["n1"][0], sync, "x"
        garbled[HEADER] = "1"
        garbled.set_content('{"v": 1, "kind": "claim", "node": "n1"')
        huge = EmailMessage()
        huge["From"], huge["To"], huge["Subject"] = users["n1"][0], sync, "big"
        huge[HEADER] = "1"
        huge.set_content("x" * 100_000)
        now = datetime.now(UTC)
        for raw in (stray.as_bytes(), garbled.as_bytes(), huge.as_bytes()):
            assert sender.send(users["n1"][0], [sync], raw).sent
        good = compose(users["n1"][0], sync, SyncKind.CLAIM, "n1", now, EMAIL)
        assert sender.send(users["n1"][0], [sync], good).sent
        wait_count(reader, 4)
        with caplog.at_level(logging.WARNING, logger="postroom.mail.syncbox"):
            read = reader.read_after(0)
        assert [m.node for m in read.messages] == ["n1"]
        reasons = sorted(read.ignored.values())
        assert len(reasons) == 3
        assert any("not JSON" in r for r in reasons)
        assert any("larger than" in r for r in reasons)
        assert any("no X-Postroom-Sync header" in r for r in reasons)
        assert read.last_uid == max(reader.all_uids())
        assert caplog.text.count("ignored") == 3
        assert reader.read_after(read.last_uid).messages == []
    finally:
        sender.close()
        reader.close()


def test_expired_claims_are_expunged_and_live_ones_kept(mailstack, users) -> None:
    sync = users["sync"][0]
    sender = smtp(mailstack, users["n1"])
    reader = box(mailstack, users["sync"])
    other = EmailKey(EMAIL.mailbox, "<order-18@customer.test>", "cd" * 32)
    try:
        assert send(
            sender, users["n1"][0], sync, SyncKind.CLAIM, "n1", datetime.now(UTC), EMAIL
        ).sent
        wait_count(reader, 1)
        first = reader.read_after(0).messages[0].arrived
        # INTERNALDATE has whole seconds: wait until the server's next stamp is later
        # than the first claim's by more than the (short) expiry.
        expiry = timedelta(seconds=1)
        count = 1
        while True:
            assert send(
                sender, users["n1"][0], sync, SyncKind.TIME_SYNC, "n1", datetime.now(UTC)
            ).sent
            count += 1
            wait_count(reader, count)
            if reader.read_after(0).messages[-1].arrived - first > 2 * expiry:
                break
            time.sleep(0.5)
        live = send(sender, users["n1"][0], sync, SyncKind.CLAIM, "n1", datetime.now(UTC), other)
        assert live.sent
        wait_count(reader, count + 1)
        book = ClaimBook(expiry)
        changes = book.apply_all(reader.read_after(0).messages)
        assert [c.kind for c in changes if c.claim.email == EMAIL] == [
            ChangeKind.WON,
            ChangeKind.EXPIRED,
        ]
        gone = book.expungeable()
        assert gone
        reader.expunge(gone)
        left = reader.read_after(0).messages
        assert [m.email for m in left if m.email is not None] == [other]
        assert all(m.email != EMAIL for m in left)
        # A reader starting now rebuilds the same live claims.
        late = ClaimBook(expiry)
        late.apply_all(left)
        assert {e: c.node for e, c in late.live.items()} == {other: "n1"}
    finally:
        sender.close()
        reader.close()
