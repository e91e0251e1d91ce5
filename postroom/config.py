"""The site configuration file: one TOML file, parsed and validated into frozen dataclasses.

Owns the schema (every key, its type and default), secret resolution (inline, ``*_env``,
``*_file``) and the checks that can be made without a mail server or a database. It does
not import Django: ``postroom check`` must work before any database exists, and the
engine reads server settings and the correlation secret from here at start.

Every problem is reported as a :class:`ConfigError` naming the key path
(``incoming[1].no_reply_time``), and all of them are collected in one pass, so an operator
fixes a file in one round trip rather than one error at a time.
"""

from __future__ import annotations

import difflib
import importlib
import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from postroom.core import rules as core_rules
from postroom.core.approval import ApprovalPolicy
from postroom.core.keys import MIN_SECRET_BYTES
from postroom.core.priority import PriorityPolicy, default_policy
from postroom.core.senderauth import SenderAuthPolicy

__all__ = [
    "AUTO_RESPONSE_FIELDS",
    "DEFAULT_AUTO_RESPONSE_SUBJECT",
    "DEFAULT_AUTO_RESPONSE_TEXT",
    "DEFAULT_EVALUATION_CRITERIA",
    "DEFAULT_WRAPUP_CODES",
    "AgentConfig",
    "ApprovalConfig",
    "AutoResponseConfig",
    "Box",
    "Config",
    "ConfigError",
    "ConfigInvalid",
    "ClusterConfig",
    "ContactConfig",
    "CustomerConfig",
    "DevstackConfig",
    "EvaluationCriterionConfig",
    "GroupConfig",
    "HealthConfig",
    "IncomingBox",
    "JournalBox",
    "OutboxConfig",
    "PriorityConfig",
    "RoutingConfig",
    "SenderAuthConfig",
    "ServerConfig",
    "WrapUpCodeConfig",
    "check_config",
    "load_config",
    "mail_users",
    "parse_config",
    "parse_duration",
    "valid_node_id",
]

TLS_MODES = ("tls", "starttls", "none")
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
# A host name in [sender_auth] servers: labels of letters, digits and hyphens.
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*")

_NODE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Deliberately plain: no quoted local parts, no IP literals, no display names. Anything
# fancier is almost always a paste error in a config file.
_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+"
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DURATION_PART = re.compile(r"(\d+)([smhd])")
# A contact's domain: at least two labels; "com" alone would match half the world.
_DOMAIN = re.compile(
    r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+"
)
_CODE = re.compile(r"[A-Za-z0-9_-]{1,60}")
_POLICY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
# Values that switch an optional duration off.
_NONE_WORDS = ("none", "off")
MAX_PRIORITY = core_rules.MAX_PRIORITY
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


# -- errors ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigError:
    """One problem in a configuration file; ``path`` is the key path, "" for the whole file."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigInvalid(ValueError):
    """Raised by :func:`load_config`; ``errors`` holds every problem found."""

    def __init__(self, source: str, errors: list[ConfigError]) -> None:
        self.source = source
        self.errors = errors
        lines = "\n".join(f"  {e}" for e in errors)
        super().__init__(f"{source}: {len(errors)} configuration error(s):\n{lines}")


# -- the configuration ----------------------------------------------------------------------
# Secrets are plain strings (the engine needs them) with repr=False, so that logging a
# config object, or a traceback that shows one, never prints a password.


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    imap_host: str
    imap_port: int
    imap_tls: str
    smtp_host: str
    smtp_port: int
    smtp_tls: str
    # Resolved: the outbound box's login and password unless the file names others.
    smtp_login: str
    smtp_password: str = field(repr=False)
    # "system" (the platform's trust store), "devstack" (resolved by the caller) or a path.
    cafile: str
    idle: bool
    poll_seconds: int
    # Larger mail is never read whole: quarantined when it comes in, refused (to the dead
    # box, the agent told) when it is an agent's reply.
    max_message_bytes: int = 25 * 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class Box:
    """A mailbox Postroom logs into: the outbound box and the dead box are plain boxes."""

    address: str
    name: str
    login: str
    password: str = field(repr=False)
    folder: str
    # Where finished mail goes (incoming and outbound boxes): moved, never expunged.
    archive_folder: str = "Postroom-Archive"


@dataclass(frozen=True, kw_only=True)
class IncomingBox(Box):
    auto_response: bool
    auto_response_subject: str
    auto_response_text: str
    no_reply_seconds: int
    skills: tuple[str, ...]
    default_priority: int
    # Shorter no-reply times for urgent mail: (min_priority, seconds), ascending.
    no_reply_bands: tuple[tuple[int, int], ...] = ()
    trash_folder: str = "Trash"
    # The reports' service level: the share of this box's mail answered within this time.
    service_level_seconds: int = 4 * 3600
    # The templates may use {name} and {subject}, the sender's own words (off: they may not).
    auto_response_customer_text: bool = False


@dataclass(frozen=True, kw_only=True)
class JournalBox(Box):
    """[journal]: every mail Postroom sends is also sent here, in the same SMTP transaction,
    so that an unknown outcome can be settled (docs/decisions/0007)."""

    # Copies older than this are expunged by the engine.
    retention_seconds: int = 7 * 86400
    # How long after a possible 250 the copy is certainly in the box (local delivery).
    grace_seconds: int = 60


@dataclass(frozen=True, kw_only=True)
class OutboxConfig:
    """[outbox]: how mail leaves."""

    max_attempts: int = 12
    # The budget of one SMTP transaction, connection included (and of one journal search).
    send_timeout_seconds: int = 60
    # How long one engine holds a row it is sending; at least twice send_timeout.
    lease_seconds: int = 300
    # MAIL FROM of automatic mail (auto-responses, notices): "null" is the empty reverse
    # path of RFC 3834 §3.3; "box" the address it is written from, for relays that refuse
    # a null sender from an authenticated client (Microsoft 365).
    automatic_envelope_from: str = "null"


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    name: str
    address: str
    skills: tuple[str, ...]
    supervisor: bool
    auto_answer: bool
    capacity: int
    # The agent's own mailbox password, if the file gives one (dev stack; withdrawing mail).
    # Used for the mail server only, never as the agent's web login.
    password: str | None = field(default=None, repr=False)
    # The agent's web login password, if the file gives one (web_password, _env, _file);
    # set only while the user has no usable password (then it is the person's own).
    web_password: str | None = field(default=None, repr=False)
    # (skill, level) when the file gives skills as a table; None when given as a list.
    skill_levels: tuple[tuple[str, int], ...] | None = None
    supervisors: tuple[str, ...] = ()
    # Set by the agent's own key or by [approval] probation.
    probationary: bool = False
    notify_offers: bool = False
    # Incoming boxes this agent may read (journal, transcripts, reports) besides its
    # groups' boxes and what it holds (decision 0022).
    boxes: tuple[str, ...] = ()

    @property
    def levels(self) -> dict[str, int]:
        """Every skill with its level (1 when the file gives none)."""
        if self.skill_levels is not None:
            return dict(self.skill_levels)
        return {s: 1 for s in self.skills}


@dataclass(frozen=True, kw_only=True)
class CustomerConfig:
    address: str
    name: str
    password: str = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class DevstackConfig:
    base_port: int


@dataclass(frozen=True, kw_only=True)
class HealthConfig:
    """[health]: alerts, the sync watchdog, reconciliation, retries."""

    # Supervisors are mailed about one alert at most once per this time.
    alert_mail_interval_seconds: int = 3600
    # A watched box not synced for this long raises a "box not synced" alert.
    sync_alert_after_seconds: int = 300
    # How often each box is compared with the ledger.
    reconcile_interval_seconds: int = 300
    # Attempts to withdraw a forwarded copy before giving up with an alert.
    withdrawal_attempts: int = 8


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """[cluster]: this node among the nodes sharing one database (docs/redundancy.md)."""

    # "primary": takes its share of the mailboxes; "secondary": stands by while a primary
    # is live and takes everything over when none is.
    role: str = "primary"
    # The node's lease on the database, renewed every second: another node takes over
    # this node's mailboxes once it has run out (failover within about this plus 2 s).
    node_lease_seconds: int = 6


@dataclass(frozen=True, kw_only=True)
class ContactConfig:
    """A known customer, by exact address or by domain (then its subdomains too)."""

    address: str | None
    domain: str | None
    name: str = ""
    level: str = "standard"
    priority: int = 0
    requires_approval: bool = False

    @property
    def key(self) -> str:
        return self.address or self.domain or ""


@dataclass(frozen=True, kw_only=True)
class RoutingConfig:
    # None: an offer waits until the agent answers it.
    offer_timeout_seconds: int | None = None
    # How long a customer's follow-up waits for the agent who handled the thread; 0: not at all.
    follow_up_wait_seconds: int = 15 * 60
    no_reply_priority_raise: int = 10
    unassigned_queue: str = "unassigned"


@dataclass(frozen=True, kw_only=True)
class ApprovalConfig:
    # Every probationary agent: [approval] probation and agents' own probationary = true.
    probation: tuple[str, ...] = ()
    # Contact levels whose mail needs approval, lower-cased (compared ignoring case).
    levels: tuple[str, ...] = ("vip",)
    # Replies to mail of at least this priority need approval; None: no such threshold.
    min_priority: int | None = None
    # Incoming boxes all of whose replies need approval.
    boxes: tuple[str, ...] = ()
    reroute_on_reject: bool = False

    def as_policy(self) -> ApprovalPolicy:
        """The engine's view (``postroom.core.approval``)."""
        return ApprovalPolicy(
            probation=frozenset(self.probation),
            levels=frozenset(self.levels),
            min_priority=self.min_priority,
            boxes=frozenset(self.boxes),
            reroute_on_reject=self.reroute_on_reject,
        )


@dataclass(frozen=True, kw_only=True)
class GroupConfig:
    """A team: its members may read the incoming boxes granted to it (decision 0022)."""

    name: str
    members: tuple[str, ...] = ()
    boxes: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class EvaluationCriterionConfig:
    """One line of the evaluation form: scored 0..max_score, weighted."""

    code: str
    label: str
    weight: int = 1
    max_score: int = 5
    description: str = ""


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


@dataclass(frozen=True, kw_only=True)
class SenderAuthConfig:
    """``[sender_auth]``: the evidence the site's mail server adds about who sent a mail."""

    required: bool = True
    servers: tuple[str, ...] = ()
    exchange: bool = False
    authserv_ids: tuple[str, ...] = ()

    def as_policy(self) -> SenderAuthPolicy:
        """The engine's view (``postroom.core.senderauth``)."""
        return SenderAuthPolicy(
            required=self.required,
            servers=frozenset(self.servers),
            exchange=self.exchange,
            authserv_ids=frozenset(self.authserv_ids),
        )


@dataclass(frozen=True, kw_only=True)
class AutoResponseConfig:
    """``[auto_response]``: how many auto-responses one address may get in a window."""

    # 0: no limit.
    max_per_address: int = 3
    window_seconds: int = 24 * 3600


@dataclass(frozen=True, kw_only=True)
class WrapUpCodeConfig:
    code: str
    label: str


DEFAULT_WRAPUP_CODES = (
    WrapUpCodeConfig(code="resolved", label="Resolved"),
    WrapUpCodeConfig(code="no_action_needed", label="No action needed"),
    WrapUpCodeConfig(code="spam", label="Spam"),
    WrapUpCodeConfig(code="duplicate", label="Duplicate"),
    WrapUpCodeConfig(code="escalated_by_phone", label="Escalated by phone"),
)


@dataclass(frozen=True, kw_only=True)
class PriorityConfig:
    # "module:callable" as written in the file; None: the default policy.
    policy_path: str | None = None
    policy: PriorityPolicy = default_policy


@dataclass(frozen=True, kw_only=True)
class Config:
    source: Path | None
    node_id: str
    # The site's secrets, newest first: the first mints tokens, every one verifies them
    # (rotation). Keys are derived from them per purpose (postroom.core.keys).
    secrets: tuple[bytes, ...] = field(repr=False)
    server: ServerConfig
    incoming: tuple[IncomingBox, ...]
    outbound: Box
    dead_box: Box
    agents: tuple[AgentConfig, ...]
    customers: tuple[CustomerConfig, ...]
    devstack: DevstackConfig | None
    rules: tuple[core_rules.RuleSpec, ...] = ()
    contacts: tuple[ContactConfig, ...] = ()
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    approval: ApprovalConfig = field(default_factory=ApprovalConfig)
    wrapup_codes: tuple[WrapUpCodeConfig, ...] = DEFAULT_WRAPUP_CODES
    priority: PriorityConfig = field(default_factory=PriorityConfig)
    groups: tuple[GroupConfig, ...] = ()
    evaluation_criteria: tuple[EvaluationCriterionConfig, ...] = DEFAULT_EVALUATION_CRITERIA
    sender_auth: SenderAuthConfig = field(default_factory=SenderAuthConfig)
    auto_response: AutoResponseConfig = field(default_factory=AutoResponseConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    journal: JournalBox | None = None
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

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
        found = {box.address.lower(): box.password for box in self.mailboxes}
        for agent in self.agents:
            if agent.password is not None:
                found.setdefault(agent.address, agent.password)
        return found


# -- public functions -----------------------------------------------------------------------


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> Config:
    """Parse and validate ``path``; raise :class:`ConfigInvalid` listing every error."""
    config, errors = _load(Path(path), environ)
    if errors or config is None:
        raise ConfigInvalid(str(path), errors)
    return config


def check_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> list[ConfigError]:
    """Every problem in ``path``; an empty list means :func:`load_config` will succeed."""
    return _load(Path(path), environ)[1]


def parse_config(
    data: Mapping[str, Any],
    *,
    base_dir: Path,
    environ: Mapping[str, str] | None = None,
    source: Path | None = None,
) -> tuple[Config | None, list[ConfigError]]:
    """Validate an already-parsed TOML document; relative file paths are under ``base_dir``."""
    parser = _Parser(base_dir, os.environ if environ is None else environ)
    config = parser.config(data, source)
    return (config if not parser.errors else None), parser.errors


def valid_node_id(node_id: str) -> bool:
    return bool(_NODE_ID.fullmatch(node_id))


def mail_users(config: Config) -> list[tuple[str, str]]:
    """Every (address, password) a dev stack must create for ``config``, each address once.

    Boxes are listed by address, not login: a dev-stack user's login is its address.
    """
    users: dict[str, str] = {}
    for box in config.mailboxes:
        users.setdefault(box.address, box.password)
    for agent in config.agents:
        if agent.password is not None:
            users.setdefault(agent.address, agent.password)
    for customer in config.customers:
        users.setdefault(customer.address, customer.password)
    users.setdefault(config.server.smtp_login, config.server.smtp_password)
    return list(users.items())


def _loopback(host: str) -> bool:
    """True for names and addresses that never leave the machine."""
    host = host.strip().strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_duration(value: object) -> int | None:
    """Seconds in ``"90s"``, ``"15m"``, ``"4h"``, ``"1d"``, ``"1h30m"`` or an integer; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        return None
    text = value.strip().lower().replace(" ", "")
    if text.isdigit():
        return int(text)
    if not text or _DURATION_PART.sub("", text):
        return None
    return sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))


# -- the parser -----------------------------------------------------------------------------

_REQUIRED: Any = object()


def _show(value: object) -> str:
    """A value as it would be written in TOML, for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


def _load(path: Path, environ: Mapping[str, str] | None) -> tuple[Config | None, list[ConfigError]]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        return None, [ConfigError("", f"cannot read {path}: {e.strerror or e}")]
    except tomllib.TOMLDecodeError as e:
        return None, [ConfigError("", f"{path} is not valid TOML: {e}")]
    except UnicodeDecodeError:
        return None, [ConfigError("", f"{path} is not UTF-8 text")]
    return parse_config(data, base_dir=path.parent, environ=environ, source=path)


class _Table:
    """One TOML table at a key path: typed getters that record errors and consumed keys."""

    def __init__(self, parser: _Parser, data: Mapping[str, Any], path: str) -> None:
        self.parser = parser
        self.data = data
        self.path = path
        self.used: set[str] = set()

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, message: str) -> None:
        self.parser.error(self.key_path(key), message)

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any) -> Any:
        """The value, the default when absent, or _REQUIRED after reporting it missing."""
        self.used.add(key)
        if key in self.data:
            return self.data[key]
        if default is _REQUIRED:
            self.error(key, "required")
        return default

    def _typed(self, key: str, default: Any, ok: Callable[[Any], bool], expected: str) -> Any:
        value = self.raw(key, default)
        if value is _REQUIRED or (key not in self.data):
            return None if value is _REQUIRED else value
        if not ok(value):
            self.error(key, f"expected {expected}, got {_show(value)}")
            return None
        return value

    def text(self, key: str, default: Any = _REQUIRED, *, empty: bool = False) -> str | None:
        value = self._typed(key, default, lambda v: isinstance(v, str), "a string")
        if isinstance(value, str) and not empty and not value.strip() and key in self.data:
            self.error(key, "must not be empty")
            return None
        return value

    def flag(self, key: str, default: Any = _REQUIRED) -> bool | None:
        return self._typed(key, default, lambda v: isinstance(v, bool), "true or false")

    def integer(
        self, key: str, default: Any = _REQUIRED, *, lo: int | None = None, hi: int | None = None
    ) -> int | None:
        value = self._typed(
            key, default, lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"
        )
        if value is None or key not in self.data:
            return value
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            if hi is None:
                bounds = f"at least {lo}"
            elif lo is None:
                bounds = f"at most {hi}"
            else:
                bounds = f"between {lo} and {hi}"
            self.error(key, f"must be {bounds}, got {value}")
            return None
        return value

    def port(self, key: str, default: Any = _REQUIRED) -> int | None:
        return self.integer(key, default, lo=1, hi=65535)

    def choice(self, key: str, choices: tuple[str, ...], default: Any = _REQUIRED) -> str | None:
        value = self.raw(key, default)
        if value is _REQUIRED:
            return None
        if value not in choices:
            listed = ", ".join(_show(c) for c in choices)
            self.error(key, f"expected one of {listed}, got {_show(value)}")
            return None
        return value

    def duration(self, key: str, default: Any = _REQUIRED) -> int | None:
        value = self.raw(key, default)
        if value is _REQUIRED:
            return None
        seconds = parse_duration(value)
        if seconds is None:
            self.error(key, f'expected a duration like "4h" or seconds, got {_show(value)}')
            return None
        if seconds < 1:
            self.error(key, f"must be at least one second, got {_show(value)}")
            return None
        return seconds

    def address(self, key: str, *, distinct: bool = True) -> str | None:
        """``distinct``: the address names a mailbox of its own (checked for duplicates)."""
        value = self.text(key)
        if value is None:
            return None
        if not _ADDRESS.fullmatch(value):
            self.error(key, f"expected an email address like user@example.com, got {_show(value)}")
            return None
        # Lower-cased because the address is the database key and mail servers treat
        # addresses case-insensitively in practice; "Alice@" and "alice@" are one person.
        address = value.lower()
        if distinct:
            self.parser.addresses.append((self.key_path(key), address))
        return address

    def skills(
        self, key: str, default: Any = _REQUIRED, *, allow_empty: bool
    ) -> tuple[str, ...] | None:
        value = self.raw(key, default)
        if value is _REQUIRED:
            return None
        if key not in self.data:
            return tuple(value)
        if not isinstance(value, list):
            self.error(key, f"expected an array of strings, got {_show(value)}")
            return None
        ok = True
        for i, skill in enumerate(value):
            if not isinstance(skill, str) or not skill.strip():
                self.parser.error(
                    f"{self.key_path(key)}[{i}]", f"expected a non-empty string, got {_show(skill)}"
                )
                ok = False
        if not ok:
            return None
        if not value and not allow_empty:
            self.error(key, "at least one skill is required")
            return None
        # Order kept, duplicates dropped: ["a", "a"] is a harmless slip, not an error.
        return tuple(dict.fromkeys(s.strip() for s in value))

    def template(self, key: str, default: str) -> str | None:
        value = self.text(key, default, empty=True)
        if value is None:
            return None
        # Braces that are not a {word} are plain text to the engine, so only words are checked.
        for name in _PLACEHOLDER.findall(value):
            if name not in AUTO_RESPONSE_FIELDS:
                known = ", ".join("{" + f + "}" for f in AUTO_RESPONSE_FIELDS)
                self.error(key, f"unknown placeholder {{{name}}}; known: {known}")
                return None
        return value

    def secret(self, base: str, *, required: bool) -> tuple[str, str] | None:
        """Resolve ``base`` / ``base_env`` / ``base_file``; returns (key used, value)."""
        keys = [k for k in (base, base + "_env", base + "_file") if k in self.data]
        self.used.update((base, base + "_env", base + "_file"))
        if not keys:
            if required:
                self.error(base, f"required (give one of {base}, {base}_env, {base}_file)")
            return None
        if len(keys) > 1:
            self.error(keys[1], f"give only one of {base}, {base}_env, {base}_file")
            return None
        key = keys[0]
        value = self.data[key]
        if not isinstance(value, str):
            self.error(key, f"expected a string, got {_show(value)}")
            return None
        if key == base:
            resolved: str | None = value
        elif key.endswith("_env"):
            resolved = self._from_env(key, value)
        else:
            resolved = self._from_file(key, value)
        if resolved is None:
            return None
        if not resolved:
            self.error(key, "the secret is empty")
            return None
        return key, resolved

    def _from_env(self, key: str, name: str) -> str | None:
        if not _ENV_NAME.fullmatch(name):
            self.error(key, f"expected an environment variable name, got {_show(name)}")
            return None
        value = self.parser.environ.get(name)
        if value is None:
            self.error(key, f"environment variable {name} is not set")
        return value

    def _from_file(self, key: str, name: str) -> str | None:
        path = self.parser.base_dir / Path(name).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            self.error(key, f"cannot read {path}: {e.strerror or e}")
            return None
        except UnicodeDecodeError:
            self.error(key, f"{path} is not UTF-8 text")
            return None
        # Editors and `echo` add a final newline; it is never part of the secret.
        return text.rstrip("\r\n")

    def table(self, key: str, *, required: bool) -> _Table | None:
        self.used.add(key)
        if key not in self.data:
            if required:
                self.error(key, f"required: add a [{self.key_path(key)}] table")
            return None
        value = self.data[key]
        if not isinstance(value, dict):
            self.error(key, f"expected a table ([{self.key_path(key)}]), got {_show(value)}")
            return None
        return _Table(self.parser, value, self.key_path(key))

    def array(self, key: str, *, required: bool) -> Iterator[_Table]:
        self.used.add(key)
        if key not in self.data:
            if required:
                self.error(key, f"required: add at least one [[{self.key_path(key)}]] table")
            return
        value = self.data[key]
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.error(
                key, f"expected an array of tables ([[{self.key_path(key)}]]), got {_show(value)}"
            )
            return
        if not value and required:
            self.error(key, f"required: add at least one [[{self.key_path(key)}]] table")
        for i, item in enumerate(value):
            yield _Table(self.parser, item, f"{self.key_path(key)}[{i}]")

    def done(self) -> None:
        """Report keys nobody asked for: a typo must never pass as "option left at default"."""
        for key in self.data:
            if key not in self.used:
                close = difflib.get_close_matches(key, sorted(self.used), n=1)
                hint = f' (did you mean "{close[0]}"?)' if close else ""
                self.error(key, f"unknown key{hint}")


class _Parser:
    def __init__(self, base_dir: Path, environ: Mapping[str, str]) -> None:
        self.base_dir = base_dir
        self.environ = environ
        self.errors: list[ConfigError] = []
        # (key path, lower-cased address) of every address that names a distinct mailbox.
        self.addresses: list[tuple[str, str]] = []
        # Every skill some agent has; "known" turns false when an agent's skills are
        # unreadable, and then "no agent has skill X" would be a false alarm.
        self.agent_skills: set[str] = set()
        self.agent_skills_known = True

    def error(self, path: str, message: str) -> None:
        self.errors.append(ConfigError(path, message))

    def config(self, data: Mapping[str, Any], source: Path | None) -> Config | None:
        top = _Table(self, data, "")
        node_id = top.text("node_id")
        if node_id is not None and not _NODE_ID.fullmatch(node_id):
            top.error("node_id", f"expected 1-64 of A-Z a-z 0-9 _ -, got {_show(node_id)}")
            node_id = None
        secrets = self.secrets(top)
        server_table = top.table("server", required=True)
        server_fields = self.server(server_table) if server_table else None
        incoming = [self.incoming(t) for t in top.array("incoming", required=True)]
        outbound_table = top.table("outbound", required=True)
        outbound = self.box(outbound_table, archive=True) if outbound_table else None
        if outbound is not None and "+" in outbound.address:
            # Replies come back to outbound+token@; a "+" already there would be ambiguous.
            self.error("outbound.address", "must not contain '+' (used for reply tokens)")
        dead_table = top.table("dead_box", required=True)
        dead = self.box(dead_table) if dead_table else None
        agents = [self.agent(t) for t in top.array("agents", required=False)]
        if any(e.path == "agents" for e in self.errors):
            self.agent_skills_known = False
        customers = [self.customer(t) for t in top.array("customers", required=False)]
        devstack_table = top.table("devstack", required=False)
        devstack = self.devstack(devstack_table) if devstack_table else None
        rules = self.rules(top)
        contacts = [self.contact(t) for t in top.array("contacts", required=False)]
        routing_table = top.table("routing", required=False)
        routing = self.routing(routing_table) if routing_table else RoutingConfig()
        approval_table = top.table("approval", required=False)
        approval = self.approval(approval_table) if approval_table else ApprovalConfig()
        wrapup_codes = self.wrapup_codes(top)
        priority_table = top.table("priority", required=False)
        priority = self.priority(priority_table) if priority_table else PriorityConfig()
        groups = [self.group(t) for t in top.array("groups", required=False)]
        criteria = self.evaluation_criteria(top)
        sender_auth = self.sender_auth(top.table("sender_auth", required=False))
        auto_response_table = top.table("auto_response", required=False)
        auto_response = self.auto_response(auto_response_table) if auto_response_table else AutoResponseConfig()
        health_table = top.table("health", required=False)
        health = self.health(health_table) if health_table else HealthConfig()
        journal_table = top.table("journal", required=False)
        journal = self.journal(journal_table) if journal_table else None
        outbox_table = top.table("outbox", required=False)
        outbox = self.outbox(outbox_table) if outbox_table else OutboxConfig()
        cluster_table = top.table("cluster", required=False)
        cluster = self.cluster(cluster_table) if cluster_table else ClusterConfig()
        top.done()

        self.check_duplicates()
        self.check_skills(incoming)
        self.check_contacts(contacts)
        self.check_supervisors(agents)
        if routing is not None:
            self.check_rules(rules, agents, routing)
        if approval is not None:
            self.check_approval(approval, agents, incoming)
        self.check_rights(groups, agents, incoming)

        if self.errors:
            return None
        assert node_id and secrets and server_fields and outbound and dead
        assert routing and approval and wrapup_codes is not None and priority and health
        assert criteria is not None
        assert sender_auth and auto_response and outbox and cluster
        # One truth for "probationary": the agent's own key or the [approval] list.
        probation = set(approval.probation)
        agents = [
            replace(a, probationary=True) if a and a.address in probation else a for a in agents
        ]
        approval = replace(
            approval,
            probation=tuple(a.address for a in agents if a is not None and a.probationary),
        )
        if server_fields["smtp_login"] is None:
            # Without a relay account of its own, Postroom submits as the outbound box.
            server_fields |= {"smtp_login": outbound.login, "smtp_password": outbound.password}
        server = ServerConfig(**server_fields)
        return Config(
            source=source,
            node_id=node_id,
            secrets=secrets,
            server=server,
            incoming=tuple(b for b in incoming if b is not None),
            outbound=outbound,
            dead_box=dead,
            agents=tuple(a for a in agents if a is not None),
            customers=tuple(c for c in customers if c is not None),
            devstack=devstack,
            rules=rules or (),
            contacts=tuple(c for c in contacts if c is not None),
            routing=routing,
            approval=approval,
            wrapup_codes=wrapup_codes,
            priority=priority,
            groups=tuple(g for g in groups if g is not None),
            evaluation_criteria=criteria,
            sender_auth=sender_auth,
            auto_response=auto_response,
            health=health,
            journal=journal,
            outbox=outbox,
            cluster=cluster,
        )

    def secrets(self, top: _Table) -> tuple[bytes, ...] | None:
        """``secret``: a string or an array of them, newest first; ``secret_env`` and
        ``secret_file``: one secret per line. Each at least MIN_SECRET_BYTES bytes."""
        value = top.data.get("secret")
        paths: list[str]
        if isinstance(value, list):
            top.used.update(("secret", "secret_env", "secret_file"))
            if any(k in top.data for k in ("secret_env", "secret_file")):
                top.error("secret", "give only one of secret, secret_env, secret_file")
                return None
            if not value:
                top.error("secret", "give at least one secret")
                return None
            items: list[str] = []
            for i, item in enumerate(value):
                if not isinstance(item, str) or not item:
                    self.error(f"secret[{i}]", f"expected a non-empty string, got {_show(item)}")
                    return None
                items.append(item)
            paths = [f"secret[{i}]" for i in range(len(items))]
        else:
            found = top.secret("secret", required=True)
            if found is None:
                return None
            key, text = found
            items = [text] if key == "secret" else [line.strip() for line in text.splitlines() if line.strip()]
            if not items:
                top.error(key, "the secret is empty")
                return None
            paths = [top.key_path(key)] * len(items)
        ok = True
        for n, (path, item) in enumerate(zip(paths, items, strict=True), 1):
            size = len(item.encode("utf-8"))
            if size < MIN_SECRET_BYTES:
                which = f" (line {n})" if len(items) > 1 and not path.endswith("]") else ""
                self.error(path, f"the secret must be at least {MIN_SECRET_BYTES} bytes, got {size}{which}")
                ok = False
        if len(set(items)) != len(items):
            self.error(paths[0].split("[")[0], "the same secret is given twice")
            ok = False
        return tuple(item.encode("utf-8") for item in items) if ok else None

    def sender_auth(self, t: _Table | None) -> SenderAuthConfig | None:
        if t is None:
            self.error(
                "sender_auth",
                "required: Postroom accepts agents' replies and approvers' decisions only when "
                "the mail server vouches for the sender. Add a [sender_auth] table naming the "
                "evidence your server adds (servers, exchange or authserv_ids), or with "
                "required = false if it adds none",
            )
            return None
        required = t.flag("required", True)
        servers = self.hosts(t, "servers")
        exchange = t.flag("exchange", False)
        authserv_ids = self.hosts(t, "authserv_ids")
        t.done()
        if None in (required, servers, exchange, authserv_ids):
            return None
        assert servers is not None and authserv_ids is not None
        if required and not (servers or exchange or authserv_ids):
            self.error(
                t.path,
                "the check is on (required = true) but names no evidence: give servers "
                "(the host names in the Received headers your server adds, with Postfix's "
                "smtpd_sasl_authenticated_header = yes), exchange = true, or authserv_ids; "
                "or set required = false if your server adds none",
            )
            return None
        return SenderAuthConfig(
            required=bool(required), servers=servers, exchange=bool(exchange), authserv_ids=authserv_ids
        )

    def hosts(self, t: _Table, key: str) -> tuple[str, ...] | None:
        """An array of host names (lower-cased, trailing dot dropped)."""
        value = self.strings(t, key, ())
        if value is None:
            return None
        ok = True
        for i, item in enumerate(value):
            if not _HOST.fullmatch(item.rstrip(".")):
                self.error(f"{t.key_path(key)}[{i}]", f"expected a host name like mail.example.com, got {_show(item)}")
                ok = False
        return tuple(dict.fromkeys(v.rstrip(".").lower() for v in value)) if ok else None

    def auto_response(self, t: _Table) -> AutoResponseConfig | None:
        limit = t.integer("max_per_address", 3, lo=0)
        window = t.duration("window", 24 * 3600)
        t.done()
        if limit is None or window is None:
            return None
        return AutoResponseConfig(max_per_address=limit, window_seconds=window)

    def server(self, t: _Table) -> dict[str, Any] | None:
        """ServerConfig's fields; smtp_login/smtp_password stay None when not given."""
        imap_host = t.text("imap_host")
        imap_tls = t.choice("imap_tls", TLS_MODES, "tls")
        # The default port follows the TLS mode, as in every mail client.
        imap_port = t.port("imap_port", 993 if imap_tls == "tls" else 143)
        smtp_host = t.text("smtp_host")
        smtp_tls = t.choice("smtp_tls", TLS_MODES, "starttls")
        smtp_port = t.port(
            "smtp_port", {"tls": 465, "starttls": 587, "none": 25}.get(smtp_tls, 587)
        )
        smtp_login = t.text("smtp_login", None)
        smtp_secret = t.secret("smtp_password", required=smtp_login is not None)
        if smtp_secret is not None and not t.has("smtp_login"):
            t.error(
                next(k for k in t.data if k.startswith("smtp_password")),
                "give smtp_login too, or neither (then the outbound box's login is used)",
            )
        cafile = t.text("cafile", "system")
        if cafile not in (None, "system", "devstack"):
            path = self.base_dir / Path(cafile).expanduser()
            if not path.is_file() or not os.access(path, os.R_OK):
                t.error("cafile", f'cannot read {path} (or use "system")')
                cafile = None
            else:
                cafile = str(path)
        idle = t.flag("idle", True)
        poll = t.duration("poll_interval", 30)
        for host, tls, key in ((imap_host, imap_tls, "imap_tls"), (smtp_host, smtp_tls, "smtp_tls")):
            if tls == "none" and host is not None and not _loopback(host):
                t.error(
                    key,
                    f'"none" sends passwords and mail in clear text: only for a loopback host, '
                    f'not {_show(host)} (use "tls" or "starttls")',
                )
        max_bytes = t.integer("max_message_bytes", 25 * 1024 * 1024, lo=64 * 1024)
        t.done()
        values = (
            imap_host,
            imap_tls,
            imap_port,
            smtp_host,
            smtp_tls,
            smtp_port,
            cafile,
            idle,
            poll,
            max_bytes,
        )
        if any(v is None for v in values) or (smtp_login is not None and smtp_secret is None):
            return None
        return {
            "imap_host": imap_host,
            "imap_port": imap_port,
            "imap_tls": imap_tls,
            "smtp_host": smtp_host,
            "smtp_port": smtp_port,
            "smtp_tls": smtp_tls,
            "smtp_login": smtp_login,
            "smtp_password": smtp_secret[1] if smtp_secret else None,
            "cafile": cafile,
            "idle": idle,
            "poll_seconds": poll,
            "max_message_bytes": max_bytes,
        }

    def _box_fields(self, t: _Table) -> dict[str, Any] | None:
        address = t.address("address")
        name = t.text("name", "", empty=True)
        login = t.text("login", address or "")
        password = t.secret("password", required=True)
        folder = t.text("folder", "INBOX")
        if None in (address, name, login, password, folder):
            return None
        assert password is not None
        return {
            "address": address,
            "name": name,
            "login": login,
            "password": password[1],
            "folder": folder,
        }

    def box(self, t: _Table, *, archive: bool = False) -> Box | None:
        fields = self._box_fields(t)
        archive_folder = t.text("archive_folder", "Postroom-Archive") if archive else "Postroom-Archive"
        t.done()
        return Box(**fields, archive_folder=archive_folder) if fields and archive_folder else None

    def health(self, t: _Table) -> HealthConfig | None:
        interval = t.duration("alert_mail_interval", 3600)
        sync_after = t.duration("sync_alert_after", 300)
        reconcile = t.duration("reconcile_interval", 300)
        attempts = t.integer("withdrawal_attempts", 8, lo=1, hi=100)
        if t.has("engine_lease"):
            t.used.add("engine_lease")
            t.error("engine_lease", "moved: the node's lease is [cluster] node_lease now (docs/redundancy.md)")
        if sync_after is not None and sync_after < 30:
            # A quiet box is looked at every 10 s (Site.idle_timeout): less would cry wolf.
            t.error("sync_alert_after", f"must be at least 30 seconds, got {sync_after}")
            sync_after = None
        t.done()
        if None in (interval, sync_after, reconcile, attempts):
            return None
        return HealthConfig(
            alert_mail_interval_seconds=interval,
            sync_alert_after_seconds=sync_after,
            reconcile_interval_seconds=reconcile,
            withdrawal_attempts=attempts,
        )

    def cluster(self, t: _Table) -> ClusterConfig | None:
        role = t.choice("role", ("primary", "secondary"), "primary")
        lease = t.duration("node_lease", 6)
        if lease is not None and not 2 <= lease <= 300:
            t.error("node_lease", f"must be between 2 seconds and 5 minutes, got {lease} s")
            lease = None
        t.done()
        if role is None or lease is None:
            return None
        return ClusterConfig(role=role, node_lease_seconds=lease)

    def incoming(self, t: _Table) -> IncomingBox | None:
        fields = self._box_fields(t)
        auto_response = t.flag("auto_response", True)
        subject = t.template("auto_response_subject", DEFAULT_AUTO_RESPONSE_SUBJECT)
        text = t.template("auto_response_text", DEFAULT_AUTO_RESPONSE_TEXT)
        no_reply = t.duration("no_reply_time", 4 * 3600)
        # The default skill is the box's local part: support@ routes to "support" agents.
        default_skills = [fields["address"].split("@")[0]] if fields else ()
        skills = t.skills("skills", default_skills, allow_empty=False)
        priority = t.integer("default_priority", 0)
        bands = self.no_reply_bands(t, "no_reply_bands")
        trash = t.text("trash_folder", "Trash")
        service_level = t.duration("service_level", 4 * 3600)
        customer_text = t.flag("auto_response_customer_text", False)
        if customer_text is False:
            for key, template in (("auto_response_subject", subject), ("auto_response_text", text)):
                used = [f for f in _PLACEHOLDER.findall(template or "") if f in CUSTOMER_FIELDS]
                if used:
                    t.error(
                        key,
                        f"uses {{{used[0]}}}, the sender's own words: anyone who forges a From "
                        "could make an auto-response carry them to any address. Leave it out, or "
                        "set auto_response_customer_text = true",
                    )
                    subject = text = None
        archive = t.text("archive_folder", "Postroom-Archive")
        t.done()
        rest = (auto_response, subject, text, no_reply, skills, priority, bands, trash, customer_text, archive)
        rest += (service_level,)
        if fields is None or any(v is None for v in rest):
            return None
        return IncomingBox(
            **fields,
            auto_response=auto_response,
            auto_response_subject=subject,
            auto_response_text=text,
            no_reply_seconds=no_reply,
            skills=tuple(skills),
            default_priority=priority,
            no_reply_bands=bands,
            trash_folder=trash,
            service_level_seconds=service_level,
            auto_response_customer_text=customer_text,
            archive_folder=archive,
        )

    def agent(self, t: _Table) -> AgentConfig | None:
        name = t.text("name")
        address = t.address("address")
        levels: tuple[tuple[str, int], ...] | None = None
        if isinstance(t.data.get("skills"), dict):
            levels = self.skill_levels(t, "skills")
            skills = None if levels is None else tuple(s for s, _ in levels)
        else:
            skills = t.skills("skills", (), allow_empty=True)
        if skills is None:
            self.agent_skills_known = False
        else:
            self.agent_skills.update(skills)
        supervisor = t.flag("supervisor", False)
        auto_answer = t.flag("auto_answer", False)
        capacity = t.integer("capacity", 1, lo=1)
        password = t.secret("password", required=False)
        web_password = t.secret("web_password", required=False)
        supervisors = self.address_array(t, "supervisors")
        probationary = t.flag("probationary", False)
        notify_offers = t.flag("notify_offers", False)
        boxes = self.address_array(t, "boxes")
        t.done()
        values = (name, address, skills, supervisor, auto_answer, capacity)
        values += (supervisors, probationary, notify_offers, boxes)
        if any(v is None for v in values) or (password is None and self._any_secret(t, "password")):
            return None
        if web_password is None and self._any_secret(t, "web_password"):
            return None
        return AgentConfig(
            name=name,
            address=address,
            skills=tuple(skills),
            supervisor=supervisor,
            auto_answer=auto_answer,
            capacity=capacity,
            password=password[1] if password else None,
            web_password=web_password[1] if web_password else None,
            skill_levels=levels,
            supervisors=supervisors,
            probationary=probationary,
            notify_offers=notify_offers,
            boxes=boxes,
        )

    def customer(self, t: _Table) -> CustomerConfig | None:
        address = t.address("address")
        name = t.text("name", "", empty=True)
        password = t.secret("password", required=True)
        t.done()
        if address is None or name is None or password is None:
            return None
        return CustomerConfig(address=address, name=name, password=password[1])

    def devstack(self, t: _Table) -> DevstackConfig | None:
        # The stack uses base_port .. base_port + 6 (imap, imaps, pop3, pop3s, smtp, ...).
        base_port = t.integer("base_port", 21000, lo=1024, hi=65535 - 6)
        t.done()
        return None if base_port is None else DevstackConfig(base_port=base_port)

    @staticmethod
    def _any_secret(t: _Table, base: str) -> bool:
        return any(k in t.data for k in (base, base + "_env", base + "_file"))

    def check_duplicates(self) -> None:
        first: dict[str, str] = {}
        for path, address in self.addresses:
            if address in first:
                self.error(
                    path, f"duplicate address {_show(address)} (already used by {first[address]})"
                )
            else:
                first[address] = path

    def check_skills(self, incoming: list[IncomingBox | None]) -> None:
        """A box whose mail no agent could ever take is a configuration error, not a queue."""
        if not self.agent_skills_known:
            return
        for i, box in enumerate(incoming):
            if box is None:
                continue
            for skill in box.skills:
                if skill not in self.agent_skills:
                    self.error(f"incoming[{i}].skills", f"no agent has skill {_show(skill)}")

    # -- routing, rules, contacts, approval, wrap-up codes, priority policy ------------------

    def skill_levels(self, t: _Table, key: str) -> tuple[tuple[str, int], ...] | None:
        """``skills = {support = 3, sales = 1}``: skill -> level, a level being an integer ≥ 1."""
        value = t.raw(key, {})
        ok = True
        levels: list[tuple[str, int]] = []
        for skill, level in value.items():
            path = f"{t.key_path(key)}.{skill}"
            if not skill.strip():
                self.error(path, "expected a non-empty skill name")
                ok = False
            elif isinstance(level, bool) or not isinstance(level, int):
                self.error(path, f"expected an integer level, got {_show(level)}")
                ok = False
            elif level < 1:
                self.error(path, f"must be at least 1, got {level}")
                ok = False
            else:
                levels.append((skill.strip(), level))
        return tuple(levels) if ok else None

    def strings(
        self, t: _Table, key: str, default: tuple[str, ...], *, unique: bool = True
    ) -> tuple[str, ...] | None:
        """An array of non-empty strings, in order (each once if ``unique``)."""
        value = t.raw(key, default)
        if not t.has(key):
            return tuple(value)
        if not isinstance(value, list):
            t.error(key, f"expected an array of strings, got {_show(value)}")
            return None
        ok = True
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                self.error(
                    f"{t.key_path(key)}[{i}]", f"expected a non-empty string, got {_show(item)}"
                )
                ok = False
        if not ok:
            return None
        stripped = [v.strip() for v in value]
        return tuple(dict.fromkeys(stripped)) if unique else tuple(stripped)

    def address_array(self, t: _Table, key: str) -> tuple[str, ...] | None:
        """An array of addresses of things defined elsewhere in the file (lower-cased)."""
        value = self.strings(t, key, (), unique=False)
        if value is None:
            return None
        ok = True
        for i, item in enumerate(value):
            if not _ADDRESS.fullmatch(item):
                self.error(
                    f"{t.key_path(key)}[{i}]",
                    f"expected an email address like user@example.com, got {_show(item)}",
                )
                ok = False
        return tuple(dict.fromkeys(v.lower() for v in value)) if ok else None

    def optional_duration(
        self, t: _Table, key: str, default: int | None
    ) -> tuple[bool, int | None]:
        """(ok, seconds): a duration, or ``"none"``/``"off"`` (and absent if default is None)."""
        value = t.raw(key, default)
        if not t.has(key):
            return True, default
        if isinstance(value, str) and value.strip().lower() in _NONE_WORDS:
            return True, None
        seconds = t.duration(key, default)
        return seconds is not None, seconds

    def no_reply_bands(self, t: _Table, key: str) -> tuple[tuple[int, int], ...] | None:
        """``[[min_priority, duration], ...]``, returned sorted by min_priority."""
        value = t.raw(key, [])
        if not t.has(key):
            return ()
        if not isinstance(value, list):
            t.error(key, f"expected an array of [min_priority, duration] pairs, got {_show(value)}")
            return None
        bands: dict[int, int] = {}
        ok = True
        for i, band in enumerate(value):
            path = f"{t.key_path(key)}[{i}]"
            if not isinstance(band, list) or len(band) != 2:
                self.error(path, f"expected [min_priority, duration], got {_show(band)}")
                ok = False
                continue
            floor, duration = band
            seconds = parse_duration(duration)
            if isinstance(floor, bool) or not isinstance(floor, int):
                self.error(f"{path}[0]", f"expected an integer priority, got {_show(floor)}")
                ok = False
            elif floor in bands:
                self.error(f"{path}[0]", f"a band for priority {floor} is already given")
                ok = False
            if seconds is None or seconds < 1:
                self.error(
                    f"{path}[1]",
                    f'expected a duration like "30m" or seconds, got {_show(duration)}',
                )
                ok = False
            if ok:
                bands[floor] = seconds
        return tuple(sorted(bands.items())) if ok else None

    def rules(self, top: _Table) -> tuple[core_rules.RuleSpec, ...] | None:
        data = top.raw("rules", [])
        found = core_rules.problems(data, "rules")
        for path, message in found:
            self.error(path, message)
        if found:
            return None
        return core_rules.rules_from_dicts(data)

    def contact(self, t: _Table) -> ContactConfig | None:
        # A contact is someone writing to us, not a mailbox of ours: the same address may
        # also be a dev-stack customer, so it is not part of the duplicate-address check.
        address = t.address("address", distinct=False) if t.has("address") else None
        domain = None
        if t.has("domain"):
            domain = t.text("domain")
            if domain is not None:
                domain = domain.strip().lower().removeprefix("@")
                if not _DOMAIN.fullmatch(domain):
                    t.error(
                        "domain",
                        f"expected a domain with at least two labels like example.com, "
                        f"got {_show(t.data['domain'])}",
                    )
                    domain = None
        t.used.update(("address", "domain"))
        if t.has("address") and t.has("domain"):
            t.error("domain", "give address or domain, not both")
        elif not t.has("address") and not t.has("domain"):
            self.error(t.path, "give address (one person) or domain (a whole company)")
        name = t.text("name", "", empty=True)
        level = t.text("level", "standard")
        if level is not None and len(level) > 40:
            t.error("level", "longer than 40 characters")
            level = None
        priority = t.integer("priority", 0, lo=-MAX_PRIORITY, hi=MAX_PRIORITY)
        approval = t.flag("requires_approval", False)
        t.done()
        if (address is None) == (domain is None) or None in (name, level, priority, approval):
            return None
        return ContactConfig(
            address=address,
            domain=domain,
            name=name,
            level=level.strip(),
            priority=priority,
            requires_approval=approval,
        )

    def routing(self, t: _Table) -> RoutingConfig | None:
        ok_offer, offer = self.optional_duration(t, "offer_timeout", None)
        ok_wait, wait = self.optional_duration(t, "follow_up_wait", 15 * 60)
        raise_by = t.integer("no_reply_priority_raise", 10, lo=0, hi=MAX_PRIORITY)
        unassigned = t.text("unassigned_queue", "unassigned")
        t.done()
        if not (ok_offer and ok_wait) or raise_by is None or unassigned is None:
            return None
        return RoutingConfig(
            offer_timeout_seconds=offer,
            follow_up_wait_seconds=wait or 0,
            no_reply_priority_raise=raise_by,
            unassigned_queue=unassigned.strip(),
        )

    def journal(self, t: _Table) -> JournalBox | None:
        fields = self._box_fields(t)
        retention = t.duration("retention", 7 * 86400)
        grace = t.duration("grace", 60)
        t.done()
        if retention is not None and retention < 86400:
            # Copies must outlive every row they may settle; expiry works in whole days.
            t.error("retention", f"must be at least one day, got {_show(t.data['retention'])}")
            retention = None
        if fields is None or retention is None or grace is None:
            return None
        return JournalBox(**fields, retention_seconds=retention, grace_seconds=grace)

    def outbox(self, t: _Table) -> OutboxConfig | None:
        max_attempts = t.integer("max_attempts", 12, lo=1, hi=1000)
        timeout = t.duration("send_timeout", 60)
        lease = t.duration("lease", 300)
        sender = t.choice("automatic_envelope_from", ("null", "box"), "null")
        t.done()
        if timeout is not None and lease is not None and lease < 2 * timeout:
            t.error("lease", f"must be at least twice send_timeout ({2 * timeout} s), got {lease} s")
            lease = None
        if None in (max_attempts, timeout, lease, sender):
            return None
        return OutboxConfig(
            max_attempts=max_attempts,
            send_timeout_seconds=timeout,
            lease_seconds=lease,
            automatic_envelope_from=sender,
        )

    def approval(self, t: _Table) -> ApprovalConfig | None:
        probation = self.address_array(t, "probation")
        levels = self.strings(t, "levels", ("vip",))
        min_priority = t.integer("min_priority", None, lo=-MAX_PRIORITY, hi=MAX_PRIORITY)
        bad_min = t.has("min_priority") and min_priority is None
        boxes = self.address_array(t, "boxes")
        reroute = t.flag("reroute_on_reject", False)
        t.done()
        if None in (probation, levels, boxes, reroute) or bad_min:
            return None
        return ApprovalConfig(
            probation=probation,
            levels=tuple(dict.fromkeys(level.lower() for level in levels)),
            min_priority=min_priority,
            boxes=boxes,
            reroute_on_reject=reroute,
        )

    def wrapup_codes(self, top: _Table) -> tuple[WrapUpCodeConfig, ...] | None:
        if not top.has("wrapup_codes"):
            top.used.add("wrapup_codes")
            return DEFAULT_WRAPUP_CODES
        codes: list[WrapUpCodeConfig] = []
        first: dict[str, str] = {}
        before = len(self.errors)
        for t in top.array("wrapup_codes", required=False):
            code = t.text("code")
            if code is not None and not _CODE.fullmatch(code):
                t.error("code", f"expected 1-60 of A-Z a-z 0-9 _ -, got {_show(code)}")
                code = None
            if code is not None:
                if code in first:
                    t.error("code", f"duplicate code {_show(code)} (already {first[code]})")
                    code = None
                else:
                    first[code] = t.key_path("code")
            label = t.text("label", code.replace("_", " ").capitalize() if code else "")
            t.done()
            if code is not None and label is not None:
                codes.append(WrapUpCodeConfig(code=code, label=label))
        ok = len(self.errors) == before
        return tuple(codes) if ok else None

    def priority(self, t: _Table) -> PriorityConfig | None:
        path = t.text("policy", None)
        t.done()
        if path is None:
            return None if t.has("policy") else PriorityConfig()
        policy = self.import_policy(t, path)
        return None if policy is None else PriorityConfig(policy_path=path, policy=policy)

    def import_policy(self, t: _Table, path: str) -> PriorityPolicy | None:
        if not _POLICY.fullmatch(path):
            t.error("policy", f'expected "module:callable", got {_show(path)}')
            return None
        module_name, _, attr = path.partition(":")
        try:
            target: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                target = getattr(target, part)
        except Exception as e:  # noqa: BLE001 - the site's code: any failure is a config error
            t.error("policy", f"cannot load {_show(path)}: {type(e).__name__}: {e}")
            return None
        if not callable(target):
            t.error("policy", f"{_show(path)} is not callable")
            return None
        return target

    def check_contacts(self, contacts: list[ContactConfig | None]) -> None:
        first: dict[str, int] = {}
        for i, contact in enumerate(contacts):
            if contact is None:
                continue
            key = "address" if contact.address else "domain"
            if contact.key in first:
                self.error(
                    f"contacts[{i}].{key}",
                    f"duplicate contact {_show(contact.key)} (already contacts[{first[contact.key]}])",
                )
            else:
                first[contact.key] = i

    def check_supervisors(self, agents: list[AgentConfig | None]) -> None:
        """Each named supervisor must be an agent of the file marked ``supervisor = true``."""
        by_address = {a.address: a for a in agents if a is not None}
        for i, agent in enumerate(agents):
            if agent is None:
                continue
            for j, address in enumerate(agent.supervisors):
                path = f"agents[{i}].supervisors[{j}]"
                other = by_address.get(address)
                if address == agent.address:
                    self.error(path, "an agent cannot supervise itself")
                elif other is None:
                    self.error(path, f"{_show(address)} is not an agent in this file")
                elif not other.supervisor:
                    self.error(path, f"{_show(address)} is not a supervisor (supervisor = true)")

    def check_rules(
        self,
        rules: tuple[core_rules.RuleSpec, ...] | None,
        agents: list[AgentConfig | None],
        routing: RoutingConfig,
    ) -> None:
        """A rule's queue must be a skill some agent has, its agent an agent of the file."""
        if not rules:
            return
        addresses = {a.address for a in agents if a is not None}
        for i, rule in enumerate(rules):
            for j, act in enumerate(rule.actions):
                path = f"rules[{i}].actions[{j}].value"
                if act.action == "queue" and self.agent_skills_known:
                    if act.value != routing.unassigned_queue and act.value not in self.agent_skills:
                        self.error(path, f"no agent has skill {_show(act.value)}")
                elif act.action == "agent" and act.value not in addresses:
                    self.error(path, f"{_show(act.value)} is not an agent in this file")

    def check_approval(
        self,
        approval: ApprovalConfig,
        agents: list[AgentConfig | None],
        incoming: list[IncomingBox | None],
    ) -> None:
        addresses = {a.address for a in agents if a is not None}
        for j, address in enumerate(approval.probation):
            if address not in addresses:
                self.error(
                    f"approval.probation[{j}]", f"{_show(address)} is not an agent in this file"
                )
        boxes = {b.address for b in incoming if b is not None}
        for j, address in enumerate(approval.boxes):
            if address not in boxes:
                self.error(
                    f"approval.boxes[{j}]", f"{_show(address)} is not an incoming box in this file"
                )

    # -- rights and evaluation (decision 0022) -----------------------------------------------

    def group(self, t: _Table) -> GroupConfig | None:
        name = t.text("name")
        if name is not None and len(name.strip()) > 100:
            t.error("name", "longer than 100 characters")
            name = None
        members = self.address_array(t, "members")
        boxes = self.address_array(t, "boxes")
        t.done()
        if name is None or members is None or boxes is None:
            return None
        return GroupConfig(name=name.strip(), members=members, boxes=boxes)

    def evaluation_criteria(self, top: _Table) -> tuple[EvaluationCriterionConfig, ...] | None:
        if not top.has("evaluation_criteria"):
            top.used.add("evaluation_criteria")
            return DEFAULT_EVALUATION_CRITERIA
        found: list[EvaluationCriterionConfig] = []
        first: dict[str, str] = {}
        before = len(self.errors)
        for t in top.array("evaluation_criteria", required=False):
            code = t.text("code")
            if code is not None and not _CODE.fullmatch(code):
                t.error("code", f"expected 1-60 of A-Z a-z 0-9 _ -, got {_show(code)}")
                code = None
            if code is not None:
                if code in first:
                    t.error("code", f"duplicate code {_show(code)} (already {first[code]})")
                    code = None
                else:
                    first[code] = t.key_path("code")
            label = t.text("label", code.replace("_", " ").capitalize() if code else "")
            weight = t.integer("weight", 1, lo=1, hi=100)
            max_score = t.integer("max_score", 5, lo=1, hi=100)
            description = t.text("description", "", empty=True)
            t.done()
            if None not in (code, label, weight, max_score, description):
                found.append(
                    EvaluationCriterionConfig(
                        code=code,
                        label=label,
                        weight=weight,
                        max_score=max_score,
                        description=description,
                    )
                )
        return tuple(found) if len(self.errors) == before else None

    def check_rights(
        self,
        groups: list[GroupConfig | None],
        agents: list[AgentConfig | None],
        incoming: list[IncomingBox | None],
    ) -> None:
        """Groups named once; members are agents of the file; boxes are incoming boxes.
        (Not judged against a box or agent that had errors of its own: no false alarms.)"""
        boxes_known = None not in incoming
        agents_known = None not in agents
        addresses = {a.address for a in agents if a is not None}
        boxes = {b.address for b in incoming if b is not None}
        for i, agent in enumerate(agents):
            for j, box in enumerate(agent.boxes if agent else ()):
                if boxes_known and box not in boxes:
                    self.error(
                        f"agents[{i}].boxes[{j}]", f"{_show(box)} is not an incoming box in this file"
                    )
        seen: dict[str, int] = {}
        for i, group in enumerate(groups):
            if group is None:
                continue
            if group.name.casefold() in seen:
                self.error(
                    f"groups[{i}].name",
                    f"duplicate group {_show(group.name)} (already groups[{seen[group.name.casefold()]}])",
                )
            else:
                seen[group.name.casefold()] = i
            for j, member in enumerate(group.members):
                if agents_known and member not in addresses:
                    self.error(
                        f"groups[{i}].members[{j}]", f"{_show(member)} is not an agent in this file"
                    )
            for j, box in enumerate(group.boxes):
                if boxes_known and box not in boxes:
                    self.error(
                        f"groups[{i}].boxes[{j}]", f"{_show(box)} is not an incoming box in this file"
                    )
