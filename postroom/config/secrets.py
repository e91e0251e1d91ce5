"""Secrets: given inline (``password``), by environment variable (``password_env``) or by
file (``password_file``), exactly one of the three.

A secret is a field whose alias choices are its three keys (:func:`secret`); the table
marks the value with the key it came under (``base.Table``) and :func:`resolve` reads it,
so every error names the key the file used. Secrets are plain strings, because Postroom
must log in with them, but never part of a ``repr()``: logging a configuration object, or
a traceback that shows one, must not print a password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, BeforeValidator, Field, ValidationInfo

from postroom.config.context import context_of
from postroom.config.errors import fail, fail_at, show
from postroom.core.keys import MIN_SECRET_BYTES

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Given:
    """A secret's value as written, and the key it was written under."""

    key: str
    value: object
    # Every key of this secret the table gives, when it gives more than one.
    others: tuple[str, ...] = ()

    @property
    def base(self) -> str:
        return self.key.removesuffix("_env").removesuffix("_file")

    def read(self, info: ValidationInfo) -> str:
        """The secret's text; raises the error for this key."""
        if self.others:
            base = self.base
            raise fail(f"give only one of {base}, {base}_env, {base}_file")
        if not isinstance(self.value, str):
            raise fail(f"expected a string, got {show(self.value)}")
        if self.key.endswith("_env"):
            text = _from_env(self.value, info)
        elif self.key.endswith("_file"):
            text = _from_file(self.value, info)
        else:
            text = self.value
        if not text:
            raise fail("the secret is empty")
        return text


def _from_env(name: str, info: ValidationInfo) -> str:
    if not _ENV_NAME.fullmatch(name):
        raise fail(f"expected an environment variable name, got {show(name)}")
    value = context_of(info.context).environ.get(name)
    if value is None:
        raise fail(f"environment variable {name} is not set")
    return value


def _from_file(name: str, info: ValidationInfo) -> str:
    path = context_of(info.context).base_dir / Path(name).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise fail(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise fail(f"{path} is not UTF-8 text") from None
    # Editors and `echo` add a final newline; it is never part of the secret.
    return text.rstrip("\r\n")


def resolve(value: Any, info: ValidationInfo) -> Any:
    return value.read(info) if isinstance(value, Given) else value


def secret(base: str, default: Any = ...) -> Any:
    """The field of a secret given under ``base``, ``base_env`` or ``base_file``."""
    return Field(
        default, validation_alias=AliasChoices(base, f"{base}_env", f"{base}_file"), repr=False
    )


Secret = Annotated[str, BeforeValidator(resolve)]


# -- the site's token secrets ---------------------------------------------------------------


def resolve_keys(value: Any, info: ValidationInfo) -> Any:
    """``secret``: one string or an array, newest first; ``secret_env`` and ``secret_file``:
    one secret per line. Each at least MIN_SECRET_BYTES bytes (HKDF input, decision 0013),
    none twice."""
    if not isinstance(value, Given):
        return value
    if value.key == "secret" and isinstance(value.value, list):
        if not value.value:
            raise fail("give at least one secret")
        bad = [((i,), f"expected a non-empty string, got {show(item)}")
               for i, item in enumerate(value.value) if not isinstance(item, str) or not item]
        if bad:
            raise fail_at(bad, value.value)
        items: list[str] = value.value
        where = [(i,) for i in range(len(items))]
        lines = [""] * len(items)
    else:
        text = value.read(info)
        items = [text] if value.key == "secret" else [s.strip() for s in text.splitlines() if s.strip()]
        if not items:
            raise fail("the secret is empty")
        where = [()] * len(items)
        lines = [f" (line {n})" if len(items) > 1 else "" for n in range(1, len(items) + 1)]
    found = []
    for item, loc, line in zip(items, where, lines, strict=True):
        size = len(item.encode("utf-8"))
        if size < MIN_SECRET_BYTES:
            found.append((loc, f"the secret must be at least {MIN_SECRET_BYTES} bytes, got {size}{line}"))
    if len(set(items)) != len(items):
        found.append(((), "the same secret is given twice"))
    if found:
        raise fail_at(found, value.value)
    return tuple(item.encode("utf-8") for item in items)


Keys = Annotated[tuple[bytes, ...], BeforeValidator(resolve_keys)]
