"""Evaluating a finished interaction (iceJournal's evaluate): a supervisor scores it against
the configured form (`EvaluationCriterion`, weights and maxima), with comments. One
evaluation per evaluator and interaction: scoring again replaces it. Journaled, audited;
the reports read `Evaluation` per agent and per box.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction

from postroom.core.figures import weighted_score
from postroom.core.lifecycle import State
from postroom.store import audit, journal
from postroom.store.commands import CommandError
from postroom.store.models import Evaluation, EvaluationCriterion, Interaction
from postroom.store.permissions import may_evaluate, principal

__all__ = ["FINISHED", "COMMENT_MAX", "criteria", "record"]

FINISHED = frozenset({State.REPLIED, State.ENDED, State.CLOSED})
COMMENT_MAX = 5000


def criteria() -> list[EvaluationCriterion]:
    return list(EvaluationCriterion.objects.filter(active=True).order_by("position", "id"))


def record(
    ix: Interaction,
    *,
    by_user: Any,
    scores: dict[str, int],
    comments: dict[str, str] | None = None,
    comment: str = "",
    now: datetime,
) -> Evaluation:
    """Store `by_user`'s evaluation of `ix`: a score for every active criterion."""
    who = principal(by_user)
    if not who.is_authenticated:
        raise CommandError("Log in first", 401)
    if not may_evaluate(who, ix):
        raise CommandError("Only a supervisor of this interaction or an administrator may evaluate it", 403)
    if ix.state not in FINISHED:
        raise CommandError(f"Interaction {ix.guid} is {ix.status}: evaluate it once it is finished", 409)
    form = criteria()
    if not form:
        raise CommandError("No evaluation criteria are configured", 409)
    comments = comments or {}
    lines = []
    for c in form:
        if c.code not in scores:
            raise CommandError(f"Give a score for {c.label}")
        score = scores[c.code]
        if not 0 <= score <= c.max_score:
            raise CommandError(f"{c.label}: a score from 0 to {c.max_score}")
        note = (comments.get(c.code) or "").strip()[:COMMENT_MAX]
        lines.append(
            {"code": c.code, "label": c.label, "weight": c.weight, "max_score": c.max_score,
             "score": score, "comment": note}
        )
    total = weighted_score((line["score"], line["max_score"], line["weight"]) for line in lines)
    comment = (comment or "").strip()[:COMMENT_MAX]
    with transaction.atomic():
        evaluation, created = Evaluation.objects.update_or_create(
            interaction=ix,
            evaluator=who.name,
            defaults={
                "agent_id": ix.agent_id,
                "mailbox_id": ix.mailbox_id,
                "scores": lines,
                "score": total,
                "comment": comment,
                "updated_at": now,
            },
            create_defaults={
                "agent_id": ix.agent_id,
                "mailbox_id": ix.mailbox_id,
                "scores": lines,
                "score": total,
                "comment": comment,
                "created_at": now,
                "updated_at": now,
            },
        )
        journal.record(
            "evaluated", now, interaction=ix, by=who.name, score=total, evaluation=evaluation.pk,
            **({} if created else {"revised": True}),
        )
        audit.record("evaluated", actor=who.name, target=str(ix.guid), at=now, score=total)
    return evaluation
