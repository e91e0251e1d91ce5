"""Simulated agents for the throughput phase: reply to every forwarded mail at once.

    python bench/agents.py SPEC.json

SPEC: {"host", "imap_port", "submission_port", "cafile",
       "agents": [[address, password, style], ...]}

The replies are the ones real mail clients send (``postroom_sim.compose_reply``:
Thunderbird, Outlook, Gmail, Apple Mail), submitted with STARTTLS + AUTH. Unlike
``postroom_sim.AgentClient`` (IDLE, a fresh SMTP session per reply) each agent here polls
its inbox every 50 ms and keeps one submission session, so that the agents are never what
limits the engine's throughput. (AgentClient can also sit in IDLE for minutes with
unanswered mail in the inbox when the mail arrived while it was sending: the EXISTS
notice came during another command and IDLE reports nothing new.)
"""

from __future__ import annotations

import contextlib
import email
import imaplib
import json
import signal
import smtplib
import ssl
import sys
import threading
import time
from email import policy
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from postroom_sim import DEFAULT_TEXTS, compose_reply, is_auto_submitted  # noqa: E402

POLL = 0.05


class Agent(threading.Thread):
    def __init__(self, spec: dict, address: str, password: str, style: str, stop: threading.Event) -> None:
        super().__init__(daemon=True, name=f"agent-{address}")
        self.spec = spec
        self.address = address
        self.password = password
        self.style = style
        self.stop_event = stop
        self.ctx = ssl.create_default_context(cafile=spec["cafile"])
        self.smtp: smtplib.SMTP | None = None
        self.replied = 0
        self.errors = 0
        self.done: set[int] = set()

    def _imap(self) -> imaplib.IMAP4:
        conn = imaplib.IMAP4(self.spec["host"], self.spec["imap_port"], timeout=60)
        conn.starttls(self.ctx)
        conn.login(self.address, self.password)
        conn.select("INBOX")
        return conn

    def _send(self, msg) -> None:
        for attempt in (1, 2):
            try:
                if self.smtp is None:
                    smtp = smtplib.SMTP(
                        self.spec["host"], self.spec["submission_port"], local_hostname="localhost", timeout=60
                    )
                    smtp.ehlo()
                    smtp.starttls(context=self.ctx)
                    smtp.ehlo()
                    smtp.login(self.address, self.password)
                    self.smtp = smtp
                self.smtp.send_message(msg, from_addr=self.address)
                return
            except smtplib.SMTPServerDisconnected:
                self.smtp = None
                if attempt == 2:
                    raise

    def run(self) -> None:
        conn = self._imap()
        n = 0
        try:
            while not self.stop_event.is_set():
                conn.noop()
                typ, data = conn.uid("SEARCH", "UNANSWERED", "UNDELETED")
                uids = [int(u) for u in (data[0] or b"").split() if int(u) not in self.done]
                if not uids:
                    time.sleep(POLL)
                    continue
                typ, data = conn.uid("FETCH", ",".join(map(str, uids)), "(UID BODY.PEEK[])")
                for item in data or []:
                    if not isinstance(item, tuple):
                        continue
                    uid = int(item[0].split(b"UID ")[1].split()[0])
                    self.done.add(uid)
                    msg = email.message_from_bytes(item[1], policy=policy.default)
                    if not msg["Reply-To"] or is_auto_submitted(msg):
                        continue  # a notice, not a forwarded customer mail
                    text = DEFAULT_TEXTS[n % len(DEFAULT_TEXTS)].replace("{agent}", self.address)
                    n += 1
                    try:
                        reply = compose_reply(
                            msg, agent_addr=self.address, agent_name=self.address.split("@")[0],
                            style=self.style, text=text,
                        )
                        self._send(reply)
                        self.replied += 1
                    except Exception as exc:  # counted; the phase reports what never completed
                        self.errors += 1
                        print(f"{self.address}: uid {uid}: {exc!r}", file=sys.stderr, flush=True)
                    conn.uid("STORE", str(uid), "+FLAGS.SILENT", r"(\Answered \Seen)")
        finally:
            with contextlib.suppress(Exception):
                conn.logout()
            if self.smtp is not None:
                with contextlib.suppress(Exception):
                    self.smtp.quit()


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    agents = [Agent(spec, a, pw, style, stop) for a, pw, style in spec["agents"]]
    for agent in agents:
        agent.start()
    while not stop.is_set() and any(a.is_alive() for a in agents):
        stop.wait(0.5)
    for agent in agents:
        agent.join(5)
    print(json.dumps({a.address: {"replied": a.replied, "errors": a.errors} for a in agents}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
