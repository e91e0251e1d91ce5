"""Short polling that costs next to nothing when nothing changed: ETags for the agent bar
and the console.

Every change the live pages show appends a JournalEvent in the same transaction (a state
change, Ready / Not Ready, an approval held or decided: decision 0004), so the journal's
last id, with who is asking, names a version of what they see. A poll that brings back
the ETag it was given gets 304 after one indexed MAX() instead of the whole page. What
the journal does not see (a row edited in the admin) shows within STALE_AFTER seconds:
the tag also carries the time, in steps of that length. Counters (waiting, time left)
tick in the browser between answers.
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import Max
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from postroom.store.models import JournalEvent
from postroom.store.permissions import Principal

__all__ = ["STALE_AFTER", "live_tag", "not_modified", "tagged"]

STALE_AFTER = 10


def live_tag(who: Principal, page: str, now: datetime | None = None) -> str:
    now = now or timezone.now()
    head = JournalEvent.objects.aggregate(last=Max("id"))["last"] or 0
    user = getattr(who.user, "pk", None) or 0
    return f'W/"{page}-{user}-{head}-{int(now.timestamp()) // STALE_AFTER}"'


def not_modified(request: HttpRequest, tag: str) -> HttpResponse | None:
    """304 when the client already holds `tag`, else None."""
    sent = request.headers.get("If-None-Match", "")
    if tag in [t.strip() for t in sent.split(",")]:
        response = HttpResponse(status=304)
        response["ETag"] = tag
        response["Cache-Control"] = "private, no-cache"
        return response
    return None


def tagged(response: HttpResponse, tag: str) -> None:
    response["ETag"] = tag
    response["Cache-Control"] = "private, no-cache"
