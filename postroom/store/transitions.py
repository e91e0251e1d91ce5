"""Applying a lifecycle event to a stored interaction: decide in the core, CAS in the DB.

The only code that writes `Interaction.status` (the engine and the web both come here).
The UPDATE carries the version we read, so two workers, two processes or two nodes racing
on one interaction cannot both win.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.db import connections, router, transaction
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
    if compare_and_set(ix, changes) != 1:
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


# The compare-and-set statements, compiled once per (database, columns set) and kept.
_CAS_SQL: dict[tuple[str, tuple[str, ...], bool], str] = {}
_CAS_SQL_MAX = 256


def compare_and_set(ix: Interaction, changes: Mapping[str, Any], *, status: State | None = None) -> int:
    """``Interaction.objects.filter(pk=ix.pk, version=ix.version[, status=status])
    .update(version=F("version") + 1, **changes)``: the same statement with the same
    parameters (each value prepared by its field, as the ORM's update prepares it), its SQL
    built once per set of columns instead of for every transition (decision 0048: building
    and compiling the query was most of a transition's cost in the worker's profile).

    The version compare-and-set is the statement's own WHERE; on PostgreSQL the fence
    trigger (decision 0031) fires on it as on any write, in the caller's transaction.
    Returns the number of rows changed (1, or 0 when someone else moved the interaction)."""
    alias = router.db_for_write(Interaction)
    conn = connections[alias]
    meta = Interaction._meta
    fields = [meta.get_field(name) for name in changes]
    params: list[Any] = []
    for field, value in zip(fields, changes.values(), strict=True):
        if hasattr(value, "prepare_database_save") and field.remote_field:
            value = value.prepare_database_save(field)
        value = field.get_db_prep_save(value, connection=conn)
        if hasattr(value, "as_sql") or hasattr(field, "get_placeholder") or not field.concrete:
            # An expression or a field with a placeholder of its own: the ORM writes it.
            rows = Interaction.objects.filter(pk=ix.pk, version=ix.version)
            if status is not None:
                rows = rows.filter(status=status.value)
            return rows.update(version=F("version") + 1, **changes)
        params.append(value)
    key = (alias, tuple(changes), status is not None)
    sql = _CAS_SQL.get(key)
    if sql is None:
        qn = conn.ops.quote_name
        version = qn(meta.get_field("version").column)
        sets = "".join(f", {qn(field.column)} = %s" for field in fields)
        sql = (
            f"UPDATE {qn(meta.db_table)} SET {version} = ({version} + 1){sets}"
            f" WHERE {qn(meta.pk.column)} = %s AND {version} = %s"
        )
        if status is not None:
            sql += f" AND {qn(meta.get_field('status').column)} = %s"
        if len(_CAS_SQL) < _CAS_SQL_MAX:
            _CAS_SQL[key] = sql
    params += [ix.pk, ix.version]
    if status is not None:
        params.append(status.value)
    with transaction.mark_for_rollback_on_error(using=alias), conn.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount
