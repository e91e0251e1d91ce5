"""View-models: plain dicts, one shape for the API and the server-rendered pages.

Each function takes the `Principal` asking and shows only what it may see
(`postroom.store.permissions`); nothing here decides on its own who sees what.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any

from django.db.models import Count, Prefetch
from django.utils import timezone

from postroom.core.lifecycle import WITH_AGENT, State
from postroom.mail.message import UnreadableMessage, parse
from postroom.store.models import Agent, Approval, Interaction, JournalEvent
from postroom.store.permissions import (
    Principal,
    may_decide_approval,
    visible_agents,
    visible_interactions,
)


def agents_with_current(who: Principal):
    """The agents `who` may see, each with its interactions in hand (`.current`)."""
    # Only what agent_dict shows: with thousands in hand, whole rows (headers, rules,
    # references) cost more to build than the query.
    current = (
        Interaction.objects.filter(status__in=[s.value for s in WITH_AGENT])
        .only("id", "agent_id", "guid", "subject", "status", "no_reply_due_at", "routed_at")
        .order_by("routed_at", "id")
    )
    return visible_agents(who, Agent.objects.all()).prefetch_related(
        Prefetch("interactions", current, to_attr="current")
    )


def seconds_left(due: datetime | None, now: datetime) -> int | None:
    """Seconds until a deadline (negative once passed); None without one."""
    return None if due is None else int((due - now).total_seconds())


def agent_dict(agent: Agent, now: datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    current = getattr(agent, "current", None)
    if current is None:
        current = agent.interactions.filter(status__in=[s.value for s in WITH_AGENT]).order_by(
            "routed_at", "id"
        )
    return {
        "name": agent.name,
        "address": agent.address,
        "ready": agent.ready,
        "skills": [str(s) for s in agent.skills or []],
        "auto_answer": agent.auto_answer,
        "is_supervisor": agent.is_supervisor,
        "capacity": agent.capacity,
        "state_changed_at": agent.state_changed_at,
        "current": [
            {
                "guid": ix.guid,
                "subject": ix.subject,
                "status": ix.status,
                "no_reply_due_at": ix.no_reply_due_at,
                "seconds_left": seconds_left(ix.no_reply_due_at, now),
            }
            for ix in current
        ],
    }


def interaction_dict(ix: Interaction) -> dict[str, Any]:
    return {
        "guid": ix.guid,
        "subject": ix.subject,
        "customer": ix.customer,
        "mailbox": ix.mailbox.address,
        "priority": ix.priority,
        "status": ix.status,
        "agent": ix.agent.address if ix.agent_id else None,
        "arrival_time": ix.arrival_time,
    }


def interaction_detail(ix: Interaction) -> dict[str, Any]:
    journal = JournalEvent.objects.filter(interaction=ix).select_related("agent")
    return {
        **interaction_dict(ix),
        "node_id": ix.node_id,
        "message_id": ix.message_id,
        "to": ix.to_addr,
        "reply_to": ix.reply_to,
        "customer_name": ix.customer_name,
        "auto_response_sent_at": ix.auto_response_sent_at,
        "auto_response_skipped": ix.auto_response_skipped,
        "routed_at": ix.routed_at,
        "answered_at": ix.answered_at,
        "delivered_at": ix.delivered_at,
        "replied_at": ix.replied_at,
        "closed_at": ix.closed_at,
        "deliveries": ix.deliveries,
        "approval": ix.approval,
        "claim_node": ix.claim_node,
        "claim_time": ix.claim_time,
        "version": ix.version,
        "queue": ix.queue,
        "target_agent": ix.target_agent.address if ix.target_agent_id else None,
        "excluded_agents": [str(a) for a in ix.excluded_agents or []],
        "priority_reasons": list(ix.priority_reasons or []),
        "rules": ix.rules if ix.rules is not None else {},
        "offer_due_at": ix.offer_due_at,
        "no_reply_due_at": ix.no_reply_due_at,
        "ended_at": ix.ended_at,
        "outcome": ix.outcome,
        "wrapup_code": ix.wrapup_code,
        "resolution_code": ix.resolution_code,
        "journal": [
            {
                "at": ev.at,
                "kind": ev.kind,
                "agent": ev.agent.address if ev.agent_id else None,
                "detail": ev.detail if isinstance(ev.detail, dict) else {"value": ev.detail},
            }
            for ev in journal
        ],
    }


# How many queued interactions the live page and each queue of the console list: the
# head of the queue is what people act on; the counts say how long the rest is.
LIVE_QUEUE_SHOWN = 100
CONSOLE_QUEUE_SHOWN = 25


def status_dict(who: Principal, now: datetime | None = None) -> dict[str, Any]:
    """Everything the live page shows: the queue (its head), the agents, counts by status."""
    now = now or timezone.now()
    queued = (
        visible_interactions(who, Interaction.objects.filter(status=State.QUEUED.value))
        .select_related("mailbox")
        .order_by("-priority", "arrival_time", "id")
    )[:LIVE_QUEUE_SHOWN]
    queue = [
        {
            "guid": ix.guid,
            "subject": ix.subject,
            "customer": ix.customer,
            "customer_name": ix.customer_name,
            "mailbox": ix.mailbox.address,
            "priority": ix.priority,
            "arrival_time": ix.arrival_time,
            "waiting_seconds": max(0, int((now - ix.arrival_time).total_seconds())),
        }
        for ix in queued
    ]
    counts = dict.fromkeys((s.value for s in State), 0)
    for row in Interaction.objects.values("status").annotate(n=Count("id")).order_by():
        counts[row["status"]] = row["n"]
    midnight = timezone.make_aware(
        datetime.combine(timezone.localdate(now), time.min), timezone.get_current_timezone()
    )
    return {
        "now": now,
        "queue": queue,
        "agents": [agent_dict(a, now) for a in agents_with_current(who)],
        "counts": counts,
        "summary": {
            "queued": counts[State.QUEUED.value],
            "with_agents": sum(counts[s.value] for s in WITH_AGENT),
            "replied_today": Interaction.objects.filter(replied_at__gte=midnight).count(),
        },
    }


def _waiting(now: datetime, since: datetime | None) -> int:
    return max(0, int((now - since).total_seconds())) if since else 0


HISTORY_ON_DESK = 5


def desk_history(who: Principal, ix: Interaction) -> list[dict[str, Any]]:
    """The customer's other interactions the agent may see (newest first, a few)."""
    qs = visible_interactions(who, Interaction.objects.filter(customer=ix.customer).exclude(pk=ix.pk))
    return [
        {"guid": h.guid, "subject": h.subject, "status": h.status, "arrival_time": h.arrival_time}
        for h in qs.order_by("-arrival_time", "-id")[:HISTORY_ON_DESK]
    ]


def desk_item(ix: Interaction, now: datetime, who: Principal | None = None) -> dict[str, Any]:
    return {
        "guid": ix.guid,
        "subject": ix.subject,
        "customer": ix.customer,
        "customer_name": ix.customer_name,
        "mailbox": ix.mailbox.address,
        "queue": ix.queue,
        "priority": ix.priority,
        "status": ix.status,
        "arrival_time": ix.arrival_time,
        "routed_at": ix.routed_at,
        "answered_at": ix.answered_at,
        "replied_at": ix.replied_at,
        "waiting_seconds": _waiting(now, ix.arrival_time),
        "wrapup_code": ix.wrapup_code,
        "resolution_code": ix.resolution_code,
        "no_reply_due_at": ix.no_reply_due_at,
        "seconds_left": seconds_left(ix.no_reply_due_at, now),
        "history": desk_history(who, ix) if who is not None else [],
    }


# How far back "recently replied" reaches on the agent bar, and how many it shows.
RECENT_REPLIES = timedelta(days=1)
RECENT_REPLIES_SHOWN = 10


def desk_dict(agent: Agent, now: datetime | None = None, who: Principal | None = None) -> dict[str, Any]:
    """What the agent bar shows: offers, interactions in hand (with the customer's
    history, as far as `who` may see it), recent replies."""
    now = now or timezone.now()
    mine = Interaction.objects.filter(agent=agent).select_related("mailbox")
    held = list(mine.filter(status__in=[s.value for s in WITH_AGENT]).order_by("routed_at", "id"))
    replied = mine.filter(
        status__in=[State.REPLIED.value, State.CLOSED.value],
        replied_at__gte=now - RECENT_REPLIES,
    ).order_by("-replied_at", "-id")[:RECENT_REPLIES_SHOWN]
    agent.current = held
    return {
        "now": now,
        "agent": agent_dict(agent, now),
        "offered": [desk_item(ix, now, who) for ix in held if ix.status == State.ROUTED.value],
        "current": [desk_item(ix, now, who) for ix in held if ix.status != State.ROUTED.value],
        "replied": [desk_item(ix, now) for ix in replied],
    }


def reply_text(raw: bytes | memoryview) -> tuple[str, str]:
    """(subject, text) of a held reply, for the approver to read (and edit)."""
    # MIME and HTML-to-text belong to the mail layer, not the web: the parser's text
    # (HTML bodies through core.htmltext, the one converter).
    try:
        mail = parse(bytes(raw))
    except UnreadableMessage:
        return "", ""
    return mail.subject, mail.text.strip()


def approval_dict(approval: Approval) -> dict[str, Any]:
    ix = approval.interaction
    subject, text = reply_text(approval.raw)
    return {
        "id": approval.pk,
        "interaction": ix.guid,
        "subject": ix.subject,
        "customer": ix.customer,
        "customer_name": ix.customer_name,
        "agent": ix.agent.address if ix.agent_id else None,
        "agent_name": ix.agent.name if ix.agent_id else None,
        "approvers": [str(a) for a in approval.approvers or []],
        "reason_held": approval.reason_held,
        "state": approval.state,
        "reply_subject": subject,
        "text": text,
        "edited_text": approval.edited_text,
        "rejection_reason": approval.rejection_reason,
        "decided_by": approval.decided_by,
        "decided_via": approval.decided_via,
        "requested_at": approval.requested_at,
        "decided_at": approval.decided_at,
        "applied_at": approval.applied_at,
    }


# At most this many approvals are listed (decided ones: the most recent).
APPROVALS_LISTED = 200
DECIDED_SHOWN = 8
DECIDED_SCANNED = 1000


def approvals_for(who: Principal, state: str = Approval.PENDING, limit: int = APPROVALS_LISTED):
    """The approvals in `state` that `who` may decide (administrators: all); pending ones
    oldest request first, decided ones ("approved", "rejected" or "decided") latest first."""
    qs = Approval.objects.select_related("interaction", "interaction__agent")
    if state == Approval.PENDING:
        qs = qs.filter(state=state).order_by("requested_at", "id")
    else:
        states = [Approval.APPROVED, Approval.REJECTED] if state == "decided" else [state]
        # Decided approvals only grow: look at the most recent ones.
        qs = qs.filter(state__in=states).order_by("-decided_at", "-id")[:DECIDED_SCANNED]
    if who.sees_everything:
        return list(qs[:limit])
    # Approvers are a JSON list; SQLite has no JSON containment, so filter here.
    found = []
    for approval in qs.iterator():
        if may_decide_approval(who, approval):
            found.append(approval)
            if len(found) >= limit:
                break
    return found


def console_dict(who: Principal, now: datetime | None = None) -> dict[str, Any]:
    """Everything the supervisor console shows."""
    now = now or timezone.now()
    status = status_dict(who, now)
    waiting = visible_interactions(who, Interaction.objects.filter(status=State.QUEUED.value))
    totals = {
        row["queue"]: row["n"]
        for row in waiting.values("queue").annotate(n=Count("id")).order_by()
    }
    groups: dict[str, list[dict[str, Any]]] = {}
    for name in totals:
        groups[name] = []
        head = (
            waiting.filter(queue=name)
            .select_related("mailbox", "target_agent")
            .order_by("-priority", "arrival_time", "id")[:CONSOLE_QUEUE_SHOWN]
        )
        for ix in head:
            groups[name].append(
                {
                    "guid": ix.guid,
                    "subject": ix.subject,
                    "customer": ix.customer,
                    "customer_name": ix.customer_name,
                    "mailbox": ix.mailbox.address,
                    "priority": ix.priority,
                    "arrival_time": ix.arrival_time,
                    "waiting_seconds": _waiting(now, ix.arrival_time),
                    "target_agent": ix.target_agent.address if ix.target_agent_id else None,
                    "priority_reasons": list(ix.priority_reasons or []),
                    "rules": ix.rules if ix.rules is not None else {},
                }
                )
    agents = [{**a, "load": len(a["current"])} for a in status["agents"]]
    return {
        "now": now,
        "queues": [
            {"queue": q, "items": items, "total": totals[q]} for q, items in sorted(groups.items())
        ],
        "agents": agents,
        "approvals": [approval_dict(a) for a in approvals_for(who)],
        "decided": [approval_dict(a) for a in approvals_for(who, "decided", DECIDED_SHOWN)],
        "summary": status["summary"],
    }
