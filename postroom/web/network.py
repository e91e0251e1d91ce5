"""Where a request comes from: the client's address behind the reverse proxies, the
admin's address allow-list, and the origin every audit record of the request carries.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden

from postroom.store import audit


def client_ip(request: HttpRequest) -> str:
    """The client's address: REMOTE_ADDR, or with POSTROOM_TRUSTED_PROXIES = N the N-th
    address from the right of X-Forwarded-For (each proxy appends the address it saw;
    anything further left was written by the client and proves nothing)."""
    remote = request.META.get("REMOTE_ADDR", "") or ""
    hops = settings.TRUSTED_PROXIES
    if hops:
        forwarded = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        forwarded = [a for a in forwarded if a]
        if len(forwarded) >= hops:
            remote = forwarded[-hops]
    try:
        return str(ipaddress.ip_address(remote))
    except ValueError:
        return ""


def _allowed(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in settings.ADMIN_ALLOWED_NETWORKS)


class AdminAllowList:
    """/admin/ (its login page included) only from POSTROOM_ADMIN_ALLOWED_IPS."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/admin/") and not _allowed(client_ip(request)):
            return HttpResponseForbidden(
                b"The admin is not open to your network address.", content_type="text/plain"
            )
        return self.get_response(request)


class RequestContext:
    """Audit records written while serving a request name its address and channel."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/admin/"):
            via = "admin"
        elif request.path.startswith("/api/"):
            via = "api"
        else:
            via = "web"
        with audit.origin(ip=client_ip(request) or None, via=via):
            return self.get_response(request)
