"""The web side of the permission layer: one decorator per page, one per API endpoint.

The rules (roles, who oversees whom, who sees which interaction) live in
`postroom.store.permissions`, shared with the commands. Here they become HTTP:

- a page is declared with ``@page(Role.X)`` (or ``@public``): anonymous visitors are sent
  to the login page, logged-in users below the role get 403;
- an API endpoint with ``@allow(Role.X)`` under its route decorator: 401 without
  credentials (ninja's auth), 403 below the role. The API's `Router` refuses an endpoint
  without it, and writes the role into the OpenAPI schema (``x-postroom-role``), which
  the permission-matrix test reads, so no endpoint escapes the test;
- objects named in a URL are fetched through `interaction_for`, `agent_for` and
  `approval_for`: 404 when missing, 403 when the principal may not see them.

Login is required everywhere but /healthz and the login page. Only the demo may open the
live page and its feed to anonymous visitors (settings.POSTROOM_LOGIN_REQUIRED, which
settings.py lets be false only with POSTROOM_DEMO); the page then says so.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from ninja.errors import HttpError

from postroom.store.models import Agent, Approval, Interaction
from postroom.store.permissions import (
    Principal,
    Role,
    may_change_agent,
    may_decide_approval,
    may_handle,
    may_see,
    may_see_agent,
    principal,
)

__all__ = [
    "DEMO_VIEWER",
    "Role",
    "agent_for",
    "allow",
    "approval_for",
    "interaction_for",
    "login_required",
    "page",
    "principal_of",
    "public",
]

# Who an anonymous visitor is on the demo's open pages: sees what an administrator sees,
# and only on the pages and endpoints declared ``demo_open``.
DEMO_VIEWER = Principal(user=None, agent=None, role=Role.ADMINISTRATOR)


def login_required() -> bool:
    return bool(getattr(settings, "POSTROOM_LOGIN_REQUIRED", True))


def principal_of(request: HttpRequest, user: Any = None) -> Principal:
    """The request's principal, looked up once per request."""
    cached = getattr(request, "_postroom_principal", None)
    if cached is not None:
        return cached
    who = principal(user if user is not None else getattr(request, "user", None))
    request._postroom_principal = who  # type: ignore[attr-defined]
    return who


# --- pages ------------------------------------------------------------------------------


def public(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A page anyone may open (the health check, the login page)."""
    view.postroom_access = None  # type: ignore[attr-defined]
    return view


def page(
    role: Role, *, demo_open: bool = False, handles: bool = False
) -> Callable[[Callable], Callable]:
    """Open the page to `role` and above; with `demo_open`, to anyone when the demo has
    switched logins off. `handles`: the interaction it names must be one the principal
    may act on (`may_handle`), not only read (`may_see`); the page checks that itself,
    the mark tells the permission-matrix test."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @functools.wraps(view)
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            who = principal_of(request)
            if demo_open and not login_required() and not who.is_authenticated:
                request._postroom_principal = DEMO_VIEWER  # type: ignore[attr-defined]
                return view(request, *args, **kwargs)
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not who.at_least(role):
                return forbidden(request, f"This page is for the role {role.label} and above.")
            return view(request, *args, **kwargs)

        guarded.postroom_access = role  # type: ignore[attr-defined]
        guarded.postroom_demo_open = demo_open  # type: ignore[attr-defined]
        guarded.postroom_handles = handles  # type: ignore[attr-defined]
        return guarded

    return decorate


def forbidden(request: HttpRequest, message: str) -> HttpResponse:
    from postroom.web.views import nav  # the page header; views import this module

    return render(
        request,
        "postroom/forbidden.html",
        {"nav": nav(principal_of(request)), "message": message},
        status=403,
    )


# --- API endpoints ----------------------------------------------------------------------


def allow(role: Role, *, demo_open: bool = False) -> Callable[[Callable], Callable]:
    """Open the endpoint to `role` and above (place it under the route decorator)."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            # request.auth is what ninja's auth found: a user (token or session), or
            # DEMO_VIEWER from the demo's open door on the endpoints that have one.
            who = DEMO_VIEWER if request.auth is DEMO_VIEWER else principal(request.auth)
            request._postroom_principal = who  # type: ignore[attr-defined]
            if not who.at_least(role):
                raise HttpError(403, f"This needs the role {role.label} or above")
            return view(request, *args, **kwargs)

        # ninja reads the parameters from the signature; resolve the endpoint module's
        # string annotations here, where that module's names are still known.
        guarded.__signature__ = inspect.signature(view, eval_str=True)  # type: ignore[attr-defined]
        guarded.postroom_access = role  # type: ignore[attr-defined]
        guarded.postroom_demo_open = demo_open  # type: ignore[attr-defined]
        return guarded

    return decorate


# --- objects named in the URL -----------------------------------------------------------


def interaction_for(request: HttpRequest, guid: UUID, *, read: bool = False) -> Interaction:
    """The interaction named in the URL, if the principal may act on it (`read`: may read
    it, which a box's readers may too)."""
    ix = get_object_or_404(
        Interaction.objects.select_related("mailbox", "agent", "target_agent"), guid=guid
    )
    if read and not may_see(principal_of(request), ix):
        raise HttpError(
            403, "Only its agent, its supervisor, readers of its box or an administrator may see this"
        )
    if not read and not may_handle(principal_of(request), ix):
        raise HttpError(
            403, "Only the agent holding it, its supervisor or an administrator may do this"
        )
    return ix


def agent_for(request: HttpRequest, address: str, *, change: bool = False) -> Agent:
    agent = get_object_or_404(Agent, address__iexact=address)
    check = may_change_agent if change else may_see_agent
    if not check(principal_of(request), agent):
        raise HttpError(403, "Only the agent, its supervisor or an administrator may do this")
    return agent


def approval_for(request: HttpRequest, approval_id: int) -> Approval:
    approval = get_object_or_404(
        Approval.objects.select_related("interaction", "interaction__agent"), pk=approval_id
    )
    if not may_decide_approval(principal_of(request), approval):
        raise HttpError(403, "Only a listed approver or an administrator may see this")
    return approval
