"""The pages: the live monitoring page, the agent bar, the supervisor console, one
interaction's record; login and logout; the health check and the API docs' local assets.

The agent bar and the console are drawn once here and then kept current by their own
script from the API (GET /api/me, GET /api/console), which is also what their buttons call.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import UUID

import ninja
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
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
from postroom.web.access import login_required_for_monitoring
from postroom.web.api import approval_dict, console_dict, desk_dict, interaction_detail, status_dict

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
def live(request: HttpRequest) -> HttpResponse:
    """The queue and the agents, refreshed every second by the page's own script.

    No login by default: in the walking skeleton this is read-only monitoring of the local
    demo, which must open without a password. POSTROOM_WEB_LOGIN_REQUIRED=true makes it
    (and its feed, GET /api/status) require a logged-in user.
    """
    if login_required_for_monitoring() and not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    status = status_dict()
    for item in status["queue"]:
        item["waiting"] = waiting_text(item["waiting_seconds"])
    return render(request, "postroom/live.html", {"status": status})


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """200 {"status": "ok"} when the database answers; 503 otherwise."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        return JsonResponse(
            {"status": "error", "database": "unreachable", "detail": str(exc)}, status=503
        )
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
def docs_asset(request: HttpRequest, name: str) -> FileResponse:
    content_type = _DOCS_ASSETS.get(name)
    if content_type is None:
        raise Http404(name)
    response = FileResponse((_NINJA_STATIC / name).open("rb"), content_type=content_type)
    response["Cache-Control"] = "public, max-age=86400"
    return response


# --- login ----------------------------------------------------------------------------


def home_for(user: Any) -> str:
    """Where a user lands after logging in: the console, the agent bar, or the live page."""
    if commands.is_supervisor(user):
        return reverse("supervisor")
    if commands.agent_of(user) is not None:
        return reverse("agent")
    return reverse("live")


class LoginView(auth_views.LoginView):
    template_name = "postroom/login.html"
    redirect_authenticated_user = True
    extra_context = {"nav": {"agent": False, "supervisor": False, "name": ""}}

    def get_default_redirect_url(self) -> str:
        return home_for(self.request.user)


class LogoutView(auth_views.LogoutView):
    next_page = LOGIN_URL


def nav(user: Any) -> dict[str, Any]:
    """What the page header offers this user."""
    if not getattr(user, "is_authenticated", False):
        return {"agent": False, "supervisor": False, "name": ""}
    agent = commands.agent_of(user)
    return {
        "agent": agent is not None,
        "supervisor": commands.is_supervisor(user),
        "name": agent.name if agent else user.get_username(),
    }


def page(
    request: HttpRequest, template: str, context: dict[str, Any], status: int = 200
) -> HttpResponse:
    return render(request, template, {"nav": nav(request.user), **context}, status=status)


def _forbidden(request: HttpRequest, message: str) -> HttpResponse:
    return page(request, "postroom/forbidden.html", {"message": message}, status=403)


# --- the agent bar --------------------------------------------------------------------


@require_GET
@never_cache
@login_required(login_url=LOGIN_URL)
def agent_desk(request: HttpRequest) -> HttpResponse:
    agent = commands.agent_of(request.user)
    if agent is None:
        return _forbidden(request, "Your user is not linked to an agent, so it has no agent bar.")
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
    return page(
        request,
        "postroom/agent.html",
        {"agent": agent, "desk": desk_dict(agent), "choices": choices},
    )


# --- the supervisor console -----------------------------------------------------------


@require_GET
@never_cache
@login_required(login_url=LOGIN_URL)
def supervisor_console(request: HttpRequest) -> HttpResponse:
    if not commands.is_supervisor(request.user):
        return _forbidden(request, "The console is for supervisors and staff.")
    return page(request, "postroom/supervisor.html", {"console": console_dict(request.user)})


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
@login_required(login_url=LOGIN_URL)
def interaction_page(request: HttpRequest, guid: UUID) -> HttpResponse:
    ix = get_object_or_404(
        Interaction.objects.select_related("mailbox", "agent", "target_agent"), guid=guid
    )
    if not commands.may_handle(request.user, ix):
        return _forbidden(
            request, "Only supervisors, staff and the agent holding it may see this interaction."
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
    return page(
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
            "is_supervisor": commands.is_supervisor(request.user),
            # Where the answer goes (Reply-To wins), flagged when not the sender's domain.
            "answer_to": ix.reply_to or ix.customer,
            "answer_elsewhere": bool(ix.reply_to) and foreign_reply_to(ix.customer, ix.reply_to),
        },
    )
