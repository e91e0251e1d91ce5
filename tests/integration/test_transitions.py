"""store.transitions: the no-reply time by box and priority band, and the CAS."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from postroom.core.lifecycle import Delivered, Routed, State
from postroom.store.models import Agent, Interaction, Mailbox
from postroom.store.transitions import StaleInteraction, apply, no_reply_time

pytestmark = pytest.mark.django_db


def make(priority: int = 0) -> Interaction:
    box = Mailbox.objects.create(
        address="support@example.test", login="s", no_reply_seconds=4 * 3600, no_reply_bands=[[50, 1800], [90, 600]]
    )
    return Interaction.objects.create(
        node_id="n", mailbox=box, uidvalidity=1, uid=1, customer="c@customer.test", arrival_time=timezone.now(), priority=priority
    )


@pytest.mark.parametrize(("priority", "seconds"), [(0, 4 * 3600), (49, 4 * 3600), (50, 1800), (89, 1800), (95, 600)])
def test_the_highest_band_not_above_the_priority_wins(priority, seconds) -> None:
    assert no_reply_time(make(priority)) == timedelta(seconds=seconds)


def test_delivery_starts_the_no_reply_clock_of_its_band() -> None:
    ix = make(60)
    Agent.objects.create(name="A", address="a@example.test")
    now = timezone.now()
    apply(ix, Routed(agent="a@example.test"), now)
    ix.status = State.ANSWERED
    Interaction.objects.filter(pk=ix.pk).update(status=State.ANSWERED)
    apply(ix, Delivered(), now)
    ix.refresh_from_db()
    assert ix.no_reply_due_at == now + timedelta(seconds=1800)


def test_a_stale_read_loses() -> None:
    ix = make()
    Agent.objects.create(name="A", address="a@example.test")
    stale = Interaction.objects.get(pk=ix.pk)
    apply(ix, Routed(agent="a@example.test"), timezone.now())
    with pytest.raises(StaleInteraction):
        apply(stale, Routed(agent="a@example.test"), timezone.now())
