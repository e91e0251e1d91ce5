"""Helpers for the mailbox-robustness tests: customer mail, agent replies, engine passes."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid

from postroom_sim.agents import compose_reply


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


def rebuild(center, who: str, folder: str = "INBOX") -> tuple[int, int]:
    """Rebuild `who`'s folder as a restore from backup does: the same messages, each
    under a new UID, under a new UIDVALIDITY. Returns (old, new) UIDVALIDITY."""
    import subprocess
    from pathlib import Path

    conf = Path(center.stack.state_dir) / "dovecot" / "dovecot.conf"
    user = center.address(who)

    def doveadm(*args: str) -> str:
        done = subprocess.run(["doveadm", "-c", str(conf), *args], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=True)
        return done.stdout

    client = center.imap(who)
    try:
        old = client.select_folder(folder)
        uids = client.search(["ALL"])
        saved = client.fetch(uids, ["BODY.PEEK[]", "INTERNALDATE"]) if uids else {}
        if uids:
            client.delete_messages(uids)
            client.expunge()
        client.unselect_folder()
        uidvalidity = int(old[b"UIDVALIDITY"])
        doveadm(
            "mailbox", "update", "-u", user, "--uid-validity", str(uidvalidity + 1000),
            "--min-next-uid", str(int(old[b"UIDNEXT"]) + 100), folder,
        )
        for uid in sorted(saved, reverse=True):  # another order too: UIDs say nothing
            client.append(folder, saved[uid][b"BODY[]"], (), saved[uid][b"INTERNALDATE"])
        new = int(client.select_folder(folder, readonly=True)[b"UIDVALIDITY"])
    finally:
        client.logout()
    assert new != uidvalidity
    return uidvalidity, new
