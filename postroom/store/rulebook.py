"""The routing rules as the core evaluates them, read from the database.

Rules are edited in the admin while the engine runs; the compiled chain is cached and
rebuilt when any rule changes (count or latest `updated_at`), so reception does not
recompile regular expressions for every message.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.db.models import Count, Max

from postroom.core.rules import RuleInvalid, RuleSpec, rule_from_dict
from postroom.store.models import Rule

log = logging.getLogger(__name__)

_cache: tuple[object, tuple[RuleSpec, ...]] | None = None
# Per thread: the rules held for a reception batch (``held()``).
_local = threading.local()


def as_dict(rule: Rule) -> dict:
    return {
        "name": rule.name,
        "match": rule.match,
        "conditions": rule.conditions,
        "actions": rule.actions,
        "continue": rule.continue_after,
        "enabled": rule.enabled,
    }


def active_rules() -> tuple[RuleSpec, ...]:
    """Every rule in order; a rule that no longer validates is skipped and logged."""
    global _cache
    held_rules: tuple[RuleSpec, ...] | None = getattr(_local, "rules", None)
    if held_rules is not None:
        return held_rules
    stamp = Rule.objects.aggregate(n=Count("id"), t=Max("updated_at"))
    key = (stamp["n"], stamp["t"])
    if _cache is not None and _cache[0] == key:
        return _cache[1]
    specs = []
    for rule in Rule.objects.order_by("position", "id"):
        try:
            specs.append(rule_from_dict(as_dict(rule)))
        except RuleInvalid as exc:
            log.error("rule %r skipped: %s", rule.name, exc)
    _cache = (key, tuple(specs))
    return _cache[1]


@contextmanager
def held() -> Iterator[None]:
    """Inside, ``active_rules()`` is the rules as they were when the block began, without
    asking the database again: a reception batch asks once, not once per mail (decision
    0040). A rule changed meanwhile applies from the next batch."""
    _local.rules = active_rules()
    try:
        yield
    finally:
        _local.rules = None
