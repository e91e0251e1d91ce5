"""The site configuration file: one TOML file, validated into frozen pydantic models.

Owns the schema (every key, its type and default: ``schema.py``), secret resolution
(inline, ``*_env``, ``*_file``: ``secrets.py``) and the checks that can be made without a
mail server or a database. It does not import Django: ``postroom check`` must work before
any database exists, and the engine reads server settings and the secrets from here.

Every problem is reported as a :class:`ConfigError` naming the key path
(``incoming[1].no_reply_time``), and all of them are collected in one pass, so an operator
fixes a file in one round trip rather than one error at a time.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from postroom.config.checks import cross_checks
from postroom.config.context import Context
from postroom.config.errors import ConfigError, ConfigInvalid, errors_of
from postroom.config.schema import (
    AUTO_RESPONSE_FIELDS,
    DEFAULT_AUTO_RESPONSE_SUBJECT,
    DEFAULT_AUTO_RESPONSE_TEXT,
    DEFAULT_EVALUATION_CRITERIA,
    DEFAULT_WRAPUP_CODES,
    AgentConfig,
    ApprovalConfig,
    AutoResponseConfig,
    Box,
    ClusterConfig,
    Config,
    ContactConfig,
    CustomerConfig,
    DevstackConfig,
    EvaluationCriterionConfig,
    GroupConfig,
    HealthConfig,
    IncomingBox,
    JournalBox,
    OutboxConfig,
    PriorityConfig,
    RoutingConfig,
    SenderAuthConfig,
    ServerConfig,
    WrapUpCodeConfig,
)
from postroom.config.values import NODE_ID, parse_duration

__all__ = [
    "AUTO_RESPONSE_FIELDS", "DEFAULT_AUTO_RESPONSE_SUBJECT", "DEFAULT_AUTO_RESPONSE_TEXT",
    "DEFAULT_EVALUATION_CRITERIA", "DEFAULT_WRAPUP_CODES", "AgentConfig", "ApprovalConfig",
    "AutoResponseConfig", "Box", "ClusterConfig", "Config", "ConfigError", "ConfigInvalid", "ContactConfig",
    "CustomerConfig", "DevstackConfig", "EvaluationCriterionConfig", "GroupConfig",
    "HealthConfig", "IncomingBox", "JournalBox", "OutboxConfig", "PriorityConfig",
    "RoutingConfig", "SenderAuthConfig", "ServerConfig", "WrapUpCodeConfig", "check_config",
    "load_config", "mail_users", "parse_config", "parse_duration",
    "valid_node_id",
]


def load_config(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> Config:
    """Parse and validate ``path``; raise :class:`ConfigInvalid` listing every error."""
    config, errors = _load(Path(path), environ)
    if errors or config is None:
        raise ConfigInvalid(str(path), errors)
    return config


def check_config(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> list[ConfigError]:
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
    context = Context(base_dir=base_dir, environ=os.environ if environ is None else environ, source=source)
    config: Config | None = None
    try:
        # by_name=False: only the file's own spelling of a key (no_reply_time) is a key.
        config = Config.model_validate(data, context=context, by_alias=True, by_name=False)
        errors = []
    except ValidationError as e:
        errors = errors_of(e, Config)
    errors += cross_checks(context.tables, data)
    if errors or config is None:
        return None, errors
    config._source = source
    return config, []


def valid_node_id(node_id: str) -> bool:
    """A node id as ``node_id`` in the file takes it (``postroom engine --node-id``)."""
    return re.fullmatch(NODE_ID, node_id) is not None


def mail_users(config: Config) -> list[tuple[str, str]]:
    """Every (address, password) a dev stack must create for ``config``, each address once.

    Boxes are listed by address, not login: a dev-stack user's login is its address.
    """
    users: dict[str, str] = {}
    for box in config.mailboxes:
        users.setdefault(box.address, box.password if box.password is not None else _no_password(config, box.address))
    for agent in config.agents:
        if agent.password is not None:
            users.setdefault(agent.address, agent.password)
    for customer in config.customers:
        users.setdefault(customer.address, customer.password)
    server = config.server
    assert server.smtp_login is not None
    users.setdefault(server.smtp_login, server.smtp_password or _no_password(config, server.smtp_login))
    return list(users.items())


def _no_password(config: Config, address: str) -> str:
    """The dev-stack password of a user on OAuth2: it must exist for the passwd-file (the
    userdb), and nobody may know it (Dovecot then asks the oauth2 passdb). Derived from the
    site's secret so that it stays the same across starts."""
    return "oauth2-only-" + hashlib.sha256(config.secrets[0] + address.lower().encode()).hexdigest()


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
