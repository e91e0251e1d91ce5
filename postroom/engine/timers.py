"""Timers (figs. 7 and 8): offers not answered in time, answered mail not replied to.

Due times are columns of the interaction (`offer_due_at`, `no_reply_due_at`), set and
cleared only by the lifecycle, so a restart simply finds them again and no timer can
outlive its phase. Every node runs this step: each due interaction is taken in a
transaction of its own, locked with SKIP LOCKED (store/locking.py), so one node fires it.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import transaction
from django.db.models import QuerySet

from postroom.core.lifecycle import NoReplyExpired, OfferExpired, State
from postroom.engine.notices import queue_notice
from postroom.engine.site import Site
from postroom.store import locking
from postroom.store.agents import set_ready
from postroom.store.compiled import CompiledAt
from postroom.store.models import Interaction
from postroom.store.transitions import StaleInteraction, apply

log = logging.getLogger(__name__)


def offers_due(at: datetime) -> QuerySet[Interaction]:
    """Offers not answered by `at` (fig. 7): what the step reads as due and then takes,
    each under its lock, only while it still is."""
    return Interaction.objects.filter(status=State.ROUTED, offer_due_at__lte=at)


def replies_due(at: datetime) -> QuerySet[Interaction]:
    """Forwarded mail not replied to by `at` (fig. 8), as `offers_due`."""
    return Interaction.objects.filter(status=State.DELIVERED, no_reply_due_at__lte=at)


# What is due (the first 100 rows of the querysets above), read with SQL compiled once
# per thread: the step runs every second and after much of the worker's work, and building
# the two SELECTs was most of its time while nothing was due (decision 0058). Each row is
# then taken and checked under its lock as before, with the same condition.
DUE_AT_ONCE = 100
_OFFERS_DUE = CompiledAt(
    lambda at: offers_due(at).values_list("pk")[:DUE_AT_ONCE], Interaction._meta.get_field("offer_due_at")
)
_REPLIES_DUE = CompiledAt(
    lambda at: replies_due(at).values_list("pk")[:DUE_AT_ONCE], Interaction._meta.get_field("no_reply_due_at")
)


def _due(read: CompiledAt, now: datetime) -> list[int]:
    return [pk for (pk,) in read.rows(now)]


def fire(site: Site, now: datetime) -> bool:
    did = False
    # The querysets each due row is taken with are built only when a row is due: the step
    # runs every second and mostly finds nothing (decision 0065).
    offers = _due(_OFFERS_DUE, now)
    expired_offers = offers_due(now).select_related("agent", "mailbox") if offers else None
    for pk in offers:
        try:
            with transaction.atomic():
                ix = locking.take(expired_offers, pk)
                if ix is None:
                    continue
                agent = ix.agent
                apply(ix, OfferExpired(), now, agent_address=agent.address if agent else "")
                if agent is not None and not agent.auto_answer:
                    # Redirect on no answer: whoever let an offer expire is not at their
                    # desk. Not Ready until they say otherwise, so the mail goes to someone
                    # who is (or back to them, once they are Ready again), never round and
                    # round to an empty chair.
                    set_ready(agent, False, now=now, by="engine: offer not answered in time")
            did = True
        except StaleInteraction:
            continue
    replies = _due(_REPLIES_DUE, now)
    overdue = replies_due(now).select_related("agent", "mailbox") if replies else None
    for pk in replies:
        try:
            with transaction.atomic():
                ix = locking.take(overdue, pk)
                if ix is None:
                    continue
                agent = ix.agent
                answered_at = ix.answered_at
                # fig. 8 456: the event is logged with agent, box and times.
                apply(
                    ix,
                    NoReplyExpired(),
                    now,
                    priority_raise=site.no_reply_priority_raise,
                    answered_at=answered_at.isoformat() if answered_at else None,
                    due_at=ix.no_reply_due_at.isoformat() if ix.no_reply_due_at else None,
                )
                if agent is not None:
                    # fig. 8 460: tell the agent it was taken away, and why.
                    queue_notice(
                        site,
                        now,
                        key=f"notice:no_reply:{ix.guid}:{ix.deliveries}",
                        to=agent.address,
                        subject=f"Reassigned (no reply in time): {ix.subject}",
                        text=(
                            "You did not reply to this customer email within the "
                            f"no-reply time of {ix.mailbox.address}, so it has been given to "
                            "another agent and taken out of your mailbox.\n\n"
                            "Please do not reply to it any more: a late reply will not reach "
                            "the customer.\n"
                        ),
                        interaction=ix,
                    )
            did = True
        except StaleInteraction:
            continue
    return did
