"""The devstack against the real servers: delivery, plus-addressing, IDLE, POP3, TLS, AUTH,
users added while running, two instances at once, and a clean stop."""

from __future__ import annotations

import email
import os
import poplib
import shutil
import smtplib
import ssl
import subprocess
import sys
import time
import uuid
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from postroom.devstack import DevStack, DevStackError
from postroom.devstack.system import port_free
from postroom.devstack.testing import new_user as add_fresh_user

pytestmark = pytest.mark.mailstack

SENDER = "someone@customer.test"


def deliver(stack: DevStack, to: str, subject: str) -> None:
    """Hand a message to the MX port, as a customer's mail server would."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = SENDER, to, subject
    msg.set_content(f"body of {subject}\n")
    with smtplib.SMTP(stack.host, stack.smtp_port, local_hostname="localhost") as s:
        s.send_message(msg, from_addr=SENDER, to_addrs=[to])


def imap(stack: DevStack, user: str, password: str) -> IMAPClient:
    client = IMAPClient(stack.host, port=stack.imap_port, ssl=False, timeout=10)
    client.login(user, password)
    return client


def wait_for_subject(stack: DevStack, user: str, password: str, subject: str) -> bytes:
    """The raw message with ``subject`` in the user's INBOX, polled for up to 10 s."""
    with imap(stack, user, password) as client:
        client.select_folder("INBOX", readonly=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            uids = client.search(["SUBJECT", subject])
            if uids:
                return client.fetch(uids[:1], ["BODY.PEEK[]"])[uids[0]][b"BODY[]"]
            time.sleep(0.05)
            client.noop()
    raise AssertionError(f"{subject!r} never reached {user}")


def tls_context(stack: DevStack) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=stack.cafile)


def test_smtp_delivery_is_visible_over_imap(mailstack, new_user):
    user, password = new_user("deliver")
    subject = f"hello {uuid.uuid4().hex}"
    deliver(mailstack, user, subject)
    raw = wait_for_subject(mailstack, user, password, subject)
    assert email.message_from_bytes(raw, policy=policy.default)["Subject"] == subject
    with imap(mailstack, user, password) as client:
        assert {b"IDLE", b"MOVE", b"UIDPLUS"} <= set(client.capabilities())


def test_mx_port_leaves_headers_alone_like_a_real_mx(mailstack, new_user):
    user, password = new_user("raw")
    subject = f"bare {uuid.uuid4().hex}"
    raw = f"From: {SENDER}\r\nTo: {user}\r\nSubject: {subject}\r\n\r\nno id, no date\r\n"
    with smtplib.SMTP(mailstack.host, mailstack.smtp_port, local_hostname="localhost") as s:
        s.sendmail(SENDER, [user], raw.encode())
    msg = email.message_from_bytes(wait_for_subject(mailstack, user, password, subject))
    assert msg["Message-ID"] is None and msg["Date"] is None


def test_plus_address_lands_in_the_base_mailbox_with_delivered_to(mailstack, new_user):
    user, password = new_user("outbound")
    local, domain = user.split("@")
    tagged = f"{local}+tok123@{domain}"
    subject = f"plus {uuid.uuid4().hex}"
    deliver(mailstack, tagged, subject)
    msg = email.message_from_bytes(
        wait_for_subject(mailstack, user, password, subject), policy=policy.default
    )
    assert msg["Delivered-To"] == tagged


def test_idle_reports_exists_after_a_delivery(mailstack, new_user):
    user, password = new_user("idle")
    with imap(mailstack, user, password) as client:
        client.select_folder("INBOX")
        client.idle()
        try:
            deliver(mailstack, user, "wake up")
            # Dovecot pushes a fixed ~0.5 s after delivery (see the notes).
            deadline, responses = time.monotonic() + 10, []
            while time.monotonic() < deadline and not any(
                r[1:2] == (b"EXISTS",) for r in responses
            ):
                responses += client.idle_check(timeout=1)
        finally:
            client.idle_done()
    assert (1, b"EXISTS") in responses


def test_pop3_login_and_retr(mailstack, new_user):
    user, password = new_user("pop")
    subject = f"pop {uuid.uuid4().hex}"
    deliver(mailstack, user, subject)
    wait_for_subject(mailstack, user, password, subject)
    pop = poplib.POP3(mailstack.host, mailstack.pop3_port, timeout=10)
    try:
        pop.user(user)
        pop.pass_(password)
        assert pop.stat()[0] == 1
        lines = pop.retr(1)[1]
        assert f"Subject: {subject}".encode() in lines
    finally:
        pop.quit()
    pops = poplib.POP3_SSL(mailstack.host, mailstack.pop3s_port, context=tls_context(mailstack))
    try:
        pops.user(user)
        pops.pass_(password)
        assert pops.stat()[0] == 1
    finally:
        pops.quit()


def test_submission_requires_auth_then_accepts_over_verified_starttls(mailstack, new_user):
    sender, sender_pw = new_user("agent")
    rcpt, rcpt_pw = new_user("cust", domain="customer.test")
    with smtplib.SMTP(mailstack.host, mailstack.submission_port, local_hostname="localhost") as s:
        s.ehlo()
        assert not s.has_extn("auth")  # AUTH only after STARTTLS
        with pytest.raises(smtplib.SMTPSenderRefused):  # plain text refused outright
            s.sendmail(sender, [rcpt], b"Subject: x\r\n\r\nx\r\n")
    with smtplib.SMTP(mailstack.host, mailstack.submission_port, local_hostname="localhost") as s:
        s.starttls(context=tls_context(mailstack))
        s.ehlo()
        assert s.has_extn("auth")
        with pytest.raises(smtplib.SMTPRecipientsRefused):  # TLS but no AUTH
            s.sendmail(sender, [rcpt], b"Subject: x\r\n\r\nx\r\n")
        s.rset()
        s.login(sender, sender_pw)
        s.sendmail(sender, [rcpt], b"Subject: via submission\r\n\r\nhi\r\n")
    wait_for_subject(mailstack, rcpt, rcpt_pw, "via submission")


def test_submissions_port_is_implicit_tls_with_auth(mailstack, new_user):
    sender, sender_pw = new_user("agent")
    with smtplib.SMTP_SSL(
        mailstack.host,
        mailstack.submissions_port,
        local_hostname="localhost",
        context=tls_context(mailstack),
    ) as s:
        s.login(sender, sender_pw)
        s.sendmail(sender, [sender], b"Subject: via submissions\r\n\r\nhi\r\n")
    wait_for_subject(mailstack, sender, sender_pw, "via submissions")


def test_imap_tls_verifies_against_the_cafile(mailstack, new_user):
    user, password = new_user("tls")
    with IMAPClient(
        mailstack.host, port=mailstack.imaps_port, ssl_context=tls_context(mailstack)
    ) as client:
        client.login(user, password)
    with IMAPClient(mailstack.host, port=mailstack.imap_port, ssl=False) as client:
        client.starttls(tls_context(mailstack))
        client.login(user, password)
    # The certificate is self-signed: without the cafile verification must fail.
    with pytest.raises(ssl.SSLCertVerificationError):
        IMAPClient(
            mailstack.host, port=mailstack.imaps_port, ssl_context=ssl.create_default_context()
        )


def test_user_added_while_running_receives_at_once(mailstack):
    user = f"late-{uuid.uuid4().hex[:8]}@customer.test"
    mailstack.add_user(user, "first")
    assert user in mailstack.users()
    deliver(mailstack, user, "right after add_user")
    wait_for_subject(mailstack, user, "first", "right after add_user")
    # Same address again only changes the password, effective immediately.
    mailstack.add_user(user, "second")
    imap(mailstack, user, "second").logout()
    with pytest.raises(LoginError):
        imap(mailstack, user, "first")


def test_unknown_user_and_foreign_domains_are_rejected_at_rcpt(mailstack):
    with smtplib.SMTP(mailstack.host, mailstack.smtp_port, local_hostname="localhost") as s:
        s.mail(SENDER)
        code, reply = s.rcpt(f"nobody-{uuid.uuid4().hex[:8]}@example.test")
        assert code == 550 and b"User unknown" in reply
        # Nothing ever leaves the machine.
        code, reply = s.rcpt("someone@gmail.com")
        assert code == 550 and b"devstack delivers only to" in reply


def test_start_is_idempotent_and_refuses_taken_ports_and_long_paths(mailstack, tmp_path):
    pids = mailstack.status()["pids"]
    mailstack.start()
    assert mailstack.status()["pids"] == pids
    other = DevStack(Path("/tmp") / f"pr-taken-{os.getpid()}", base_port=mailstack.base_port)
    try:
        with pytest.raises(DevStackError, match="in use"):
            other.start()
    finally:
        shutil.rmtree(other.state_dir, ignore_errors=True)
    with pytest.raises(DevStackError, match="characters long"):
        DevStack(Path("/tmp") / ("x" * 60))


def test_two_stacks_at_once_and_stop_frees_the_ports(mailstack, new_user):
    """A second instance, started through the CLI in a subprocess with captured output:
    that must not hang (pitfall 3)."""
    base = mailstack.base_port + 500
    second = DevStack(Path("/tmp") / f"pr2-{base}-{os.getpid()}", base_port=base)
    cli = [sys.executable, "-c", "import sys; from postroom.devstack.cli import main; "
           "sys.exit(main(sys.argv[1:]))", "--state", str(second.state_dir)]  # fmt: skip
    started = subprocess.run(
        [*cli, "start", "--base-port", str(base), "--user", "two@example.test:pw:2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    try:
        assert started.returncode == 0, started.stderr
        assert second.is_running() and mailstack.is_running()
        assert second.users() == ["two@example.test"]
        deliver(second, "two@example.test", "on the second stack")
        wait_for_subject(second, "two@example.test", "pw:2", "on the second stack")
        # The stacks share nothing: a user of the first is unknown to the second.
        first_user, _ = new_user("first")
        with smtplib.SMTP(second.host, second.smtp_port, local_hostname="localhost") as s:
            s.mail(SENDER)
            assert s.rcpt(first_user)[0] == 550
    finally:
        stopped = subprocess.run([*cli, "stop"], capture_output=True, text=True, timeout=60)
        status = subprocess.run([*cli, "status"], capture_output=True, text=True, timeout=60)
        shutil.rmtree(second.state_dir, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stderr
    assert status.returncode == 3 and "not running" in status.stdout
    assert all(port_free(second.host, p) for p in second.ports.values())
    # The first stack did not notice.
    user, password = add_fresh_user(mailstack, "still")
    imap(mailstack, user, password).logout()
