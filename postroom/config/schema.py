"""The schema: one model per table of the file (docs/configuration.md is the reference).

Attributes are named as the code reads them (``no_reply_seconds``), keys as the file spells
them (``no_reply_time``, the field's alias). A check that needs several keys of one table
is a model validator of that table; it runs once the table's own keys are valid. Checks
across tables (duplicate addresses, "no agent has skill ...") are in ``checks.py``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainValidator,
    PrivateAttr,
    StrictInt,
    StrictStr,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from postroom.config.base import Table
from postroom.config.context import context_of
from postroom.config.errors import Loc, fail, fail_at, show
from postroom.config.secrets import Keys, Secret, resolve, secret
from postroom.config.values import (
    MAX_PRIORITY,
    Address,
    Addresses,
    AnyText,
    Cafile,
    Code,
    Domain,
    Duration,
    DurationOrOff,
    Flag,
    Hosts,
    Int,
    Name,
    NodeId,
    OptionalDuration,
    PolicyPath,
    Port,
    Priority,
    Strings,
    Text,
    Tls,
    at_least,
    import_policy,
    limits,
    longest,
    loopback,
    one_of,
    parse_duration,
    tables,
)
from postroom.core import rules as core_rules
from postroom.core.approval import ApprovalPolicy
from postroom.core.priority import PriorityPolicy, default_policy
from postroom.core.senderauth import SenderAuthPolicy

# The placeholders the auto-response templates may use: exactly those that
# postroom.core.compose.auto_response fills. It leaves any other {word} as written, so an
# unknown one here is a typo that would reach customers verbatim.
AUTO_RESPONSE_FIELDS = ("name", "subject", "reference", "box")
# The sender's own words: only with the box's auto_response_customer_text = true.
CUSTOMER_FIELDS = ("name", "subject")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
DEFAULT_AUTO_RESPONSE_SUBJECT = "Your message to {box} [{reference}]"
DEFAULT_AUTO_RESPONSE_TEXT = (
    "Hello,\n"
    "\n"
    "thank you for your message. We have received it and will answer as soon as we can.\n"
    "Your reference is {reference}.\n"
    "\n"
    "Kind regards\n"
    "{box}\n"
)
_SMTP_PORTS = {"tls": 465, "starttls": 587, "none": 25}

OptionalSecret = Annotated[str | None, BeforeValidator(resolve)]


def _key(alias: str, default: Any = ..., **kw: Any) -> Any:
    """A field read from the file under another name than the attribute's."""
    return Field(default, validation_alias=alias, **kw)


# -- values of one table ----------------------------------------------------------------------


def _template(value: str) -> str:
    # Braces that are not a {word} are plain text to the engine, so only words are checked.
    for name in _PLACEHOLDER.findall(value):
        if name not in AUTO_RESPONSE_FIELDS:
            known = ", ".join("{" + f + "}" for f in AUTO_RESPONSE_FIELDS)
            raise fail(f"unknown placeholder {{{name}}}; known: {known}")
    return value


def _some(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise fail("at least one skill is required")
    return value


def _bands(value: Any) -> tuple[tuple[int, int], ...]:
    """``[[min_priority, duration], ...]``, sorted by min_priority."""
    if not isinstance(value, list | tuple):
        raise fail(f"expected an array of [min_priority, duration] pairs, got {show(value)}")
    bands: dict[int, int] = {}
    found: list[tuple[Loc, str]] = []
    for i, band in enumerate(value):
        if not isinstance(band, list | tuple) or len(band) != 2:
            found.append(((i,), f"expected [min_priority, duration], got {show(band)}"))
            continue
        floor, duration = band
        seconds = parse_duration(duration)
        if isinstance(floor, bool) or not isinstance(floor, int):
            found.append(((i, 0), f"expected an integer priority, got {show(floor)}"))
        elif floor in bands:
            found.append(((i, 0), f"a band for priority {floor} is already given"))
        if seconds is None or seconds < 1:
            found.append(((i, 1), f'expected a duration like "30m" or seconds, got {show(duration)}'))
        elif isinstance(floor, int):
            bands[floor] = seconds
    if found:
        raise fail_at(found, value)
    return tuple(sorted(bands.items()))


def _agent_skills(value: Any) -> Any:
    """``skills = {support = 3, sales = 1}``: skill -> level (an integer ≥ 1); the names are
    the skills, the levels are kept by AgentConfig. An array is checked as Strings."""
    if not isinstance(value, dict):
        return value
    found: list[tuple[Loc, str]] = []
    for skill, level in value.items():
        if not skill.strip():
            found.append(((skill,), "expected a non-empty skill name"))
        elif isinstance(level, bool) or not isinstance(level, int):
            found.append(((skill,), f"expected an integer level, got {show(level)}"))
        elif level < 1:
            found.append(((skill,), f"must be at least 1, got {level}"))
    if found:
        raise fail_at(found, value)
    return [skill.strip() for skill in value]


def _lower(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v.lower() for v in values))


def _rules(value: Any, info: ValidationInfo) -> tuple[core_rules.RuleSpec, ...]:
    """Routing rules are checked by core.rules (the web's rule editor uses it too)."""
    found = core_rules.problems(value, "rules")
    if found:
        raise fail_at([(_loc(path)[1:], message) for path, message in found], value)
    rules = core_rules.rules_from_dicts(value)
    context_of(info.context).tables["rules"] = [rules]  # for checks.py, as base.Table does
    return rules


def _loc(path: str) -> Loc:
    """``rules[0].actions[1].value`` -> ``("rules", 0, "actions", 1, "value")``."""
    return tuple(int(i) if i else key for i, key in re.findall(r"\[(\d+)\]|([^.\[\]]+)", path))


Template = Annotated[StrictStr, AfterValidator(_template)]
Skills = Annotated[Strings, AfterValidator(_some)]
Bands = Annotated[tuple[tuple[int, int], ...], PlainValidator(_bands)]
Rules = Annotated[tuple[core_rules.RuleSpec, ...], PlainValidator(_rules)]


# -- the tables ---------------------------------------------------------------------------------


class ServerConfig(Table):
    imap_host: Text
    imap_tls: Tls = "tls"
    # The default port follows the TLS mode, as in every mail client.
    imap_port: Port = Field(default_factory=lambda d: 993 if d["imap_tls"] == "tls" else 143)
    smtp_host: Text
    smtp_tls: Tls = "starttls"
    smtp_port: Port = Field(default_factory=lambda d: _SMTP_PORTS[d["smtp_tls"]])
    # Without a relay account of its own, Postroom submits as the outbound box (set by
    # Config once the outbound box is known).
    smtp_login: Text | None = None
    smtp_password: OptionalSecret = secret("smtp_password", None)
    # The relay account logs in with this [[oauth2]] provider's tokens instead.
    smtp_oauth2: Name | None = None
    # "system" (the platform's trust store), "devstack" (resolved by the caller) or a path.
    cafile: Cafile = "system"
    idle: Flag = True
    poll_seconds: Duration = _key("poll_interval", 30)
    # Larger mail is never read whole: quarantined when it comes in, refused (to the dead
    # box, the agent told) when it is an agent's reply.
    max_message_bytes: Annotated[StrictInt, limits(64 * 1024)] = 25 * 1024 * 1024

    @model_validator(mode="after")
    def _check(self) -> Self:
        found: list[tuple[Loc, str]] = []
        if self.smtp_login is None and (self.smtp_password is not None or self.smtp_oauth2 is not None):
            key = "smtp_password" if self.smtp_password is not None else "smtp_oauth2"
            found.append(
                ((key,), "give smtp_login too, or neither (then the outbound box's login is used)")
            )
        if self.smtp_password is not None and self.smtp_oauth2 is not None:
            found.append((("smtp_oauth2",), "give smtp_password or smtp_oauth2, not both"))
        if self.smtp_login is not None and self.smtp_password is None and self.smtp_oauth2 is None:
            found.append(
                (("smtp_password",), "required (give one of smtp_password, smtp_password_env, smtp_password_file)")
            )
        hosts = ((self.imap_host, self.imap_tls, "imap_tls"), (self.smtp_host, self.smtp_tls, "smtp_tls"))
        for host, tls, key in hosts:
            if tls == "none" and not loopback(host):
                found.append(((key,), f'"none" sends passwords and mail in clear text: only for a '
                              f'loopback host, not {show(host)} (use "tls" or "starttls")'))
        if found:
            raise fail_at(found, self)
        return self


# OAuth2 presets: what Microsoft 365 and Google document for IMAP/SMTP; every URL can be
# overridden (tests point them at a fake IdP on loopback). {tenant} is the provider's tenant.
OAUTH2_PRESETS: dict[str, dict[str, Any]] = {
    "microsoft": {
        "authorize_url": "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize",
        "token_url": "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
        "scopes": ("https://outlook.office.com/IMAP.AccessAsUser.All",
                   "https://outlook.office.com/SMTP.Send", "offline_access"),
    },
    "google": {
        "authorize_url": "https://accounts.google.com/o/oauth2/v2/auth",
        "token_url": "https://oauth2.googleapis.com/token",
        "scopes": ("https://mail.google.com/",),
    },
    "custom": {"authorize_url": None, "token_url": None, "scopes": ()},
}


def _preset(key: str) -> Callable[[dict[str, Any]], Any]:
    def default(d: dict[str, Any]) -> Any:
        value = OAUTH2_PRESETS[d["preset"]][key]
        return value.format(tenant=d["tenant"]) if isinstance(value, str) else value

    return default


class OAuth2Provider(Table):
    """[[oauth2]]: an identity provider (IdP) and Postroom's client registration there.
    Boxes name it (``oauth2 = "m365"``) instead of giving a password (field bug B-10)."""

    name: Annotated[Name, longest(100)]
    preset: Annotated[str, one_of("microsoft", "google", "custom")] = "custom"
    # Microsoft's directory: a tenant id or domain ("common" for multi-tenant apps).
    tenant: Text = "common"
    authorize_url: Text | None = Field(default_factory=_preset("authorize_url"))
    token_url: Text | None = Field(default_factory=_preset("token_url"))
    client_id: Text
    # None: a public client (PKCE only).
    client_secret: OptionalSecret = secret("client_secret", None)
    scopes: Strings = Field(default_factory=_preset("scopes"))
    # The redirect URI registered with the IdP for `postroom oauth2 authorize`; a loopback
    # one (RFC 8252 §7.3) lets the command take the code itself.
    redirect_uri: Text = "http://127.0.0.1:8765/"
    # How long a refresh token lives when the IdP does not say (Google "Testing" apps: 7 days).
    refresh_token_lifetime_seconds: OptionalDuration = _key("refresh_token_lifetime", None)
    # Alert this long before a known refresh-token expiry.
    warn_before_seconds: Duration = _key("warn_before", 3 * 86400)
    # The budget of one call to the token endpoint.
    timeout_seconds: Duration = _key("timeout", 15)

    @model_validator(mode="after")
    def _urls(self) -> Self:
        found: list[tuple[Loc, str]] = []
        for key in ("authorize_url", "token_url"):
            url = getattr(self, key)
            if url is None:
                found.append(((key,), f'required with preset = "{self.preset}"'))
            elif not (url.startswith("https://") or (url.startswith("http://") and loopback(_host(url)))):
                found.append(((key,), f"must be https:// (http:// only for a loopback host), got {show(url)}"))
        if not self.scopes:
            found.append((("scopes",), "give at least one scope"))
        if found:
            raise fail_at(found, self)
        return self


def _host(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")


class Box(Table):
    """A mailbox Postroom logs into: the outbound box is a plain box. With ``oauth2`` it
    logs in by SASL XOAUTH2 with tokens from that provider, and has no password."""

    address: Address
    name: AnyText = ""
    login: Text = Field(default_factory=lambda d: d["address"])
    password: OptionalSecret = secret("password", None)
    # The [[oauth2]] provider's name.
    oauth2: Name | None = None
    # The first grant's refresh token, taken into the database once (later ones, rotated,
    # live only there); or run `postroom oauth2 authorize BOX`.
    refresh_token: OptionalSecret = secret("refresh_token", None)
    folder: Text = "INBOX"
    # Where finished mail goes (incoming and outbound boxes): moved, never expunged.
    archive_folder: Text = "Postroom-Archive"

    @model_validator(mode="after")
    def _login_by(self) -> Self:
        if self.oauth2 is None and self.password is None:
            raise fail_at([(("password",), "required (give one of password, password_env, password_file; "
                            "or oauth2 = the name of an [[oauth2]] provider)")], self)
        if self.oauth2 is not None and self.password is not None:
            raise fail_at([(("password",), "give password or oauth2, not both")], self)
        if self.oauth2 is None and self.refresh_token is not None:
            raise fail_at([(("refresh_token",), "only with oauth2")], self)
        return self


class DeadBox(Box):
    """The dead box (and the journal) keep what they get: no archive folder."""

    @field_validator("archive_folder", mode="before")
    @classmethod
    def _kept(cls, value: Any) -> Any:
        raise fail("unknown key: this box keeps what it gets, it has no archive folder")


class IncomingBox(Box):
    auto_response: Flag = True
    auto_response_subject: Template = DEFAULT_AUTO_RESPONSE_SUBJECT
    auto_response_text: Template = DEFAULT_AUTO_RESPONSE_TEXT
    no_reply_seconds: Duration = _key("no_reply_time", 4 * 3600)
    # The default skill is the box's local part: support@ routes to "support" agents.
    skills: Skills = Field(default_factory=lambda d: (d["address"].split("@")[0],))
    default_priority: Int = 0
    # Shorter no-reply times for urgent mail: (min_priority, seconds), ascending.
    no_reply_bands: Bands = ()
    trash_folder: Text = "Trash"
    # The reports' service level: the share of this box's mail answered within this time.
    service_level_seconds: Duration = _key("service_level", 4 * 3600)
    # The templates may use {name} and {subject}, the sender's own words (off: they may not).
    auto_response_customer_text: Flag = False

    @model_validator(mode="after")
    def _no_customer_words(self) -> Self:
        if self.auto_response_customer_text:
            return self
        found: list[tuple[Loc, str]] = []
        for key in ("auto_response_subject", "auto_response_text"):
            used = [f for f in _PLACEHOLDER.findall(getattr(self, key)) if f in CUSTOMER_FIELDS]
            if used:
                found.append(((key,), f"uses {{{used[0]}}}, the sender's own words: anyone who forges a "
                              "From could make an auto-response carry them to any address. Leave it "
                              "out, or set auto_response_customer_text = true"))
        if found:
            raise fail_at(found, self)
        return self


class JournalBox(DeadBox):
    """[journal]: every mail Postroom sends is also sent here, in the same SMTP transaction,
    so that an unknown outcome can be settled (docs/decisions/0007)."""

    # Copies older than this are expunged; they must outlive every row they may settle,
    # and expiry works in whole days.
    retention_seconds: Annotated[int, at_least(86400, "one day")] = _key("retention", 7 * 86400)
    # How long after a possible 250 the copy is certainly in the box (local delivery).
    grace_seconds: Duration = _key("grace", 60)


class OutboxConfig(Table):
    """[outbox]: how mail leaves."""

    max_attempts: Annotated[StrictInt, limits(1, 1000)] = 12
    # The budget of one SMTP transaction, connection included (and of one journal search).
    send_timeout_seconds: Duration = _key("send_timeout", 60)
    # How long one engine holds a row it is sending; at least twice send_timeout.
    lease_seconds: Duration = _key("lease", 300)
    # MAIL FROM of automatic mail (auto-responses, notices): "null" is the empty reverse
    # path of RFC 3834 §3.3; "box" the address it is written from, for relays that refuse
    # a null sender from an authenticated client (Microsoft 365).
    automatic_envelope_from: Annotated[str, one_of("null", "box")] = "null"
    # SMTP sessions the running engine sends over at once, each kept open by a thread of
    # its own (decision 0039); a relay that limits concurrent sessions per login wants fewer.
    sessions: Annotated[StrictInt, limits(1, 32)] = 4

    @model_validator(mode="after")
    def _lease(self) -> Self:
        if self.lease_seconds < 2 * self.send_timeout_seconds:
            raise fail_at([(("lease",), f"must be at least twice send_timeout "
                            f"({2 * self.send_timeout_seconds} s), got {self.lease_seconds} s")], self)
        return self


class AgentConfig(Table):
    name: Text
    address: Address
    # Given as an array, or as a table of levels (then skill_levels keeps them).
    skills: Annotated[Strings, BeforeValidator(_agent_skills)] = ()
    supervisor: Flag = False
    auto_answer: Flag = False
    capacity: Annotated[StrictInt, limits(1)] = 1
    # The agent's own mailbox password, if the file gives one (dev stack; withdrawing mail).
    # Used for the mail server only, never as the agent's web login.
    password: OptionalSecret = secret("password", None)
    # The agent's web login password, if the file gives one; set only while the user has
    # no usable password (then it is the person's own).
    web_password: OptionalSecret = secret("web_password", None)
    supervisors: Addresses = ()
    # Set by the agent's own key or by [approval] probation.
    probationary: Flag = False
    notify_offers: Flag = False
    # Incoming boxes this agent may read (journal, transcripts, reports) besides its
    # groups' boxes and what it holds (decision 0022).
    boxes: Addresses = ()
    _skill_levels: tuple[tuple[str, int], ...] | None = PrivateAttr(None)

    @model_validator(mode="wrap")
    @classmethod
    def _levels(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        agent = handler(data)
        if isinstance(data, dict) and isinstance(data.get("skills"), dict):
            agent._skill_levels = tuple((s.strip(), n) for s, n in data["skills"].items())
        return agent

    @property
    def skill_levels(self) -> tuple[tuple[str, int], ...] | None:
        """(skill, level) when the file gives skills as a table; None when as an array."""
        return self._skill_levels

    @property
    def levels(self) -> dict[str, int]:
        """Every skill with its level (1 when the file gives none)."""
        return dict(self._skill_levels) if self._skill_levels is not None else dict.fromkeys(self.skills, 1)


class CustomerConfig(Table):
    address: Address
    name: AnyText = ""
    password: Secret = secret("password")


class DevstackConfig(Table):
    # The stack uses base_port .. base_port + 6 (imap, imaps, pop3, pop3s, smtp, ...).
    base_port: Annotated[StrictInt, limits(1024, 65535 - 6)] = 21000


def _between(low: int, high: int) -> Callable[[int], int]:
    def check(seconds: int) -> int:
        if not low <= seconds <= high:
            raise fail(f"must be between {low} s and {high} s, got {seconds} s")
        return seconds

    return check


def _node_lease(seconds: int) -> int:
    if not 2 <= seconds <= 300:
        raise fail(f"must be between 2 seconds and 5 minutes, got {seconds} s")
    return seconds


class HealthConfig(Table):
    """[health]: alerts, the sync watchdog, reconciliation, retries."""

    # Supervisors are mailed about one alert at most once per this time.
    alert_mail_interval_seconds: Duration = _key("alert_mail_interval", 3600)
    # A quiet box is looked at every 10 s (Site.idle_timeout): less than 30 s would cry wolf.
    sync_alert_after_seconds: Annotated[int, at_least(30, "30 seconds")] = _key("sync_alert_after", 300)
    reconcile_interval_seconds: Duration = _key("reconcile_interval", 300)
    # Attempts to withdraw a forwarded copy before giving up with an alert.
    withdrawal_attempts: Annotated[StrictInt, limits(1, 100)] = 8
    # Keys of old files, refused with a pointer to where they went (errors.py).
    moved: ClassVar[dict[str, str]] = {
        "engine_lease": "moved: the node's lease is [cluster] node_lease now (docs/redundancy.md)"
    }


class ClusterConfig(Table):
    """[cluster]: this node among the nodes sharing one database (docs/redundancy.md)."""

    # "primary": takes its share of the mailboxes; "secondary": stands by while a primary
    # is live and takes everything over when none is.
    role: Annotated[str, one_of("primary", "secondary")] = "primary"
    # The node's lease on the database, renewed every second: another node takes over
    # this node's mailboxes once it has run out (failover within about this plus 2 s).
    node_lease_seconds: Annotated[Duration, AfterValidator(_node_lease)] = _key("node_lease", 6)
    # Island mode (decision 0036), off unless sync_address is set: the mailbox on the mail
    # server through which nodes that cannot all reach the database claim each email.
    sync_address: Address | None = None
    sync_password: OptionalSecret = secret("sync_password", None)
    # How long this node goes without PostgreSQL before it works on its local store.
    island_after_seconds: Annotated[Duration, AfterValidator(_between(5, 3600))] = _key("island_after", 30)
    # A claim not re-asserted for this long (server time) expires; the patent's 60 minutes.
    claim_expiry_seconds: Annotated[Duration, AfterValidator(_between(10, 86400))] = _key("claim_expiry", 3600)
    claim_reassert_seconds: Annotated[Duration, AfterValidator(_between(1, 43200))] = _key("claim_reassert", 1200)

    @model_validator(mode="after")
    def _island(self, info: ValidationInfo) -> Self:
        found: list[tuple[Loc, str]] = []
        url = context_of(info.context).environ.get("DATABASE_URL", "")
        if self.sync_address is not None and not url.startswith(("postgres://", "postgresql://")):
            # SQLite holds one node (decision 0030): there is nobody to claim against.
            found.append((("sync_address",), "island mode needs nodes sharing a PostgreSQL database "
                          "(DATABASE_URL=postgres://...); this site runs on SQLite"))
        given = self.model_fields_set & {"island_after_seconds", "claim_expiry_seconds",
                                         "claim_reassert_seconds", "sync_password"}
        if given and self.sync_address is None:
            found.append((("sync_address",), "required by the other island keys (island_after, "
                          "claim_expiry, claim_reassert, sync_password): island mode is off without it"))
        if self.sync_address is not None and self.sync_password is None:
            found.append((("sync_password",), "required with sync_address (give one of sync_password, "
                          "sync_password_env, sync_password_file)"))
        # A holder re-claims every claim_reassert and must see its re-claim back well before
        # the others count the claim expired: half an expiry leaves room for a slow round trip.
        if 2 * self.claim_reassert_seconds > self.claim_expiry_seconds:
            found.append((("claim_reassert",), f"must be at most half of claim_expiry "
                          f"({self.claim_expiry_seconds // 2} s), got {self.claim_reassert_seconds} s"))
        if found:
            raise fail_at(found, self)
        return self

    @property
    def island(self) -> bool:
        """Whether island mode is configured (docs/redundancy.md)."""
        return self.sync_address is not None


class ContactConfig(Table):
    """A known customer, by exact address or by domain (then its subdomains too)."""

    address: Address | None = None
    domain: Domain | None = None
    name: AnyText = ""
    level: Annotated[Name, longest(40)] = "standard"
    priority: Priority = 0
    requires_approval: Flag = False

    @model_validator(mode="after")
    def _one(self) -> Self:
        if self.address and self.domain:
            raise fail_at([(("domain",), "give address or domain, not both")], self)
        if not self.address and not self.domain:
            raise fail("give address (one person) or domain (a whole company)")
        return self

    @property
    def key(self) -> str:
        return self.address or self.domain or ""


class RoutingConfig(Table):
    # None: an offer waits until the agent answers it.
    offer_timeout_seconds: OptionalDuration = _key("offer_timeout", None)
    # How long a customer's follow-up waits for the agent who handled the thread; 0: not at all.
    follow_up_wait_seconds: DurationOrOff = _key("follow_up_wait", 15 * 60)
    no_reply_priority_raise: Annotated[StrictInt, limits(0, MAX_PRIORITY)] = 10
    unassigned_queue: Name = "unassigned"


class ApprovalConfig(Table):
    # Every probationary agent: [approval] probation and agents' own probationary = true.
    probation: Addresses = ()
    # Contact levels whose mail needs approval, lower-cased (compared ignoring case).
    levels: Annotated[Strings, AfterValidator(_lower)] = ("vip",)
    # Replies to mail of at least this priority need approval; None: no such threshold.
    min_priority: Priority | None = None
    # Incoming boxes all of whose replies need approval.
    boxes: Addresses = ()
    reroute_on_reject: Flag = False

    def as_policy(self) -> ApprovalPolicy:
        """The engine's view (``postroom.core.approval``)."""
        return ApprovalPolicy(
            probation=frozenset(self.probation),
            levels=frozenset(self.levels),
            min_priority=self.min_priority,
            boxes=frozenset(self.boxes),
            reroute_on_reject=self.reroute_on_reject,
        )


class SenderAuthConfig(Table):
    """``[sender_auth]``: the evidence the site's mail server adds about who sent a mail."""

    required: Flag = True
    servers: Hosts = ()
    exchange: Flag = False
    authserv_ids: Hosts = ()

    @model_validator(mode="after")
    def _evidence(self) -> Self:
        if self.required and not (self.servers or self.exchange or self.authserv_ids):
            raise fail(
                "the check is on (required = true) but names no evidence: give servers "
                "(the host names in the Received headers your server adds, with Postfix's "
                "smtpd_sasl_authenticated_header = yes), exchange = true, or authserv_ids; "
                "or set required = false if your server adds none"
            )
        return self

    def as_policy(self) -> SenderAuthPolicy:
        """The engine's view (``postroom.core.senderauth``)."""
        return SenderAuthPolicy(
            required=self.required,
            servers=frozenset(self.servers),
            exchange=self.exchange,
            authserv_ids=frozenset(self.authserv_ids),
        )


def _sender_auth_given(value: Any) -> Any:
    if value is None:
        raise fail(
            "required: Postroom accepts agents' replies and approvers' decisions only when "
            "the mail server vouches for the sender. Add a [sender_auth] table naming the "
            "evidence your server adds (servers, exchange or authserv_ids), or with "
            "required = false if it adds none"
        )
    return value


class AutoResponseConfig(Table):
    """``[auto_response]``: how many auto-responses one address may get in a window."""

    # 0: no limit.
    max_per_address: Annotated[StrictInt, limits(0)] = 3
    window_seconds: Duration = _key("window", 24 * 3600)


class WrapUpCodeConfig(Table):
    code: Code
    label: Text = Field(default_factory=lambda d: d["code"].replace("_", " ").capitalize())


DEFAULT_WRAPUP_CODES = (
    WrapUpCodeConfig(code="resolved", label="Resolved"),
    WrapUpCodeConfig(code="no_action_needed", label="No action needed"),
    WrapUpCodeConfig(code="spam", label="Spam"),
    WrapUpCodeConfig(code="duplicate", label="Duplicate"),
    WrapUpCodeConfig(code="escalated_by_phone", label="Escalated by phone"),
)


class GroupConfig(Table):
    """A team: its members may read the incoming boxes granted to it (decision 0022)."""

    name: Annotated[Name, longest(100)]
    members: Addresses = ()
    boxes: Addresses = ()


class EvaluationCriterionConfig(Table):
    """One line of the evaluation form: scored 0..max_score, weighted."""

    code: Code
    label: Text = Field(default_factory=lambda d: d["code"].replace("_", " ").capitalize())
    weight: Annotated[StrictInt, limits(1, 100)] = 1
    max_score: Annotated[StrictInt, limits(1, 100)] = 5
    description: AnyText = ""


DEFAULT_EVALUATION_CRITERIA = (
    EvaluationCriterionConfig(
        code="accuracy", label="Accurate and complete answer", weight=3,
        description="Answers every question the customer asked, correctly.",
    ),
    EvaluationCriterionConfig(
        code="tone", label="Tone and courtesy", weight=2,
        description="Friendly, clear, in the customer's language.",
    ),
    EvaluationCriterionConfig(
        code="process", label="Process followed", weight=1,
        description="Right wrap-up code, approvals and templates used where they apply.",
    ),
)


class PriorityConfig(Table):
    # "module:callable" as written in the file; None: the default policy.
    policy_path: PolicyPath | None = _key("policy", None)

    @property
    def policy(self) -> PriorityPolicy:
        # Imported once per process by importlib; checked when the file was validated.
        return import_policy(self.policy_path) if self.policy_path else default_policy


# -- the file -------------------------------------------------------------------------------------

Tables = BeforeValidator(tables)


def _some_boxes(boxes: tuple[IncomingBox, ...]) -> tuple[IncomingBox, ...]:
    # After the boxes: a broken box is its own error, not "no boxes at all".
    if not boxes:
        raise fail("required: add at least one [[incoming]] table")
    return boxes


class Config(Table):
    node_id: NodeId
    # The site's secrets, newest first: the first mints tokens, every one verifies them
    # (rotation). Keys are derived from them per purpose (postroom.core.keys).
    secrets: Keys = secret("secret")
    server: ServerConfig
    incoming: Annotated[tuple[IncomingBox, ...], Tables, AfterValidator(_some_boxes)]
    outbound: Box
    dead_box: DeadBox
    agents: Annotated[tuple[AgentConfig, ...], Tables] = ()
    customers: Annotated[tuple[CustomerConfig, ...], Tables] = ()
    devstack: DevstackConfig | None = None
    rules: Rules = ()
    contacts: Annotated[tuple[ContactConfig, ...], Tables] = ()
    routing: RoutingConfig = RoutingConfig()
    approval: ApprovalConfig = ApprovalConfig()
    wrapup_codes: Annotated[tuple[WrapUpCodeConfig, ...], Tables] = DEFAULT_WRAPUP_CODES
    priority: PriorityConfig = PriorityConfig()
    groups: Annotated[tuple[GroupConfig, ...], Tables] = ()
    evaluation_criteria: Annotated[tuple[EvaluationCriterionConfig, ...], Tables] = DEFAULT_EVALUATION_CRITERIA
    sender_auth: Annotated[SenderAuthConfig, BeforeValidator(_sender_auth_given)] = Field(
        None, validate_default=True
    )
    auto_response: AutoResponseConfig = AutoResponseConfig()
    health: HealthConfig = HealthConfig()
    journal: JournalBox | None = None
    outbox: OutboxConfig = OutboxConfig()
    cluster: ClusterConfig = ClusterConfig()
    oauth2: Annotated[tuple[OAuth2Provider, ...], Tables] = ()
    _source: Path | None = PrivateAttr(None)

    @field_validator("outbound")
    @classmethod
    def _no_plus(cls, box: Box, info: ValidationInfo) -> Box:
        if "+" in box.address:
            # Replies come back to outbound+token@; a "+" already there would be ambiguous.
            raise fail_at([(("address",), "must not contain '+' (used for reply tokens)")], box)
        return box

    @model_validator(mode="after")
    def _complete(self) -> Self:
        """What the rest of the file decides for a table."""
        # One truth for "probationary": the agent's own key or the [approval] list.
        listed = set(self.approval.probation)
        agents = tuple(a.model_copy(update={"probationary": True}) if a.address in listed else a
                       for a in self.agents)
        probation = tuple(a.address for a in agents if a.probationary)
        server = self.server
        if server.smtp_login is None:
            server = server.model_copy(update={"smtp_login": self.outbound.login,
                                               "smtp_password": self.outbound.password,
                                               "smtp_oauth2": self.outbound.oauth2})
        self._check_oauth2(server)
        return self.model_copy(update={
            "agents": agents,
            "approval": self.approval.model_copy(update={"probation": probation}),
            "server": server,
        })

    def _check_oauth2(self, server: ServerConfig) -> None:
        names = [p.name for p in self.oauth2]
        found: list[tuple[Loc, str]] = []
        if len(set(names)) != len(names):
            found.append((("oauth2",), "two [[oauth2]] providers have the same name"))
        where: list[tuple[Loc, str | None]] = [(("incoming", i, "oauth2"), b.oauth2) for i, b in enumerate(self.incoming)]
        where += [(("outbound", "oauth2"), self.outbound.oauth2), (("dead_box", "oauth2"), self.dead_box.oauth2),
                  (("journal", "oauth2"), self.journal.oauth2 if self.journal else None),
                  (("server", "smtp_oauth2"), self.server.smtp_oauth2)]
        known = ", ".join(names) or "none is configured"
        found += [(loc, f"no [[oauth2]] provider is named {show(name)} ({known})")
                  for loc, name in where if name is not None and name not in names]
        if found:
            raise fail_at(found, self)

    def oauth2_provider(self, name: str | None) -> OAuth2Provider | None:
        return next((p for p in self.oauth2 if p.name == name), None) if name else None

    def oauth2_logins(self) -> dict[str, tuple[OAuth2Provider, str | None]]:
        """Login (lower-cased) -> (its provider, the file's first refresh token, if any),
        for every box and the relay account on OAuth2."""
        found: dict[str, tuple[OAuth2Provider, str | None]] = {}
        for box in self.mailboxes:
            provider = self.oauth2_provider(box.oauth2)
            if provider is not None:
                found.setdefault(box.login.lower(), (provider, box.refresh_token))
        smtp = self.oauth2_provider(self.server.smtp_oauth2)
        if smtp is not None and self.server.smtp_login:
            found.setdefault(self.server.smtp_login.lower(), (smtp, None))
        return found

    @property
    def source(self) -> Path | None:
        return self._source

    @property
    def mailboxes(self) -> tuple[Box, ...]:
        """Every box Postroom logs into: the incoming boxes, then outbound, dead, journal."""
        return (*self.incoming, self.outbound, self.dead_box, *((self.journal,) if self.journal else ()))

    def agent(self, address: str) -> AgentConfig | None:
        address = address.lower()
        return next((a for a in self.agents if a.address == address), None)

    def mail_passwords(self) -> dict[str, str]:
        """Mailbox address -> password, for every box and every agent the file gives one
        for: what the engine logs in with (never stored in the database)."""
        found = {box.address.lower(): box.password for box in self.mailboxes if box.password is not None}
        for agent in self.agents:
            if agent.password is not None:
                found.setdefault(agent.address, agent.password)
        if self.cluster.sync_address is not None and self.cluster.sync_password is not None:
            found.setdefault(self.cluster.sync_address, self.cluster.sync_password)
        return found

