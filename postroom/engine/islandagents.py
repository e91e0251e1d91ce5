"""Who is ready on the island: the agents' last known state, taken to the local store
(decision 0045).

The agents' presence, skills and capacity live on the shared database and change from
the web workspace, which a node cut off from it cannot reach. So the node keeps its last
look at them while it is on the database (`snapshot`, every supervisor round: a few
rows) and writes that into its local store when it goes island (`install`), where the
routing desk reads it like any agent table. What the agents do meanwhile on the web
(going Not Ready, a changed skill) is not seen until the node is back.

On the local store every agent answers at once (auto-answer): an offer is accepted on
the agent's web page, which is on the database; the forward reaches the agent's own
mailbox and the agent answers it from any mail client, which needs no database.
Capacity counts what the island itself gave each agent (its local store's interactions):
an agent the database's side also loads may get up to twice their capacity while the
link is cut.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from postroom.store.models import Agent

log = logging.getLogger(__name__)

# What the island routes by, and what a new agent row needs.
FIELDS = (
    "address", "name", "skills", "capacity", "ready", "state_changed_at", "probationary",
    "is_supervisor", "mailbox_login",
)


def snapshot() -> list[dict[str, Any]]:
    """The agents as the (shared) database has them now."""
    return list(Agent.objects.values(*FIELDS))


def install(agents: list[dict[str, Any]]) -> int:
    """Write `agents` (a `snapshot`) into this thread's database (the local store): an
    agent it has is updated, one it lacks (made on the web) is added; every one answers
    at once. Returns how many are ready."""
    with transaction.atomic():
        for seen in agents:
            values = {k: v for k, v in seen.items() if k != "address"}
            Agent.objects.update_or_create(
                address=seen["address"], defaults={**values, "auto_answer": True, "notify_offers": False}
            )
        Agent.objects.update(auto_answer=True, notify_offers=False)
    ready = sum(bool(a["ready"]) for a in agents)
    log.warning("island mode: routing on the last known state of %d agent(s), %d ready", len(agents), ready)
    return ready


__all__ = ["FIELDS", "install", "snapshot"]
