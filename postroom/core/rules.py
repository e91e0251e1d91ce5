"""Routing rules as ordered data, evaluated on one message (iceMail "Check Email").

A rule is plain data — a name, conditions on the message, actions — kept in the database
and in the site file, never code. :func:`evaluate` runs the rules in order, Mailman-chain
style, and returns a :class:`Verdict` that records every hit and miss and, for each rule,
which condition decided it, so a supervisor can always see why a mail went where it went.

The chain: the first rule that matches wins and ends the chain, unless it says
``continue_after``; then later matching rules add their actions. How actions of several
matching rules combine:

* ``queue``, ``agent``, ``set_priority``, ``auto_response`` and ``delete`` are set once:
  the first matching rule that sets one wins; a later rule's value is ignored and recorded
  in ``Verdict.overridden``. ``queue`` and ``agent`` are separate slots: one rule may name
  the queue and a later (continued) one the agent;
* ``add_priority`` accumulates over every matching rule;
* ``require_approval`` ORs (``false`` never undoes an earlier ``true``);
* ``forward_copy`` collects every address, in order, once each.

Disabled rules are skipped and appear in the trace as "disabled"; rules after the one that
ended the chain appear as "not evaluated". No match leaves ``queue`` None: the caller then
uses the box's skill (or the unassigned queue).

Matching: ``to``/``cc``/``from`` test every address and match if any does
(``not_contains`` if none does); ``contains``/``equals``/``not_contains`` ignore case;
``regex`` is a case-insensitive ``re.search``. Only the first :data:`MAX_TEXT` characters
of any text are looked at, and patterns with nested unbounded repeats (``(a+)+``) are
refused, because a rule runs on every customer mail and one pathological pattern must not
stall the engine (catastrophic backtracking).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "ACTIONS",
    "AUTO_RESPONSE_OFF",
    "FIELDS",
    "MATCHES",
    "MAX_TEXT",
    "OPS",
    "Action",
    "Condition",
    "MessageFacts",
    "RuleInvalid",
    "RuleSpec",
    "Problem",
    "ProblemCheck",
    "Verdict",
    "action_problems",
    "condition_problems",
    "evaluate",
    "list_problems",
    "problems",
    "rule_problems",
    "rule_from_dict",
    "rules_from_dicts",
    "validate",
]

FIELDS: Final = ("to", "cc", "from", "from_domain", "subject", "body")
HEADER_PREFIX: Final = "header:"
OPS: Final = ("contains", "equals", "regex", "not_contains")
MATCHES: Final = ("all", "any")
ACTIONS: Final = (
    "queue",
    "agent",
    "set_priority",
    "add_priority",
    "require_approval",
    "auto_response",
    "forward_copy",
    "delete",
)
# Actions a rule may give once, whose first setter in the chain wins.
SET_ONCE: Final = ("queue", "agent", "set_priority", "auto_response", "delete")
AUTO_RESPONSE_OFF: Final = "off"
# The placeholders core.compose.auto_response fills; anything else would reach the
# customer as written (the same list as postroom.config.AUTO_RESPONSE_FIELDS).
TEMPLATE_FIELDS: Final = ("name", "subject", "reference", "box")
# 100 KB of text: enough for any real rule, small enough that a slow pattern stays bounded.
MAX_TEXT: Final = 100 * 1024
MAX_PRIORITY: Final = 1_000_000

_HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 §3.6.8 field-name
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ADDRESS = re.compile(r"[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+")
_CONDITION_KEYS: Final = ("field", "op", "value")
_ACTION_KEYS: Final = ("action", "value")
_RULE_KEYS: Final = ("name", "match", "conditions", "actions", "continue", "enabled")

Problem = tuple[str, str]  # (key path, message)
# Checks one item (a condition or an action dict) at a key path.
ProblemCheck = Callable[[object, str], list[Problem]]


class RuleInvalid(ValueError):
    """A rule (or a part of one) that :func:`validate` would refuse; ``problems`` says why."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(_join(p, m) for p, m in problems))


def _join(path: str, message: str) -> str:
    return f"{path}: {message}" if path else message


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    return repr(value)


def _choices(values: Iterable[str]) -> str:
    return ", ".join(_show(v) for v in values)


# -- the message --------------------------------------------------------------------------


@dataclass(frozen=True)
class MessageFacts:
    """What rules may look at: plain values, addresses and header names lower-cased.

    ``headers`` maps a lower-cased header name to every decoded value of that header.
    Build one from a parsed mail with ``postroom.mail.facts.facts_from_mail``.
    """

    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    from_addr: str | None = None
    subject: str = ""
    body_text: str = ""
    headers: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "to", tuple(a.lower() for a in self.to))
        object.__setattr__(self, "cc", tuple(a.lower() for a in self.cc))
        if self.from_addr is not None:
            object.__setattr__(self, "from_addr", self.from_addr.lower())
        object.__setattr__(self, "headers", {k.lower(): tuple(v) for k, v in self.headers.items()})

    @property
    def from_domain(self) -> str | None:
        if not self.from_addr or "@" not in self.from_addr:
            return None
        return self.from_addr.rpartition("@")[2]

    def texts(self, field_name: str) -> tuple[str, ...]:
        """The values a condition on ``field_name`` tests, each cut to :data:`MAX_TEXT`."""
        if field_name in ("to", "cc"):
            values: Sequence[str] = getattr(self, field_name)
        elif field_name == "from":
            values = (self.from_addr,) if self.from_addr else ()
        elif field_name == "from_domain":
            values = (self.from_domain,) if self.from_domain else ()
        elif field_name == "subject":
            values = (self.subject,)
        elif field_name == "body":
            values = (self.body_text,)
        elif field_name.startswith(HEADER_PREFIX):
            values = self.headers.get(field_name[len(HEADER_PREFIX) :].lower(), ())
        else:
            raise ValueError(f"unknown field {field_name!r}")
        return tuple(v[:MAX_TEXT] for v in values)


# -- conditions -----------------------------------------------------------------------------


def _field_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return f"expected a string, got {_show(value)}"
    if value in FIELDS:
        return None
    if value.lower().startswith(HEADER_PREFIX):
        name = value[len(HEADER_PREFIX) :]
        if _HEADER_NAME.fullmatch(name):
            return None
        return f"expected a header name after {HEADER_PREFIX!r}, got {_show(name)}"
    known = _choices((*FIELDS, "header:<Name>"))
    return f"unknown field {_show(value)}; expected one of {known}"


def _regex_problem(pattern: str) -> str | None:
    try:
        compiled = re.compile(pattern, re.IGNORECASE)
    except re.error as e:
        return f"invalid regular expression: {e}"
    if _nested_repeat(pattern, compiled.flags):
        return (
            "nested repetition like (a+)+ can take forever on some mail; "
            "rewrite it, or make the inner repeat possessive (a++) or atomic (?>...)"
        )
    return None


def _nested_repeat(pattern: str, flags: int) -> bool:
    """True for an unbounded repeat inside an unbounded repeat: star height > 1.

    Uses the stdlib's own regex parser (private, but shipped with every CPython); when it
    is not there the check is skipped, and the text cap still bounds the damage.
    """
    try:
        from re import _constants as c  # type: ignore[attr-defined]
        from re import _parser as p  # type: ignore[attr-defined]

        tree = p.parse(pattern, flags)
    except Exception:  # noqa: BLE001 - only a safety net, never a reason to refuse
        return False
    repeats = {c.MAX_REPEAT, c.MIN_REPEAT}

    def walk(items: Iterable[tuple[Any, Any]], inside: bool) -> bool:
        for op, av in items:
            if op in repeats:
                _lo, hi, sub = av
                unbounded = hi == c.MAXREPEAT
                if unbounded and inside:
                    return True
                if walk(sub, inside or unbounded):
                    return True
            elif op == c.SUBPATTERN or op in (c.ASSERT, c.ASSERT_NOT):
                if walk(av[-1], inside):
                    return True
            elif op == c.BRANCH and any(walk(b, inside) for b in av[1]):
                return True
            # ATOMIC_GROUP and POSSESSIVE_REPEAT never backtrack into themselves.
        return False

    return walk(tree, False)


def _condition_value_problem(op: str, value: object) -> str | None:
    if not isinstance(value, str):
        return f"expected a string, got {_show(value)}"
    if op != "equals" and not value:
        return "must not be empty"
    if len(value) > MAX_TEXT:
        return f"longer than {MAX_TEXT} characters"
    if op == "regex":
        return _regex_problem(value)
    return None


@dataclass(frozen=True)
class Condition:
    """``field op value``: e.g. ``subject contains "refund"``; see the module docstring."""

    field: str
    op: str
    value: str

    def __post_init__(self) -> None:
        found = condition_problems({"field": self.field, "op": self.op, "value": self.value})
        if found:
            raise RuleInvalid(found)
        if self.field.lower().startswith(HEADER_PREFIX):
            object.__setattr__(self, "field", HEADER_PREFIX + self.field[len(HEADER_PREFIX) :])
        if self.op == "regex":
            # Compiled once, here; never per message.
            object.__setattr__(self, "_pattern", re.compile(self.value, re.IGNORECASE))
        else:
            object.__setattr__(self, "_needle", self.value.strip().casefold())

    def test(self, facts: MessageFacts) -> bool:
        texts = facts.texts(self.field)
        if self.op == "regex":
            pattern: re.Pattern[str] = self.__dict__["_pattern"]
            return any(pattern.search(t) for t in texts)
        needle: str = self.__dict__["_needle"]
        if self.op == "equals":
            return any(t.strip().casefold() == needle for t in texts)
        found = any(needle in t.casefold() for t in texts)
        return found if self.op == "contains" else not found

    def describe(self) -> str:
        return f'{self.field} {self.op.replace("_", " ")} "{self.value}"'

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "op": self.op, "value": self.value}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Condition:
        found = condition_problems(data)
        if found:
            raise RuleInvalid(found)
        return cls(data["field"], data["op"], data["value"])


def condition_problems(data: object, path: str = "") -> list[Problem]:
    """Everything wrong with one condition given as a dict, each with its key path."""
    out: list[Problem] = []
    if not isinstance(data, Mapping):
        return [(path, f"expected a table with field, op and value, got {_show(data)}")]
    out += _unknown_keys(data, _CONDITION_KEYS, path)
    missing = [k for k in _CONDITION_KEYS if k not in data]
    out += [(_at(path, k), "required") for k in missing]
    if "field" in data:
        problem = _field_problem(data["field"])
        if problem:
            out.append((_at(path, "field"), problem))
    op = data.get("op")
    if "op" in data and op not in OPS:
        out.append((_at(path, "op"), f"unknown op {_show(op)}; expected one of {_choices(OPS)}"))
    elif "value" in data:
        problem = _condition_value_problem(str(op), data["value"])
        if problem:
            out.append((_at(path, "value"), problem))
    return out


# -- actions --------------------------------------------------------------------------------


def _action_value_problem(action: str, value: object) -> str | None:
    if action in ("set_priority", "add_priority"):
        if isinstance(value, bool) or not isinstance(value, int):
            return f"expected an integer, got {_show(value)}"
        if abs(value) > MAX_PRIORITY:
            return f"must be between {-MAX_PRIORITY} and {MAX_PRIORITY}, got {value}"
        return None
    if action == "require_approval":
        return None if isinstance(value, bool) else f"expected true or false, got {_show(value)}"
    if not isinstance(value, str):
        return f"expected a string, got {_show(value)}"
    if not value.strip():
        return "must not be empty"
    if action in ("agent", "forward_copy") and not _ADDRESS.fullmatch(value.strip()):
        return f"expected an email address like user@example.com, got {_show(value)}"
    if action == "auto_response" and value != AUTO_RESPONSE_OFF:
        for name in _PLACEHOLDER.findall(value):
            if name not in TEMPLATE_FIELDS:
                known = ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS)
                return f"unknown placeholder {{{name}}}; known: {known}"
    return None


@dataclass(frozen=True)
class Action:
    """What a matching rule does: ``queue "sales"``, ``add_priority 5``, ...

    Values: ``queue`` a skill name; ``agent`` and ``forward_copy`` an address;
    ``set_priority``/``add_priority`` an integer; ``require_approval`` a boolean;
    ``auto_response`` a text template or ``"off"``; ``delete`` the reason.
    """

    action: str
    value: str | int | bool

    def __post_init__(self) -> None:
        found = action_problems({"action": self.action, "value": self.value})
        if found:
            raise RuleInvalid(found)
        if self.action in ("agent", "forward_copy"):
            assert isinstance(self.value, str)
            object.__setattr__(self, "value", self.value.strip().lower())
        elif self.action == "queue":
            assert isinstance(self.value, str)
            object.__setattr__(self, "value", self.value.strip())

    def describe(self) -> str:
        value = f'"{self.value}"' if isinstance(self.value, str) else _show(self.value)
        return f"{self.action} {value}"

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "value": self.value}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Action:
        found = action_problems(data)
        if found:
            raise RuleInvalid(found)
        return cls(data["action"], data["value"])


def action_problems(data: object, path: str = "") -> list[Problem]:
    """Everything wrong with one action given as a dict, each with its key path."""
    if not isinstance(data, Mapping):
        return [(path, f"expected a table with action and value, got {_show(data)}")]
    out = _unknown_keys(data, _ACTION_KEYS, path)
    out += [(_at(path, k), "required") for k in _ACTION_KEYS if k not in data]
    action = data.get("action")
    if "action" in data and action not in ACTIONS:
        out.append(
            (
                _at(path, "action"),
                f"unknown action {_show(action)}; expected one of {_choices(ACTIONS)}",
            )
        )
    elif "value" in data:
        problem = _action_value_problem(str(action), data["value"])
        if problem:
            out.append((_at(path, "value"), problem))
    return out


# -- rules ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleSpec:
    """One rule: ``match`` "all" (every condition) or "any" (at least one) of its conditions.

    A rule without conditions always matches (a catch-all at the end of the chain).
    """

    name: str
    match: str = "all"
    conditions: tuple[Condition, ...] = ()
    actions: tuple[Action, ...] = ()
    continue_after: bool = False
    enabled: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "conditions", tuple(self.conditions))
        object.__setattr__(self, "actions", tuple(self.actions))
        found: list[Problem] = []
        if not isinstance(self.name, str) or not self.name.strip():
            found.append(("name", "must not be empty"))
        if self.match not in MATCHES:
            found.append(("match", f"expected one of {_choices(MATCHES)}, got {_show(self.match)}"))
        found += _repeated_actions([a.action for a in self.actions], "actions")
        if found:
            raise RuleInvalid(found)

    def test(self, facts: MessageFacts) -> tuple[bool, str]:
        """(matched, which condition decided it) — the second part is for people."""
        if not self.conditions:
            return True, "no conditions: always matches"
        if self.match == "any":
            for cond in self.conditions:
                if cond.test(facts):
                    return True, f"{cond.describe()} matched"
            if len(self.conditions) == 1:
                return False, f"{self.conditions[0].describe()} did not match"
            return False, "no condition matched"
        for cond in self.conditions:
            if not cond.test(facts):
                return False, f"{cond.describe()} did not match"
        if len(self.conditions) == 1:
            return True, f"{self.conditions[0].describe()} matched"
        return True, f"all {len(self.conditions)} conditions matched"

    def to_dict(self) -> dict[str, Any]:
        """The rule as the site file writes it (``continue`` for ``continue_after``)."""
        return {
            "name": self.name,
            "match": self.match,
            "conditions": [c.to_dict() for c in self.conditions],
            "actions": [a.to_dict() for a in self.actions],
            "continue": self.continue_after,
            "enabled": self.enabled,
        }


def _unknown_keys(data: Mapping[str, Any], known: Sequence[str], path: str) -> list[Problem]:
    out: list[Problem] = []
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else f"; expected {_choices(known)}"
            out.append((_at(path, str(key)), f"unknown key{hint}"))
    return out


def _repeated_actions(kinds: Sequence[object], path: str) -> list[Problem]:
    out: list[Problem] = []
    seen: set[object] = set()
    for i, kind in enumerate(kinds):
        if kind in SET_ONCE or kind == "require_approval":
            if kind in seen:
                out.append((f"{path}[{i}].action", f"{kind} is given twice in one rule"))
            seen.add(kind)
    return out


def rule_problems(data: object, path: str = "") -> list[Problem]:
    """Everything wrong with one rule given as a dict (the site file's shape)."""
    if not isinstance(data, Mapping):
        return [(path, f"expected a table, got {_show(data)}")]
    out = _unknown_keys(data, _RULE_KEYS, path)
    name = data.get("name")
    if "name" not in data:
        out.append((_at(path, "name"), "required"))
    elif not isinstance(name, str) or not name.strip():
        out.append((_at(path, "name"), f"expected a non-empty string, got {_show(name)}"))
    elif len(name) > 200:
        out.append((_at(path, "name"), "longer than 200 characters"))
    if "match" in data and data["match"] not in MATCHES:
        got = _show(data["match"])
        out.append((_at(path, "match"), f"expected one of {_choices(MATCHES)}, got {got}"))
    for key in ("continue", "enabled"):
        if key in data and not isinstance(data[key], bool):
            out.append((_at(path, key), f"expected true or false, got {_show(data[key])}"))
    out += list_problems(data.get("conditions", []), _at(path, "conditions"), condition_problems)
    actions = data.get("actions", [])
    out += list_problems(actions, _at(path, "actions"), action_problems)
    if isinstance(actions, list):
        kinds = [a.get("action") for a in actions if isinstance(a, Mapping)]
        if len(kinds) == len(actions):
            out += _repeated_actions(kinds, _at(path, "actions"))
    return out


def list_problems(data: object, path: str, check: ProblemCheck) -> list[Problem]:
    """Problems of an array of conditions or actions (``check`` checks one item)."""
    if not isinstance(data, list | tuple):
        return [(path, f"expected an array of tables, got {_show(data)}")]
    out: list[Problem] = []
    for i, item in enumerate(data):
        out += check(item, f"{path}[{i}]")
    return out


def problems(rules: object, path: str = "rules") -> list[Problem]:
    """Every problem of a list of rule dicts, as (key path, message); [] means valid."""
    if not isinstance(rules, list | tuple):
        return [(path, f"expected an array of tables ([[{path}]]), got {_show(rules)}")]
    out: list[Problem] = []
    first: dict[str, int] = {}
    for i, rule in enumerate(rules):
        out += rule_problems(rule, f"{path}[{i}]")
        name = rule.get("name") if isinstance(rule, Mapping) else None
        if isinstance(name, str) and name.strip():
            key = name.strip().casefold()
            if key in first:
                out.append(
                    (
                        f"{path}[{i}].name",
                        f"duplicate rule name {_show(name)} (also {path}[{first[key]}])",
                    )
                )
            else:
                first[key] = i
    return out


def validate(rules: object, path: str = "rules") -> list[str]:
    """Every problem of a list of rule dicts, as ``"rules[1].conditions[0].op: ..."`` lines."""
    return [_join(p, m) for p, m in problems(rules, path)]


def rule_from_dict(data: Mapping[str, Any]) -> RuleSpec:
    """A valid rule dict (the site file's shape) as a :class:`RuleSpec`; else RuleInvalid."""
    found = rule_problems(data)
    if found:
        raise RuleInvalid(found)
    return RuleSpec(
        name=data["name"].strip(),
        match=data.get("match", "all"),
        conditions=tuple(Condition.from_dict(c) for c in data.get("conditions", [])),
        actions=tuple(Action.from_dict(a) for a in data.get("actions", [])),
        continue_after=data.get("continue", False),
        enabled=data.get("enabled", True),
    )


def rules_from_dicts(
    rules: Sequence[Mapping[str, Any]], path: str = "rules"
) -> tuple[RuleSpec, ...]:
    found = problems(rules, path)
    if found:
        raise RuleInvalid(found)
    return tuple(rule_from_dict(r) for r in rules)


# -- evaluation -----------------------------------------------------------------------------

# (rule name, action, value)
Applied = tuple[str, str, Any]


@dataclass(frozen=True)
class Verdict:
    """The outcome of a chain: what to do, and the record of why.

    ``trace`` has one entry per rule, in order: (name, matched, why). ``applied`` lists
    the actions that took effect, ``overridden`` those ignored because an earlier rule had
    already set the same thing.
    """

    queue: str | None = None
    agent: str | None = None
    priority_set: int | None = None
    priority_add: int = 0
    require_approval: bool = False
    auto_response: str | None = None
    forward_copies: tuple[str, ...] = ()
    delete: str | None = None
    hits: tuple[str, ...] = ()
    misses: tuple[str, ...] = ()
    trace: tuple[tuple[str, bool, str], ...] = ()
    applied: tuple[Applied, ...] = ()
    overridden: tuple[Applied, ...] = ()

    def set_by(self, action: str) -> str | None:
        """The rule whose ``action`` took effect (the first, for set-once actions)."""
        return next((rule for rule, kind, _ in self.applied if kind == action), None)

    def as_record(self) -> dict[str, Any]:
        """JSON-ready, for ``Interaction.rules`` and the journal."""
        return {
            "hits": list(self.hits),
            "misses": list(self.misses),
            "trace": [list(t) for t in self.trace],
            "applied": [list(a) for a in self.applied],
            "overridden": [list(a) for a in self.overridden],
        }


def evaluate(rules: Iterable[RuleSpec], facts: MessageFacts) -> Verdict:
    """Run the chain over ``facts``; see the module docstring for how actions combine."""
    values: dict[str, Any] = {}
    priority_add = 0
    approval = False
    copies: list[str] = []
    hits: list[str] = []
    misses: list[str] = []
    trace: list[tuple[str, bool, str]] = []
    applied: list[Applied] = []
    overridden: list[Applied] = []
    stopped_at: str | None = None
    for rule in rules:
        if stopped_at is not None:
            trace.append((rule.name, False, f"not evaluated: the chain ended at {stopped_at!r}"))
            continue
        if not rule.enabled:
            trace.append((rule.name, False, "disabled"))
            continue
        matched, why = rule.test(facts)
        trace.append((rule.name, matched, why))
        if not matched:
            misses.append(rule.name)
            continue
        hits.append(rule.name)
        for act in rule.actions:
            item = (rule.name, act.action, act.value)
            if act.action in SET_ONCE:
                if act.action in values:
                    overridden.append(item)
                    continue
                values[act.action] = act.value
            elif act.action == "add_priority":
                assert isinstance(act.value, int)
                priority_add += act.value
            elif act.action == "require_approval":
                approval = approval or bool(act.value)
            elif act.action == "forward_copy":
                assert isinstance(act.value, str)
                if act.value in copies:
                    overridden.append(item)
                    continue
                copies.append(act.value)
            applied.append(item)
        if not rule.continue_after:
            stopped_at = rule.name
    return Verdict(
        queue=values.get("queue"),
        agent=values.get("agent"),
        priority_set=values.get("set_priority"),
        priority_add=priority_add,
        require_approval=approval,
        auto_response=values.get("auto_response"),
        forward_copies=tuple(copies),
        delete=values.get("delete"),
        hits=tuple(hits),
        misses=tuple(misses),
        trace=tuple(trace),
        applied=tuple(applied),
        overridden=tuple(overridden),
    )
