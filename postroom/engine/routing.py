"""Routing (fig. 6): queued interactions to Ready agents, oldest (and most urgent) first.

The choice itself is `postroom.core.routing`; this step loads the candidates, records the
routed-to agent with a CAS, counts it, and answers at once for auto-answer agents.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from django.db import transaction
from django.db.models import Count, F, Max, Q

from postroom.core.lifecycle import WITH_AGENT, Answered, Routed, State
from postroom.core.routing import AgentView, choose_agent
from postroom.store.models import Agent, Interaction
from postroom.store.transitions import StaleInteraction, apply

SCAN = 500


def agent_views() -> dict[str, AgentView]:
    agents = Agent.objects.filter(ready=True).annotate(
        load=Count("interactions", filter=Q(interactions__status__in=[s.value for s in WITH_AGENT])),
        last_routed=Max("interactions__routed_at"),
    )
    views = {}
    for a in agents:
        stamps = [t for t in (a.state_changed_at, a.last_routed) if t is not None]
        views[a.address] = AgentView(
            address=a.address,
            skills=frozenset(a.skills or ()),
            ready=a.ready,
            load=a.load,
            capacity=a.capacity,
            idle_since=max(stamps) if stamps else None,
        )
    return views


def route(now: datetime) -> bool:
    """Route what can be routed now; True if anything was."""
    views = agent_views()
    if not any(v.load < v.capacity for v in views.values()):
        return False
    did = False
    queued = (
        Interaction.objects.filter(status=State.QUEUED)
        .select_related("mailbox")
        .order_by("-priority", "arrival_time", "id")[:SCAN]
    )
    for ix in queued:
        choice = choose_agent(frozenset(ix.mailbox.skills or ()), views.values())
        if choice is None:
            continue
        try:
            with transaction.atomic():
                apply(ix, Routed(agent=choice.address), now)
                Agent.objects.filter(pk=ix.agent_id).update(routed_count=F("routed_count") + 1)
                if ix.agent.auto_answer:
                    apply(ix, Answered(), now, auto=True)
        except StaleInteraction:
            continue
        views[choice.address] = replace(choice, load=choice.load + 1, idle_since=now)
        did = True
        if not any(v.load < v.capacity for v in views.values()):
            break
    return did
