"""Who may see and do what: the one permission layer for the pages, the API and the commands.

Three roles, from the user's rows (no Django groups to keep in step):

- **agent**: a user linked to an `Agent`; sees and acts on the interactions it holds
  (`Interaction.agent`), reads (journal, transcripts, reports) everything of the incoming
  boxes granted to it or to its groups, and changes its own Ready state;
- **supervisor**: linked to an agent with ``is_supervisor``; sees and acts on everything
  of the agents it oversees and of the boxes granted to it or its groups; a supervisor
  given no box watches the unassigned queue of every box (as an agent naming no
  supervisor is overseen by every supervisor). Decides the approvals it is an approver of;
- **administrator**: an active staff user (the admin site's own test); sees everything.

"Oversees" follows the approval rule of fig. 10 566: an agent's supervisors are those its
configuration names, or every supervisor when it names none (the same rule that picks who
approves its replies). A supervisor oversees itself too.

Box rights (issue 11, decision 0022) are granted in the configuration (`boxes` on an agent,
`[[groups]]`) or the admin. They widen what a principal reads; they never take away what
it holds: the agent an interaction was routed to always sees it.

Everything here answers from a `Principal` built once per request (`principal(user)`), so
a page that checks ten rows does not look the user's agent up ten times. The web turns a
refusal into 401/403 (`postroom.web.access`); the commands into `CommandError`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Q, QuerySet

from postroom.store.models import Agent, Approval, Interaction, Mailbox

__all__ = [
    "Principal",
    "Role",
    "agents_overseen",
    "boxes_granted",
    "may_change_agent",
    "may_cut_links",
    "may_decide_approval",
    "may_evaluate",
    "may_handle",
    "may_see",
    "may_see_agent",
    "principal",
    "readable_boxes",
    "visible_agents",
    "visible_interactions",
]


class Role(enum.IntEnum):
    """Ordered: each role may do what the roles below it may (on what it can see)."""

    ANONYMOUS = 0
    AGENT = 1
    SUPERVISOR = 2
    ADMINISTRATOR = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Principal:
    """Who is asking: the user, the agent it is linked to (if any), its role."""

    user: Any
    agent: Agent | None
    role: Role
    # Agent ids this principal oversees (a supervisor); empty for the others.
    overseen: frozenset[int] = field(default_factory=frozenset)
    # Incoming box ids granted to it or its groups (decision 0022).
    boxes: frozenset[int] = field(default_factory=frozenset)

    @property
    def is_authenticated(self) -> bool:
        return self.user is not None

    @property
    def sees_everything(self) -> bool:
        return self.role >= Role.ADMINISTRATOR

    @property
    def address(self) -> str | None:
        return self.agent.address if self.agent is not None else None

    def at_least(self, role: Role) -> bool:
        return self.role >= role

    @property
    def name(self) -> str:
        """How the journal and the audit trail name this principal."""
        if self.agent is not None:
            return self.agent.address
        get_username = getattr(self.user, "get_username", None)
        return get_username() if callable(get_username) else ""


ANONYMOUS = Principal(user=None, agent=None, role=Role.ANONYMOUS)


def principal(user: Any) -> Principal:
    """The principal of a Django user (anonymous, inactive or None: ANONYMOUS)."""
    if isinstance(user, Principal):
        return user
    if (
        user is None
        or not getattr(user, "is_authenticated", False)
        or not getattr(user, "is_active", False)
        or getattr(user, "pk", None) is None
    ):
        return ANONYMOUS
    agent = Agent.objects.filter(user_id=user.pk).first()
    if user.is_staff:
        return Principal(user=user, agent=agent, role=Role.ADMINISTRATOR)
    if agent is None:
        # A login with neither an agent nor staff rights: it may log in, and see nothing.
        return Principal(user=user, agent=None, role=Role.ANONYMOUS)
    boxes = boxes_granted(agent)
    if agent.is_supervisor:
        return Principal(
            user=user,
            agent=agent,
            role=Role.SUPERVISOR,
            overseen=agents_overseen(agent),
            boxes=boxes,
        )
    return Principal(user=user, agent=agent, role=Role.AGENT, boxes=boxes)


def boxes_granted(agent: Agent) -> frozenset[int]:
    """The ids of the incoming boxes granted to `agent` directly or through its groups."""
    ids = (
        Mailbox.objects.filter(Q(readers=agent) | Q(groups__members=agent))
        .values_list("pk", flat=True)
        .distinct()
    )
    return frozenset(ids)


def agents_overseen(supervisor: Agent) -> frozenset[int]:
    """The ids of the agents `supervisor` oversees: those naming it, those naming nobody,
    and itself."""
    if not supervisor.is_supervisor:
        return frozenset({supervisor.pk})
    named_anyone = Agent.supervisors.through.objects.values("from_agent_id")
    ids = Agent.objects.filter(
        Q(supervisors=supervisor) | ~Q(pk__in=named_anyone) | Q(pk=supervisor.pk)
    ).values_list("pk", flat=True)
    return frozenset(ids)


# --- interactions -----------------------------------------------------------------------


def _handled(who: Principal) -> Q | None:
    """What `who` may act on, as a filter (None: everything)."""
    if who.sees_everything:
        return None
    if who.role >= Role.SUPERVISOR:
        theirs = Q(agent_id__in=who.overseen)
        if who.boxes:
            return theirs | Q(mailbox_id__in=who.boxes)
        return theirs | Q(agent__isnull=True)
    if who.role >= Role.AGENT and who.agent is not None:
        return Q(agent_id=who.agent.pk)
    return Q(pk__in=[])


def visible_interactions(who: Principal, qs: QuerySet[Interaction]) -> QuerySet[Interaction]:
    """The interactions of `qs` that `who` may see (and read: journal, transcript,
    reports): what it may act on, and everything of the boxes granted to it."""
    handled = _handled(who)
    if handled is None:
        return qs
    if who.role >= Role.AGENT and who.boxes:
        handled |= Q(mailbox_id__in=who.boxes)
    return qs.filter(handled)


def may_handle(who: Principal, ix: Interaction) -> bool:
    """See the interaction and act on it (hang up, transfer, resolve): the agent holding
    it; a supervisor overseeing that agent, or granted its box (a supervisor given no box:
    any supervisor while nobody holds it); an administrator."""
    if who.sees_everything:
        return True
    if who.role >= Role.SUPERVISOR:
        if ix.agent_id is not None and ix.agent_id in who.overseen:
            return True
        if who.boxes:
            return ix.mailbox_id in who.boxes
        return ix.agent_id is None
    return who.agent is not None and ix.agent_id == who.agent.pk


def may_see(who: Principal, ix: Interaction) -> bool:
    """Read the interaction (its record, transcript, attachments, history): whoever may
    handle it, and an agent granted its box."""
    if may_handle(who, ix):
        return True
    return who.role >= Role.AGENT and ix.mailbox_id in who.boxes


def may_cut_links(who: Principal) -> bool:
    """Cut or heal a node's database link (the demo's relays, docs/redundancy.md): it
    stops a node's work for the whole site, so supervisors and administrators only."""
    return who.at_least(Role.SUPERVISOR)


def may_evaluate(who: Principal, ix: Interaction) -> bool:
    """Score it (iceJournal's evaluate): a supervisor who may handle it, an administrator."""
    return who.at_least(Role.SUPERVISOR) and may_handle(who, ix)


def readable_boxes(who: Principal, qs: QuerySet[Mailbox]) -> QuerySet[Mailbox]:
    """The incoming boxes `who` may pick in the journal and the reports: every box for an
    administrator and for a supervisor given none; else the boxes granted."""
    qs = qs.filter(kind=Mailbox.INCOMING)
    if who.sees_everything or (who.role >= Role.SUPERVISOR and not who.boxes):
        return qs
    if who.role >= Role.AGENT:
        return qs.filter(pk__in=who.boxes)
    return qs.none()


# --- agents -----------------------------------------------------------------------------


def visible_agents(who: Principal, qs: QuerySet[Agent]) -> QuerySet[Agent]:
    if who.sees_everything:
        return qs
    if who.role >= Role.SUPERVISOR:
        return qs.filter(pk__in=who.overseen)
    if who.agent is not None:
        return qs.filter(pk=who.agent.pk)
    return qs.none()


def may_see_agent(who: Principal, agent: Agent) -> bool:
    if who.sees_everything:
        return True
    if who.role >= Role.SUPERVISOR:
        return agent.pk in who.overseen
    return who.agent is not None and who.agent.pk == agent.pk


# Changing an agent's Ready state is open to exactly those who may see the agent.
may_change_agent = may_see_agent


# --- approvals --------------------------------------------------------------------------


def may_decide_approval(who: Principal | str, approval: Approval) -> bool:
    """A listed approver (a principal, or an address for decisions that arrive by mail),
    or an administrator."""
    if isinstance(who, str):
        address = who
    else:
        if who.sees_everything:
            return True
        if who.role < Role.SUPERVISOR or who.address is None:
            return False
        address = who.address
    return address.lower() in {str(a).lower() for a in approval.approvers or []}
