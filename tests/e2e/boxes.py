"""Helpers for the mailbox-robustness tests: customer mail, agent replies, engine passes."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid

from postroom.sim.agents import compose_reply


def mail(center, subject: str = "Where is my order?", body: str = "It has not arrived.", sender: str = "carol", to: str = "support", **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Customer <{center.address(sender)}>"
    msg["To"] = center.address(to)
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid("c", domain="customer.test")
    msg["Date"] = "Mon, 05 Jan 2026 09:00:00 +0000"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


def write_in(center, msg: EmailMessage, box: str = "support", count: int = 1, sender: str = "carol") -> None:
    center.send(msg, center.address(box), center.address(sender))
    center.wait_for(box, count)


def reply_as(center, who: str, text: str = "Here is your answer.", forwarded: EmailMessage | None = None, style: str = "thunderbird", attach: bytes | None = None) -> EmailMessage:
    forwarded = forwarded or center.wait_for(who, 1)[-1]
    reply = compose_reply(forwarded, agent_addr=center.address(who), agent_name=who, style=style, text=text)
    if attach is not None:
        reply.add_attachment(attach, maintype="application", subtype="octet-stream", filename="manual.bin")
    center.submit(reply, who)
    return reply


def run(center, outbound: int | None = None) -> None:
    if outbound is not None:
        center.wait_for("outbound", outbound)
    center.engine.run_until_idle()


def customer_replies(center, who: str = "carol") -> list[EmailMessage]:
    return [m for m in center.messages(who) if m["Auto-Submitted"] is None]


def auto_responses(center, who: str = "carol") -> list[EmailMessage]:
    return [m for m in center.messages(who) if m["Auto-Submitted"] == "auto-replied"]


def notices(center, who: str) -> list[EmailMessage]:
    return [m for m in center.messages(who) if m["Auto-Submitted"] == "auto-generated"]
