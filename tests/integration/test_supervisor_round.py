"""The engine's supervisor round (decision 0058): what it reads once a round and what it
runs at its own pace, and what it still does at every round (the lease)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from postroom.core.alerts import AlertKind
from postroom.core.cluster import ROUTER, mailbox_lease
from postroom.engine import health, nodes
from postroom.engine.alerts import raise_alert
from postroom.engine.membership import Membership
from postroom.engine.runtime import Engine, watched_box_ids, watched_boxes
from postroom.engine.site import Site
from postroom.store.models import Alert, BoxHealth, Lease, Mailbox, Node
from postroom.web import operations
from tests.sites import offline_site

pytestmark = pytest.mark.django_db(transaction=True)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def site() -> Site:
    return offline_site("n-super", sync_alert_after=timedelta(seconds=30))


@pytest.fixture
def engine(site: Site):
    """An engine whose supervisor rounds are run by the test; the threads it would start
    are recorded by name, not started."""
    engine = Engine(site)
    engine.membership = Membership(site)
    engine.membership.join()
    engine.spawned = []
    engine._spawn = lambda name, target: engine.spawned.append(name)
    engine._alive = lambda name: name in engine.spawned
    yield engine
    nodes.forget()


def box(address: str, kind: str = Mailbox.INCOMING) -> Mailbox:
    return Mailbox.objects.create(kind=kind, address=address, login=address)


def test_the_box_ids_are_the_watched_boxes_read_afresh() -> None:
    a = box("a@example.test")
    box("o@example.test", Mailbox.OUTBOUND)
    box("dead@example.test", Mailbox.DEAD)
    assert sorted(watched_box_ids()) == sorted(b.pk for b in watched_boxes())
    b = box("b@example.test")
    assert b.pk in watched_box_ids()
    connection.close()  # compiled once; the connection made again answers the same
    Mailbox.objects.filter(pk=a.pk).delete()
    assert sorted(watched_box_ids()) == sorted(b.pk for b in watched_boxes())


def test_the_watchdog_and_the_boxes_page_look_at_the_watched_boxes(site: Site) -> None:
    """One set (`Mailbox.watched`, decision 0064): the boxes with a watcher are the ones
    the watchdog alerts on and the boxes page lists, never the dead box."""
    for address, kind in [("a@example.test", Mailbox.INCOMING), ("o@example.test", Mailbox.OUTBOUND),
                          ("dead@example.test", Mailbox.DEAD)]:
        box(address, kind)
    watched = sorted(b.address for b in watched_boxes())
    assert watched == ["a@example.test", "o@example.test"]
    now = timezone.now()
    health.watchdog(site, now, now - timedelta(hours=1))  # none synced: all late
    alerted = Alert.objects.filter(kind=AlertKind.BOX_NOT_SYNCED, cleared_at=None).values_list("key", flat=True)
    assert sorted(alerted) == watched
    assert sorted(b["address"] for b in operations.boxes()) == watched


def test_a_box_added_while_running_gets_a_watcher_at_the_next_round(engine: Engine) -> None:
    first = box("first@example.test")
    engine._supervise_once(engine.membership)
    assert f"watch:{first.pk}" in engine.spawned
    assert engine.membership.owns(first.pk) and engine.membership.router
    second = box("second@example.test")
    engine._supervise_once(engine.membership)
    assert f"watch:{second.pk}" in engine.spawned
    assert mailbox_lease(second.pk) in engine.membership.held


def test_an_expired_lease_still_stops_the_work_at_the_next_round(engine: Engine) -> None:
    box("first@example.test")
    engine._supervise_once(engine.membership)
    Node.objects.filter(node_id=engine.site.node_id).update(lease_until=timezone.now() - timedelta(seconds=1))
    with pytest.raises(nodes.Fenced):
        engine._supervise_once(engine.membership)


def test_the_look_reads_the_leases_afresh_at_every_round(engine: Engine) -> None:
    first = box("first@example.test")
    engine._supervise_once(engine.membership)
    view = nodes.look()
    assert set(view.leases) == {ROUTER, mailbox_lease(first.pk)}
    assert view.nodes[engine.site.node_id].live and view.holder(ROUTER) == engine.site.node_id
    # Given back behind the node's back (what another node's fence-out would do): the
    # next round reads it and takes it again under a new token.
    token = engine.membership.held[ROUTER]
    Lease.objects.filter(name=ROUTER).update(node_id="", epoch=0)
    assert nodes.look().holder(ROUTER) is None
    engine._supervise_once(engine.membership)
    assert engine.membership.held[ROUTER] == token + 1
    Node.objects.filter(node_id=engine.site.node_id).update(stopped_at=timezone.now())
    assert not nodes.look().nodes[engine.site.node_id].live


def test_the_watchdog_runs_at_its_pace_not_at_every_heartbeat(engine: Engine) -> None:
    late = box("late@example.test")
    clock = Clock()
    engine._watchdog = health.Pace(health.watchdog_every(engine.site), clock)
    assert health.watchdog_every(engine.site) == 3.0  # a tenth of sync_alert_after (30 s)
    engine._started_at = timezone.now() - timedelta(hours=1)

    def count() -> int:
        return Alert.objects.get(kind=AlertKind.BOX_NOT_SYNCED, key=late.address, cleared_at=None).count

    engine._supervise_once(engine.membership)
    assert count() == 1
    clock.t += 1.0
    engine._supervise_once(engine.membership)
    assert count() == 1  # a heartbeat later: not looked again
    clock.t += 2.0
    engine._supervise_once(engine.membership)
    assert count() == 2


def test_the_watchdog_clears_an_open_alert_and_writes_nothing_when_none_is_open(site: Site) -> None:
    synced, other = box("synced@example.test"), box("other@example.test")
    now = timezone.now()
    for b in (synced, other):
        BoxHealth.objects.create(mailbox=b, last_sync_at=now)
    raise_alert(AlertKind.BOX_NOT_SYNCED, synced.address, "no sync", now - timedelta(minutes=1))
    health.watchdog(site, now, now - timedelta(hours=1))
    assert not Alert.objects.filter(cleared_at=None).exists()
    with CaptureQueriesContext(connection) as queries:
        health.watchdog(site, now, now - timedelta(hours=1))
    writes = [q["sql"] for q in queries.captured_queries if not q["sql"].lstrip().upper().startswith("SELECT")]
    assert writes == []


def test_the_heartbeat_renews_every_round_and_writes_the_detail_when_it_changes(engine: Engine) -> None:
    first = box("first@example.test")
    engine._supervise_once(engine.membership)
    engine._supervise_once(engine.membership)  # the leases taken in the round before are shown
    node = Node.objects.get(node_id=engine.site.node_id)
    assert node.detail["boxes"] == [first.pk] and node.detail["router"] is True
    # Renewed at every round: the lease's end moves on even when nothing else changed.
    Node.objects.filter(pk=node.pk).update(lease_until=timezone.now() + timedelta(seconds=2))
    with CaptureQueriesContext(connection) as queries:
        nodes.heartbeat(engine.membership.ticket, engine.membership.detail(), engine.membership.mode)
    writes = [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("UPDATE")]
    assert len(writes) == 1 and "detail" not in writes[0]
    assert Node.objects.get(pk=node.pk).lease_until > timezone.now() + timedelta(seconds=3)
    second = box("second@example.test")
    engine._supervise_once(engine.membership)
    engine._supervise_once(engine.membership)
    assert Node.objects.get(pk=node.pk).detail["boxes"] == sorted([first.pk, second.pk])


def test_a_new_registration_writes_its_detail_again(engine: Engine) -> None:
    first = box("first@example.test")
    engine._supervise_once(engine.membership)
    engine._supervise_once(engine.membership)
    engine.membership.stand_down()
    engine._supervise_once(engine.membership)  # registers with a new epoch: detail {} there
    engine._supervise_once(engine.membership)
    node = Node.objects.get(node_id=engine.site.node_id)
    assert node.epoch == 2 and node.detail["boxes"] == [first.pk]


def test_a_registration_with_an_equal_ticket_writes_the_detail_again(engine: Engine) -> None:
    """A registration resets the row's detail and mode (a local store's row, a row made
    again): the next heartbeat writes them even if its ticket equals the last one."""
    first = box("first@example.test")
    engine._supervise_once(engine.membership)
    engine._supervise_once(engine.membership)
    ticket = engine.membership.ticket
    detail = engine.membership.detail()
    Node.objects.filter(node_id=ticket.node_id).update(detail={}, epoch=ticket.epoch - 1)
    again = nodes.register(ticket.node_id, ticket.role, ticket.lease)
    assert again == ticket
    nodes.heartbeat(again, detail)
    assert Node.objects.get(node_id=ticket.node_id).detail["boxes"] == [first.pk]
