"""postroom.mail.smtp against the real Postfix, through the fault proxy: every way a
transaction can end is reported as the right one of sent, not sent, or unknown, both
pipelined (Postfix offers PIPELINING: MAIL, RCPTs and DATA in one write) and step by step
(the proxy strips PIPELINING from the EHLO answer, as `smtpd_discard_ehlo_keywords`
would)."""

from __future__ import annotations

import time
from dataclasses import replace
from email.message import EmailMessage
from email.utils import make_msgid

import pytest

from postroom.core.outbox import Result
from postroom.mail.smtp import SmtpAccount, SmtpSender
from tests.faults.smtp_proxy import Fault, Rule, proxy_for

pytestmark = pytest.mark.mailstack


@pytest.fixture(params=["pipelined", "stepwise"])
def proxy(mailstack, request):
    p = proxy_for(mailstack, discard_ehlo=() if request.param == "pipelined" else ("PIPELINING",))
    p.pipelined = request.param == "pipelined"
    yield p
    p.stop()


@pytest.fixture
def accounts(new_user):
    return {who: new_user(who) for who in ("sender", "rcpt", "journal")}


def sender_for(proxy, mailstack, login: tuple[str, str], timeout: float = 3.0) -> SmtpSender:
    return SmtpSender(
        SmtpAccount("127.0.0.1", proxy.port, "starttls", login[0], login[1], str(mailstack.cafile), timeout)
    )


def raw(to: str) -> tuple[str, bytes]:
    msg = EmailMessage()
    msg["From"] = "sender@example.test"
    msg["To"] = to
    msg["Subject"] = "adapter test"
    msg["Message-ID"] = mid = make_msgid("t", domain="example.test")
    msg.set_content(".a line starting with a dot\n.\nand a lone dot above\n")
    return mid, msg.as_bytes()


@pytest.mark.parametrize(
    ("rule", "result", "accepted"),
    [
        (None, Result.SENT, 1),
        (Rule(Fault.DROP_AFTER_DOT), Result.UNKNOWN, 1),
        (Rule(Fault.DELAY_REPLY, delay=4.0), Result.UNKNOWN, 1),
        (Rule(Fault.PASS_THEN_RESET), Result.SENT, 1),
        (Rule(Fault.REFUSE_DATA, code=451), Result.TEMPORARY, 0),
        (Rule(Fault.REFUSE_DATA, code=554), Result.PERMANENT, 0),
        (Rule(Fault.REFUSE_RCPT, match="rcpt-", code=550), Result.PERMANENT, 0),
        (Rule(Fault.REFUSE_RCPT, match="rcpt-", code=452), Result.TEMPORARY, 0),
        (Rule(Fault.REFUSE_RCPT, match="journal-", code=550), Result.TEMPORARY, 0),
    ],
    ids=["plain", "drop", "slow", "250-then-reset", "451-data", "554-data", "550-rcpt", "452-rcpt", "journal-refused"],
)
def test_each_ending_is_reported_for_what_it_is(proxy, mailstack, accounts, rule, result, accepted) -> None:
    if rule is not None:
        proxy.add(replace(rule))  # a fresh copy: the parameters are shared by both paths
    sender = sender_for(proxy, mailstack, accounts["sender"])
    mid, data = raw(accounts["rcpt"][0])
    try:
        outcome = sender.send(accounts["sender"][0], [accounts["rcpt"][0]], data, journal=accounts["journal"][0])
        # The path taken (read now: QUIT forgets the EHLO answer).
        pipelined = None if sender._smtp is None else bool(sender._smtp.has_extn("pipelining"))
    finally:
        sender.close()
    assert outcome.result is result, outcome.detail
    assert proxy.delivered(mid) == accepted
    if pipelined is not None:  # Postfix offers PIPELINING unless the proxy hides it
        assert pipelined == proxy.pipelined
    if accepted:
        (txn,) = [t for t in proxy.log if t.message_id == mid]
        assert sorted(txn.rcpts) == sorted([accounts["rcpt"][0], accounts["journal"][0]])


def test_a_dead_reused_session_is_retried_once_on_a_fresh_connection(proxy, mailstack, accounts) -> None:
    sender = sender_for(proxy, mailstack, accounts["sender"])
    try:
        proxy.add(Rule(Fault.PASS_THEN_RESET))  # the session dies right after this 250
        first_id, first = raw(accounts["rcpt"][0])
        assert sender.send(accounts["sender"][0], [accounts["rcpt"][0]], first).sent
        second_id, second = raw(accounts["rcpt"][0])
        outcome = sender.send(accounts["sender"][0], [accounts["rcpt"][0]], second)
    finally:
        sender.close()
    assert outcome.sent, outcome.detail
    assert (proxy.delivered(first_id), proxy.delivered(second_id)) == (1, 1)
    assert len({t.client for t in proxy.log}) == 2  # the second went on a new connection


def test_the_caller_deadline_bounds_the_whole_transaction(proxy, mailstack, accounts) -> None:
    proxy.add(Rule(Fault.DELAY_REPLY, delay=3.0))
    sender = sender_for(proxy, mailstack, accounts["sender"], timeout=30.0)
    _, data = raw(accounts["rcpt"][0])
    try:
        outcome = sender.send(accounts["sender"][0], [accounts["rcpt"][0]], data, deadline=time.monotonic() + 1.5)
    finally:
        sender.close()
    assert outcome.result is Result.UNKNOWN  # the dot was written, the answer came too late


def test_no_connection_is_not_sent(mailstack, accounts) -> None:
    closed = SmtpSender(SmtpAccount("127.0.0.1", mailstack.base_port + 9, "starttls", timeout=2.0))
    _, data = raw(accounts["rcpt"][0])
    outcome = closed.send(accounts["sender"][0], [accounts["rcpt"][0]], data)
    assert outcome.result is Result.TEMPORARY and "connect" in outcome.detail.lower()


def test_lines_starting_with_a_dot_arrive_intact(proxy, mailstack, accounts) -> None:
    from email import message_from_bytes, policy

    from imapclient import IMAPClient

    from postroom.mail.imap import tls_context

    sender = sender_for(proxy, mailstack, accounts["sender"])
    mid, data = raw(accounts["rcpt"][0])
    try:
        assert sender.send(accounts["sender"][0], [accounts["rcpt"][0]], data).sent
    finally:
        sender.close()
    deadline = time.monotonic() + 10
    with IMAPClient("127.0.0.1", port=mailstack.imap_port, ssl=False, timeout=10) as client:
        client.starttls(tls_context(str(mailstack.cafile)))
        client.login(*accounts["rcpt"])
        client.select_folder("INBOX", readonly=True)
        while not (uids := client.search(["HEADER", "Message-ID", mid])) and time.monotonic() < deadline:
            time.sleep(0.1)
            client.noop()
        body = client.fetch(uids, ["BODY.PEEK[]"])[uids[0]][b"BODY[]"]
    text = message_from_bytes(body, policy=policy.default).get_content().replace("\r\n", "\n")
    assert text == ".a line starting with a dot\n.\nand a lone dot above\n"


def test_the_end_of_a_message_is_not_held_back_by_nagle(mailstack, accounts) -> None:
    """The body and its final dot are two writes (so that a failure between them is known
    to be before the dot). With Nagle's algorithm on, the dot waits for the server's
    delayed ACK of the body, ~40 ms per message: the kept session must run without it."""
    import socket

    submission = SmtpAccount(
        "127.0.0.1", mailstack.submission_port, "starttls", *accounts["sender"], str(mailstack.cafile), 10.0
    )
    sender = SmtpSender(submission)
    try:
        _, data = raw(accounts["rcpt"][0])
        assert sender.send(accounts["sender"][0], [accounts["rcpt"][0]], data).sent
        kept = sender._smtp
        assert kept is not None, "the session is kept for the next message"
        assert kept.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        sender.close()
