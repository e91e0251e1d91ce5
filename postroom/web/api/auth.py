"""How the API knows who is calling: a bearer token, or the browser's logged-in session.

Each returns the Django user (ninja puts it in ``request.auth``); what that user may do
is `postroom.web.access`'s business. The demo's open door (`DemoOpen`) is on the live
page's feed only, and only while the demo has switched logins off.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from ninja.errors import HttpError
from ninja.security import HttpBearer
from ninja.security.apikey import APIKeyCookie
from ninja.utils import check_csrf

from postroom.store import agents as agent_state
from postroom.web.access import DEMO_VIEWER, login_required


class BearerToken(HttpBearer):
    """``Authorization: Bearer <token>``: an unexpired, unrevoked token of an active user."""

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


class DemoOpen:
    """Lets anyone read the live page's feed while the demo has logins switched off."""

    def __call__(self, request: HttpRequest) -> Any:
        return None if login_required() else DEMO_VIEWER


bearer = BearerToken()
session = Session()
