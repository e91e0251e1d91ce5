"""Choosing the agent for a queued email (fig. 6): pure ranking over plain values."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class AgentView:
    address: str
    skills: frozenset[str]
    ready: bool
    load: int  # interactions the agent holds now
    capacity: int
    idle_since: datetime | None  # when the agent last became free (or Ready)


def eligible(agent: AgentView, needed: frozenset[str]) -> bool:
    """Ready, with room, and with one of the skills the email needs (none needed: anyone)."""
    return (
        agent.ready
        and agent.load < agent.capacity
        and (not needed or not agent.skills.isdisjoint(needed))
    )


def choose_agent(needed: frozenset[str], agents: Iterable[AgentView]) -> AgentView | None:
    """The eligible agent idle the longest; ties broken by address for determinism."""
    best: AgentView | None = None
    for agent in agents:
        if not eligible(agent, needed):
            continue
        if best is None or _idle_key(agent) < _idle_key(best):
            best = agent
    return best


def _idle_key(agent: AgentView) -> tuple[int, datetime | str, str]:
    # Never-idle-stamped agents sort first: they have been waiting since before we knew.
    if agent.idle_since is None:
        return (0, "", agent.address)
    return (1, agent.idle_since, agent.address)
