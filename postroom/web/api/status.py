"""GET /api/status: what the live page shows (its feed)."""

from __future__ import annotations

from django.http import HttpRequest

from postroom.store.permissions import Role
from postroom.web.access import allow, principal_of
from postroom.web.api.auth import DemoOpen, bearer, session
from postroom.web.api.router import Router
from postroom.web.api.schemas import StatusOut, answers
from postroom.web.presenters import status_dict

router = Router(tags=["status"])


@router.get(
    "/status",
    response=answers(StatusOut),
    auth=[bearer, session, DemoOpen()],
    url_name="status",
    summary="Queue, agents and counts (what the live page shows)",
)
@allow(Role.SUPERVISOR, demo_open=True)
def status(request: HttpRequest):
    return status_dict(principal_of(request))
