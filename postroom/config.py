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
import json
import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "AUTO_RESPONSE_FIELDS",
    "DEFAULT_AUTO_RESPONSE_SUBJECT",
    "DEFAULT_AUTO_RESPONSE_TEXT",
    "AgentConfig",
    "Box",
    "Config",
    "ConfigError",
    "ConfigInvalid",
    "CustomerConfig",
    "DevstackConfig",
    "IncomingBox",
    "ServerConfig",
    "check_config",
    "load_config",
    "mail_users",
    "parse_config",
    "parse_duration",
]

TLS_MODES = ("tls", "starttls", "none")
# The placeholders the auto-response templates may use: exactly those that
# postroom.core.rewrite.auto_response fills. It leaves any other {word} as written, so an
# unknown one here is a typo that would reach customers verbatim.
AUTO_RESPONSE_FIELDS = ("name", "subject", "reference", "box")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
DEFAULT_AUTO_RESPONSE_SUBJECT = "Re: {subject}"
DEFAULT_AUTO_RESPONSE_TEXT = (
    "Dear {name},\n"
    "\n"
    "thank you for your message. We have received it and will answer as soon as we can.\n"
    "Your reference is {reference}.\n"
    "\n"
    "Kind regards\n"
    "{box}\n"
)
MIN_SECRET_BYTES = 16

_NODE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Deliberately plain: no quoted local parts, no IP literals, no display names. Anything
# fancier is almost always a paste error in a config file.
_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+"
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DURATION_PART = re.compile(r"(\d+)([smhd])")
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


@dataclass(frozen=True, kw_only=True)
class Box:
    """A mailbox Postroom logs into: the outbound box and the dead box are plain boxes."""

    address: str
    name: str
    login: str
    password: str = field(repr=False)
    folder: str


@dataclass(frozen=True, kw_only=True)
class IncomingBox(Box):
    auto_response: bool
    auto_response_subject: str
    auto_response_text: str
    no_reply_seconds: int
    skills: tuple[str, ...]
    default_priority: int


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    name: str
    address: str
    skills: tuple[str, ...]
    supervisor: bool
    auto_answer: bool
    capacity: int
    # The agent's own mailbox password, if the file gives one (dev stack; withdrawing mail).
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, kw_only=True)
class CustomerConfig:
    address: str
    name: str
    password: str = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class DevstackConfig:
    base_port: int


@dataclass(frozen=True, kw_only=True)
class Config:
    source: Path | None
    node_id: str
    # The correlation-token key, as bytes because it is only ever used as an HMAC key.
    secret: bytes = field(repr=False)
    server: ServerConfig
    incoming: tuple[IncomingBox, ...]
    outbound: Box
    dead_box: Box
    agents: tuple[AgentConfig, ...]
    customers: tuple[CustomerConfig, ...]
    devstack: DevstackConfig | None

    @property
    def mailboxes(self) -> tuple[Box, ...]:
        """Every box Postroom logs into: the incoming boxes, then outbound, then dead."""
        return (*self.incoming, self.outbound, self.dead_box)

    def agent(self, address: str) -> AgentConfig | None:
        address = address.lower()
        return next((a for a in self.agents if a.address == address), None)


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

    def address(self, key: str) -> str | None:
        value = self.text(key)
        if value is None:
            return None
        if not _ADDRESS.fullmatch(value):
            self.error(key, f"expected an email address like user@example.com, got {_show(value)}")
            return None
        # Lower-cased because the address is the database key and mail servers treat
        # addresses case-insensitively in practice; "Alice@" and "alice@" are one person.
        address = value.lower()
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
        secret = self.secret(top)
        server_table = top.table("server", required=True)
        server_fields = self.server(server_table) if server_table else None
        incoming = [self.incoming(t) for t in top.array("incoming", required=True)]
        outbound_table = top.table("outbound", required=True)
        outbound = self.box(outbound_table) if outbound_table else None
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
        top.done()

        self.check_duplicates()
        self.check_skills(incoming)

        if self.errors:
            return None
        assert node_id and secret and server_fields and outbound and dead
        if server_fields["smtp_login"] is None:
            # Without a relay account of its own, Postroom submits as the outbound box.
            server_fields |= {"smtp_login": outbound.login, "smtp_password": outbound.password}
        server = ServerConfig(**server_fields)
        return Config(
            source=source,
            node_id=node_id,
            secret=secret,
            server=server,
            incoming=tuple(b for b in incoming if b is not None),
            outbound=outbound,
            dead_box=dead,
            agents=tuple(a for a in agents if a is not None),
            customers=tuple(c for c in customers if c is not None),
            devstack=devstack,
        )

    def secret(self, top: _Table) -> bytes | None:
        found = top.secret("secret", required=True)
        if found is None:
            return None
        key, value = found
        secret = value.encode("utf-8")
        if len(secret) < MIN_SECRET_BYTES:
            top.error(
                key, f"the secret must be at least {MIN_SECRET_BYTES} bytes, got {len(secret)}"
            )
            return None
        return secret

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

    def box(self, t: _Table) -> Box | None:
        fields = self._box_fields(t)
        t.done()
        return Box(**fields) if fields else None

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
        t.done()
        rest = (auto_response, subject, text, no_reply, skills, priority)
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
        )

    def agent(self, t: _Table) -> AgentConfig | None:
        name = t.text("name")
        address = t.address("address")
        skills = t.skills("skills", (), allow_empty=True)
        if skills is None:
            self.agent_skills_known = False
        else:
            self.agent_skills.update(skills)
        supervisor = t.flag("supervisor", False)
        auto_answer = t.flag("auto_answer", False)
        capacity = t.integer("capacity", 1, lo=1)
        password = t.secret("password", required=False)
        t.done()
        values = (name, address, skills, supervisor, auto_answer, capacity)
        if any(v is None for v in values) or (password is None and self._any_secret(t, "password")):
            return None
        return AgentConfig(
            name=name,
            address=address,
            skills=tuple(skills),
            supervisor=supervisor,
            auto_answer=auto_answer,
            capacity=capacity,
            password=password[1] if password else None,
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
