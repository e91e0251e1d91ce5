"""Persistence: the tracking records and the configuration objects, nothing else.

Invariants that matter for "exactly once" live in constraints, not in code paths:
one interaction per (mailbox, UIDVALIDITY, UID), one outgoing mail per idempotency key,
one ledger row per message seen in the outbound box.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models

from postroom.core.alerts import AlertKind
from postroom.core.cluster import Mode, Role
from postroom.core.contactkeys import address_key, domain_key
from postroom.core.lifecycle import State
from postroom.core.oauth2 import GrantState
from postroom.core.outbox import OutboxState


class Mailbox(models.Model):
    """A mailbox on the company's mail server that Postroom reads or writes."""

    INCOMING = "incoming"
    OUTBOUND = "outbound"
    DEAD = "dead"
    KINDS = [(INCOMING, "incoming"), (OUTBOUND, "outbound"), (DEAD, "dead box")]

    kind = models.CharField(max_length=16, choices=KINDS, default=INCOMING)
    address = models.EmailField(unique=True)
    display_name = models.CharField(max_length=200, blank=True)
    # The password is never stored: the engine resolves it from the configuration file
    # (password, password_file or password_env) when it starts (Site.password_for).
    login = models.CharField(max_length=254)
    folder = models.CharField(max_length=200, default="INBOX")
    auto_response = models.BooleanField(default=True)
    auto_response_subject = models.CharField(max_length=300, default="Your message to {box} [{reference}]")
    auto_response_text = models.TextField(blank=True)
    # The templates may echo {name} and {subject}, the sender's own words; off, they read
    # "customer" and "your message" (a forged From must not choose what we send).
    auto_response_customer_text = models.BooleanField(default=False)
    no_reply_seconds = models.PositiveIntegerField(default=4 * 3600)
    # Shorter no-reply times for urgent mail: [[min_priority, seconds], ...]; the band
    # with the highest min_priority not above the interaction's priority wins.
    no_reply_bands = models.JSONField(default=list, blank=True)
    trash_folder = models.CharField(max_length=200, default="Trash")
    # Where finished mail goes on the same account (replied, ended, the agent's reply):
    # moved there, never expunged (docs/decisions/0010).
    archive_folder = models.CharField(max_length=200, default="Postroom-Archive")
    skills = models.JSONField(default=list, blank=True)
    default_priority = models.IntegerField(default=0)
    # The reports' service level: the share of this box's mail answered within this time.
    service_level_seconds = models.PositiveIntegerField(default=4 * 3600)
    # The ingest cursor: UIDs up to last_uid under this UIDVALIDITY have been looked at.
    uidvalidity = models.BigIntegerField(null=True, blank=True)
    last_uid = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["kind", "address"]

    def __str__(self) -> str:
        return f"{self.address} ({self.kind})"

    @classmethod
    def watched(cls) -> models.QuerySet[Mailbox]:
        """The boxes the engine watches (a watcher each, the supervisor's round, the sync
        watchdog, the boxes page): every box but the dead box."""
        return cls.objects.filter(kind__in=[cls.INCOMING, cls.OUTBOUND])


class Agent(models.Model):
    name = models.CharField(max_length=200)
    address = models.EmailField(unique=True)
    skills = models.JSONField(default=list, blank=True)
    is_supervisor = models.BooleanField(default=False)
    # Replies of a probationary agent always need approval (fig. 10 564).
    probationary = models.BooleanField(default=False)
    supervisors = models.ManyToManyField(
        "self", symmetrical=False, blank=True, related_name="supervisees"
    )
    # Send a short notification mail when an interaction is offered (fig. 7).
    notify_offers = models.BooleanField(default=False)
    # The agent's own mailbox login, if the site gives its password (in the configuration
    # file, never here): lets Postroom withdraw a forwarded copy when the interaction is
    # taken away (fig. 8 462). Blank: not withdrawn.
    mailbox_login = models.CharField(max_length=254, blank=True)
    auto_answer = models.BooleanField(default=False)
    capacity = models.PositiveIntegerField(default=1)
    ready = models.BooleanField(default=False)
    state_changed_at = models.DateTimeField(null=True, blank=True)
    routed_count = models.PositiveIntegerField(default=0)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    # Incoming boxes whose interactions this agent may read (journal, transcripts, reports)
    # besides those it holds; its groups' boxes count too (postroom.store.permissions).
    boxes = models.ManyToManyField(
        Mailbox,
        blank=True,
        related_name="readers",
        limit_choices_to={"kind": Mailbox.INCOMING},
        help_text="Incoming boxes this agent may read (besides its groups' boxes)",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} <{self.address}>"

    @property
    def skill_levels(self) -> dict[str, int]:
        """Skills with levels: stored as {"support": 3} or, without levels, ["support"]."""
        return skill_levels(self.skills)

    def approvers(self) -> list[str]:
        """Who approves this agent's held replies: its supervisors (fig. 10 566), else every
        supervisor; never the agent itself, since a writer may not approve their own reply."""
        named = [a.address for a in self.supervisors.all()]
        found = named or list(Agent.objects.filter(is_supervisor=True).values_list("address", flat=True))
        return [a for a in found if a.lower() != self.address.lower()]


class AgentGroup(models.Model):
    """A team (MailFlow's groups): its members may read the incoming boxes granted to it."""

    name = models.CharField(max_length=100, unique=True)
    members = models.ManyToManyField(Agent, blank=True, related_name="groups")
    boxes = models.ManyToManyField(
        Mailbox, blank=True, related_name="groups", limit_choices_to={"kind": Mailbox.INCOMING}
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


def skill_levels(skills: object) -> dict[str, int]:
    if isinstance(skills, dict):
        return {str(k): int(v) for k, v in skills.items()}
    if isinstance(skills, list | tuple):
        return {str(k): 1 for k in skills}
    return {}


def contact_keys(address: str | None, domain: str | None) -> tuple[str | None, str | None]:
    """A contact's (address_key, domain_key) for its address and domain."""
    return (address_key(address) if address else None, domain_key(domain) if domain else None)


class ContactQuerySet(models.QuerySet["Contact"]):
    """Contacts' bulk writes keep the keys as `Contact.save` does."""

    def bulk_create(self, objs: Any, *args: Any, **kwargs: Any) -> Any:
        objs = list(objs)
        for obj in objs:
            obj.set_keys()
        return super().bulk_create(objs, *args, **kwargs)

    def bulk_update(self, objs: Any, fields: Any, *args: Any, **kwargs: Any) -> Any:
        objs, fields = list(objs), list(fields)
        for obj in objs:
            obj.set_keys()
        fields += [f"{name}_key" for name in ("address", "domain") if name in fields and f"{name}_key" not in fields]
        return super().bulk_update(objs, fields, *args, **kwargs)

    def update(self, **kwargs: Any) -> int:
        for name, key in (("address", address_key), ("domain", domain_key)):
            if name not in kwargs or f"{name}_key" in kwargs:  # (bulk_update gives both)
                continue
            value = kwargs[name]
            if value is not None and not isinstance(value, str):
                raise TypeError(f"Contact {name} updated by an expression: its key cannot follow; save each row")
            kwargs[f"{name}_key"] = key(value) if value else None
        return super().update(**kwargs)


class Contact(models.Model):
    """The customer database consulted for priority and approval (fig. 5 318).

    Looked up by exact address first, then by the sender's domain.
    """

    address = models.EmailField(unique=True, null=True, blank=True)
    domain = models.CharField(max_length=253, unique=True, null=True, blank=True)
    name = models.CharField(max_length=200, blank=True)
    level = models.CharField(max_length=40, default="standard", help_text="e.g. vip, gold, standard")
    priority = models.IntegerField(default=0, help_text="Added to the box's default priority")
    requires_approval = models.BooleanField(default=False)
    notes = models.TextField(blank=True)
    # What the lookup compares by equality (core.contactkeys, decision 0068): the address
    # and the domain case-folded, IDN labels in their Unicode form. Kept by `save` and by
    # the queryset's bulk writes; never typed.
    address_key = models.CharField(max_length=1020, null=True, blank=True, editable=False)
    domain_key = models.CharField(max_length=1020, null=True, blank=True, editable=False)

    objects = ContactQuerySet.as_manager()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(address__isnull=False) | models.Q(domain__isnull=False),
                name="contact_has_address_or_domain",
            )
        ]
        indexes = [
            models.Index(fields=["address_key"], name="contact_address_key"),
            models.Index(fields=["domain_key"], name="contact_domain_key"),
        ]

    def __str__(self) -> str:
        return f"{self.name or self.address or self.domain} ({self.level})"

    def set_keys(self) -> None:
        self.address_key, self.domain_key = contact_keys(self.address, self.domain)

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.set_keys()
        update_fields = kwargs.get("update_fields")
        if update_fields is not None:
            fields = set(update_fields)
            fields |= {f"{name}_key" for name in ("address", "domain") if name in fields}
            kwargs["update_fields"] = fields
        super().save(*args, **kwargs)


class Rule(models.Model):
    """One routing rule (MailFlow / iceMail "Check Email"): ordered, data, not code."""

    ALL = "all"
    ANY = "any"

    position = models.PositiveIntegerField(default=0, db_index=True)
    name = models.CharField(max_length=200, unique=True)
    enabled = models.BooleanField(default=True)
    match = models.CharField(max_length=3, choices=[(ALL, "all"), (ANY, "any")], default=ALL)
    # [{"field": "from"|"to"|"subject"|"body"|"header:X-Name", "op": "contains"|"equals"|"regex", "value": "..."}]
    conditions = models.JSONField(default=list)
    # [{"action": "queue"|"agent"|"set_priority"|"add_priority"|"require_approval"|"auto_response"|"forward_copy"|"delete", "value": ...}]
    actions = models.JSONField(default=list)
    # Go on evaluating the next rules after this one matched.
    continue_after = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return f"{self.position}. {self.name}"


class WrapUpCode(models.Model):
    """Codes an agent chooses from when ending an interaction (or resolving a replied one)."""

    code = models.SlugField(max_length=60, unique=True)
    label = models.CharField(max_length=200)

    def __str__(self) -> str:
        return self.label


class Interaction(models.Model):
    """The tracking record of fig. 3: one customer email and everything done about it."""

    guid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    node_id = models.CharField(max_length=64)
    mailbox = models.ForeignKey(Mailbox, on_delete=models.PROTECT, related_name="interactions")
    uidvalidity = models.BigIntegerField()
    uid = models.BigIntegerField()
    message_id = models.CharField(max_length=998, blank=True, db_index=True)
    # Message-ID plus a digest of sender, Date and Subject (core/dedupe.py): one interaction
    # per mail across all boxes, backed by a unique index; "" (no Message-ID) never dedupes.
    dedupe_key = models.CharField(max_length=64, blank=True, default="")
    # The sha256 of the raw mail as the box holds it: with the box and Message-ID, the
    # email's name in island mode's claims (decision 0036), the same on every node.
    raw_sha256 = models.CharField(max_length=64, blank=True, default="")
    references = models.JSONField(default=list, blank=True)
    # The same mail seen in other boxes too (To support@, Cc sales@): [[mailbox, uidvalidity,
    # uid], ...]; one interaction, one auto-response, and every copy cleared at the end.
    copies = models.JSONField(default=list, blank=True)
    # A copy arrived after the interaction closed: the cleanup step archives it.
    copies_pending = models.BooleanField(default=False)
    to_addr = models.CharField("To", max_length=998, blank=True)
    reply_to = models.CharField("Reply-To", max_length=998, blank=True)
    customer = models.CharField(max_length=320, db_index=True)
    customer_name = models.CharField(max_length=300, blank=True)
    subject = models.CharField(max_length=998, blank=True)
    arrival_time = models.DateTimeField(help_text="The mail server's INTERNALDATE")
    auto_response_sent_at = models.DateTimeField(null=True, blank=True)
    auto_response_skipped = models.CharField(max_length=200, blank=True)
    priority = models.IntegerField(default=0)
    # Why the priority is what it is: [["box default", 0], ["contact vip", 50], ...].
    priority_reasons = models.JSONField(default=list, blank=True)
    # The skill queue it waits in ("unassigned" when no rule or box names one).
    queue = models.CharField(max_length=100, default="unassigned", db_index=True)
    # Which rules fired and which did not, in order, for the supervisor.
    rules = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=20, choices=[(s.value, s.value) for s in State], default=State.QUEUED
    )
    agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.PROTECT, related_name="interactions"
    )
    # Routing constraints: a named agent (rule or transfer), a preferred agent for a
    # customer's follow-up until a deadline (sticky routing), agents to avoid (no-reply).
    target_agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    preferred_agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    preferred_until = models.DateTimeField(null=True, blank=True)
    excluded_agents = models.JSONField(default=list, blank=True)
    follows = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="follow_ups"
    )
    offer_due_at = models.DateTimeField(null=True, blank=True, db_index=True)
    no_reply_due_at = models.DateTimeField(null=True, blank=True, db_index=True)
    routed_at = models.DateTimeField(null=True, blank=True)
    answered_at = models.DateTimeField("answer time", null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    replied_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    # replied | wrapped_up | discarded | vanished | claimed_elsewhere
    outcome = models.CharField(max_length=20, blank=True)
    wrapup_code = models.CharField(max_length=60, blank=True)
    resolution_code = models.CharField(max_length=60, blank=True)
    # How many times the mail was forwarded to an agent: part of the forward's key.
    deliveries = models.PositiveIntegerField(default=0)
    approval = models.BooleanField(default=False)
    claim_node = models.CharField(max_length=64, blank=True)
    claim_time = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Optimistic concurrency: every state change is UPDATE ... WHERE version = seen.
    version = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["mailbox", "uidvalidity", "uid"], name="one_interaction_per_message"
            ),
            models.UniqueConstraint(
                fields=["dedupe_key"], condition=~models.Q(dedupe_key=""), name="one_interaction_per_mail"
            ),
        ]
        indexes = [
            models.Index(fields=["status", "-priority", "arrival_time"]),
            # The journal's keyset pagination, newest first, overall and per box or agent.
            models.Index(fields=["-arrival_time", "-id"], name="ix_arrival_desc"),
            models.Index(fields=["mailbox", "-arrival_time", "-id"], name="ix_box_arrival"),
            models.Index(fields=["agent", "-arrival_time", "-id"], name="ix_agent_arrival"),
            models.Index(fields=["replied_at"], name="ix_replied_at"),
        ]

    def __str__(self) -> str:
        return f"{self.guid} {self.status} {self.subject[:40]!r}"

    @property
    def state(self) -> State:
        return State(self.status)


class Outgoing(models.Model):
    """The transactional outbox: a mail is built and keyed before it may leave.

    `state` follows `postroom.core.outbox` (docs/decisions/0007): a row is claimed by one
    engine at a time (`claimed_by`, `lease_until`), sent to its recipients and to the
    journal box in one SMTP transaction, and a row whose outcome is unknown is settled
    from the journal box before anything is sent again.
    """

    AUTO_RESPONSE = "auto_response"
    FORWARD = "forward"
    REPLY = "reply"
    NOTICE = "notice"
    KINDS = [(k, k) for k in (AUTO_RESPONSE, FORWARD, REPLY, NOTICE)]

    PENDING = OutboxState.PENDING
    SENDING = OutboxState.SENDING
    SENT = OutboxState.SENT
    RETRY_WAIT = OutboxState.RETRY_WAIT
    UNKNOWN = OutboxState.UNKNOWN
    DEAD = OutboxState.DEAD
    CANCELLED = OutboxState.CANCELLED
    STATES = [(s.value, s.value) for s in OutboxState]

    key = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=16, choices=KINDS)
    # Indexed with its kind (Meta), not alone: every lookup by interaction is served by
    # that index, and the reports count an interaction's mail by kind from it alone.
    interaction = models.ForeignKey(
        Interaction, null=True, blank=True, on_delete=models.CASCADE, related_name="outgoing", db_index=False
    )
    envelope_from = models.CharField(max_length=320)
    recipients = models.JSONField()
    message_id = models.CharField(max_length=998)
    raw = models.BinaryField()
    state = models.CharField(max_length=10, choices=STATES, default=OutboxState.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # When a pending/retry_wait row is sent, or an unknown one checked in the journal box.
    next_attempt_at = models.DateTimeField()
    # The claim: "node:process-token" of the engine holding the row, and until when.
    claimed_by = models.CharField(max_length=120, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    # A forward belongs to one delivery round (Interaction.deliveries) and one agent: only
    # the current round's forward completes (or fails) the delivery.
    delivery = models.PositiveIntegerField(null=True, blank=True)
    agent = models.ForeignKey(Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    # An auto-response's addressee, lower-cased: the per-address rate limit counts by it
    # with the index below, not by a join to the interaction per mail (decision 0040).
    # Blank for the other kinds.
    rate_key = models.CharField(max_length=320, blank=True, default="")

    class Meta:
        indexes = [
            models.Index(fields=["state", "next_attempt_at"]),
            models.Index(fields=["rate_key", "created_at"], name="store_outgoing_rate_key"),
            models.Index(fields=["interaction", "kind"], name="outgoing_interaction_kind"),
        ]

    @property
    def outbox_state(self) -> OutboxState:
        return OutboxState(self.state)


class OutboundMessage(models.Model):
    """Ledger of every message seen in the outbound box, and what became of it."""

    ACCEPTED = "accepted"
    DEAD = "dead"
    # An approver's answer by mail to an approval request: acted on, then deleted.
    DECISION = "decision"
    # Left in the outbound box for later (decision 0045): an agent's mail whose token is
    # genuine but names an interaction this store does not know while a node works on its
    # local store (or has not merged it yet). Read again once that is over.
    WAITING = "waiting"
    OUTCOMES = [
        (ACCEPTED, "accepted"), (DEAD, "dead box"), (DECISION, "approval decision"),
        (WAITING, "waiting for an island's merge"),
    ]

    mailbox = models.ForeignKey(Mailbox, on_delete=models.PROTECT)
    uidvalidity = models.BigIntegerField()
    uid = models.BigIntegerField()
    message_id = models.CharField(max_length=998, blank=True)
    sender = models.CharField(max_length=320, blank=True)
    subject = models.CharField(max_length=998, blank=True)
    interaction = models.ForeignKey(
        Interaction, null=True, blank=True, on_delete=models.SET_NULL, related_name="replies"
    )
    outcome = models.CharField(max_length=16, choices=OUTCOMES)
    reason = models.CharField(max_length=500, blank=True)
    # Set once the message is gone from the outbound box (deleted or moved to the dead box).
    removed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["mailbox", "uidvalidity", "uid"], name="one_ledger_row_per_message"
            )
        ]


class Approval(models.Model):
    """A reply held for a supervisor (fig. 10 566-574), decided on the web or by mail."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    STATES = [(s, s) for s in (PENDING, APPROVED, REJECTED)]

    interaction = models.ForeignKey(Interaction, on_delete=models.CASCADE, related_name="approvals")
    reply = models.ForeignKey(OutboundMessage, on_delete=models.PROTECT, related_name="approvals")
    # The reply as rewritten for the customer, kept so approval never needs the server.
    raw = models.BinaryField()
    approvers = models.JSONField(default=list)
    reason_held = models.CharField(max_length=300, blank=True)
    state = models.CharField(max_length=10, choices=STATES, default=PENDING, db_index=True)
    edited_text = models.TextField(blank=True)
    rejection_reason = models.TextField(blank=True)
    decided_by = models.CharField(max_length=320, blank=True)
    decided_via = models.CharField(max_length=10, blank=True)  # web | mail
    requested_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    # Set once the engine has acted on the decision (sent, or notified the agent).
    applied_at = models.DateTimeField(null=True, blank=True)
    # Set once the approvers' requests by mail are queued. A reply held by the engine gets
    # them in the same transaction; one written in the web composer (the web may not mint
    # approval tokens) gets them from the engine's approval step, which looks for NULL here.
    mailed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at"]


class Withdrawal(models.Model):
    """A forwarded copy to take back out of an agent's mailbox (fig. 8 462): written in the
    same transaction that takes the interaction away from the agent."""

    interaction = models.ForeignKey(Interaction, on_delete=models.CASCADE, related_name="withdrawals")
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="+")
    message_id = models.CharField(max_length=998)
    reason = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    done_at = models.DateTimeField(null=True, blank=True)
    result = models.CharField(max_length=200, blank=True)
    # Retried with backoff while the agent's mailbox cannot be reached; given up (with an
    # alert) after [health] withdrawal_attempts.
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)


class Quarantined(models.Model):
    """A message Postroom could not take: kept on the server, with the reason.

    Recorded first, then moved aside (`moved_at`); a move that failed is retried until it is
    done. A release (admin, API or `postroom quarantine release`) moves it back into the
    box, where it is taken again as new mail.
    """

    mailbox = models.ForeignKey(Mailbox, on_delete=models.PROTECT)
    uidvalidity = models.BigIntegerField()
    uid = models.BigIntegerField()
    folder = models.CharField(max_length=200, help_text="Where the message now is")
    reason = models.CharField(max_length=1000)
    size = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    # What finds the message again in the quarantine folder (its UID there is new).
    message_id = models.CharField(max_length=998, blank=True)
    internaldate = models.DateTimeField(null=True, blank=True)
    moved_at = models.DateTimeField(null=True, blank=True)
    move_attempts = models.PositiveIntegerField(default=0)
    next_move_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    release_requested_at = models.DateTimeField(null=True, blank=True)
    release_requested_by = models.CharField(max_length=320, blank=True)
    released_at = models.DateTimeField(null=True, blank=True)
    release_result = models.CharField(max_length=300, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["mailbox", "uidvalidity", "uid"], name="one_quarantine_row_per_message"
            )
        ]


class JournalEvent(models.Model):
    """Append-only log of every step; reports are computed from it alone."""

    at = models.DateTimeField(db_index=True)
    kind = models.CharField(max_length=40, db_index=True)
    interaction = models.ForeignKey(
        Interaction, null=True, blank=True, on_delete=models.CASCADE, related_name="journal"
    )
    agent = models.ForeignKey(Agent, null=True, blank=True, on_delete=models.SET_NULL)
    mailbox = models.ForeignKey(Mailbox, null=True, blank=True, on_delete=models.SET_NULL)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["at", "id"]
        # The reports read events of some kinds within a date range, and of each only its
        # interaction and time: with the interaction in the index they are read from the
        # index alone (no lookup of each event's row; decision 0051).
        indexes = [models.Index(fields=["kind", "at", "interaction"], name="journal_kind_at_ix")]


class ApiToken(models.Model):
    """A bearer token for the REST API; only its SHA-256 is stored. It works until
    `expires_at`, or until revoked (`postroom token revoke`, or the admin)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    name = models.CharField(max_length=100, default="default")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.user})"


class AuditEntry(models.Model):
    """One privileged action or login, append-only (postroom.store.audit)."""

    at = models.DateTimeField(db_index=True)
    # Who: an agent's address, a username, "cli" or a mail sender.
    actor = models.CharField(max_length=320, db_index=True)
    action = models.CharField(max_length=40, db_index=True)
    # What it was done to: an interaction GUID, an agent's address, "model:pk"...
    target = models.CharField(max_length=500, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    # web | api | admin | cli | mail
    via = models.CharField(max_length=10)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit trail"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.target}"


class InteractionText(models.Model):
    """What the journal's full-text search reads for one interaction (decision 0023): the
    subject and plain-text excerpts of the customer's mail (kept at reception) and of the
    reply (kept when it is queued). Not the mail: that stays on the server (0001).

    Indexed by `postroom.store.search`: an FTS5 table kept by triggers on SQLite, a GIN
    expression index on PostgreSQL (both made by migration 0007).
    """

    interaction = models.OneToOneField(
        Interaction, primary_key=True, on_delete=models.CASCADE, related_name="text"
    )
    subject = models.TextField(blank=True)
    customer_text = models.TextField(blank=True)
    reply_text = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)


class EvaluationCriterion(models.Model):
    """One line of the evaluation form (iceJournal's evaluate), from the configuration."""

    code = models.SlugField(max_length=60, unique=True)
    label = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    weight = models.PositiveIntegerField(default=1)
    max_score = models.PositiveIntegerField(default=5)
    position = models.PositiveIntegerField(default=0)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["position", "id"]
        verbose_name_plural = "evaluation criteria"

    def __str__(self) -> str:
        return f"{self.label} (weight {self.weight})"


class Evaluation(models.Model):
    """A supervisor's scores for one finished interaction; one per evaluator, editable.

    The criteria are copied in as scored (label, weight, maximum), so a later change of
    the form does not rewrite old scores. `score` is the weighted result, 0-100.
    """

    interaction = models.ForeignKey(
        Interaction, on_delete=models.CASCADE, related_name="evaluations"
    )
    # Who was evaluated and in which box, as of the evaluation (reports group by these).
    agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="evaluations"
    )
    mailbox = models.ForeignKey(
        Mailbox, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    evaluator = models.CharField(max_length=320)
    scores = models.JSONField(default=list)
    score = models.FloatField()
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["interaction", "evaluator"], name="one_evaluation_per_evaluator"
            )
        ]
        indexes = [models.Index(fields=["created_at"], name="evaluation_created")]


class Alert(models.Model):
    """Something about the mail itself that a supervisor must know (engine/alerts.py).

    One open row per (kind, key): raising it again counts; clearing closes the row, and the
    next raise opens a new one. `pending_notice` says the supervisors have not been mailed
    about the latest raise yet (they are mailed at most once per key per interval).
    """

    kind = models.CharField(max_length=40, choices=[(k.value, k.value) for k in AlertKind])
    key = models.CharField(max_length=300)
    message = models.TextField()
    raised_at = models.DateTimeField()
    last_raised_at = models.DateTimeField()
    cleared_at = models.DateTimeField(null=True, blank=True)
    count = models.PositiveIntegerField(default=1)
    pending_notice = models.BooleanField(default=True)
    notified_at = models.DateTimeField(null=True, blank=True)
    notices = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-last_raised_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "key"], condition=models.Q(cleared_at=None), name="one_open_alert_per_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.key}: {self.message[:60]}"


class BoxHealth(models.Model):
    """How a watched box is doing, written by the engine (engine/health.py)."""

    mailbox = models.OneToOneField(Mailbox, on_delete=models.CASCADE, related_name="health")
    last_sync_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    # Consecutive failures since the last success (0: healthy).
    failures = models.PositiveIntegerField(default=0)
    # Messages in the watched folder, and how many of them were new, at the last sync.
    messages = models.PositiveIntegerField(default=0)
    backlog = models.PositiveIntegerField(default=0)
    reconciled_at = models.DateTimeField(null=True, blank=True)
    unaccounted = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.mailbox_id}: synced {self.last_sync_at}"


class Node(models.Model):
    """One engine process sharing this database (engine/nodes.py, decisions 0030-0031).

    `epoch` is the node's fencing token: it goes up each time the node registers (a start,
    or a comeback after its lease ran out) and each time another node fences it out. Every
    write an engine makes on PostgreSQL is checked against this row, in the writing
    transaction (store/fence.py): its epoch must still be the node's and its lease live,
    by the database's clock. `lease_until` is renewed by the node's heartbeat.
    """

    node_id = models.CharField(max_length=64, unique=True)
    role = models.CharField(max_length=10, choices=[(r.value, r.value) for r in Role], default=Role.PRIMARY.value)
    mode = models.CharField(max_length=10, choices=[(m.value, m.value) for m in Mode], default=Mode.NORMAL.value)
    epoch = models.PositiveBigIntegerField(default=0)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    heartbeat_at = models.DateTimeField()
    lease_until = models.DateTimeField()
    # Set when the node stopped cleanly (its leases are free at once); cleared at a start.
    stopped_at = models.DateTimeField(null=True, blank=True)
    # What the node last said about itself: boxes it watches, router, claims... (console).
    detail = models.JSONField(default=dict, blank=True)
    # The demo's loopback proxy between this node and the database: "up" or "cut", asked
    # for from the console or `postroom node cut|heal` and carried out by `postroom demo`.
    link = models.CharField(max_length=4, choices=[("up", "up"), ("cut", "cut")], default="up")

    class Meta:
        ordering = ["node_id"]

    def __str__(self) -> str:
        return f"{self.node_id} ({self.role}, epoch {self.epoch}) pid {self.pid} on {self.hostname}"


class Lease(models.Model):
    """A piece of work one node holds at a time: a mailbox to watch ("mailbox:<pk>") or
    the routing desk ("router"). It is the holder's while the holder's `Node` row still
    has `epoch` and a live lease; `token` goes up at every change of holder and fences the
    watcher's writes (reception checks it in the transaction that moves the box's cursor).
    """

    name = models.CharField(max_length=60, unique=True)
    node_id = models.CharField(max_length=64)
    epoch = models.PositiveBigIntegerField()
    token = models.PositiveBigIntegerField(default=1)
    acquired_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name}: {self.node_id} (epoch {self.epoch}, token {self.token})"


class OAuth2Grant(models.Model):
    """The tokens of one mailbox login on OAuth2 (core/oauth2.py, engine/oauth2.py).

    The refresh token lives here, not in the configuration file: the IdP may rotate it on
    every refresh, and the rotated one must outlive the process (B-10: a rotated token that
    was never stored left boxes dead after 90 days). A refresh is one claimed row
    (`refreshing_until`) and ends in ONE update of both tokens, conditional on
    `generation`, before the new access token is used anywhere.
    """

    login = models.CharField(max_length=320, unique=True)
    # The [[oauth2]] provider's name in the configuration.
    provider = models.CharField(max_length=100)
    state = models.CharField(
        max_length=20, choices=[(s.value, s.value) for s in GrantState], default=GrantState.VALID
    )
    refresh_token = models.TextField()
    access_token = models.TextField(blank=True, default="")
    issued_at = models.DateTimeField(null=True, blank=True)
    access_expires_at = models.DateTimeField(null=True, blank=True)
    # Known only when the IdP says it or the provider's refresh_token_lifetime is set.
    refresh_expires_at = models.DateTimeField(null=True, blank=True)
    # One more per stored answer of the IdP (each refresh, each authorization).
    generation = models.PositiveIntegerField(default=0)
    # A node refreshing holds the row until then (a claim, never a lock held over HTTP).
    refreshing_until = models.DateTimeField(null=True, blank=True)
    failures = models.PositiveIntegerField(default=0)
    retry_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    authorized_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "OAuth2 grant"

    def __str__(self) -> str:
        return f"{self.login} ({self.provider}, {self.state})"
