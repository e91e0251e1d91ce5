"""The journal (iceJournal): search interactions and their messages, newest first.

A plain GET form; htmx swaps the results in place and keeps the URL in step (so a search
is a link), and without JavaScript the same form and links work as whole pages.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from postroom.core import paging
from postroom.core.lifecycle import State
from postroom.store.finder import JournalQuery, find
from postroom.store.models import Agent, Mailbox, WrapUpCode
from postroom.store.permissions import Role, readable_boxes, visible_agents
from postroom.web.access import page, principal_of
from postroom.web.pages import a_date, an_int
from postroom.web.views import nav

TEXT_MAX = 200


def query_from(request: HttpRequest) -> JournalQuery:
    get = request.GET

    def text(name: str) -> str:
        return (get.get(name) or "").replace("\x00", "").strip()[:TEXT_MAX]

    return JournalQuery(
        text=text("q"),
        customer=text("customer"),
        subject=text("subject"),
        agent=an_int(get.get("agent"), 1),
        box=an_int(get.get("box"), 1),
        state=text("state") if text("state") in {s.value for s in State} else "",
        code=text("code"),
        since=a_date(get.get("since")),
        until=a_date(get.get("until")),
    )


@require_GET
@never_cache
@page(Role.AGENT)
def journal(request: HttpRequest) -> HttpResponse:
    who = principal_of(request)
    query = query_from(request)
    after = paging.decode(request.GET.get("after"))
    rows, next_cursor = find(who, query, after)
    params = request.GET.copy()
    params.pop("after", None)
    next_url = None
    if next_cursor is not None:
        params["after"] = paging.encode(next_cursor)
        next_url = "?" + params.urlencode()
    context = {
        "nav": nav(who),
        "query": query,
        "rows": rows,
        "next_url": next_url,
        "first_url": "?" + params.urlencode() if after is not None else None,
        "choices": {
            "boxes": readable_boxes(who, Mailbox.objects.all()).order_by("address"),
            "agents": visible_agents(who, Agent.objects.all()).order_by("name"),
            "states": [s.value for s in State],
            "codes": WrapUpCode.objects.order_by("label"),
        },
    }
    if request.headers.get("HX-Request") == "true":
        return render(request, "postroom/journal_results.html", context)
    return render(request, "postroom/journal.html", context)
