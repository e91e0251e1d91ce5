"""Checks across tables, run on every table that is valid on its own (``Context.tables``),
so that a file with one broken agent still gets "duplicate address" for two other boxes.

A check never judges against a table that has errors of its own ("no agent has skill X"
when the agent with X is the broken one would be a false alarm).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from postroom.config.errors import ConfigError, show
from postroom.config.schema import AgentConfig, IncomingBox

# Tables whose address is a mailbox of its own, in file order (contacts are people who
# write to us, so a contact may also be a dev-stack customer).
_MAILBOX_TABLES = ("incoming", "outbound", "dead_box", "agents", "customers", "journal")


def cross_checks(tables: Mapping[str, list[Any]], data: Mapping[str, Any]) -> list[ConfigError]:
    valid = {name: [(i, t) for i, t in enumerate(found) if t is not None] for name, found in tables.items()}
    complete = {name for name, found in tables.items() if None not in found}
    return [
        *_duplicates(valid, "address", _MAILBOX_TABLES, "duplicate address {} (already used by {})"),
        *_duplicates(valid, "key", ("contacts",), "duplicate contact {} (already {})"),
        *_duplicates(valid, "code", ("wrapup_codes",), "duplicate code {} (already {})"),
        *_skills(valid, complete, data),
        *_supervisors(valid),
        *_references(valid, complete),
        *_rules(valid, complete, data),
    ]


def _path(name: str, i: int, several: bool, key: str = "") -> str:
    path = f"{name}[{i}]" if several else name
    return f"{path}.{key}" if key else path


def _duplicates(valid: Mapping[str, list[tuple[int, Any]]], attr: str, names: tuple[str, ...], words: str) -> Iterator[ConfigError]:
    first: dict[str, str] = {}
    for name in names:
        several = name not in ("outbound", "dead_box", "journal")
        for i, table in valid.get(name, []):
            value = getattr(table, attr)
            # A contact's key is its address or its domain, whichever it gives.
            key = ("address" if table.address else "domain") if attr == "key" else attr
            path = _path(name, i, several, key)
            if value in first:
                yield ConfigError(path, words.format(show(value), first[value] if attr != "key" else first[value].rsplit(".", 1)[0]))
            else:
                first[value] = path


def _agent_skills(valid: Mapping[str, list[tuple[int, Any]]], complete: set[str], data: Mapping[str, Any]) -> set[str] | None:
    """Every skill some agent has; None when an agent is broken (then unknown)."""
    if "agents" in data and "agents" not in complete:
        return None
    return {skill for _, agent in valid.get("agents", []) for skill in agent.skills}


def _skills(valid: Mapping[str, list[tuple[int, Any]]], complete: set[str], data: Mapping[str, Any]) -> Iterator[ConfigError]:
    """A box whose mail no agent could ever take is a configuration error, not a queue."""
    known = _agent_skills(valid, complete, data)
    if known is None:
        return
    box: IncomingBox
    for i, box in valid.get("incoming", []):
        for skill in box.skills:
            if skill not in known:
                yield ConfigError(f"incoming[{i}].skills", f"no agent has skill {show(skill)}")


def _supervisors(valid: Mapping[str, list[tuple[int, Any]]]) -> Iterator[ConfigError]:
    """Each named supervisor must be an agent of the file marked ``supervisor = true``."""
    by_address = {a.address: a for _, a in valid.get("agents", [])}
    agent: AgentConfig
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


def _references(valid: Mapping[str, list[tuple[int, Any]]], complete: set[str]) -> Iterator[ConfigError]:
    """Addresses that name an agent, or an incoming box, of this file."""
    agents = {a.address for _, a in valid.get("agents", [])}
    boxes = {b.address for _, b in valid.get("incoming", [])}
    what = {"agent": (agents, "agents" in complete or "agents" not in valid),
            "incoming box": (boxes, "incoming" in complete)}
    refs = [("approval", "probation", "agent"), ("approval", "boxes", "incoming box")]
    for name, key, kind in refs:
        known, sure = what[kind]
        for i, table in valid.get(name, []):
            for j, address in enumerate(getattr(table, key)):
                if sure and address not in known:
                    path = _path(name, i, name not in ("approval",), key)
                    yield ConfigError(f"{path}[{j}]", f"{show(address)} is not an {kind} in this file")


def _rules(valid: Mapping[str, list[tuple[int, Any]]], complete: set[str], data: Mapping[str, Any]) -> Iterator[ConfigError]:
    """A rule's queue must be a skill some agent has, its agent an agent of the file."""
    rules = valid.get("rules")
    if not rules:
        return
    if "routing" in valid and "routing" not in complete:
        return
    skills = _agent_skills(valid, complete, data)
    routing = valid.get("routing", [])
    unassigned = routing[0][1].unassigned_queue if routing else "unassigned"
    agents = {a.address for _, a in valid.get("agents", [])}
    for i, rule in enumerate(rules[0][1]):
        for j, act in enumerate(rule.actions):
            path = f"rules[{i}].actions[{j}].value"
            if act.action == "queue" and skills is not None:
                if act.value != unassigned and act.value not in skills:
                    yield ConfigError(path, f"no agent has skill {show(act.value)}")
            elif act.action == "agent" and act.value not in agents:
                yield ConfigError(path, f"{show(act.value)} is not an agent in this file")
