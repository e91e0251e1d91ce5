"""What the engine needs to know about the site that is not in the database.

Built from the TOML configuration at start (`Site.from_config`); the mailboxes and
agents themselves come from the database so the admin can edit them while we run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from postroom.config import Config
from postroom.core.approval import ApprovalPolicy
from postroom.core.outbox import Policy as OutboxPolicy
from postroom.core.priority import PriorityPolicy, default_policy
from postroom.mail.imap import ImapAccount
from postroom.mail.smtp import SmtpAccount


@dataclass(frozen=True)
class Journal:
    """The journal box ([journal]): its address, how to read it, how long copies stay."""

    address: str
    account: ImapAccount
    retention: timedelta


@dataclass(frozen=True)
class Site:
    node_id: str
    secret: bytes = field(repr=False)
    imap_host: str
    imap_port: int
    imap_tls: str
    smtp: SmtpAccount
    cafile: str | None = None
    idle: bool = True
    poll_interval: float = 5.0
    # How long one IDLE lasts before we look again anyway (RFC 2177: under 29 minutes);
    # short, because it bounds how late mail that raced the start of IDLE is seen
    # (see Engine._watch). One NOOP + SEARCH per box every 10 s costs next to nothing.
    idle_timeout: float = 10.0
    max_message_bytes: int = 25 * 1024 * 1024
    # Domain of the Message-IDs we mint (the outbound box's domain by default).
    message_id_domain: str = "postroom.invalid"
    # Routing policy (TOML [routing]).
    offer_timeout: timedelta | None = None
    follow_up_wait: timedelta = timedelta(minutes=15)
    no_reply_priority_raise: int = 10
    unassigned_queue: str = "unassigned"
    approval: ApprovalPolicy = field(default_factory=ApprovalPolicy)
    priority_policy: PriorityPolicy = default_policy
    # Sending ([outbox], [journal]; docs/decisions/0007).
    outbox: OutboxPolicy = field(default_factory=OutboxPolicy)
    journal: Journal | None = None
    # MAIL FROM of auto-responses and notices: "" (RFC 3834 null path) or "box".
    automatic_envelope_from: str = "null"

    def automatic_sender(self, box_address: str) -> str:
        """The envelope sender of automatic mail written from `box_address`."""
        return box_address if self.automatic_envelope_from == "box" else ""

    def imap_account(self, login: str, password: str, folder: str = "INBOX") -> ImapAccount:
        return ImapAccount(
            host=self.imap_host,
            port=self.imap_port,
            tls=self.imap_tls,
            login=login,
            password=password,
            folder=folder,
            cafile=self.cafile,
        )


def site_from_config(config: Config, *, devstack_cafile: str | None = None) -> Site:
    """The engine's view of a loaded configuration; `cafile = "devstack"` means the local
    dev stack's generated CA, whose path only the caller knows."""
    server = config.server
    routing = config.routing
    cafile: str | None
    if server.cafile == "system":
        cafile = None
    elif server.cafile == "devstack":
        cafile = devstack_cafile
    else:
        cafile = server.cafile
    return Site(
        node_id=config.node_id,
        secret=config.secret,
        imap_host=server.imap_host,
        imap_port=server.imap_port,
        imap_tls=server.imap_tls,
        smtp=SmtpAccount(
            host=server.smtp_host,
            port=server.smtp_port,
            tls=server.smtp_tls,
            login=server.smtp_login,
            password=server.smtp_password,
            cafile=cafile,
            timeout=float(config.outbox.send_timeout_seconds),
        ),
        cafile=cafile,
        idle=server.idle,
        poll_interval=float(server.poll_seconds),
        # A subdomain nobody else mints Message-IDs in: mail carrying one is ours (B-4),
        # while colleagues writing from the company domain are still customers.
        message_id_domain="postroom." + config.outbound.address.rpartition("@")[2],
        offer_timeout=seconds(routing.offer_timeout_seconds),
        follow_up_wait=seconds(routing.follow_up_wait_seconds) or timedelta(0),
        no_reply_priority_raise=routing.no_reply_priority_raise,
        unassigned_queue=routing.unassigned_queue,
        approval=config.approval.as_policy(),
        priority_policy=config.priority.policy or default_policy,
        outbox=OutboxPolicy(
            max_attempts=config.outbox.max_attempts,
            lease=timedelta(seconds=config.outbox.lease_seconds),
            grace=timedelta(seconds=config.journal.grace_seconds if config.journal else 0),
        ),
        journal=journal_of(config, cafile),
        automatic_envelope_from=config.outbox.automatic_envelope_from,
    )


def journal_of(config: Config, cafile: str | None) -> Journal | None:
    box = config.journal
    if box is None:
        return None
    server = config.server
    account = ImapAccount(
        host=server.imap_host,
        port=server.imap_port,
        tls=server.imap_tls,
        login=box.login,
        password=box.password,
        folder=box.folder,
        cafile=cafile,
        # Each search runs under an outbox lease: bounded like an SMTP transaction.
        timeout=float(config.outbox.send_timeout_seconds),
    )
    return Journal(address=box.address, account=account, retention=timedelta(seconds=box.retention_seconds))


def seconds(value: int | None) -> timedelta | None:
    return timedelta(seconds=value) if value else None
