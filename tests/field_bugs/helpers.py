"""What the field-bug tests share: customer mail, an agent answering from a mail client,
counting what a mailbox holds, and an engine pointed at a proxy."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from email.message import EmailMessage
from email.utils import make_msgid

from postroom.engine.runtime import Engine
from postroom.sim.agents import compose_reply
from tests.e2e.conftest import Center
from tests.e2e.enginerun import Deployment

REPLY_TEXT = "Hello, your parcel left our warehouse this morning. Regards"


def customer_mail(center: Center, subject: str = "Where is my order #4711?", who: str = "carol", to: str = "support", **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"{who.title()} Customer <{center.address(who)}>"
    msg["To"] = center.address(to)
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid("c", domain="customer.test")
    msg["Date"] = "Wed, 25 Nov 2026 09:00:00 +0000"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content("Hello,\n\nI ordered a kettle two weeks ago and it has not arrived.\n")
    return msg


def send(center: Center, msg: EmailMessage, to: str = "support", sender: str = "carol") -> None:
    """Through the MX, as the outside world sends; returns once it is in the box."""
    before = len(center.messages(to))
    center.send(msg, center.address(to), center.address(sender))
    center.wait_for(to, before + 1)


def forwards(center: Center, agent: str = "alice") -> list[EmailMessage]:
    """Customer mail forwarded to the agent (notices are automatic, forwards are not)."""
    return [m for m in center.messages(agent) if m["Reply-To"] and not m["Auto-Submitted"]]


def answer(center: Center, agent: str = "alice", style: str = "thunderbird", text: str = REPLY_TEXT, **kwargs) -> EmailMessage:
    """The agent replies from their mail client to the latest forward in their inbox."""
    waiting = center.wait_for(agent, 1)
    latest = [m for m in waiting if m["Reply-To"] and not m["Auto-Submitted"]][-1]
    reply = compose_reply(latest, agent_addr=center.address(agent), agent_name=agent.title(), style=style, text=text, **kwargs)
    center.submit(reply, agent)
    return reply


def auto_responses(center: Center, who: str = "carol") -> list[EmailMessage]:
    return [m for m in center.messages(who) if m["Auto-Submitted"] == "auto-replied"]


def replies(center: Center, who: str = "carol") -> list[EmailMessage]:
    return [m for m in center.messages(who) if not m["Auto-Submitted"]]


def run_until(center: Center, what: str, done: Callable[[], bool], timeout: float = 30.0) -> None:
    """Run the engine's steps until `done()` holds (mail arrives asynchronously); fail on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        center.engine.run_until_idle()
        if done():
            return
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.1)


def through(
    center: Center, *, imap_port: int | None = None, imap_tls: str | None = None, smtp_port: int | None = None, **smtp: object
) -> Engine:
    """The center's engine again, talking to the given ports (a proxy) instead of the stack."""
    site = center.engine.site
    if imap_port is not None:
        site = replace(site, imap_port=imap_port)
    if imap_tls is not None:
        site = replace(site, imap_tls=imap_tls)
    if smtp_port is not None or smtp:
        site = replace(site, smtp=replace(site.smtp, **({"port": smtp_port} if smtp_port else {}), **smtp))
    center.engine.close()
    center.engine = Engine(site, now=center.clock)
    return center.engine


# -- deployments: the engine as a process (tests/e2e/enginerun.py) ------------------------


def mail_to_support(dep: Deployment, subject: str = "Where is my order #4711?") -> EmailMessage:
    """Carol writes to the support box, through the MX; returns once it is in the box."""
    center = dep.center
    msg = EmailMessage()
    msg["From"] = f"Carol Customer <{center.address('carol')}>"
    msg["To"] = center.address("support")
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid("c", domain="customer.test")
    msg["Date"] = "Wed, 25 Nov 2026 09:00:00 +0000"
    msg.set_content("Hello,\n\nI ordered a kettle two weeks ago and it has not arrived.\n")
    before = len(center.messages("support"))
    center.send(msg, center.address("support"), center.address("carol"))
    center.wait_for("support", before + 1)
    return msg


class AgentAtHerDesk:
    """Alice in her mail client: replies once to each forward she has not answered yet
    (a second copy with the same Message-ID is the same mail to her). Call it as the
    `step` of a wait."""

    def __init__(self, dep: Deployment, agent: str = "alice") -> None:
        self.dep = dep
        self.agent = agent
        self.answered: set[str] = set()

    def __call__(self) -> None:
        center = self.dep.center
        for fwd in center.messages(self.agent):
            mid = str(fwd["Message-ID"])
            if fwd["Reply-To"] and not fwd["Auto-Submitted"] and mid not in self.answered:
                reply = compose_reply(fwd, agent_addr=center.address(self.agent), agent_name="Alice Agent", style="thunderbird", text=REPLY_TEXT)
                center.submit(reply, self.agent)
                self.answered.add(mid)
