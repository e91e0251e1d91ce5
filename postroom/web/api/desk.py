"""The two working pages' feeds: the agent bar (GET /api/me) and the supervisor console
(GET /api/console); and the wrap-up codes both offer."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from ninja.errors import HttpError

from postroom.store.models import WrapUpCode
from postroom.store.permissions import Role
from postroom.web.access import allow, principal_of
from postroom.web.api.router import Router
from postroom.web.api.schemas import ConsoleOut, DeskOut, WrapUpCodeOut, answers
from postroom.web.live import live_tag, not_modified, tagged
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
    summary="The agent bar of the calling agent: offers, interactions in hand, recent replies "
    "(ETag: send it back as If-None-Match for 304 while nothing changed)",
)
@allow(Role.AGENT)
def my_desk(request: HttpRequest, response: HttpResponse):
    who = principal_of(request)
    if who.agent is None:
        raise HttpError(403, "This user is not linked to an agent")
    tag = live_tag(who, "me")
    unchanged = not_modified(request, tag)
    if unchanged is not None:
        return unchanged
    tagged(response, tag)
    return desk_dict(who.agent, who=who)


@router.get(
    "/console",
    response=answers(ConsoleOut),
    url_name="console",
    summary="The supervisor console: queues with priority reasons, your agents, approvals "
    "(ETag: send it back as If-None-Match for 304 while nothing changed)",
)
@allow(Role.SUPERVISOR)
def console(request: HttpRequest, response: HttpResponse):
    who = principal_of(request)
    tag = live_tag(who, "console")
    unchanged = not_modified(request, tag)
    if unchanged is not None:
        return unchanged
    tagged(response, tag)
    return console_dict(who)
