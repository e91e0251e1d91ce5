"""The value types of the file (docs/configuration.md, "Value types"), as annotated types.

Scalars are strict: TOML has real integers and booleans, so ``"993"`` for a port or
``"yes"`` for a flag is a mistake to report, not a value to coerce.
"""

from __future__ import annotations

import importlib
import ipaddress
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BeforeValidator,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationInfo,
)

from postroom.config.context import Context, context_of
from postroom.config.errors import fail, show
from postroom.core.rules import MAX_PRIORITY

# Deliberately plain: no quoted local parts, no IP literals, no display names. Anything
# fancier is almost always a paste error in a config file.
_ADDRESS = (
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+"
)
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
_POLICY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def limits(lo: int | None = None, hi: int | None = None) -> AfterValidator:
    def check(value: int) -> int:
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bounds = f"at least {lo}" if hi is None else f"at most {hi}" if lo is None else f"between {lo} and {hi}"
            raise fail(f"must be {bounds}, got {value}")
        return value

    return AfterValidator(check)


def matching(pattern: str, words: str, *, clean: Callable[[str], str] = str) -> AfterValidator:
    """A string that is ``pattern`` once cleaned (lower-cased, ...); ``words`` for people."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(cleaned := clean(value)):
            raise fail(f"expected {words}, got {show(value)}")
        return cleaned

    return AfterValidator(check)


def one_of(*choices: str) -> BeforeValidator:
    def check(value: Any) -> str:
        if value not in choices:
            raise fail(f"expected one of {', '.join(map(show, choices))}, got {show(value)}")
        return value

    return BeforeValidator(check)


def longest(n: int) -> AfterValidator:
    def check(value: str) -> str:
        if len(value) > n:
            raise fail(f"longer than {n} characters")
        return value

    return AfterValidator(check)


def _not_empty(value: str) -> str:
    if not value.strip():
        raise fail("must not be empty")
    return value


def _array(value: Any) -> Any:
    if not isinstance(value, list | tuple):
        raise fail(f"expected an array of strings, got {show(value)}")
    return value


def _item(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise fail(f"expected a non-empty string, got {show(value)}")
    return value.strip()


def _unique(values: tuple[str, ...]) -> tuple[str, ...]:
    # Order kept, repeats dropped: ["a", "a"] is a harmless slip, not an error.
    return tuple(dict.fromkeys(values))


def tables(value: Any, info: ValidationInfo) -> Any:
    """An array of tables (``[[incoming]]``), at the top level of the file."""
    if not isinstance(value, list | tuple):
        raise fail(f"expected an array of tables ([[{info.field_name}]]), got {show(value)}")
    return value


Flag = StrictBool
Int = StrictInt
Port = Annotated[StrictInt, limits(1, 65535)]
Priority = Annotated[StrictInt, limits(-MAX_PRIORITY, MAX_PRIORITY)]
# A string that may be empty (display names), or may not (everything else).
AnyText = StrictStr
Text = Annotated[StrictStr, AfterValidator(_not_empty)]
Name = Annotated[Text, AfterValidator(str.strip)]
Item = Annotated[str, BeforeValidator(_item)]
Strings = Annotated[tuple[Item, ...], BeforeValidator(_array), AfterValidator(_unique)]
Code = Annotated[StrictStr, matching(r"[A-Za-z0-9_-]{1,60}", "1-60 of A-Z a-z 0-9 _ -")]
NODE_ID = r"[A-Za-z0-9_-]{1,64}"
NodeId = Annotated[StrictStr, matching(NODE_ID, "1-64 of A-Z a-z 0-9 _ -")]
# Lower-cased because an address is the database key and mail servers treat addresses
# case-insensitively in practice: "Alice@" and "alice@" are one person.
_EMAIL = matching(_ADDRESS, "an email address like user@example.com", clean=str.lower)
Address = Annotated[StrictStr, _EMAIL]
Addresses = Annotated[tuple[Annotated[Item, _EMAIL], ...], BeforeValidator(_array), AfterValidator(_unique)]
# A host name in [sender_auth]: labels of letters, digits and hyphens.
_HOST = matching(rf"{_LABEL}(\.{_LABEL})*", "a host name like mail.example.com", clean=lambda h: h.rstrip(".").lower())
Hosts = Annotated[tuple[Annotated[Item, _HOST], ...], BeforeValidator(_array), AfterValidator(_unique)]
# A contact's domain: at least two labels; "com" alone would match half the world.
Domain = Annotated[
    StrictStr,
    matching(rf"{_LABEL}(\.{_LABEL})+", "a domain with at least two labels like example.com",
             clean=lambda d: d.strip().lower().removeprefix("@")),
]
Tls = Annotated[str, one_of("tls", "starttls", "none")]


def loopback(host: str) -> bool:
    """True for names and addresses that never leave the machine."""
    host = host.strip().strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _cafile(value: str, info: ValidationInfo) -> str:
    """"system", "devstack" (resolved by the program that starts the stack) or a readable
    PEM file, relative to the configuration file."""
    if value in ("system", "devstack"):
        return value
    path = context_of(info.context).base_dir / Path(value).expanduser()
    if not path.is_file() or not os.access(path, os.R_OK):
        raise fail(f'cannot read {path} (or use "system")')
    return str(path)


Cafile = Annotated[Text, AfterValidator(_cafile)]


def import_policy(path: str) -> Callable[..., Any]:
    """The site's priority policy, ``"module:callable"``, imported when the file is checked."""
    if not _POLICY.fullmatch(path):
        raise fail(f'expected "module:callable", got {show(path)}')
    module_name, _, attr = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except Exception as e:  # noqa: BLE001 - the site's code: any failure is a config error
        raise fail(f"cannot load {show(path)}: {type(e).__name__}: {e}") from None
    if not callable(target):
        raise fail(f"{show(path)} is not callable")
    return target


def _importable(path: str) -> str:
    import_policy(path)
    return path


PolicyPath = Annotated[StrictStr, AfterValidator(_importable)]


# -- durations: "90s", "15m", "4h", "1d", "1h30m" or a number of seconds -------------------------

_PART = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> int | None:
    """Seconds in ``"90s"``, ``"15m"``, ``"4h"``, ``"1d"``, ``"1h30m"`` or an integer; else None."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    if isinstance(value, int):
        return value
    text = value.strip().lower().replace(" ", "")
    if text.isdigit():
        return int(text)
    if not text or _PART.sub("", text):
        return None
    return sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(text))


def _seconds(value: Any, minimum: int = 1, words: str = "one second") -> int:
    seconds = parse_duration(value)
    if seconds is None:
        raise fail(f'expected a duration like "4h" or seconds, got {show(value)}')
    if seconds < minimum:
        raise fail(f"must be at least {words}, got {show(value)}")
    return seconds


def at_least(minimum: int, words: str) -> BeforeValidator:
    """A duration with a longer minimum: ``Annotated[int, at_least(86400, "one day")]``."""
    return BeforeValidator(lambda value: _seconds(value, minimum, words))


def _or_off(off: int | None) -> BeforeValidator:
    """A duration, or "none" / "off" (then ``off``)."""

    def check(value: Any, info: ValidationInfo) -> Any:
        if value == off and not isinstance(info.context, Context):
            return off  # Python code building a table says "off" as the attribute does
        if isinstance(value, str) and value.strip().lower() in ("none", "off"):
            return off
        return _seconds(value)

    return BeforeValidator(check)


Duration = Annotated[int, BeforeValidator(_seconds)]
OptionalDuration = Annotated[int | None, _or_off(None)]  # "none" / "off": None
DurationOrOff = Annotated[int, _or_off(0)]  # "none" / "off": 0, no wait at all
