"""The simulator against the real Dovecot + Postfix dev stack.

Uses the suite's ``mailstack`` fixture when there is one; otherwise starts its own
DevStack on base port 21300 for this module and stops it afterwards.
"""

from __future__ import annotations

import email
import os
import shutil
import smtplib
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from imapclient import IMAPClient

pytestmark = pytest.mark.mailstack

stack_module = pytest.importorskip("postroom.devstack.stack")

from postroom_sim import (  # noqa: E402  (after the skip)
    STYLES,
    AgentClient,
    CustomerSimulator,
    sample_paths,
    send_customer_mail,
)

# 21300 for this module; under pytest-xdist each worker that runs it gets its own stack.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
BASE_PORT = 21300 + 10 * int(_WORKER[2:] or 0)
PASSWORD = "sim-secret"
RUN = uuid.uuid4().hex[:6]  # keeps mailboxes apart if the stack is shared with other tests


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest) -> Iterator[object]:
    try:
        shared = request.getfixturevalue("mailstack")
    except pytest.FixtureLookupError:
        shared = None
    if shared is not None:
        yield shared
        return
    state = Path(tempfile.mkdtemp(prefix="pr-sim-"))
    devstack = stack_module.DevStack(state, BASE_PORT)
    try:
        devstack.start()
        yield devstack
    finally:
        devstack.stop()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def users(stack) -> dict[str, str]:  # type: ignore[no-untyped-def]
    names = {
        "outbound": f"simout{RUN}@example.test",
        "support": f"simsupport{RUN}@example.test",
        "customer": f"simcust{RUN}@customer.test",
        "thread": f"simthread{RUN}@example.test",
        **{style: f"sim{style}{RUN}@example.test" for style in STYLES},
    }
    stack.add_users([(addr, PASSWORD) for addr in names.values()])
    return names


# -- helpers ------------------------------------------------------------------------------


def _inject(stack, to_addr: str, raw: bytes) -> None:  # type: ignore[no-untyped-def]
    with smtplib.SMTP(stack.host, stack.smtp_port, local_hostname="localhost", timeout=30) as s:
        s.sendmail("support@example.test", [to_addr], raw)


def _forwarded(agent: str, reply_to: str, *, extra: str = "", token: str = "") -> tuple[bytes, str]:
    token = token or uuid.uuid4().hex[:8]
    mid = f"<fwd.{token}@example.test>"
    raw = (
        f"From: Oliver Bennett via Support <support@example.test>\r\n"
        f"To: {agent}\r\n"
        f"Reply-To: {reply_to}\r\n"
        f"Subject: [PR:{token}] Order #40117 still not here\r\n"
        f"Date: Mon, 04 Mar 2024 09:12:47 +0000\r\n"
        f"Message-ID: {mid}\r\n"
        f"References: <cust.{token}@customer.test>\r\n"
        f"X-Postroom-Interaction: {token}\r\n"
        f"{extra}"
        f"MIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n"
        f"\r\n"
        f"Hello,\r\n\r\nmy boots (order #40117) have not arrived.\r\n\r\nOliver\r\n"
    ).encode()
    return raw, mid


def _wait_for(
    stack,  # type: ignore[no-untyped-def]
    address: str,
    match: Callable[[EmailMessage], bool],
    timeout: float = 20.0,
) -> tuple[EmailMessage, set[bytes]]:
    """Poll ``address``'s INBOX until a message matches; return it and its flags."""
    deadline = time.monotonic() + timeout
    client = IMAPClient(stack.host, port=stack.imap_port, ssl=False, timeout=30)
    try:
        client.login(address, PASSWORD)
        client.select_folder("INBOX")
        while True:
            uids = client.search(["ALL"])
            if uids:
                for data in client.fetch(uids, ["BODY.PEEK[]", "FLAGS"]).values():
                    msg = email.message_from_bytes(data[b"BODY[]"], policy=policy.default)
                    if match(msg):  # type: ignore[arg-type]
                        return msg, set(data[b"FLAGS"])  # type: ignore[return-value]
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching mail arrived in {address} within {timeout}s")
            time.sleep(0.2)
            client.noop()
    finally:
        client.logout()


def _replying_to(mid: str) -> Callable[[EmailMessage], bool]:
    return lambda m: str(m.get("In-Reply-To", "")).strip() == mid


def _agent(stack, address: str, style: str, **kw) -> AgentClient:  # type: ignore[no-untyped-def]
    return AgentClient(
        stack.host,
        stack.imap_port,
        stack.submission_port,
        address,
        PASSWORD,
        cafile=str(stack.cafile),
        style=style,  # type: ignore[arg-type]
        texts=["Hi Oliver,\n\nyour parcel left today \u2014 Grüße.\n\n{agent}"],
        **kw,
    )


# -- tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_reply_to_all_waiting_answers_the_forwarded_mail_only(stack, users, style) -> None:  # type: ignore[no-untyped-def]
    agent_addr = users[style]
    out_local, _, out_domain = users["outbound"].partition("@")
    token = uuid.uuid4().hex[:8]
    reply_to = f"Support <{out_local}+{token}@{out_domain}>"
    raw, mid = _forwarded(agent_addr, reply_to, token=token)
    notice, notice_mid = _forwarded(
        agent_addr, reply_to, extra="Auto-Submitted: auto-generated\r\n"
    )
    no_reply_to = raw.replace(f"Reply-To: {reply_to}\r\n".encode(), b"").replace(
        mid.encode(), f"<plain.{token}@example.test>".encode()
    )
    for message in (notice, no_reply_to, raw):
        _inject(stack, agent_addr, message)

    agent = _agent(stack, agent_addr, style)
    sent = agent.reply_to_all_waiting(expect=1, timeout=20)
    deadline = time.monotonic() + 5  # the other two may still be on their way: pass again
    while time.monotonic() < deadline and agent.skipped < 2:
        sent += agent.reply_to_all_waiting()
        time.sleep(0.2)

    assert [r["In-Reply-To"] for r in sent] == [mid]
    assert agent.replied == 1 and agent.skipped == 2 and agent.errors == 0

    reply, _ = _wait_for(stack, users["outbound"], _replying_to(mid))
    assert reply["From"].addresses[0].addr_spec == agent_addr
    assert [a.addr_spec for a in reply["To"].addresses] == [f"{out_local}+{token}@{out_domain}"]
    prefix = "RE: " if style == "outlook" else "Re: "
    assert reply["Subject"] == f"{prefix}[PR:{token}] Order #40117 still not here"
    if style == "outlook":
        assert reply["References"] is None and reply["Thread-Index"]
    else:
        assert reply["References"].split() == [f"<cust.{token}@customer.test>", mid]
    assert reply["Message-ID"].strip() == sent[0]["Message-ID"].strip()
    assert not [k for k in reply.keys() if k.lower().startswith("x-postroom")]  # noqa: SIM118
    body = reply.get_body(preferencelist=("plain",)).get_content()
    assert "your parcel left today \u2014 Grüße." in body
    assert "my boots (order #40117) have not arrived." in body

    _, flags = _wait_for(stack, agent_addr, lambda m: m["Message-ID"] == mid)
    assert b"\\Answered" in flags
    _, notice_flags = _wait_for(stack, agent_addr, lambda m: m["Message-ID"] == notice_mid)
    assert b"\\Answered" not in notice_flags

    assert agent.reply_to_all_waiting() == []  # answered mail is not answered again


def test_agent_thread_replies_via_idle_and_stops_promptly(stack, users) -> None:  # type: ignore[no-untyped-def]
    agent_addr = users["thread"]
    agent = _agent(stack, agent_addr, "gmail", reply_after=(0.2, 0.6), poll=0.5)
    agent.start()
    try:
        time.sleep(1.0)  # let it reach IDLE, so the mail arrives as a push
        raw, mid = _forwarded(agent_addr, users["outbound"])
        _inject(stack, agent_addr, raw)
        deadline = time.monotonic() + 20
        while agent.replied < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert agent.replied == 1
    finally:
        started = time.monotonic()
        agent.stop()
        stopped_in = time.monotonic() - started
    assert not agent.is_alive()
    assert stopped_in < 2.5
    assert agent.errors == 0
    reply, _ = _wait_for(stack, users["outbound"], _replying_to(mid))
    assert reply.get_content_type() == "multipart/alternative"


def test_customer_mail_arrives_with_a_fresh_identity(stack, users) -> None:  # type: ignore[no-untyped-def]
    sample = sample_paths()[3]  # the German quoted-printable one
    ids = [
        send_customer_mail(
            stack.host,
            stack.smtp_port,
            sample=sample,
            from_addr=users["customer"],
            to_addr=users["support"],
        )
        for _ in range(2)
    ]
    assert ids[0] != ids[1]
    for mid in ids:
        msg, _ = _wait_for(stack, users["support"], lambda m, mid=mid: m["Message-ID"] == mid)
        assert msg["From"].addresses[0].addr_spec == users["customer"]
        assert "Kaffeemühle" in msg.get_body(preferencelist=("plain",)).get_content()


def test_customer_simulator_sends_until_stopped(stack, users) -> None:  # type: ignore[no-untyped-def]
    sim = CustomerSimulator(
        stack.host,
        stack.smtp_port,
        customers=[users["customer"]],
        recipients=[users["support"]],
        every=0.2,
        first_after=0.0,
        seed=3,
    )
    sim.start()
    try:
        deadline = time.monotonic() + 15
        while sim.sent < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sim.stop()
    assert sim.sent >= 3 and sim.errors == 0 and not sim.is_alive()
    for mid in sim.sent_ids:
        _wait_for(stack, users["support"], lambda m, mid=mid: m["Message-ID"] == mid)
