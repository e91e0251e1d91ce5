"""Applying a lifecycle event to a stored interaction: decide in the core, CAS in the DB.

The only code that writes `Interaction.status`. The UPDATE carries the version we read,
so two workers (or two nodes) racing on one interaction cannot both win.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import F

from postroom.core.lifecycle import Event, Snapshot, decide
from postroom.engine import journal
from postroom.store.models import Agent, Interaction


class StaleInteraction(Exception):
    """Someone else changed the interaction since we read it."""


def apply(ix: Interaction, event: Event, now: datetime, **detail: Any) -> Interaction:
    """Move `ix` through `event` (raises IllegalTransition or StaleInteraction).

    Call inside a transaction; `ix` is updated in place and returned.
    """
    previous_agent = ix.agent if ix.agent_id else None
    snap = Snapshot(state=ix.state, agent=ix.agent.address if ix.agent_id else None, priority=ix.priority)
    decision = decide(snap, event, now)
    if decision.agent is None:
        agent = None
    elif snap.agent == decision.agent:
        agent = ix.agent
    else:
        agent = Agent.objects.get(address=decision.agent)
    changes: dict[str, Any] = {"status": decision.state.value, "agent": agent}
    for stamp in decision.stamps:
        changes[stamp] = now
    updated = Interaction.objects.filter(pk=ix.pk, version=ix.version).update(
        version=F("version") + 1, **changes
    )
    if updated != 1:
        raise StaleInteraction(str(ix.guid))
    for name, value in changes.items():
        setattr(ix, name, value)
    ix.version += 1
    for kind in decision.journal:
        journal.record(kind, now, interaction=ix, agent=agent or previous_agent, **detail)
    return ix
