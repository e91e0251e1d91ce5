"""Applying a lifecycle event to a stored interaction: decide in the core, CAS in the DB.

The only code that writes `Interaction.status` (the engine and the web both come here).
The UPDATE carries the version we read, so two workers, two processes or two nodes racing
on one interaction cannot both win.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.db.models import F

from postroom.core.lifecycle import Event, Snapshot, State, Timing, decide
from postroom.core.outbox import CANCELLABLE, OutboxState
from postroom.store import journal
from postroom.store.models import Agent, Interaction, Outgoing, Withdrawal


class StaleInteraction(Exception):
    """Someone else changed the interaction since we read it."""


def no_reply_time(ix: Interaction) -> timedelta | None:
    """The box's no-reply time, or its priority band's (fig. 8: per box and priority)."""
    box = ix.mailbox
    seconds = box.no_reply_seconds
    best = None
    for band in box.no_reply_bands or ():
        min_priority, band_seconds = int(band[0]), int(band[1])
        if ix.priority >= min_priority and (best is None or min_priority > best):
            best, seconds = min_priority, band_seconds
    return timedelta(seconds=seconds) if seconds else None


def timing_for(
    ix: Interaction, offer_timeout: timedelta | None = None, priority_raise: int | None = None
) -> Timing:
    timing = Timing(offer_timeout=offer_timeout, no_reply=no_reply_time(ix))
    if priority_raise is not None:
        timing = Timing(timing.offer_timeout, timing.no_reply, priority_raise)
    return timing


def apply(
    ix: Interaction,
    event: Event,
    now: datetime,
    *,
    offer_timeout: timedelta | None = None,
    priority_raise: int | None = None,
    agents: Mapping[str, Agent] | None = None,
    **detail: Any,
) -> Interaction:
    """Move `ix` through `event` (raises IllegalTransition or StaleInteraction).

    Call inside a transaction; `ix` is updated in place and returned.
    """
    previous_agent = ix.agent if ix.agent_id else None
    previous_state = ix.state
    snap = Snapshot(
        state=ix.state,
        agent=previous_agent.address if previous_agent else None,
        priority=ix.priority,
        outcome=ix.outcome,
    )
    decision = decide(snap, event, now, timing_for(ix, offer_timeout, priority_raise))
    if decision.agent is None:
        agent = None
    elif previous_agent is not None and previous_agent.address == decision.agent:
        agent = previous_agent
    elif agents is not None and decision.agent in agents:
        agent = agents[decision.agent]  # read once for a routing round
    else:
        agent = Agent.objects.get(address=decision.agent)
    changes: dict[str, Any] = {
        "status": decision.state.value,
        "agent": agent,
        "priority": decision.priority,
    }
    for stamp in decision.stamps:
        changes[stamp] = now
    for timer, due in decision.timers.items():
        changes[timer.value] = due
    if decision.released and decision.released not in (ix.excluded_agents or []):
        changes["excluded_agents"] = [*(ix.excluded_agents or []), decision.released]
    if decision.outcome:
        changes["outcome"] = decision.outcome
    for name in decision.clears:
        changes[name] = Interaction._meta.get_field(name).get_default()
    updated = Interaction.objects.filter(pk=ix.pk, version=ix.version).update(
        version=F("version") + 1, **changes
    )
    if updated != 1:
        raise StaleInteraction(str(ix.guid))
    for name, value in changes.items():
        setattr(ix, name, value)
    ix.version += 1
    if decision.priority != snap.priority:
        detail.setdefault("priority", decision.priority)
    if previous_state is State.ANSWERED and decision.state in (State.QUEUED, State.ENDED, State.CLOSED):
        cancel_forwards(ix, previous_agent if decision.released else None, decision.journal)
    if decision.released and previous_agent is not None:
        withdraw_forward(ix, previous_agent, decision.journal)
    journal.record(decision.journal, now, interaction=ix, agent=agent or previous_agent, **detail)
    return ix


def cancel_forwards(ix: Interaction, released: Agent | None, reason: str) -> None:
    """The delivery round ended before its forward was recorded sent (docs/decisions/0007):
    a forward still waiting is cancelled, in the same transaction as the change, so it can
    neither reach the agent nor complete a later round's delivery. One in an SMTP
    transaction right now cannot be cancelled; the outbox finds it stale when it records
    the outcome. One whose outcome is unknown may be in the agent's mailbox already: taken
    back out if the agent was released."""
    waiting = Outgoing.objects.filter(interaction=ix, kind=Outgoing.FORWARD, state__in=[s.value for s in CANCELLABLE])
    maybe_sent = list(waiting.filter(state=OutboxState.UNKNOWN).values_list("message_id", flat=True))
    waiting.update(state=OutboxState.CANCELLED, claimed_by="", lease_until=None)
    if released is not None:
        for message_id in maybe_sent:
            Withdrawal.objects.create(interaction=ix, agent=released, message_id=message_id, reason=reason)


def withdraw_forward(ix: Interaction, agent: Agent, reason: str) -> None:
    """The agent no longer holds the interaction: their forwarded copy is to be taken back
    out of their mailbox (fig. 8 462), in the same transaction as the change."""
    forward = (
        Outgoing.objects.filter(interaction=ix, kind=Outgoing.FORWARD, state=Outgoing.SENT)
        .order_by("-id")
        .first()
    )
    if forward is None or forward.recipients != [agent.address]:
        return
    Withdrawal.objects.create(interaction=ix, agent=agent, message_id=forward.message_id, reason=reason)
