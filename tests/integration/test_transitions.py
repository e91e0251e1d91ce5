"""store.transitions: the no-reply time by box and priority band, and the CAS."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db.models import F
from django.utils import timezone

from postroom.core.lifecycle import Delivered, Routed, State
from postroom.store.models import Agent, Interaction, Mailbox
from postroom.store.transitions import StaleInteraction, apply, compare_and_set, no_reply_time

pytestmark = pytest.mark.django_db


def make(priority: int = 0, uid: int = 1) -> Interaction:
    box = Mailbox.objects.filter(address="support@example.test").first() or Mailbox.objects.create(
        address="support@example.test", login="s", no_reply_seconds=4 * 3600, no_reply_bands=[[50, 1800], [90, 600]]
    )
    return Interaction.objects.create(
        node_id="n", mailbox=box, uidvalidity=1, uid=uid, customer="c@customer.test", arrival_time=timezone.now(), priority=priority
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


def _written(ix: Interaction) -> dict[str, object]:
    row = Interaction.objects.filter(pk=ix.pk).values().get()
    # What the two rows were made with differs only here (made one after the other).
    return {k: v for k, v in row.items() if k not in ("id", "guid", "uid", "created_at", "arrival_time")}


def test_compare_and_set_writes_what_the_orm_update_writes() -> None:
    # Every kind of value a transition writes: a state, an agent (a model instance), an
    # aware time, a cleared time (None), a JSON list, a number.
    agent = Agent.objects.create(name="A", address="a@example.test")
    by_orm, by_cas = make(uid=1), make(uid=2)
    now = timezone.now()
    changes = {
        "status": State.ROUTED.value,
        "agent": agent,
        "routed_at": now,
        "offer_due_at": now + timedelta(seconds=30),
        "no_reply_due_at": None,
        "excluded_agents": ["b@example.test", "c@example.test"],
        "priority": 7,
        "outcome": "",
    }
    assert Interaction.objects.filter(pk=by_orm.pk, version=by_orm.version).update(version=F("version") + 1, **changes) == 1
    assert compare_and_set(by_cas, changes) == 1
    assert _written(by_cas) == _written(by_orm)
    assert _written(by_cas)["version"] == by_cas.version + 1
    # The statement is kept: the same columns again, for another row.
    third = make(uid=3)
    assert compare_and_set(third, changes) == 1
    assert _written(third) == _written(by_orm)


def test_compare_and_set_changes_nothing_for_a_moved_version_or_another_state() -> None:
    ix = make()
    before = _written(ix)
    moved = Interaction.objects.get(pk=ix.pk)
    moved.version += 1
    assert compare_and_set(moved, {"priority": 5}) == 0
    assert compare_and_set(ix, {"deliveries": 1}, status=State.ANSWERED) == 0
    assert _written(ix) == before
    assert compare_and_set(ix, {"deliveries": 1}, status=State.QUEUED) == 1
    assert _written(ix)["deliveries"] == 1
