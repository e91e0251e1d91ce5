"""Helpers the workspace's pages share: the interaction named in the URL, refusals as the
"Not allowed" page, form values parsed without ever raising."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from uuid import UUID

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.shortcuts import get_object_or_404

from postroom.store.models import Interaction
from postroom.store.permissions import Principal, may_see
from postroom.web.access import principal_of

__all__ = ["a_date", "an_int", "interaction_or_403"]


def interaction_or_403(
    request: HttpRequest,
    guid: UUID,
    check: Callable[[Principal, Interaction], bool] = may_see,
    message: str = "Only those who may see this interaction (its agent, their supervisor, "
    "readers of its box, administrators) may open this page.",
) -> Interaction:
    ix = get_object_or_404(
        Interaction.objects.select_related("mailbox", "agent", "target_agent"), guid=guid
    )
    if not check(principal_of(request), ix):
        raise PermissionDenied(message)
    return ix


def an_int(value: str | None, lo: int = 0, hi: int = 2**62) -> int | None:
    try:
        number = int((value or "").strip())
    except ValueError:
        return None
    return number if lo <= number <= hi else None


def a_date(value: str | None) -> date | None:
    try:
        found = date.fromisoformat((value or "").strip())
    except ValueError:
        return None
    return found if 2000 <= found.year <= 2100 else None
