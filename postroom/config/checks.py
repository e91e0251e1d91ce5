"""Checks across tables, run on every table that is valid on its own (``Context.tables``),
so that a file with one broken agent still gets "duplicate address" for two other boxes.
Of a broken table, the address and skills are still read when they passed.

A reference is not judged against a list with a broken entry ("not an agent in this file"
when that agent is the broken one would be a false alarm).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from postroom.config.context import Broken
from postroom.config.errors import ConfigError, show

Valid = Mapping[str, list[tuple[int, Any]]]
# The tables of the file that are not arrays of tables.
_SINGLE = ("outbound", "dead_box", "journal", "approval", "routing")


def cross_checks(tables: Mapping[str, list[Any]], data: Mapping[str, Any]) -> list[ConfigError]:
    valid = {
        name: [(i, t) for i, t in enumerate(found) if not isinstance(t, Broken)]
        for name, found in tables.items()
    }
    # A list is known when every entry is valid (and it is not broken as a whole).
    known = {
        name
        for name in ("agents", "incoming", "routing")
        if not any(isinstance(t, Broken) for t in tables.get(name, []))
        and not (data.get(name) and name not in tables)
    }
    skills = _agent_skills(tables, data)
    return [
        # Contacts are people who write to us: a contact may also be a dev-stack customer.
        *_duplicates(_addresses(tables), "duplicate address {value} (already used by {path})"),
        *_duplicates(
            _each(valid, "contacts", lambda c: c.key, lambda c: "address" if c.address else "domain"),
            "duplicate contact {value} (already {table})",
        ),
        *_duplicates(_each(valid, "wrapup_codes", lambda c: c.code), "duplicate code {value} (already {path})"),
        *_duplicates(
            _each(valid, "evaluation_criteria", lambda c: c.code), "duplicate code {value} (already {path})"
        ),
        *_duplicates(
            _each(valid, "groups", lambda g: g.name.casefold(), lambda g: "name", lambda g: g.name),
            "duplicate group {value} (already {table})",
        ),
        *_skills(tables, skills),
        *_supervisors(valid),
        *_references(valid, known),
        *_rules(valid, known, skills),
    ]


# (table path, key, value compared, value shown)
Entry = tuple[str, str, str, str]


def _addresses(tables: Mapping[str, list[Any]]) -> Iterator[Entry]:
    """The address of every mailbox of the file, in file order, of broken tables too."""
    for name in ("incoming", "outbound", "dead_box", "agents", "customers", "journal"):
        for i, table in enumerate(tables.get(name, [])):
            address = table.get("address") if isinstance(table, Broken) else table.address
            if isinstance(address, str):
                yield _path(name, i), "address", address.lower(), address.lower()


def _each(valid: Valid, name: str, key: Callable[[Any], str], at: Callable[[Any], str] = lambda t: "code",
          shown: Callable[[Any], str] = lambda t: "") -> Iterator[Entry]:
    for i, table in valid.get(name, []):
        yield _path(name, i), at(table), key(table), shown(table) or key(table)


def _agent_skills(tables: Mapping[str, list[Any]], data: Mapping[str, Any]) -> set[str] | None:
    """Every skill some agent has, of broken agents too; None when some agent's skills (or
    the agents as a whole) are unreadable: then "no agent has skill X" could be wrong."""
    if data.get("agents") and "agents" not in tables:
        return None
    found: set[str] = set()
    for agent in tables.get("agents", []):
        if not isinstance(agent, Broken):
            found.update(agent.skills)
        elif "skills" in agent.bad:
            return None
        else:
            found.update(s.strip() for s in agent.data.get("skills", ()))
    return found


def _path(name: str, i: int) -> str:
    return name if name in _SINGLE else f"{name}[{i}]"


def _duplicates(entries: Iterator[Entry], words: str) -> Iterator[ConfigError]:
    first: dict[str, tuple[str, str]] = {}
    for table, key, value, shown in entries:
        if value in first:
            table_path, path = first[value]
            yield ConfigError(f"{table}.{key}", words.format(value=show(shown), table=table_path, path=path))
        else:
            first[value] = (table, f"{table}.{key}")


def _skills(tables: Mapping[str, list[Any]], skills: set[str] | None) -> Iterator[ConfigError]:
    """A box whose mail no agent could ever take is a configuration error, not a queue."""
    for i, box in enumerate(tables.get("incoming", []) if skills is not None else ()):
        if not isinstance(box, Broken):
            wanted = box.skills
        elif "skills" in box.data:
            wanted = [s.strip() for s in box.get("skills") or ()]
        else:  # the default: the local part of the address
            address = box.get("address")
            wanted = [address.lower().split("@")[0]] if isinstance(address, str) else []
        for skill in dict.fromkeys(wanted):
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


def _rules(valid: Valid, known: set[str], skills: set[str] | None) -> Iterator[ConfigError]:
    """A rule's queue must be a skill some agent has, its agent an agent of the file."""
    if not valid.get("rules") or "routing" not in known:
        return
    routing = valid.get("routing")
    unassigned = routing[0][1].unassigned_queue if routing else "unassigned"
    agents = {a.address for _, a in valid.get("agents", [])}
    for i, rule in enumerate(valid["rules"][0][1]):
        for j, act in enumerate(rule.actions):
            path = f"rules[{i}].actions[{j}].value"
            if act.action == "queue" and skills is not None:
                if act.value not in (unassigned, *skills):
                    yield ConfigError(path, f"no agent has skill {show(act.value)}")
            elif act.action == "agent" and "agents" in known and act.value not in agents:
                yield ConfigError(path, f"{show(act.value)} is not an agent in this file")
