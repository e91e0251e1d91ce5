"""Claims whose SMTP transaction ends badly (through the fault proxy, on the real
Postfix/Dovecot): an unknown outcome is settled by reading the sync box, not by sending
again; a refused claim is sent again and then wins."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from postroom.core.island import EmailKey, SyncKind
from postroom.engine.island import Claimer, IslandSettings
from postroom.mail.imap import ImapAccount
from postroom.mail.smtp import SmtpAccount, SmtpSender
from postroom.mail.syncbox import SyncBox
from tests.faults.smtp_proxy import Fault, Rule, proxy_for

pytestmark = pytest.mark.mailstack

EMAIL = EmailKey("support@example.test", "<c1@customer.test>", "ab" * 32)


@pytest.fixture
def proxy(mailstack):
    p = proxy_for(mailstack)
    yield p
    p.stop()


@pytest.fixture
def claimer(mailstack, new_user, proxy):
    sync, login = new_user("sync"), new_user("n1")
    smtp = SmtpSender(
        SmtpAccount("127.0.0.1", proxy.port, "starttls", *login, str(mailstack.cafile), 3.0)
    )
    box = SyncBox(
        ImapAccount(
            "127.0.0.1", mailstack.imap_port, "starttls", *sync, cafile=str(mailstack.cafile)
        )
    ).open()
    settings = IslandSettings(
        sync[0],
        login[0],
        claim_expiry=timedelta(seconds=30),
        # Longer than a claim takes to come back even on a busy machine: the unknown
        # claim must be read back, not sent again.
        claim_reassert=timedelta(seconds=5),
        clock_margin=timedelta(seconds=5),
    )
    c = Claimer("n1", settings, box, smtp)
    yield c
    box.close()
    smtp.close()


def step_until_won(c: Claimer) -> None:
    deadline = time.monotonic() + 30
    while not c.may_send(EMAIL):
        assert time.monotonic() < deadline, "the claim was never won"
        c.step()
        time.sleep(0.1)


def claims_in_box(c: Claimer) -> int:
    return sum(
        1 for m in c.box.read_after(0).messages if m.kind is SyncKind.CLAIM and m.email == EMAIL
    )


def test_an_unknown_outcome_is_settled_by_reading_the_box(claimer, proxy) -> None:
    proxy.add(Rule(Fault.DROP_AFTER_DOT, match="x-postroom-sync"))
    claimer.want(EMAIL)
    claimer.step()  # the claim reaches the server; its 250 never reaches the node
    step_until_won(claimer)
    assert claims_in_box(claimer) == 1


def test_a_refused_claim_is_sent_again_and_wins(claimer, proxy) -> None:
    proxy.add(Rule(Fault.REFUSE_DATA, code=451))
    claimer.want(EMAIL)
    claimer.step()
    assert claimer.book.owner(EMAIL) is None
    step_until_won(claimer)
    assert claims_in_box(claimer) == 1
    assert len(proxy.log) >= 2  # the refused one, then the one that won


def test_a_node_whose_smtp_is_cut_does_not_retry_its_time_sync_every_step(mailstack, new_user) -> None:  # type: ignore[no-untyped-def]
    """A time-sync that could not be sent waits `claim_reassert` like a sent one: a node
    cut from SMTP for minutes must not open a connection (and log a warning) at every
    step of its claims' thread, four times a second."""
    from postroom.devstack.netproxy import TcpProxy

    relay = TcpProxy(mailstack.submission_port)
    relay.down()
    sync, login = new_user("sync"), new_user("n1")
    smtp = SmtpSender(SmtpAccount("127.0.0.1", relay.port, "starttls", *login, str(mailstack.cafile), 3.0))
    box = SyncBox(ImapAccount("127.0.0.1", mailstack.imap_port, "starttls", *sync, cafile=str(mailstack.cafile))).open()
    settings = IslandSettings(sync[0], login[0], claim_expiry=timedelta(minutes=10), claim_reassert=timedelta(minutes=5))
    c = Claimer("n1", settings, box, smtp)
    try:
        for _ in range(5):
            c.step()
        assert relay.refused == 1  # the first step's time-sync, and nothing since
    finally:
        box.close()
        smtp.close()
        relay.stop()
