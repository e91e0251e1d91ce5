"""Checks across tables, run on every table that is valid on its own (``Context.tables``),
so that a file with one broken agent still gets "duplicate address" for two other boxes.

A reference is not judged against a list with a broken entry ("not an agent in this file"
when that agent is the broken one would be a false alarm).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from postroom.config.errors import ConfigError, show

Valid = Mapping[str, list[tuple[int, Any]]]
# The tables of the file that are not arrays of tables.
_SINGLE = ("outbound", "dead_box", "journal", "approval", "routing")


def cross_checks(tables: Mapping[str, list[Any]], data: Mapping[str, Any]) -> list[ConfigError]:
    valid = {name: [(i, t) for i, t in enumerate(found) if t is not None] for name, found in tables.items()}
    # A list is known when every entry is valid (and it is not broken as a whole).
    known = {name for name in ("agents", "incoming", "routing") if None not in tables.get(name, [])}
    known -= {name for name in known if name in data and name not in tables and data[name]}
    return [
        # Contacts are people who write to us: a contact may also be a dev-stack customer.
        *_duplicates(valid, ("incoming", "outbound", "dead_box", "agents", "customers", "journal"),
                     "duplicate address {value} (already used by {path})"),
        *_duplicates(valid, ("contacts",), "duplicate contact {value} (already {table})",
                     key=lambda c: c.key, at=lambda c: "address" if c.address else "domain"),
        *_duplicates(valid, ("wrapup_codes",), "duplicate code {value} (already {path})",
                     key=lambda c: c.code, at=lambda c: "code"),
        *_duplicates(valid, ("evaluation_criteria",), "duplicate code {value} (already {path})",
                     key=lambda c: c.code, at=lambda c: "code"),
        *_duplicates(valid, ("groups",), "duplicate group {value} (already {table})",
                     key=lambda g: g.name.casefold(), at=lambda g: "name", shown=lambda g: g.name),
        *_skills(valid, known),
        *_supervisors(valid),
        *_references(valid, known),
        *_rules(valid, known),
    ]


def _path(name: str, i: int) -> str:
    return name if name in _SINGLE else f"{name}[{i}]"


def _duplicates(
    valid: Valid,
    names: tuple[str, ...],
    words: str,
    key: Callable[[Any], str] = lambda t: t.address,
    at: Callable[[Any], str] = lambda t: "address",
    shown: Callable[[Any], str] | None = None,
) -> Iterator[ConfigError]:
    first: dict[str, tuple[str, str]] = {}
    for name in names:
        for i, table in valid.get(name, []):
            where = (_path(name, i), f"{_path(name, i)}.{at(table)}")
            value = key(table)
            if value in first:
                table_path, path = first[value]
                shown_value = show(shown(table) if shown else value)
                yield ConfigError(where[1], words.format(value=shown_value, table=table_path, path=path))
            else:
                first[value] = where


def _skills(valid: Valid, known: set[str]) -> Iterator[ConfigError]:
    """A box whose mail no agent could ever take is a configuration error, not a queue."""
    if "agents" not in known:
        return
    skills = {skill for _, agent in valid.get("agents", []) for skill in agent.skills}
    for i, box in valid.get("incoming", []):
        for skill in box.skills:
            if skill not in skills:
                yield ConfigError(f"incoming[{i}].skills", f"no agent has skill {show(skill)}")


def _supervisors(valid: Valid) -> Iterator[ConfigError]:
    """Each named supervisor must be an agent of the file marked ``supervisor = true``."""
    by_address = {a.address: a for _, a in valid.get("agents", [])}
    for i, agent in valid.get("agents", []):
        for j, address in enumerate(agent.supervisors):
            other = by_address.get(address)
            if address == agent.address:
                message = "an agent cannot supervise itself"
            elif other is None:
                message = f"{show(address)} is not an agent in this file"
            elif not other.supervisor:
                message = f"{show(address)} is not a supervisor (supervisor = true)"
            else:
                continue
            yield ConfigError(f"agents[{i}].supervisors[{j}]", message)


# (table, key): an array of addresses of agents, or of incoming boxes, of this file.
_REFERENCES = {
    "agent": [("approval", "probation"), ("groups", "members")],
    "incoming box": [("approval", "boxes"), ("agents", "boxes"), ("groups", "boxes")],
}


def _references(valid: Valid, known: set[str]) -> Iterator[ConfigError]:
    for kind, refs in _REFERENCES.items():
        target = "agents" if kind == "agent" else "incoming"
        if target not in known:
            continue
        addresses = {t.address for _, t in valid.get(target, [])}
        for name, key in refs:
            for i, table in valid.get(name, []):
                for j, address in enumerate(getattr(table, key)):
                    if address not in addresses:
                        path = f"{_path(name, i)}.{key}[{j}]"
                        yield ConfigError(path, f"{show(address)} is not an {kind} in this file")


def _rules(valid: Valid, known: set[str]) -> Iterator[ConfigError]:
    """A rule's queue must be a skill some agent has, its agent an agent of the file."""
    if not valid.get("rules") or "routing" not in known:
        return
    routing = valid.get("routing")
    unassigned = routing[0][1].unassigned_queue if routing else "unassigned"
    skills = {skill for _, agent in valid.get("agents", []) for skill in agent.skills}
    agents = {a.address for _, a in valid.get("agents", [])}
    for i, rule in enumerate(valid["rules"][0][1]):
        for j, act in enumerate(rule.actions):
            path = f"rules[{i}].actions[{j}].value"
            if act.action == "queue" and "agents" in known:
                if act.value not in (unassigned, *skills):
                    yield ConfigError(path, f"no agent has skill {show(act.value)}")
            elif act.action == "agent" and act.value not in agents:
                yield ConfigError(path, f"{show(act.value)} is not an agent in this file")
