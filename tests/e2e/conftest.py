"""A contact center on the real mail stack, for end-to-end tests.

`center` gives each test its own mailboxes on the session's Dovecot + Postfix (so tests
never see each other's mail), a configuration file naming them, loaded into the test
database through the same path `postroom run` uses, and an Engine for it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from django.utils import timezone
from imapclient import IMAPClient

from postroom.config import Config, load_config
from postroom.devstack import DevStack
from postroom.engine.runtime import Engine
from postroom.engine.site import site_from_config
from postroom.mail.imap import tls_context
from postroom.store.agents import set_ready
from postroom.store.loader import apply_config
from postroom.store.models import Agent

CONFIG = """\
node_id = "test-node"
secret = "a-test-secret-of-enough-length-32b+"

[server]
imap_host = "127.0.0.1"
imap_port = {imap_port}
imap_tls = "starttls"
smtp_host = "127.0.0.1"
smtp_port = {submission_port}
smtp_tls = "starttls"
cafile = "{cafile}"
idle = true
poll_interval = "1s"

[[incoming]]
address = "{support}"
name = "Example Support"
password = "{support_pw}"
skills = ["support"]
auto_response_text = "We got your mail. Reference {{reference}}. {{box}}"

# The dev stack's Postfix writes the authenticated sender into its Received header.
[sender_auth]
servers = ["mail.example.test"]

[outbound]
address = "{outbound}"
password = "{outbound_pw}"

[dead_box]
address = "{dead}"
password = "{dead_pw}"

[journal]
address = "{journal}"
password = "{journal_pw}"
# The dev stack delivers a journal copy within ~20 ms of the 250 (docs/decisions/0007).
grace = "2s"

[[agents]]
name = "Alice Agent"
address = "{alice}"
skills = {alice_skills}
auto_answer = {alice_auto}
password = "{alice_pw}"

[[agents]]
name = "Bob Agent"
address = "{bob}"
skills = {bob_skills}
auto_answer = {bob_auto}
password = "{bob_pw}"

[[agents]]
name = "Sam Supervisor"
address = "{sam}"
skills = ["support"]
supervisor = true
password = "{sam_pw}"
"""


@dataclass
class Center:
    stack: DevStack
    config: Config
    engine: Engine
    users: dict[str, tuple[str, str]] = field(default_factory=dict)
    clock: Clock | None = None
    path: Path | None = None

    def address(self, who: str) -> str:
        return self.users[who][0]

    def password(self, who: str) -> str:
        return self.users[who][1]

    def imap(self, who: str) -> IMAPClient:
        client = IMAPClient("127.0.0.1", port=self.stack.imap_port, ssl=False, timeout=30)
        client.starttls(tls_context(str(self.stack.cafile)))
        client.login(*self.users[who])
        return client

    def messages(self, who: str, folder: str = "INBOX") -> list[EmailMessage]:
        client = self.imap(who)
        try:
            if not client.folder_exists(folder):
                return []
            client.select_folder(folder, readonly=True)
            uids = client.search(["ALL"])
            data = client.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
            return [message_from_bytes(data[u][b"BODY[]"], policy=policy.default) for u in sorted(data)]
        finally:
            client.logout()

    def wait_for(self, who: str, count: int, folder: str = "INBOX", timeout: float = 30.0) -> list[EmailMessage]:
        """Mail delivery is asynchronous: wait until `who` holds `count` messages."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.messages(who, folder)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def send(self, raw: bytes | EmailMessage, to: str, sender: str) -> None:
        """Send as the outside world does: plain SMTP to the MX port."""
        import smtplib

        data = raw.as_bytes() if isinstance(raw, EmailMessage) else raw
        with smtplib.SMTP("127.0.0.1", self.stack.smtp_port, timeout=30) as smtp:
            smtp.sendmail(sender, [to], data)

    def append(self, who: str, raw: bytes, folder: str = "INBOX") -> None:
        """Put bytes straight into a mailbox, as broken as they are (an MTA would repair
        some of what a mailbox can still end up holding)."""
        client = self.imap(who)
        try:
            client.append(folder, raw)
        finally:
            client.logout()

    def submit(self, msg: EmailMessage, who: str) -> None:
        """Send as an agent's mail client does: authenticated submission."""
        import smtplib

        with smtplib.SMTP("127.0.0.1", self.stack.submission_port, timeout=30) as smtp:
            smtp.starttls(context=tls_context(str(self.stack.cafile)))
            smtp.login(*self.users[who])
            smtp.send_message(msg)
        self._until_in_outbound(msg)

    def _until_in_outbound(self, msg: EmailMessage, timeout: float = 30.0) -> None:
        """An agent's mail to the outbound box (its token address included) is there when
        this returns: delivery is asynchronous, and a count of the box's messages cannot
        tell it from one still there (a forgery on its way to the dead box, a reply not yet
        archived), so a test's next engine round would miss it on a loaded machine."""
        mid = msg["Message-ID"]
        box = self.users.get("outbound", ("",))[0].lower()
        local = box.split("@")[0]
        to = [a.addr_spec.lower() for h in ("To", "Cc") if msg[h] is not None for a in msg[h].addresses]
        if not (mid and box and any(a == box or a.startswith(local + "+") for a in to)):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(m["Message-ID"] == mid for m in self.messages("outbound")):
                return
            time.sleep(0.1)

    def ready(self, who: str, ready: bool = True) -> None:
        set_ready(Agent.objects.get(address=self.address(who)), ready, now=timezone.now())


class Clock:
    """The engine's clock in tests: real time, plus whatever the test skips ahead."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return timezone.now() + self.offset

    def advance(self, **kwargs: float) -> None:
        self.offset += timedelta(**kwargs)


@pytest.fixture
def make_center(
    mailstack: DevStack, new_user: Callable[..., tuple[str, str]], tmp_path: Path
) -> Iterator[Callable[..., Center]]:
    """Build a contact center; `extra` is TOML appended to the base configuration (use
    {name} placeholders for the test's addresses), agents' skills/auto-answer adjustable."""
    made: list[Center] = []

    def make(
        extra: str = "",
        *,
        alice_skills: str = '["support"]',
        bob_skills: str = '["support"]',
        alice_auto: bool = True,
        bob_auto: bool = True,
    ) -> Center:
        roles = {"support": "example.test", "sales": "example.test", "outbound": "example.test",
                 "dead": "example.test", "journal": "example.test", "alice": "example.test", "bob": "example.test",
                 "sam": "example.test", "carol": "customer.test", "stranger": "customer.test"}
        # One reload of the MX for all of them: a few seconds less per test than one each.
        pairs = {role: (f"{role}-{secrets.token_hex(5)}@{domain}", secrets.token_urlsafe(12)) for role, domain in roles.items()}
        added = mailstack.add_users(pairs.values())
        users = {role: (address, pairs[role][1]) for role, address in zip(pairs, added, strict=True)}
        values = {
            "imap_port": mailstack.imap_port,
            "submission_port": mailstack.submission_port,
            "cafile": mailstack.cafile,
            "alice_skills": alice_skills,
            "bob_skills": bob_skills,
            "alice_auto": str(alice_auto).lower(),
            "bob_auto": str(bob_auto).lower(),
            **{k: v[0] for k, v in users.items()},
            **{f"{k}_pw": v[1] for k, v in users.items()},
        }
        path = tmp_path / f"postroom-{len(made)}.toml"
        path.write_text(CONFIG.format(**values) + extra.format(**values))
        config = load_config(path)
        apply_config(config)
        clock = Clock()
        engine = Engine(site_from_config(config), now=clock)
        center = Center(stack=mailstack, config=config, engine=engine, users=users, clock=clock, path=path)
        made.append(center)
        return center

    try:
        yield make
    finally:
        for center in made:
            center.engine.stop()
            center.engine.close()


@pytest.fixture
def center(make_center: Callable[..., Center]) -> Center:
    return make_center()
