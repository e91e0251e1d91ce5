"""Durations: ``"90s"``, ``"15m"``, ``"4h"``, ``"1d"``, ``"1h30m"`` or a number of seconds."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, ValidationInfo

from postroom.config.context import Context
from postroom.config.errors import fail, show

_PART = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Values that switch an optional duration off.
_OFF = ("none", "off")


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
    if not text or _PART.sub("", text):
        return None
    return sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(text))


def _seconds(value: Any) -> int:
    seconds = parse_duration(value)
    if seconds is None:
        raise fail(f'expected a duration like "4h" or seconds, got {show(value)}')
    if seconds < 1:
        raise fail(f"must be at least one second, got {show(value)}")
    return seconds


def at_least(seconds: int, words: str) -> BeforeValidator:
    """A duration with a longer minimum: ``Annotated[int, at_least(86400, "one day")]``."""

    def check(value: Any) -> int:
        if _seconds(value) < seconds:
            raise fail(f"must be at least {words}, got {show(value)}")
        return _seconds(value)

    return BeforeValidator(check)


def _or_off(off: int | None) -> BeforeValidator:
    def check(value: Any, info: ValidationInfo) -> Any:
        if value == off and not isinstance(info.context, Context):
            return off  # Python code building a table says "off" as the attribute does
        if isinstance(value, str) and value.strip().lower() in _OFF:
            return off
        return _seconds(value)

    return BeforeValidator(check)


Duration = Annotated[int, BeforeValidator(_seconds)]
# A duration, or "none" / "off" (then None).
OptionalDuration = Annotated[int | None, _or_off(None)]
# A duration, or "none" / "off" (then 0: no wait at all).
DurationOrOff = Annotated[int, _or_off(0)]
