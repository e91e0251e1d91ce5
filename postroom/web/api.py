"""The REST API (django-ninja), mounted at /api/.

Schema: /api/openapi.json. Docs: /api/docs (Swagger UI served from the wheel, no CDN).
Auth: `Authorization: Bearer <token>` (tokens from `postroom.store.agents.issue_token`),
or a logged-in Django session (CSRF-checked for unsafe methods). `GET /api/status` is
also open to anonymous callers while the live page is (POSTROOM_WEB_LOGIN_REQUIRED off).

People's actions (hang up, transfer, resolution, approval decisions) go through
`postroom.store.commands`; a refusal there (`CommandError`) comes back as {"detail": ...}
with its status. GET /api/me feeds the agent bar, GET /api/console the supervisor console.
"""

import email
import email.policy
import html
import re
from datetime import datetime, time, timedelta
from typing import Any, Literal
from uuid import UUID

import nh3
from django.conf import settings
from django.db.models import Count, Prefetch
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from ninja import NinjaAPI, Schema
from ninja.errors import AuthenticationError, HttpError
from ninja.openapi.docs import Swagger
from ninja.pagination import LimitOffsetPagination, paginate
from ninja.security import HttpBearer
from ninja.security.apikey import APIKeyCookie
from ninja.utils import check_csrf

from postroom.core.lifecycle import WITH_AGENT, State
from postroom.store import agents as agent_state
from postroom.store import commands
from postroom.store.commands import CommandError
from postroom.store.models import Agent, Approval, Interaction, JournalEvent, WrapUpCode
from postroom.web.access import login_required_for_monitoring

# --- authentication -------------------------------------------------------------------


class BearerToken(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Any:
        return agent_state.user_for_token(token)


class Session(APIKeyCookie):
    """A logged-in Django session; CSRF-checked, but only once a user is logged in.

    (ninja's SessionAuth checks CSRF first, so an anonymous POST would get 403 "CSRF"
    where 401 "not authenticated" is the truth.)
    """

    param_name = settings.SESSION_COOKIE_NAME

    def __call__(self, request: HttpRequest) -> Any:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None
        if self.csrf and not getattr(request, "_ninja_csrf_exempt", False) and check_csrf(request):
            raise HttpError(403, "CSRF check failed")
        return user

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:  # pragma: no cover
        return self(request)


class OpenMonitoring:
    """Lets anyone read /api/status while the live page needs no login (the local demo)."""

    def __call__(self, request: HttpRequest) -> Any:
        if login_required_for_monitoring():
            return None
        return _Anonymous()


class _Anonymous:
    """request.auth for an anonymous monitor: truthy, and no user."""

    is_authenticated = False
    is_staff = False
    pk = None


class LocalSwagger(Swagger):
    """Swagger UI from the JS/CSS shipped inside django-ninja (the machine has no internet)."""

    def render_page(self, request: HttpRequest, api: NinjaAPI, **kwargs: Any) -> HttpResponse:
        self.settings["url"] = self.get_openapi_url(api, kwargs)
        return render(
            request,
            "postroom/api_docs.html",
            {"api": api, "swagger_settings": dict(self.settings)},
        )


bearer = BearerToken()
session = Session()

api = NinjaAPI(
    title="Postroom API",
    version="1",
    description="Queue, agents and interactions of the Postroom email contact center.",
    urls_namespace="api",
    auth=[bearer, session],
    docs=LocalSwagger(),
    docs_url="/docs",
    openapi_url="/openapi.json",
)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    response = api.create_response(
        request,
        {"detail": "Authentication required: send 'Authorization: Bearer <token>'"},
        status=401,
    )
    response["WWW-Authenticate"] = 'Bearer realm="postroom"'
    return response


@api.exception_handler(CommandError)
def _command_refused(request: HttpRequest, exc: CommandError) -> HttpResponse:
    return api.create_response(request, {"detail": exc.message}, status=exc.status)


# --- schemas --------------------------------------------------------------------------


class Error(Schema):
    detail: str


class InteractionRef(Schema):
    guid: UUID
    subject: str
    status: str


class AgentOut(Schema):
    name: str
    address: str
    ready: bool
    skills: list[str]
    auto_answer: bool
    is_supervisor: bool
    capacity: int
    state_changed_at: datetime | None
    current: list[InteractionRef]


class QueueItem(Schema):
    guid: UUID
    subject: str
    customer: str
    customer_name: str
    mailbox: str
    priority: int
    arrival_time: datetime
    waiting_seconds: int


class Summary(Schema):
    queued: int
    with_agents: int
    replied_today: int


class StatusOut(Schema):
    now: datetime
    queue: list[QueueItem]
    agents: list[AgentOut]
    counts: dict[str, int]
    summary: Summary


class InteractionOut(Schema):
    guid: UUID
    subject: str
    customer: str
    mailbox: str
    priority: int
    status: str
    agent: str | None
    arrival_time: datetime


class JournalOut(Schema):
    at: datetime
    kind: str
    agent: str | None
    detail: dict[str, Any]


class InteractionDetail(Schema):
    """The tracking record of fig. 3, with its journal."""

    guid: UUID
    node_id: str
    mailbox: str
    message_id: str
    to: str
    reply_to: str
    customer: str
    customer_name: str
    subject: str
    arrival_time: datetime
    auto_response_sent_at: datetime | None
    auto_response_skipped: str
    priority: int
    status: str
    agent: str | None
    routed_at: datetime | None
    answered_at: datetime | None
    delivered_at: datetime | None
    replied_at: datetime | None
    closed_at: datetime | None
    deliveries: int
    approval: bool
    claim_node: str
    claim_time: datetime | None
    version: int
    queue: str
    target_agent: str | None
    excluded_agents: list[str]
    priority_reasons: list[Any]
    rules: Any
    offer_due_at: datetime | None
    no_reply_due_at: datetime | None
    ended_at: datetime | None
    outcome: str
    wrapup_code: str
    resolution_code: str
    journal: list[JournalOut]


class WrapUpCodeOut(Schema):
    code: str
    label: str


class CodeIn(Schema):
    code: str


class TransferIn(Schema):
    agent: str | None = None
    queue: str | None = None


class ApproveIn(Schema):
    text: str | None = None


class RejectIn(Schema):
    reason: str


class ApprovalOut(Schema):
    id: int
    interaction: UUID
    subject: str
    customer: str
    customer_name: str
    agent: str | None
    agent_name: str | None
    approvers: list[str]
    reason_held: str
    state: str
    reply_subject: str
    text: str
    edited_text: str
    rejection_reason: str
    decided_by: str
    decided_via: str
    requested_at: datetime
    decided_at: datetime | None
    applied_at: datetime | None


class DeskItem(Schema):
    guid: UUID
    subject: str
    customer: str
    customer_name: str
    mailbox: str
    queue: str
    priority: int
    status: str
    arrival_time: datetime
    routed_at: datetime | None
    answered_at: datetime | None
    replied_at: datetime | None
    waiting_seconds: int
    wrapup_code: str
    resolution_code: str


class DeskOut(Schema):
    """The agent bar of the logged-in agent."""

    now: datetime
    agent: AgentOut
    offered: list[DeskItem]
    current: list[DeskItem]
    replied: list[DeskItem]


class QueuedOut(Schema):
    guid: UUID
    subject: str
    customer: str
    customer_name: str
    mailbox: str
    priority: int
    arrival_time: datetime
    waiting_seconds: int
    target_agent: str | None
    priority_reasons: list[Any]
    rules: Any


class QueueGroup(Schema):
    queue: str
    items: list[QueuedOut]


class ConsoleAgent(AgentOut):
    load: int


class ConsoleOut(Schema):
    """The supervisor console: queues with the why, agents with load, approvals."""

    now: datetime
    queues: list[QueueGroup]
    agents: list[ConsoleAgent]
    approvals: list[ApprovalOut]
    decided: list[ApprovalOut]
    summary: Summary


# --- serialisers (plain dicts: one shape for the API and the server-rendered page) -----


def _agents_with_current():
    current = Interaction.objects.filter(status__in=[s.value for s in WITH_AGENT]).order_by(
        "routed_at", "id"
    )
    return Agent.objects.prefetch_related(Prefetch("interactions", current, to_attr="current"))


def agent_dict(agent: Agent) -> dict[str, Any]:
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
            {"guid": ix.guid, "subject": ix.subject, "status": ix.status} for ix in current
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


def status_dict(now: datetime | None = None) -> dict[str, Any]:
    """Everything the live page shows: the queue, the agents, counts by status."""
    now = now or timezone.now()
    queued = (
        Interaction.objects.filter(status=State.QUEUED.value)
        .select_related("mailbox")
        .order_by("-priority", "arrival_time", "id")
    )
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
        "agents": [agent_dict(a) for a in _agents_with_current()],
        "counts": counts,
        "summary": {
            "queued": counts[State.QUEUED.value],
            "with_agents": sum(counts[s.value] for s in WITH_AGENT),
            "replied_today": Interaction.objects.filter(replied_at__gte=midnight).count(),
        },
    }


def _waiting(now: datetime, since: datetime | None) -> int:
    return max(0, int((now - since).total_seconds())) if since else 0


def desk_item(ix: Interaction, now: datetime) -> dict[str, Any]:
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
    }


# How far back "recently replied" reaches on the agent bar, and how many it shows.
RECENT_REPLIES = timedelta(days=1)
RECENT_REPLIES_SHOWN = 10


def desk_dict(agent: Agent, now: datetime | None = None) -> dict[str, Any]:
    """What the agent bar shows: offers, interactions in hand, recent replies."""
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
        "agent": agent_dict(agent),
        "offered": [desk_item(ix, now) for ix in held if ix.status == State.ROUTED.value],
        "current": [desk_item(ix, now) for ix in held if ix.status != State.ROUTED.value],
        "replied": [desk_item(ix, now) for ix in replied],
    }


_BLOCK_END = re.compile(r"(?i)<br\s*/?>|</(p|div|li|tr|h[1-6]|blockquote)\s*>")


def html_to_text(markup: str) -> str:
    """Readable text of an HTML body: tags dropped (script/style with their content)."""
    marked = _BLOCK_END.sub(lambda m: m.group(0) + "\n", markup)
    text = html.unescape(nh3.clean(marked, tags=set()))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def reply_text(raw: bytes | memoryview) -> tuple[str, str]:
    """(subject, text) of a held reply, for the approver to read (and edit)."""
    msg = email.message_from_bytes(bytes(raw), policy=email.policy.default)
    try:
        subject = str(msg.get("subject", "") or "")
    except (ValueError, TypeError):  # a header the parser could not make sense of
        subject = ""
    body = msg.get_body(("plain", "html"))
    if body is None:
        return subject, ""
    try:
        content = body.get_content()
    except (LookupError, UnicodeError, KeyError, AssertionError):
        payload = body.get_payload(decode=True) or b""
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)
    if body.get_content_type() == "text/html":
        content = html_to_text(content)
    return subject, content.strip()


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


def approvals_for(user: Any, state: str = Approval.PENDING, limit: int = APPROVALS_LISTED):
    """The approvals in `state` that `user` may decide (staff: all); pending ones oldest
    request first, decided ones ("approved", "rejected" or "decided") latest first."""
    qs = Approval.objects.select_related("interaction", "interaction__agent")
    if state == Approval.PENDING:
        qs = qs.filter(state=state).order_by("requested_at", "id")
    else:
        states = [Approval.APPROVED, Approval.REJECTED] if state == "decided" else [state]
        # Decided approvals only grow: look at the most recent ones.
        qs = qs.filter(state__in=states).order_by("-decided_at", "-id")[:DECIDED_SCANNED]
    if user.is_staff:
        return list(qs[:limit])
    address = commands.approver_address(user)
    if not address:
        return []
    # Approvers are a JSON list; SQLite has no JSON containment, so filter here.
    found = []
    for approval in qs.iterator():
        if commands.may_see_approval(address, approval):
            found.append(approval)
            if len(found) >= limit:
                break
    return found


def console_dict(user: Any, now: datetime | None = None) -> dict[str, Any]:
    """Everything the supervisor console shows."""
    now = now or timezone.now()
    status = status_dict(now)
    queued = (
        Interaction.objects.filter(status=State.QUEUED.value)
        .select_related("mailbox", "target_agent")
        .order_by("-priority", "arrival_time", "id")
    )
    groups: dict[str, list[dict[str, Any]]] = {}
    for ix in queued:
        groups.setdefault(ix.queue, []).append(
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
        "queues": [{"queue": q, "items": items} for q, items in sorted(groups.items())],
        "agents": agents,
        "approvals": [approval_dict(a) for a in approvals_for(user)],
        "decided": [approval_dict(a) for a in approvals_for(user, "decided", DECIDED_SHOWN)],
        "summary": status["summary"],
    }


# --- permissions ----------------------------------------------------------------------


def _agent_of(user: Any) -> Agent | None:
    return commands.agent_of(user)


def _require_supervisor(user: Any) -> None:
    if not commands.is_supervisor(user):
        raise HttpError(403, "Only supervisors and staff may see this")


def _may_change(user: Any, agent: Agent) -> bool:
    """The agent's own user, a supervisor agent's user, or a staff user."""
    if getattr(user, "pk", None) is None:
        return False
    if user.is_staff or agent.user_id == user.pk:
        return True
    return Agent.objects.filter(user_id=user.pk, is_supervisor=True).exists()


# --- endpoints ------------------------------------------------------------------------


@api.get(
    "/status",
    response=StatusOut,
    auth=[bearer, session, OpenMonitoring()],
    url_name="status",
    summary="Queue, agents and counts (what the live page shows)",
)
def status(request: HttpRequest):
    return status_dict()


@api.get("/agents", response=list[AgentOut], url_name="agents", summary="All agents")
def list_agents(request: HttpRequest):
    return [agent_dict(a) for a in _agents_with_current()]


@api.get(
    "/agents/{address}",
    response={200: AgentOut, 404: Error},
    url_name="agent",
    summary="One agent, by address",
)
def get_agent(request: HttpRequest, address: str):
    return agent_dict(get_object_or_404(_agents_with_current(), address__iexact=address))


def _set_ready(request: HttpRequest, address: str, ready: bool):
    agent = get_object_or_404(Agent, address__iexact=address)
    if not _may_change(request.auth, agent):
        raise HttpError(403, "Only the agent, a supervisor or staff may change this agent's state")
    agent_state.set_ready(agent, ready, now=timezone.now(), by=request.auth)
    return agent_dict(agent)


@api.post(
    "/agents/{address}/ready",
    response={200: AgentOut, 403: Error, 404: Error},
    url_name="agent-ready",
    summary="Make the agent Ready",
)
def make_ready(request: HttpRequest, address: str):
    return _set_ready(request, address, True)


@api.post(
    "/agents/{address}/not-ready",
    response={200: AgentOut, 403: Error, 404: Error},
    url_name="agent-not-ready",
    summary="Make the agent Not Ready",
)
def make_not_ready(request: HttpRequest, address: str):
    return _set_ready(request, address, False)


@api.get(
    "/interactions",
    response=list[InteractionOut],
    url_name="interactions",
    summary="Interactions, newest first, optionally by status",
)
@paginate(LimitOffsetPagination)
def list_interactions(request: HttpRequest, status: State | None = None):
    qs = Interaction.objects.select_related("mailbox", "agent").order_by("-arrival_time", "-id")
    if status is not None:
        qs = qs.filter(status=status.value)
    return _Serialised(qs)


class _Serialised:
    """A lazily sliced queryset whose items come out as API dicts (for the paginator)."""

    def __init__(self, qs):
        self.qs = qs

    def __getitem__(self, key):
        return [interaction_dict(ix) for ix in self.qs[key]]

    def __len__(self) -> int:
        return self.qs.count()


def _interaction(guid: UUID) -> Interaction:
    return get_object_or_404(
        Interaction.objects.select_related("mailbox", "agent", "target_agent"), guid=guid
    )


@api.get(
    "/interactions/{guid}",
    response={200: InteractionDetail, 404: Error},
    url_name="interaction",
    summary="One interaction: every fig. 3 field and its journal",
)
def get_interaction(request: HttpRequest, guid: UUID):
    return interaction_detail(_interaction(guid))


@api.post(
    "/interactions/{guid}/answer",
    response={200: InteractionDetail, 403: Error, 404: Error, 409: Error},
    url_name="interaction-answer",
    summary="Answer an interaction offered (routed) to you",
)
def answer_interaction(request: HttpRequest, guid: UUID):
    agent = _agent_of(request.auth)
    if agent is None:
        raise HttpError(403, "Only an agent can answer; this user is not linked to an agent")
    ix = _interaction(guid)
    if not agent_state.answer(ix, agent, now=timezone.now()):
        ix.refresh_from_db()
        if ix.agent_id != agent.pk:
            why = "it is not routed to you"
        else:
            why = f"it is {ix.status}, not routed"
        raise HttpError(409, f"Cannot answer interaction {guid}: {why}")
    return interaction_detail(ix)


@api.post(
    "/interactions/{guid}/hangup",
    response={200: InteractionDetail, 400: Error, 403: Error, 404: Error, 409: Error},
    url_name="interaction-hangup",
    summary="End an interaction without a reply, with a wrap-up code",
)
def hang_up_interaction(request: HttpRequest, guid: UUID, payload: CodeIn):
    ix = commands.hang_up(
        _interaction(guid), by_user=request.auth, code=payload.code, now=timezone.now()
    )
    return interaction_detail(_interaction(ix.guid))


@api.post(
    "/interactions/{guid}/transfer",
    response={200: InteractionDetail, 400: Error, 403: Error, 404: Error, 409: Error},
    url_name="interaction-transfer",
    summary="Transfer an interaction to an agent or a queue (exactly one)",
)
def transfer_interaction(request: HttpRequest, guid: UUID, payload: TransferIn):
    ix = commands.transfer(
        _interaction(guid),
        by_user=request.auth,
        to_agent=payload.agent,
        to_queue=payload.queue,
        now=timezone.now(),
    )
    return interaction_detail(_interaction(ix.guid))


@api.post(
    "/interactions/{guid}/resolution",
    response={200: InteractionDetail, 400: Error, 403: Error, 404: Error, 409: Error},
    url_name="interaction-resolution",
    summary="Set the resolution code of a replied interaction",
)
def resolve_interaction(request: HttpRequest, guid: UUID, payload: CodeIn):
    ix = commands.set_resolution(
        _interaction(guid), by_user=request.auth, code=payload.code, now=timezone.now()
    )
    return interaction_detail(_interaction(ix.guid))


@api.get(
    "/wrapup-codes",
    response=list[WrapUpCodeOut],
    url_name="wrapup-codes",
    summary="The wrap-up (and resolution) codes",
)
def list_wrapup_codes(request: HttpRequest):
    return [
        {"code": c.code, "label": c.label} for c in WrapUpCode.objects.order_by("label", "code")
    ]


@api.get(
    "/me",
    response={200: DeskOut, 403: Error},
    url_name="me",
    summary="The agent bar of the calling agent: offers, interactions in hand, recent replies",
)
def my_desk(request: HttpRequest):
    agent = _agent_of(request.auth)
    if agent is None:
        raise HttpError(403, "This user is not linked to an agent")
    return desk_dict(agent)


@api.get(
    "/console",
    response={200: ConsoleOut, 403: Error},
    url_name="console",
    summary="The supervisor console: queues with priority reasons, agents, approvals",
)
def console(request: HttpRequest):
    _require_supervisor(request.auth)
    return console_dict(request.auth)


@api.get(
    "/approvals",
    response=list[ApprovalOut],
    url_name="approvals",
    summary="Approvals you may decide (staff: all), with the reply text",
)
def list_approvals(
    request: HttpRequest, state: Literal["pending", "approved", "rejected"] = "pending"
):
    return [approval_dict(a) for a in approvals_for(request.auth, state)]


def _approval(approval_id: int) -> Approval:
    return get_object_or_404(
        Approval.objects.select_related("interaction", "interaction__agent"), pk=approval_id
    )


@api.post(
    "/approvals/{approval_id}/approve",
    response={200: ApprovalOut, 400: Error, 403: Error, 404: Error, 409: Error},
    url_name="approval-approve",
    summary="Approve a held reply; with `text`, approve your edited wording instead",
)
def approve(request: HttpRequest, approval_id: int, payload: ApproveIn | None = None):
    text = payload.text if payload is not None else None
    approval = commands.decide_approval(
        _approval(approval_id),
        by_user=request.auth,
        decision="approve" if text is None else "edit",
        text=text,
        now=timezone.now(),
    )
    return approval_dict(approval)


@api.post(
    "/approvals/{approval_id}/reject",
    response={200: ApprovalOut, 400: Error, 403: Error, 404: Error, 409: Error},
    url_name="approval-reject",
    summary="Reject a held reply, with a reason for the agent",
)
def reject(request: HttpRequest, approval_id: int, payload: RejectIn):
    approval = commands.decide_approval(
        _approval(approval_id),
        by_user=request.auth,
        decision="reject",
        reason=payload.reason,
        now=timezone.now(),
    )
    return approval_dict(approval)


# --- replies the mail server refused for good (own module, own router) ---------------------

from postroom.web.failed_replies import router as failed_replies_router  # noqa: E402

api.add_router("/failed-replies", failed_replies_router)
