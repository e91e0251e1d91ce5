"""The routing rules as the core evaluates them, read from the database.

Rules are edited in the admin while the engine runs; the compiled chain is cached and
rebuilt when any rule changes (count or latest `updated_at`), so reception does not
recompile regular expressions for every message.
"""

from __future__ import annotations

import logging

from django.db.models import Count, Max

from postroom.core.rules import RuleInvalid, RuleSpec, rule_from_dict
from postroom.store.models import Rule

log = logging.getLogger(__name__)

_cache: tuple[object, tuple[RuleSpec, ...]] | None = None


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
