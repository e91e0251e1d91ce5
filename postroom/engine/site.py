"""What the engine needs to know about the site that is not in the database.

Built from the TOML configuration at start (`Site.from_config`); the mailboxes and
agents themselves come from the database so the admin can edit them while we run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from postroom.config import Config
from postroom.core.approval import ApprovalPolicy
from postroom.core.cluster import Role
from postroom.core.keys import KeyRing
from postroom.core.outbox import Policy as OutboxPolicy
from postroom.core.priority import PriorityPolicy, default_policy
from postroom.core.senderauth import SenderAuthPolicy
from postroom.engine.island import IslandSettings
from postroom.engine.originals import Originals
from postroom.mail.imap import ImapAccount, TokenSource
from postroom.mail.smtp import SmtpAccount

if TYPE_CHECKING:
    from postroom.engine.oauth2 import Tokens

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Journal:
    """The journal box ([journal]): its address, how to read it, how long copies stay."""

    address: str
    account: ImapAccount
    retention: timedelta


@dataclass(frozen=True)
class Site:
    node_id: str
    # Token keys derived from the configured secrets (decision 0013).
    keys: KeyRing = field(repr=False)
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
    # Mailbox address -> password, resolved from the configuration at start; the database
    # holds none (decision 0017).
    passwords: Mapping[str, str] = field(default_factory=dict, repr=False)
    # Who may make Postroom act on mail in the outbound box (decision 0014).
    sender_auth: SenderAuthPolicy = field(default_factory=SenderAuthPolicy)
    # At most this many auto-responses to one address within the window (0: no limit).
    auto_response_limit: int = 3
    auto_response_window: timedelta = timedelta(hours=24)
    # At most this many "not delivered" notices to one person an hour.
    refusal_notices_per_hour: int = 10
    # Health and alerts (TOML [health]).
    alert_interval: timedelta = timedelta(hours=1)
    sync_alert_after: timedelta = timedelta(minutes=5)
    reconcile_interval: timedelta = timedelta(minutes=5)
    withdrawal_attempts: int = 8
    # This node among the nodes on the database ([cluster]; docs/redundancy.md).
    role: Role = Role.PRIMARY
    node_lease: timedelta = timedelta(seconds=6)
    # Sending ([outbox], [journal]; docs/decisions/0007).
    outbox: OutboxPolicy = field(default_factory=OutboxPolicy)
    journal: Journal | None = None
    # MAIL FROM of auto-responses and notices: "" (RFC 3834 null path) or "box".
    automatic_envelope_from: str = "null"
    # SMTP sessions (sender threads) of a running engine ([outbox] sessions, decision 0039).
    smtp_sessions: int = 4
    # Island mode ([cluster] sync_address; decision 0036); None: off.
    island: IslandSettings | None = None
    # The logins on OAuth2 ([[oauth2]]; engine/oauth2.py); None: every box has a password.
    tokens: Tokens | None = field(default=None, repr=False)
    # The originals reception fetched, kept for delivery (decision 0053): this engine's
    # own, in its memory; not configuration (a Site made with dataclasses.replace starts
    # with an empty one, as a restarted engine does).
    originals: Originals = field(default_factory=Originals, init=False, repr=False, compare=False)

    @property
    def heartbeat(self) -> float:
        """Seconds between two renewals of the node's lease: several per lease, so a
        missed one or two (a slow database) do not cost the lease."""
        return min(1.0, self.node_lease.total_seconds() / 4)

    def password_for(self, address: str) -> str:
        """The password of a mailbox (incoming, outbound, dead, or an agent's own); "" when
        the configuration gives none."""
        return self.passwords.get(address.lower(), "")

    def automatic_sender(self, box_address: str) -> str:
        """The envelope sender of automatic mail written from `box_address`."""
        return box_address if self.automatic_envelope_from == "box" else ""

    def token_for(self, login: str) -> TokenSource | None:
        """How a login on OAuth2 gets its access token; None for a password login."""
        return self.tokens.source(login) if self.tokens is not None else None

    def imap_account(self, login: str, password: str, folder: str = "INBOX") -> ImapAccount:
        return ImapAccount(
            host=self.imap_host,
            port=self.imap_port,
            tls=self.imap_tls,
            login=login,
            password=password,
            folder=folder,
            cafile=self.cafile,
            token=self.token_for(login),
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
    from postroom.engine.oauth2 import Tokens  # needs Django's apps; site.py does not

    tokens = Tokens.of(config)
    if not config.sender_auth.required:
        log.warning(
            "[sender_auth] required = false: replies and approval decisions in the outbound "
            "box are trusted on their From header alone; anyone who can mail the outbound box "
            "with a leaked token can make Postroom write to a customer (docs/configuration.md)"
        )
    return Site(
        node_id=config.node_id,
        keys=KeyRing.from_secrets(config.secrets),
        imap_host=server.imap_host,
        imap_port=server.imap_port,
        imap_tls=server.imap_tls,
        smtp=SmtpAccount(
            host=server.smtp_host,
            port=server.smtp_port,
            tls=server.smtp_tls,
            login=server.smtp_login,
            password=server.smtp_password or "",
            cafile=cafile,
            timeout=float(config.outbox.send_timeout_seconds),
            token=tokens.source(server.smtp_login) if tokens and server.smtp_login else None,
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
        passwords=config.mail_passwords(),
        sender_auth=config.sender_auth.as_policy(),
        auto_response_limit=config.auto_response.max_per_address,
        auto_response_window=timedelta(seconds=config.auto_response.window_seconds),
        max_message_bytes=server.max_message_bytes,
        alert_interval=timedelta(seconds=config.health.alert_mail_interval_seconds),
        sync_alert_after=timedelta(seconds=config.health.sync_alert_after_seconds),
        reconcile_interval=timedelta(seconds=config.health.reconcile_interval_seconds),
        withdrawal_attempts=config.health.withdrawal_attempts,
        role=Role(config.cluster.role),
        node_lease=timedelta(seconds=config.cluster.node_lease_seconds),
        outbox=OutboxPolicy(
            max_attempts=config.outbox.max_attempts,
            lease=timedelta(seconds=config.outbox.lease_seconds),
            grace=timedelta(seconds=config.journal.grace_seconds if config.journal else 0),
        ),
        journal=journal_of(config, cafile, tokens),
        automatic_envelope_from=config.outbox.automatic_envelope_from,
        smtp_sessions=config.outbox.sessions,
        island=IslandSettings.of(config),
        tokens=tokens,
    )


def journal_of(config: Config, cafile: str | None, tokens: Tokens | None = None) -> Journal | None:
    box = config.journal
    if box is None:
        return None
    server = config.server
    account = ImapAccount(
        host=server.imap_host,
        port=server.imap_port,
        tls=server.imap_tls,
        login=box.login,
        password=box.password or "",
        folder=box.folder,
        cafile=cafile,
        token=tokens.source(box.login) if tokens else None,
        # Each search runs under an outbox lease: bounded like an SMTP transaction.
        timeout=float(config.outbox.send_timeout_seconds),
    )
    return Journal(address=box.address, account=account, retention=timedelta(seconds=box.retention_seconds))


def seconds(value: int | None) -> timedelta | None:
    return timedelta(seconds=value) if value else None
