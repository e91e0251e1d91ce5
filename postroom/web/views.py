"""The pages: the live monitoring page, the agent bar, the supervisor console, one
interaction's record; login and logout; the health check and the API docs' local assets.

The agent bar and the console are drawn once here and then kept current by their own
script from the API (GET /api/me, GET /api/console), which is also what their buttons call.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any
from uuid import UUID

import ninja
from django.contrib.auth import views as auth_views
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError, connection
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse, reverse_lazy
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from postroom.core.headers import foreign_reply_to
from postroom.store import commands
from postroom.store.models import Agent, Approval, Interaction, WrapUpCode
from postroom.store.permissions import Principal, Role, may_see
from postroom.web.access import forbidden, login_required, page, principal_of, public
from postroom.web.presenters import (
    approval_dict,
    console_dict,
    desk_dict,
    interaction_detail,
    status_dict,
)

log = logging.getLogger(__name__)

LOGIN_URL = reverse_lazy("login")


def waiting_text(seconds: int) -> str:
    """45s, 3m 05s, 2h 03m, 1d 4h: the same format as the page's script."""
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


@require_GET
@never_cache
@page(Role.SUPERVISOR, demo_open=True)
def live(request: HttpRequest) -> HttpResponse:
    """The queue and the agents, refreshed every second by the page's own script.

    For supervisors and administrators; in the demo (logins switched off) for anyone,
    and the page says so.
    """
    status = status_dict(principal_of(request))
    for item in status["queue"]:
        item["waiting"] = waiting_text(item["waiting_seconds"])
    return render(
        request,
        "postroom/live.html",
        {"status": status, "nav": nav(principal_of(request)), "open_demo": not login_required()},
    )


@require_GET
@never_cache
@public
def healthz(request: HttpRequest) -> JsonResponse:
    """200 {"status": "ok"} when the database answers; 503 otherwise. The error itself goes
    to the log, never to the (anonymous) caller: it can name hosts, users and paths."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError:
        log.exception("health check: the database does not answer")
        return JsonResponse({"status": "error", "database": "unreachable"}, status=503)
    return JsonResponse({"status": "ok", "database": "ok"})


# Swagger UI ships inside django-ninja; serve those files ourselves so /api/docs works
# offline and without "ninja" in INSTALLED_APPS or a static-files server.
_NINJA_STATIC = Path(ninja.__file__).resolve().parent / "static" / "ninja"
_DOCS_ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-init.js": "text/javascript",
    "favicon.png": "image/png",
}


@require_GET
@public
def docs_asset(request: HttpRequest, name: str) -> FileResponse:
    content_type = _DOCS_ASSETS.get(name)
    if content_type is None:
        raise Http404(name)
    response = FileResponse((_NINJA_STATIC / name).open("rb"), content_type=content_type)
    response["Cache-Control"] = "public, max-age=86400"
    return response


# The pages' own stylesheets and scripts (no inline ones: the Content-Security-Policy
# allows scripts and styles from this site only). Served here so that `postroom web`
# needs no static-files server.
_ASSETS = Path(__file__).resolve().parent / "assets"
_ASSET_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
_ASSET_NAME = re.compile(r"[a-z0-9_-]+\.(css|js|svg)")


@require_GET
@public
def asset(request: HttpRequest, asset_name: str) -> FileResponse:
    path = _ASSETS / asset_name
    if not _ASSET_NAME.fullmatch(asset_name) or not path.is_file():
        raise Http404(asset_name)
    response = FileResponse(path.open("rb"), content_type=_ASSET_TYPES[path.suffix])
    response["Cache-Control"] = "no-cache"
    return response


@require_GET
@public
def favicon(request: HttpRequest) -> FileResponse:
    """Browsers ask for /favicon.ico on pages that name none (the admin's)."""
    return asset(request, "favicon.svg")


# --- login ----------------------------------------------------------------------------


def home_for(who: Principal) -> str:
    """Where a user lands after logging in: the console, the agent bar, or the live page."""
    if who.at_least(Role.SUPERVISOR):
        return reverse("supervisor")
    if who.agent is not None:
        return reverse("agent")
    return reverse("live")


class LoginView(auth_views.LoginView):
    template_name = "postroom/login.html"
    redirect_authenticated_user = True
    extra_context = {"nav": {"agent": False, "supervisor": False, "workspace": False, "name": ""}}

    def get_default_redirect_url(self) -> str:
        return home_for(principal_of(self.request))


class LogoutView(auth_views.LogoutView):
    next_page = LOGIN_URL


login_view = public(LoginView.as_view())
logout_view = public(LogoutView.as_view())


def nav(who: Principal) -> dict[str, Any]:
    """What the page header offers this principal."""
    if who.user is None:
        return {
            "agent": False, "supervisor": False, "monitor": who.sees_everything,
            "workspace": False, "name": "",
        }
    return {
        "agent": who.agent is not None,
        "supervisor": who.at_least(Role.SUPERVISOR),
        "monitor": who.at_least(Role.SUPERVISOR),
        "workspace": who.at_least(Role.AGENT),
        "name": who.agent.name if who.agent else who.user.get_username(),
    }


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler403: a page's PermissionDenied as the "Not allowed" page."""
    message = str(exception) if isinstance(exception, PermissionDenied) and str(exception) else (
        "You may not open this page."
    )
    return forbidden(request, message)


def render_page(
    request: HttpRequest, template: str, context: dict[str, Any], status: int = 200
) -> HttpResponse:
    return render(
        request, template, {"nav": nav(principal_of(request)), **context}, status=status
    )


# --- the agent bar --------------------------------------------------------------------


@require_GET
@never_cache
@page(Role.AGENT)
def agent_desk(request: HttpRequest) -> HttpResponse:
    agent = principal_of(request).agent
    if agent is None:
        return forbidden(request, "Your user is not linked to an agent, so it has no agent bar.")
    choices = {
        "codes": [
            {"code": c.code, "label": c.label} for c in WrapUpCode.objects.order_by("label", "code")
        ],
        "agents": [
            {"address": a.address, "name": a.name}
            for a in Agent.objects.exclude(pk=agent.pk).order_by("name")
        ],
        "queues": commands.known_queues(),
    }
    return render_page(
        request,
        "postroom/agent.html",
        {"agent": agent, "desk": desk_dict(agent, who=principal_of(request)), "choices": choices},
    )


# --- the supervisor console -----------------------------------------------------------


@require_GET
@never_cache
@page(Role.SUPERVISOR)
def supervisor_console(request: HttpRequest) -> HttpResponse:
    return render_page(
        request, "postroom/supervisor.html", {"console": console_dict(principal_of(request))}
    )


# --- one interaction ------------------------------------------------------------------

# Fig. 3 of the patent, in its order: the tracking record's fields and their labels.
FIG3 = [
    ("guid", "GUID"),
    ("node_id", "Node"),
    ("mailbox", "Mailbox"),
    ("message_id", "Message-ID"),
    ("to", "To"),
    ("reply_to", "Reply-To"),
    ("customer", "Customer"),
    ("customer_name", "Customer name"),
    ("subject", "Subject"),
    ("arrival_time", "Arrival time"),
    ("auto_response_sent_at", "Auto-response sent"),
    ("auto_response_skipped", "Auto-response skipped"),
    ("priority", "Priority"),
    ("queue", "Queue"),
    ("status", "Status"),
    ("agent", "Agent"),
    ("target_agent", "Target agent"),
    ("excluded_agents", "Excluded agents"),
    ("routed_at", "Routed"),
    ("answered_at", "Answer time"),
    ("delivered_at", "Delivered"),
    ("replied_at", "Replied"),
    ("ended_at", "Ended"),
    ("closed_at", "Closed"),
    ("offer_due_at", "Offer due"),
    ("no_reply_due_at", "No-reply due"),
    ("outcome", "Outcome"),
    ("wrapup_code", "Wrap-up code"),
    ("resolution_code", "Resolution code"),
    ("deliveries", "Deliveries"),
    ("approval", "Approval required"),
    ("claim_node", "Claimed by node"),
    ("claim_time", "Claim time"),
    ("version", "Version"),
]


def rules_trace(rules: Any) -> dict[str, Any]:
    """The rules trace as hits, misses and anything else, whatever shape it was stored in."""
    if not rules:
        return {"hits": [], "misses": [], "other": []}
    if isinstance(rules, list):
        return {"hits": [_rule_line(r) for r in rules], "misses": [], "other": []}
    if not isinstance(rules, dict):
        return {"hits": [], "misses": [], "other": [("trace", str(rules))]}
    other = [
        (str(k), v if isinstance(v, str) else json.dumps(v, default=str))
        for k, v in rules.items()
        if k not in ("hits", "misses")
    ]
    return {
        "hits": [_rule_line(r) for r in rules.get("hits") or []],
        "misses": [_rule_line(r) for r in rules.get("misses") or []],
        "other": other,
    }


def _rule_line(entry: Any) -> str:
    if isinstance(entry, dict):
        name = entry.get("name") or entry.get("rule") or ""
        rest = ", ".join(f"{k}: {v}" for k, v in entry.items() if k not in ("name", "rule"))
        return f"{name} ({rest})" if name and rest else str(name or rest)
    if isinstance(entry, list | tuple):
        return " — ".join(str(x) for x in entry)
    return str(entry)


def reason_lines(reasons: Any) -> list[tuple[str, str]]:
    """priority_reasons [["box default", 0], ["contact vip", 50]] as (why, "+50")."""
    lines = []
    for reason in reasons or []:
        if isinstance(reason, list | tuple) and len(reason) == 2:
            why, value = reason
            if isinstance(value, int | float) and not isinstance(value, bool):
                value = f"{value:+g}"
            lines.append((str(why), str(value)))
        else:
            lines.append((str(reason), ""))
    return lines


@require_GET
@never_cache
@page(Role.AGENT)
def interaction_page(request: HttpRequest, guid: UUID) -> HttpResponse:
    ix = get_object_or_404(
        Interaction.objects.select_related("mailbox", "agent", "target_agent"), guid=guid
    )
    who = principal_of(request)
    if not may_see(who, ix):
        return forbidden(
            request,
            "Only the agent holding it, its supervisor, readers of its box and "
            "administrators may see this interaction.",
        )
    detail = interaction_detail(ix)
    fields = []
    for key, label in FIG3:
        value = detail[key]
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        fields.append({"key": key, "label": label, "value": value})
    approvals = [
        approval_dict(a)
        for a in Approval.objects.filter(interaction=ix).select_related(
            "interaction", "interaction__agent"
        )
    ]
    return render_page(
        request,
        "postroom/interaction.html",
        {
            "ix": ix,
            "detail": detail,
            "fields": fields,
            "rules": rules_trace(ix.rules),
            "reasons": reason_lines(ix.priority_reasons),
            "approvals": approvals,
            "now": timezone.now(),
            "is_supervisor": who.at_least(Role.SUPERVISOR),
            # Where the answer goes (Reply-To wins), flagged when not the sender's domain.
            "answer_to": ix.reply_to or ix.customer,
            "answer_elsewhere": bool(ix.reply_to) and foreign_reply_to(ix.customer, ix.reply_to),
        },
    )
