"""The priority of a new email (fig. 5 318): a pluggable policy over plain values.

A policy is any callable ``(PriorityInput) -> PriorityResult`` (:class:`PriorityPolicy`).
:func:`default_policy` is used unless the site file names another::

    [priority]
    policy = "mysite.priority:by_region"      # module:callable, imported by postroom.config

Every result carries its reasons, ``(label, contribution)`` pairs that sum to the value,
so the supervisor can read why an email got the priority it has.

The default policy: the box's default priority, plus the contact's priority, plus 10 for
mail marked important (-5 for mail marked unimportant); then a rule's ``set_priority``
replaces everything so far, and the rules' ``add_priority`` is added last.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

__all__ = [
    "HIGH_BONUS",
    "LOW_MALUS",
    "PriorityInput",
    "PriorityPolicy",
    "PriorityResult",
    "default_policy",
    "importance",
]

HIGH_BONUS: Final = 10
LOW_MALUS: Final = -5
_FIRST_DIGIT = re.compile(r"\s*([1-5])")


@dataclass(frozen=True)
class PriorityInput:
    box_default: int
    contact_level: str | None = None
    contact_priority: int = 0
    # "high", "low", "normal" or None (see importance()).
    importance_header: str | None = None
    rules_set: int | None = None
    rules_add: int = 0


@dataclass(frozen=True)
class PriorityResult:
    value: int
    # (label, contribution); the contributions sum to value.
    reasons: tuple[tuple[str, int], ...] = ()


class PriorityPolicy(Protocol):
    """Computes a new email's priority; must be pure (no I/O, no clock) and never raise."""

    def __call__(self, data: PriorityInput, /) -> PriorityResult: ...


def default_policy(data: PriorityInput, /) -> PriorityResult:
    """See the module docstring."""
    reasons: list[tuple[str, int]] = [("box default", data.box_default)]
    if data.contact_level is not None or data.contact_priority:
        reasons.append((f"contact {data.contact_level or 'known'}", data.contact_priority))
    if data.importance_header == "high":
        reasons.append(("marked important", HIGH_BONUS))
    elif data.importance_header == "low":
        reasons.append(("marked unimportant", LOW_MALUS))
    if data.rules_set is not None:
        so_far = sum(n for _, n in reasons)
        reasons.append((f"rule sets priority {data.rules_set}", data.rules_set - so_far))
    if data.rules_add:
        reasons.append(("rules add", data.rules_add))
    return PriorityResult(value=sum(n for _, n in reasons), reasons=tuple(reasons))


def importance(headers: Mapping[str, Sequence[str]]) -> str | None:
    """ "high", "low", "normal" or None from a mail's headers (names lower-cased).

    Looked at in this order, the first one present deciding: ``Importance`` (RFC 2156:
    high/normal/low), ``X-Priority`` (1-2 high, 3 normal, 4-5 low; "1 (Highest)" too),
    ``Priority`` (RFC 2156: urgent/normal/non-urgent). Unreadable values are skipped.
    """
    for value in headers.get("importance", ()):
        word = value.strip().lower()
        if word in ("high", "low", "normal"):
            return word
    for value in headers.get("x-priority", ()):
        m = _FIRST_DIGIT.match(value)
        if m:
            digit = int(m.group(1))
            return "high" if digit <= 2 else "normal" if digit == 3 else "low"
    for value in headers.get("priority", ()):
        word = value.strip().lower()
        if word in ("urgent", "non-urgent", "normal"):
            return {"urgent": "high", "non-urgent": "low"}.get(word, "normal")
    return None
