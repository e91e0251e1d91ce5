"""The two working pages' feeds: the agent bar (GET /api/me) and the supervisor console
(GET /api/console); and the wrap-up codes both offer."""

from __future__ import annotations

from django.http import HttpRequest
from ninja.errors import HttpError

from postroom.store.models import WrapUpCode
from postroom.store.permissions import Role
from postroom.web.access import allow, principal_of
from postroom.web.api.router import Router
from postroom.web.api.schemas import ConsoleOut, DeskOut, WrapUpCodeOut, answers
from postroom.web.presenters import console_dict, desk_dict

router = Router(tags=["desk"])


@router.get(
    "/wrapup-codes",
    response=answers(list[WrapUpCodeOut]),
    url_name="wrapup-codes",
    summary="The wrap-up (and resolution) codes",
)
@allow(Role.AGENT)
def list_wrapup_codes(request: HttpRequest):
    return [
        {"code": c.code, "label": c.label} for c in WrapUpCode.objects.order_by("label", "code")
    ]


@router.get(
    "/me",
    response=answers(DeskOut),
    url_name="me",
    summary="The agent bar of the calling agent: offers, interactions in hand, recent replies",
)
@allow(Role.AGENT)
def my_desk(request: HttpRequest):
    agent = principal_of(request).agent
    if agent is None:
        raise HttpError(403, "This user is not linked to an agent")
    return desk_dict(agent)


@router.get(
    "/console",
    response=answers(ConsoleOut),
    url_name="console",
    summary="The supervisor console: queues with priority reasons, your agents, approvals",
)
@allow(Role.SUPERVISOR)
def console(request: HttpRequest):
    return console_dict(principal_of(request))
