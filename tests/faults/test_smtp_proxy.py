"""The fault proxy itself: each fault does to a plain smtplib client what it claims."""

from __future__ import annotations

import smtplib
import time
from email.message import EmailMessage
from email.utils import make_msgid

import pytest
from imapclient import IMAPClient

from postroom.mail.imap import tls_context
from tests.faults.smtp_proxy import Fault, Rule, proxy_for

pytestmark = pytest.mark.mailstack


@pytest.fixture
def proxy(mailstack):
    p = proxy_for(mailstack)
    yield p
    p.stop()


def message(to: str, sender: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = "proxy test"
    msg["Message-ID"] = make_msgid("proxy", domain="example.test")
    msg.set_content("hello\n.\nwith a dot line\n")
    return msg


def submit(proxy, mailstack, who: tuple[str, str], msg: EmailMessage, timeout: float = 10) -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", proxy.port, timeout=timeout)
    smtp.starttls(context=tls_context(str(mailstack.cafile)))
    smtp.login(*who)
    smtp.send_message(msg)
    return smtp


def count(mailstack, who: tuple[str, str], want: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while True:
        with IMAPClient("127.0.0.1", port=mailstack.imap_port, ssl=False, timeout=10) as client:
            client.starttls(tls_context(str(mailstack.cafile)))
            client.login(*who)
            client.select_folder("INBOX", readonly=True)
            n = len(client.search(["ALL"]))
        if n >= want or time.monotonic() > deadline:
            return n
        time.sleep(0.1)


def test_it_relays_a_plain_session(proxy, mailstack, new_user) -> None:
    sender, rcpt = new_user("sender"), new_user("rcpt")
    msg = message(rcpt[0], sender[0])
    submit(proxy, mailstack, sender, msg).quit()
    assert count(mailstack, rcpt, 1) == 1
    assert proxy.delivered(msg["Message-ID"]) == 1


def test_drop_after_dot_delivers_but_the_client_never_hears(proxy, mailstack, new_user) -> None:
    sender, rcpt = new_user("sender"), new_user("rcpt")
    proxy.add(Rule(Fault.DROP_AFTER_DOT))
    msg = message(rcpt[0], sender[0])
    with pytest.raises((smtplib.SMTPServerDisconnected, ConnectionError)):
        submit(proxy, mailstack, sender, msg)
    assert count(mailstack, rcpt, 1) == 1


def test_delay_outlasts_the_client_timeout(proxy, mailstack, new_user) -> None:
    sender, rcpt = new_user("sender"), new_user("rcpt")
    proxy.add(Rule(Fault.DELAY_REPLY, delay=3))
    msg = message(rcpt[0], sender[0])
    with pytest.raises((TimeoutError, smtplib.SMTPServerDisconnected)):
        submit(proxy, mailstack, sender, msg, timeout=1)
    assert count(mailstack, rcpt, 1) == 1


def test_pass_then_reset_gives_the_250_then_kills_the_session(proxy, mailstack, new_user) -> None:
    sender, rcpt = new_user("sender"), new_user("rcpt")
    proxy.add(Rule(Fault.PASS_THEN_RESET))
    smtp = submit(proxy, mailstack, sender, message(rcpt[0], sender[0]))
    with pytest.raises((smtplib.SMTPServerDisconnected, ConnectionError)):
        smtp.send_message(message(rcpt[0], sender[0]))
    assert count(mailstack, rcpt, 1) == 1


def test_refusals_keep_the_message_out(proxy, mailstack, new_user) -> None:
    sender, rcpt = new_user("sender"), new_user("rcpt")
    proxy.add(Rule(Fault.REFUSE_RCPT, match=rcpt[0], code=550))
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        submit(proxy, mailstack, sender, message(rcpt[0], sender[0]))
    proxy.add(Rule(Fault.REFUSE_DATA, code=451))
    with pytest.raises(smtplib.SMTPDataError) as refused:
        submit(proxy, mailstack, sender, message(rcpt[0], sender[0]))
    assert refused.value.smtp_code == 451
    msg = message(rcpt[0], sender[0])
    submit(proxy, mailstack, sender, msg).quit()
    assert count(mailstack, rcpt, 1) == 1
    # Postfix never got the refused ones: no final dot went through.
    assert [t.upstream_reply[:3] for t in proxy.log] == ["", "250"]
    assert [t.fault for t in proxy.log] == [Fault.REFUSE_DATA, None]
