"""The REST API (django-ninja), mounted at /api/: one router per resource.

Schema: /api/openapi.json. Docs: /api/docs (Swagger UI served from the wheel, no CDN);
both need a login (session or bearer token). Auth: `Authorization: Bearer <token>`
(`postroom token ADDRESS`), or a logged-in Django session (CSRF-checked for unsafe
methods). Who may call what: `@allow(Role.X)` on each endpoint (`postroom.web.access`).

People's actions (hang up, transfer, resolution, approval decisions) go through
`postroom.store.commands`; a refusal there (`CommandError`) comes back as {"detail": ...}
with its status. Bad input is refused with 422 and the validation errors.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.openapi.docs import Swagger

from postroom.store.agents import user_for_token
from postroom.store.commands import CommandError
from postroom.store.permissions import Role, principal
from postroom.web.api import (
    agents,
    approvals,
    desk,
    failed_replies,
    interactions,
    nodes,
    operations,
    status,
)
from postroom.web.api.auth import bearer, session
from postroom.web.api.router import Router


class LocalSwagger(Swagger):
    """Swagger UI from the JS/CSS shipped inside django-ninja (the machine has no internet)."""

    def render_page(self, request: HttpRequest, api: NinjaAPI, **kwargs: Any) -> HttpResponse:
        self.settings["url"] = self.get_openapi_url(api, kwargs)
        return render(
            request,
            "postroom/api_docs.html",
            {"api": api, "swagger_settings": dict(self.settings)},
        )


def docs_access(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The schema and its docs are for logged-in people and token holders only."""

    @functools.wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user = request.user if request.user.is_authenticated else None
        header = request.headers.get("Authorization", "")
        if user is None and header.lower().startswith("bearer "):
            user = user_for_token(header[7:].strip())
        if principal(user).at_least(Role.AGENT):
            return view(request, *args, **kwargs)
        if user is None and not header:
            return redirect_to_login(request.get_full_path())
        return JsonResponse({"detail": "The API schema is for agents and above"}, status=403)

    guarded.postroom_access = Role.AGENT  # type: ignore[attr-defined]
    return guarded


api = NinjaAPI(
    title="Postroom API",
    version="1",
    description=(
        "Queue, agents and interactions of the Postroom email contact center. Each "
        "operation's `x-postroom-role` names the least role that may call it."
    ),
    urls_namespace="api",
    auth=[bearer, session],
    docs=LocalSwagger(),
    docs_url="/docs",
    openapi_url="/openapi.json",
    docs_decorator=docs_access,
    default_router=Router(),
)

for module in (status, agents, interactions, desk, approvals, operations, failed_replies, nodes):
    api.add_router("", module.router)


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


@api.exception_handler(NinjaValidationError)
def _invalid(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    return api.create_response(request, {"detail": exc.errors}, status=422)


__all__ = ["HttpError", "api"]
