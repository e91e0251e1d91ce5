"""DevStack.stop() + resume(): an outage of the real Dovecot + Postfix that keeps their state."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

import pytest
from imapclient import IMAPClient

from postroom.devstack import system
from postroom.mail.imap import tls_context

pytestmark = pytest.mark.mailstack


def test_an_outage_keeps_mail_users_and_certificate(mailstack, new_user) -> None:
    address, password = new_user("outage")
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "someone@customer.test", address, "before the outage"
    msg.set_content("kept\n")
    with smtplib.SMTP(mailstack.host, mailstack.smtp_port, local_hostname="localhost") as s:
        s.send_message(msg)
    certificate = mailstack.cafile.read_bytes()
    try:
        mailstack.stop(hold_ports=True)
        assert not mailstack.is_running()
        assert not system.greets(mailstack.host, mailstack.imap_port, b"* OK", b"a LOGOUT\r\n")
    finally:
        mailstack.resume()
    assert mailstack.is_running() and mailstack.cafile.read_bytes() == certificate
    client = IMAPClient(mailstack.host, port=mailstack.imap_port, ssl=False, timeout=10)
    client.starttls(tls_context(str(mailstack.cafile)))
    client.login(address, password)
    client.select_folder("INBOX", readonly=True)
    for _ in range(100):
        found = client.search(["SUBJECT", "before the outage"])
        if found:
            break
        client.noop()
    assert found
    client.logout()
