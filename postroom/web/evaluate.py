"""Evaluating a finished interaction (iceJournal's evaluate): the form and its answer."""

from __future__ import annotations

from uuid import UUID

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from postroom.store import evaluations
from postroom.store.commands import CommandError
from postroom.store.permissions import Role, may_evaluate
from postroom.web.access import page, principal_of
from postroom.web.pages import an_int, interaction_or_403
from postroom.web.views import nav


@require_http_methods(["GET", "POST"])
@never_cache
@page(Role.SUPERVISOR, handles=True)
def evaluate(request: HttpRequest, guid: UUID) -> HttpResponse:
    ix = interaction_or_403(
        request, guid, may_evaluate,
        "Only a supervisor of this interaction or an administrator may evaluate it.",
    )
    who = principal_of(request)
    form = evaluations.criteria()
    mine = ix.evaluations.filter(evaluator=who.name).first()
    error, status = "", 200
    values: dict[str, int] = {}
    comments: dict[str, str] = {}
    if mine is not None:
        values = {line["code"]: line["score"] for line in mine.scores}
        comments = {line["code"]: line.get("comment", "") for line in mine.scores}
    comment = mine.comment if mine else ""
    if request.method == "POST":
        values = {}  # what was posted, only: a score left out or out of range is missing
        for c in form:
            score = an_int(request.POST.get(f"score-{c.code}"), 0, c.max_score)
            if score is not None:
                values[c.code] = score
            comments[c.code] = (request.POST.get(f"comment-{c.code}") or "").replace("\x00", "")
        comment = (request.POST.get("comment") or "").replace("\x00", "")
        try:
            evaluations.record(
                ix, by_user=request.user, scores=values, comments=comments, comment=comment,
                now=timezone.now(),
            )
        except CommandError as exc:
            error, status = exc.message, exc.status
        else:
            return redirect("transcript", guid=ix.guid)
    finished = ix.state in evaluations.FINISHED
    lines = [
        {"c": c, "value": values.get(c.code), "comment": comments.get(c.code, ""),
         "range": range(c.max_score + 1)}
        for c in form
    ]
    return render(
        request,
        "postroom/evaluate.html",
        {"nav": nav(who), "ix": ix, "lines": lines, "comment": comment, "error": error,
         "finished": finished, "mine": mine},
        status=status,
    )
