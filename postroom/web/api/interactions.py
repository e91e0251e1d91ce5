"""Interactions: list, one (fig. 3 and its journal), answer, hang up, transfer, resolve."""

from __future__ import annotations

from uuid import UUID

from django.http import HttpRequest
from django.utils import timezone
from ninja import Query
from ninja.errors import HttpError

from postroom.core.lifecycle import State
from postroom.store import agents as agent_state
from postroom.store import commands
from postroom.store.models import Interaction
from postroom.store.permissions import Role, visible_interactions
from postroom.web.access import allow, interaction_for, principal_of
from postroom.web.api.router import Router
from postroom.web.api.schemas import (
    CodeIn,
    InteractionDetail,
    InteractionPage,
    TransferIn,
    answers,
)
from postroom.web.presenters import interaction_detail, interaction_dict

router = Router(tags=["interactions"])

PAGE_MAX = 500
# Far beyond any real backlog, and far inside every database's integer range.
OFFSET_MAX = 1_000_000_000


@router.get(
    "/interactions",
    response=answers(InteractionPage, 422),
    url_name="interactions",
    summary="The interactions you may see, newest first, optionally by status",
)
@allow(Role.AGENT)
def list_interactions(
    request: HttpRequest,
    status: State | None = None,
    limit: int = Query(100, ge=1, le=PAGE_MAX),
    offset: int = Query(0, ge=0, le=OFFSET_MAX),
):
    qs = visible_interactions(principal_of(request), Interaction.objects.all())
    if status is not None:
        qs = qs.filter(status=status.value)
    page = qs.select_related("mailbox", "agent").order_by("-arrival_time", "-id")
    return {
        "items": [interaction_dict(ix) for ix in page[offset : offset + limit]],
        "count": qs.count(),
    }


@router.get(
    "/interactions/{guid}",
    response=answers(InteractionDetail, 404, 422),
    url_name="interaction",
    summary="One interaction: every fig. 3 field and its journal",
)
@allow(Role.AGENT)
def get_interaction(request: HttpRequest, guid: UUID):
    return interaction_detail(interaction_for(request, guid, read=True))


@router.post(
    "/interactions/{guid}/answer",
    response=answers(InteractionDetail, 404, 409, 422),
    url_name="interaction-answer",
    summary="Answer an interaction offered (routed) to you",
)
@allow(Role.AGENT)
def answer_interaction(request: HttpRequest, guid: UUID):
    ix = interaction_for(request, guid)
    agent = principal_of(request).agent
    if agent is None:
        raise HttpError(403, "Only an agent can answer; this user is not linked to an agent")
    if not agent_state.answer(ix, agent, now=timezone.now()):
        ix.refresh_from_db()
        why = "it is not routed to you" if ix.agent_id != agent.pk else f"it is {ix.status}"
        raise HttpError(409, f"Cannot answer interaction {guid}: {why}")
    return interaction_detail(ix)


@router.post(
    "/interactions/{guid}/hangup",
    response=answers(InteractionDetail, 400, 404, 409, 422),
    url_name="interaction-hangup",
    summary="End an interaction without a reply, with a wrap-up code",
)
@allow(Role.AGENT)
def hang_up_interaction(request: HttpRequest, guid: UUID, payload: CodeIn):
    ix = commands.hang_up(
        interaction_for(request, guid), by_user=request.auth, code=payload.code, now=timezone.now()
    )
    return interaction_detail(interaction_for(request, ix.guid))


@router.post(
    "/interactions/{guid}/transfer",
    response=answers(InteractionDetail, 400, 404, 409, 422),
    url_name="interaction-transfer",
    summary="Transfer an interaction to an agent or a queue (exactly one)",
)
@allow(Role.AGENT)
def transfer_interaction(request: HttpRequest, guid: UUID, payload: TransferIn):
    ix = commands.transfer(
        interaction_for(request, guid),
        by_user=request.auth,
        to_agent=payload.agent,
        to_queue=payload.queue,
        now=timezone.now(),
    )
    # After a transfer the interaction is queued again: its former agent may no longer
    # see it, so answer with what was done rather than a fresh permission check.
    ix.refresh_from_db()
    return interaction_detail(ix)


@router.post(
    "/interactions/{guid}/resolution",
    response=answers(InteractionDetail, 400, 404, 409, 422),
    url_name="interaction-resolution",
    summary="Set the resolution code of a replied interaction",
)
@allow(Role.AGENT)
def resolve_interaction(request: HttpRequest, guid: UUID, payload: CodeIn):
    ix = commands.set_resolution(
        interaction_for(request, guid), by_user=request.auth, code=payload.code, now=timezone.now()
    )
    return interaction_detail(interaction_for(request, ix.guid))
