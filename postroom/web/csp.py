"""Content-Security-Policy on every response: scripts, styles, images and API calls from
this site only; no inline script or style unless it carries the request's nonce; no
plugins, no framing, no <base>, forms post only here.

The pages keep their scripts and styles in files (postroom/web/assets/), so nothing of
theirs needs the nonce; it is there for a template that must inline something
(``<script nonce="{{ request.csp_nonce }}">``). Customer mail shown on a page is text
put in with textContent: should anything slip through as markup, this policy keeps it
from running, loading or sending anything (tests/e2e/test_hostile_mail.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

POLICY = (
    "default-src 'none'; "
    "script-src 'self' 'nonce-{nonce}'; "
    "style-src 'self' 'nonce-{nonce}'; "
    "img-src 'self' data:; "
    "font-src 'self'; "
    "connect-src 'self'; "
    "form-action 'self'; "
    "frame-ancestors 'none'; "
    "base-uri 'none'; "
    "object-src 'none'"
)


class ContentSecurityPolicy:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        nonce = secrets.token_urlsafe(16)
        request.csp_nonce = nonce  # type: ignore[attr-defined]
        response = self.get_response(request)
        response.setdefault("Content-Security-Policy", POLICY.format(nonce=nonce))
        return response
