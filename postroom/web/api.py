"""The REST API (django-ninja), mounted at /api/.

Schema: /api/openapi.json. Docs: /api/docs (Swagger UI served from the wheel, no CDN).
Auth: `Authorization: Bearer <token>` (tokens from `postroom.store.agents.issue_token`),
or a logged-in Django session (CSRF-checked for unsafe methods). `GET /api/status` is
also open to anonymous callers while the live page is (POSTROOM_WEB_LOGIN_REQUIRED off).
"""

from datetime import datetime, time
from typing import Any
from uuid import UUID

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
from postroom.store.models import Agent, Interaction, JournalEvent
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
    journal: list[JournalOut]


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


# --- permissions ----------------------------------------------------------------------


def _agent_of(user: Any) -> Agent | None:
    if getattr(user, "pk", None) is None:
        return None
    return Agent.objects.filter(user_id=user.pk).first()


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
    return get_object_or_404(Interaction.objects.select_related("mailbox", "agent"), guid=guid)


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
