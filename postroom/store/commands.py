"""What people do to interactions from the web (or the API): hang up, transfer, resolve,
decide an approval, cut or heal a node's database link. Answering and Ready / Not Ready live in `postroom.store.agents`.

Each command checks who is asking, runs in one transaction, journals who did it and
returns the changed row, or raises `CommandError(message, status)` with an HTTP status
the API passes straight on (400 bad input, 403 not allowed, 404 unknown, 409 conflict:
someone or something else changed the row first).

State changes go through `store.transitions.apply` (CAS on the version). Decisions on
approvals are only recorded here: the engine sends the approved (or edited) reply, or
tells the agent about the rejection, and applies the transition when it does.
"""

from __future__ import annotations

from datetime import datetime
from email import message_from_bytes
from typing import Any

from django.db import connection, transaction
from django.db.models import BooleanField, ExpressionWrapper, F, Q
from django.db.models.functions import Now

from postroom.core.cluster import Link, Mode
from postroom.core.headers import POLICY
from postroom.core.lifecycle import HungUp, IllegalTransition, ReplyRetried, State, Transferred
from postroom.core.outbox import OutboxState
from postroom.store import audit, fence, journal
from postroom.store.models import (
    Agent,
    Approval,
    Interaction,
    Mailbox,
    Node,
    Outgoing,
    Rule,
    WrapUpCode,
)
from postroom.store.permissions import (
    Principal,
    Role,
    may_cut_links,
    may_decide_approval,
    may_handle,
    principal,
)
from postroom.store.transitions import StaleInteraction, apply

__all__ = [
    "CommandError",
    "forget_node",
    "decide_approval",
    "edit_reply",
    "end_failed_reply",
    "hang_up",
    "known_queues",
    "resend_reply",
    "set_link",
    "set_resolution",
    "transfer",
]

# States whose interaction may get a resolution code (it was replied to).
RESOLVABLE = frozenset({State.REPLIED, State.CLOSED})
DECISIONS = ("approve", "edit", "reject")


class CommandError(Exception):
    """A command refused: `message` for people, `status` for HTTP."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# --- who is asking (the rules themselves: postroom.store.permissions) --------------------


def _actor(user: Any) -> str:
    """How the journal names a user: their agent's address if they have one."""
    if isinstance(user, str):
        return user
    return principal(user).name or str(user)


def _require(user: Any, ix: Interaction, doing: str) -> Principal:
    who = principal(user)
    if not who.is_authenticated:
        raise CommandError("Log in first", 401)
    if not may_handle(who, ix):
        raise CommandError(
            f"Only the agent holding the interaction, its supervisor or an administrator may "
            f"{doing} it",
            403,
        )
    return who


def _apply(ix: Interaction, event: Any, now: datetime, **detail: Any) -> None:
    try:
        apply(ix, event, now, **detail)
    except IllegalTransition as exc:
        raise CommandError(f"Interaction {ix.guid} is {ix.status}: {exc}", 409) from None
    except StaleInteraction:
        raise CommandError(
            f"Interaction {ix.guid} was changed by someone else meanwhile; reload and retry", 409
        ) from None


def _wrapup_code(code: str | None) -> WrapUpCode:
    code = (code or "").strip()
    if not code:
        raise CommandError("A wrap-up code is required")
    found = WrapUpCode.objects.filter(code=code).first()
    if found is None:
        raise CommandError(f"Unknown wrap-up code {code!r}")
    return found


# --- hang up, resolve, transfer -------------------------------------------------------


def hang_up(ix: Interaction, *, by_user: Any, code: str, now: datetime) -> Interaction:
    """End the interaction without a reply (HungUp), with a wrap-up code.

    Only the agent holding it, a supervisor or staff. The engine clears the mailboxes.
    """
    who = _require(by_user, ix, "hang up")
    wrapup = _wrapup_code(code)
    with transaction.atomic():
        _apply(ix, HungUp(wrapup.code), now, by=_actor(by_user), code=wrapup.code)
        Interaction.objects.filter(pk=ix.pk).update(wrapup_code=wrapup.code)
        ix.wrapup_code = wrapup.code
        _audit(who, "hang_up", ix, now, code=wrapup.code)
    return ix


def _audit(who: Principal, action: str, ix: Interaction, now: datetime, **detail: Any) -> None:
    """Supervisors' and administrators' actions go to the audit trail too."""
    if who.at_least(Role.SUPERVISOR):
        audit.record(action, actor=who.name, target=str(ix.guid), at=now, **detail)


def set_resolution(ix: Interaction, *, by_user: Any, code: str, now: datetime) -> Interaction:
    """Record how a replied interaction was resolved (a wrap-up code); may be changed later."""
    who = _require(by_user, ix, "resolve")
    resolution = _wrapup_code(code)
    with transaction.atomic():
        # Conditional on the state, not the version: the engine closing the interaction
        # meanwhile (replied → closed) does not conflict with a resolution code.
        updated = Interaction.objects.filter(
            pk=ix.pk, status__in=[s.value for s in RESOLVABLE]
        ).update(resolution_code=resolution.code)
        if updated != 1:
            ix.refresh_from_db(fields=["status"])
            raise CommandError(
                f"Interaction {ix.guid} is {ix.status}: only a replied interaction gets a "
                "resolution code (hang up the others)",
                409,
            )
        previous = ix.resolution_code
        ix.resolution_code = resolution.code
        detail: dict[str, Any] = {"by": _actor(by_user), "code": resolution.code}
        if previous and previous != resolution.code:
            detail["previous"] = previous
        journal.record("resolution_set", now, interaction=ix, **detail)
        _audit(who, "resolution_set", ix, now, code=resolution.code)
    return ix


def known_queues() -> list[str]:
    """The queues an interaction can be transferred to: every skill an agent, a box or a
    routing rule names, every queue in use, and "unassigned"."""
    names: set[str] = {"unassigned"}
    for skills in Agent.objects.values_list("skills", flat=True):
        names.update(_skill_names(skills))
    for skills in Mailbox.objects.values_list("skills", flat=True):
        names.update(_skill_names(skills))
    for actions in Rule.objects.values_list("actions", flat=True):
        for action in actions or ():
            if isinstance(action, dict) and action.get("action") == "queue" and action.get("value"):
                names.add(str(action["value"]))
    names.update(Interaction.objects.values_list("queue", flat=True).distinct().order_by())
    return sorted(n for n in names if n)


def _skill_names(skills: object) -> list[str]:
    if isinstance(skills, dict):
        return [str(k) for k in skills]
    if isinstance(skills, list | tuple):
        return [str(k) for k in skills]
    return []


def transfer(
    ix: Interaction,
    *,
    by_user: Any,
    to_agent: str | None = None,
    to_queue: str | None = None,
    now: datetime,
) -> Interaction:
    """Hand the interaction to another agent (`to_agent`) or queue (`to_queue`).

    It goes back to QUEUED (Transferred) with `target_agent` set, so routing offers it to
    that agent next; or into the named queue for anyone with that skill. The agent who
    held it is released (and avoided by routing, unless named as the target).
    """
    who = _require(by_user, ix, "transfer")
    to_agent = (to_agent or "").strip() or None
    to_queue = (to_queue or "").strip() or None
    if (to_agent is None) == (to_queue is None):
        raise CommandError("Name exactly one target: an agent or a queue")
    target: Agent | None = None
    if to_agent is not None:
        target = Agent.objects.filter(address__iexact=to_agent).first()
        if target is None:
            raise CommandError(f"No agent {to_agent}", 404)
        if ix.agent_id == target.pk:
            raise CommandError(f"Interaction {ix.guid} is already with {target.address}", 409)
    elif to_queue not in known_queues():
        raise CommandError(f"No queue {to_queue!r}")
    previous = ix.agent.address if ix.agent_id else None
    detail: dict[str, Any] = {"by": _actor(by_user), "from_agent": previous, "from_queue": ix.queue}
    if target is not None:
        detail["to_agent"] = target.address
    else:
        detail["to_queue"] = to_queue
    with transaction.atomic():
        event = Transferred(agent=target.address if target else None, queue=to_queue)
        _apply(ix, event, now, **detail)
        # The row is ours until commit (apply's UPDATE holds it); the version moved on.
        changes: dict[str, Any]
        if target is not None:
            excluded = [a for a in ix.excluded_agents or [] if a.lower() != target.address.lower()]
            changes = {"target_agent": target, "excluded_agents": excluded}
        else:
            changes = {"queue": to_queue, "target_agent": None}
        Interaction.objects.filter(pk=ix.pk, version=ix.version).update(**changes)
        for name, value in changes.items():
            setattr(ix, name, value)
        _audit(who, "transfer", ix, now, **{k: v for k, v in detail.items() if k != "by"})
    return ix


# --- approvals ------------------------------------------------------------------------


def _writers(approval: Approval) -> set[str]:
    """Who wrote the held reply: the agent it was held for and the reply's sender."""
    ix = approval.interaction
    found = {approval.reply.sender.lower()} if approval.reply_id and approval.reply.sender else set()
    if ix.agent_id is not None:
        found.add(ix.agent.address.lower())
    return found


def decide_approval(
    approval: Approval,
    *,
    by_user: Any,
    decision: str,
    text: str | None = None,
    reason: str | None = None,
    via: str = "web",
    now: datetime,
) -> Approval:
    """Record an approver's decision on a held reply: "approve", "edit" (approve with
    `text` instead of the agent's wording) or "reject" (with a `reason`).

    Only a listed approver or an administrator, and never the reply's writer (403),
    whatever else they are. The first decision wins: a compare-and-set on state=pending,
    so a second one (from the web or by mail) gets 409. The interaction is not changed
    here; the engine acts on the decision.
    """
    if decision not in DECISIONS:
        raise CommandError(f"Unknown decision {decision!r}: approve, edit or reject")
    who = by_user if isinstance(by_user, str) else principal(by_user)
    if isinstance(who, Principal) and not who.is_authenticated:
        raise CommandError("Log in first", 401)
    if not may_decide_approval(who, approval):
        raise CommandError("Only a listed approver or an administrator may decide this", 403)
    text = (text or "").strip()
    reason = (reason or "").strip()
    if decision == "edit" and not text:
        raise CommandError("An edited approval needs the new reply text")
    if decision == "reject" and not reason:
        raise CommandError("A rejection needs a reason")
    decided_by = who if isinstance(who, str) else who.name
    if decided_by.lower() in _writers(approval):
        raise CommandError("The writer of a reply may not decide its approval", 403)
    state = Approval.REJECTED if decision == "reject" else Approval.APPROVED
    changes = {
        "state": state,
        "edited_text": text if decision == "edit" else "",
        "rejection_reason": reason if decision == "reject" else "",
        "decided_by": decided_by,
        "decided_via": via,
        "decided_at": now,
    }
    with transaction.atomic():
        won = Approval.objects.filter(pk=approval.pk, state=Approval.PENDING).update(**changes)
        if won != 1:
            approval.refresh_from_db()
            who = f" by {approval.decided_by}" if approval.decided_by else ""
            raise CommandError(f"Approval {approval.pk} is already {approval.state}{who}", 409)
        for name, value in changes.items():
            setattr(approval, name, value)
        # The same kinds the engine journals for a decision that arrives by mail.
        detail: dict[str, Any] = {"by": decided_by, "via": via, "approval": approval.pk}
        if decision == "reject":
            detail["reason"] = reason
        journal.record(f"approval_{decision}", now, interaction=approval.interaction, **detail)
        audit.record(
            f"approval_{decision}",
            actor=decided_by,
            target=str(approval.interaction.guid),
            via="mail" if via == "mail" else None,
            at=now,
            approval=approval.pk,
            **({"reason": reason} if decision == "reject" else {}),
        )
    return approval


# --- a reply the mail server refused for good (reply_failed) ----------------------------
# The customer has nothing (docs/decisions/0007: a dead row never left), so sending it
# again cannot double it. Supervisors and staff decide: send it as it was, send it with
# new text, or end the interaction with a wrap-up code.


def _require_supervisor(user: Any, ix: Interaction, doing: str) -> Principal:
    who = principal(user)
    if not who.is_authenticated:
        raise CommandError("Log in first", 401)
    if not (who.at_least(Role.SUPERVISOR) and may_handle(who, ix)):
        raise CommandError(
            f"Only the interaction's supervisor or an administrator may {doing} a failed reply", 403
        )
    return who


def resend_reply(ix: Interaction, *, by_user: Any, now: datetime, text: str | None = None) -> Interaction:
    """Send a failed reply again: as it was, or with `text` as its whole body (the
    headers, threading and Message-ID stay; attachments do not)."""
    who = _require_supervisor(by_user, ix, "resend" if text is None else "edit")
    with transaction.atomic():
        reply = Outgoing.objects.select_for_update().filter(interaction=ix, kind=Outgoing.REPLY).first()
        _apply(ix, ReplyRetried(edited=text is not None), now, by=_actor(by_user), edited=text is not None)
        if reply is None or reply.state != OutboxState.DEAD:
            raise CommandError(f"Interaction {ix.guid} has no failed reply to send", 409)
        changes: dict[str, Any] = {
            "state": OutboxState.PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "claimed_by": "",
            "lease_until": None,
        }
        if text is not None:
            changes["raw"] = _with_text(bytes(reply.raw), text)
        Outgoing.objects.filter(pk=reply.pk, state=OutboxState.DEAD).update(**changes)
        audit.record("reply_edited" if text is not None else "reply_resent", actor=who.name, target=str(ix.guid), at=now)
    return ix


def edit_reply(ix: Interaction, *, by_user: Any, text: str, now: datetime) -> Interaction:
    """Replace a failed reply's text, then send it."""
    text = (text or "").strip()
    if not text:
        raise CommandError("The edited reply needs its new text")
    return resend_reply(ix, by_user=by_user, now=now, text=text)


def end_failed_reply(ix: Interaction, *, by_user: Any, code: str, now: datetime) -> Interaction:
    """End an interaction whose reply failed, without a reply, with a wrap-up code."""
    who = _require_supervisor(by_user, ix, "end")
    if ix.state is not State.REPLY_FAILED:
        raise CommandError(f"Interaction {ix.guid} is {ix.status}, not reply_failed", 409)
    wrapup = _wrapup_code(code)
    with transaction.atomic():
        _apply(ix, HungUp(wrapup.code), now, by=_actor(by_user), code=wrapup.code, reply="failed")
        Interaction.objects.filter(pk=ix.pk).update(wrapup_code=wrapup.code)
        ix.wrapup_code = wrapup.code
        audit.record("failed_reply_ended", actor=who.name, target=str(ix.guid), at=now, code=wrapup.code)
    return ix


def _with_text(raw: bytes, text: str) -> bytes:
    msg = message_from_bytes(raw, policy=POLICY)
    for name in ("Content-Type", "Content-Transfer-Encoding", "MIME-Version"):
        del msg[name]
    msg.set_content(text.replace("\r\n", "\n"))  # type: ignore[attr-defined]
    return msg.as_bytes()


# --- nodes ----------------------------------------------------------------------------


def set_link(node_id: str, link: Link, *, by_user: Any, now: datetime) -> Node:
    """Ask for a node's database link to be cut or healed (`Node.link`); `postroom demo`
    carries it out on the relay it put in front of the node (devstack/dblink.py). A user
    must be a supervisor or an administrator; a string is the shell's operator (the CLI),
    who holds the database's address anyway."""
    if not isinstance(by_user, str) and not may_cut_links(principal(by_user)):
        raise CommandError("Only a supervisor or an administrator may cut or heal a node's link", 403)
    with transaction.atomic():
        node = Node.objects.select_for_update().filter(node_id=node_id).first()
        if node is None:
            raise CommandError(f"No node {node_id!r} on this database", 404)
        if node.link != link.value:
            node.link = link.value
            node.save(update_fields=["link"])
            audit.record(f"node_link_{link.value}", actor=_actor(by_user), target=node_id, at=now)
    return node


def forget_node(node_id: str, *, by_user: Any, now: datetime) -> bool:
    """The operator confirms that a node whose lease ran out is down for good (like a
    cluster's "confirm the node is dead"; docs/redundancy.md, "Forgetting a node"). The
    boxes the other nodes took from it in island mode go back to normal mode at their next
    tick, and their claims are released (engine/claims.py: a stopped node is accounted
    for). Refused while its heartbeat is live. True if forgotten now, False if it had
    stopped (cleanly, or forgotten) already.

    So that the node, should it come back after all, writes and sends nothing under its
    old registration: its database sessions are ended and its epoch raised (decision 0031:
    the fence refuses its writes; it must register again, as a new incarnation), and its
    outbox claims end now, so each of its rows in flight is settled from the journal box
    (decision 0007) before anyone sends it again."""
    if not isinstance(by_user, str) and not may_cut_links(principal(by_user)):
        raise CommandError("Only a supervisor or an administrator may forget a node", 403)
    live = ExpressionWrapper(Q(stopped_at=None, lease_until__gt=Now()), output_field=BooleanField())

    def look() -> Node:
        node = Node.objects.annotate(live=live).filter(node_id=node_id).first()
        if node is None:
            raise CommandError(f"No node {node_id!r} on this database", 404)
        if node.live:
            raise CommandError(
                f"node {node_id!r} is live: its heartbeat renewed its lease until {node.lease_until:%Y-%m-%d %H:%M:%S} "
                "UTC. Forget only a node that is down (stop it, or wait until its lease has run out)",
                409,
            )
        return node

    seen = look()
    if seen.stopped_at is not None:
        return False
    shared = connection.vendor == "postgresql"
    if shared:
        # A paused process's open transactions hold its row (FOR KEY SHARE): end them first.
        fence.end_sessions(node_id, seen.epoch)
    with transaction.atomic():
        if shared:
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '5s'")
        Node.objects.select_for_update().filter(node_id=node_id).first()
        node = look()  # under the lock: it may have renewed or registered meanwhile
        if node.stopped_at is not None:
            return False
        actor = _actor(by_user)
        Node.objects.filter(pk=node.pk, epoch=node.epoch).update(
            epoch=F("epoch") + 1,
            stopped_at=Now(),
            lease_until=Now(),
            mode=Mode.STOPPED.value,
            detail={"forgotten_by": actor, "forgotten_at": now.isoformat(), "forgotten_epoch": node.epoch},
        )
        ended = Outgoing.objects.filter(
            state=OutboxState.SENDING, claimed_by__startswith=f"{node_id}:", lease_until__gt=now
        ).update(lease_until=now)
        audit.record("node_forgotten", actor=actor, target=node_id, at=now, epoch=node.epoch, outbox_claims_ended=ended)
    return True
