"""The journal (iceJournal): find interactions by customer, subject, text, dates, agent,
box, state or wrap-up code, newest first, a keyset page at a time.

Every query starts from what the asker may see (`postroom.store.permissions`), so a
search can never show more than the pages and the API would. Full text goes through
`postroom.store.search`; paging through `postroom.core.paging` (no OFFSET, no COUNT: both
grow with the journal, and the journal is meant to reach 100,000 interactions and more).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date, datetime, time, timedelta

from django.db.models import Q, QuerySet
from django.utils import timezone

from postroom.core.lifecycle import State
from postroom.core.paging import Cursor, split_page
from postroom.store import search
from postroom.store.models import Interaction
from postroom.store.permissions import Principal, visible_interactions

__all__ = ["PAGE_SIZE", "JournalQuery", "find", "history"]

PAGE_SIZE = 50
HISTORY_SHOWN = 10


@dataclass(frozen=True)
class JournalQuery:
    """What the journal's form asks for; every field optional ("" / None: any)."""

    text: str = ""
    customer: str = ""
    subject: str = ""
    agent: int | None = None
    box: int | None = None
    state: str = ""
    code: str = ""
    since: date | None = None
    until: date | None = None

    @property
    def empty(self) -> bool:
        return all(getattr(self, f.name) in ("", None) for f in fields(self))


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min), timezone.get_current_timezone())


def filtered(who: Principal, query: JournalQuery) -> QuerySet[Interaction]:
    qs = visible_interactions(who, Interaction.objects.all())
    if query.customer:
        qs = qs.filter(
            Q(customer__icontains=query.customer) | Q(customer_name__icontains=query.customer)
        )
    if query.subject:
        qs = qs.filter(subject__icontains=query.subject)
    if query.agent is not None:
        qs = qs.filter(agent_id=query.agent)
    if query.box is not None:
        qs = qs.filter(mailbox_id=query.box)
    if query.state and query.state in State.__members__.values():
        qs = qs.filter(status=query.state)
    if query.code:
        qs = qs.filter(Q(wrapup_code=query.code) | Q(resolution_code=query.code))
    if query.since is not None:
        qs = qs.filter(arrival_time__gte=_day_start(query.since))
    if query.until is not None:
        qs = qs.filter(arrival_time__lt=_day_start(query.until + timedelta(days=1)))
    return search.matching(qs, query.text)


def find(
    who: Principal, query: JournalQuery, after: Cursor | None = None, limit: int = PAGE_SIZE
) -> tuple[list[Interaction], Cursor | None]:
    """One page of matches, newest first, and the cursor of the next page (or None)."""
    qs = filtered(who, query)
    if after is not None:
        qs = qs.filter(
            Q(arrival_time__lt=after.at) | Q(arrival_time=after.at, pk__lt=after.id)
        )
    rows = list(
        qs.select_related("mailbox", "agent").order_by("-arrival_time", "-id")[: limit + 1]
    )
    return split_page(rows, limit, lambda ix: Cursor(ix.arrival_time, ix.pk))


def history(
    who: Principal, ix: Interaction, limit: int = HISTORY_SHOWN
) -> list[Interaction]:
    """The same customer's other interactions, across boxes, newest first: those `who` may
    see."""
    qs = visible_interactions(
        who, Interaction.objects.filter(customer=ix.customer).exclude(pk=ix.pk)
    )
    return list(qs.select_related("mailbox", "agent").order_by("-arrival_time", "-id")[:limit])
