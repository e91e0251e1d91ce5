"""Issue 7, engine lease: one engine per database.

A second `postroom engine` on the same database refuses to start while the first one's
lease is held; an engine SIGKILLed and started again on the same host takes over at once
(the holder's pid is gone); on another host only once the lease has expired. An engine
whose lease was taken over stops working.
"""

from __future__ import annotations

import signal
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.e2e.enginerun import make_deployment, wait_until

pytestmark = pytest.mark.mailstack


@pytest.fixture
def deployment(mailstack, new_user, tmp_path):
    dep = make_deployment(mailstack, new_user, tmp_path)
    yield dep
    dep.cleanup()


def test_a_second_engine_refuses_to_start_and_a_killed_one_is_replaced(deployment) -> None:
    dep = deployment
    dep.load()
    first = dep.start_engine()
    wait_until("the first engine to watch its boxes", lambda: first.log_has("watching"), timeout=30, engine=first)

    second = dep.start_engine()
    wait_until("the second engine to give up", lambda: second.poll() is not None, timeout=30)
    assert second.poll() == 3, second.tail()
    assert "another engine holds this database" in second.tail()
    assert first.poll() is None  # the first one runs on

    first.stop(signal.SIGKILL)
    third = dep.start_engine()  # in place of the killed one, at once
    wait_until("the replacement to watch its boxes", lambda: third.log_has("watching"), timeout=30, engine=third)
    assert third.stop(signal.SIGTERM) == 0, third.tail()


@pytest.mark.django_db(transaction=True)
def test_another_hosts_lease_is_respected_until_it_expires() -> None:
    from postroom.engine import lease
    from postroom.store.models import EngineLease

    now = timezone.now()
    EngineLease.objects.create(
        name=lease.NAME, holder="x" * 32, node_id="node-b", hostname="elsewhere.example", pid=1,
        acquired_at=now, renewed_at=now, lease_until=now + timedelta(seconds=30),
    )
    with pytest.raises(lease.LeaseHeld, match="node-b"):
        lease.acquire("node-a", 60, now)
    mine = lease.acquire("node-a", 60, now + timedelta(seconds=31))
    row = EngineLease.objects.get()
    assert row.node_id == "node-a" and row.holder == mine.holder
    # The other node comes back and renews: it has lost the lease and must stop.
    with pytest.raises(lease.LeaseLost):
        lease.renew(lease.Lease("x" * 32, 60, now + timedelta(seconds=30)))


@pytest.mark.django_db(transaction=True)
def test_an_engine_whose_lease_was_taken_stops(center) -> None:
    from postroom.engine import lease
    from postroom.store.models import EngineLease

    center.engine.site = type(center.engine.site)(**{**center.engine.site.__dict__, "lease_seconds": 15.0})
    center.engine.start()
    try:
        EngineLease.objects.filter(name=lease.NAME).update(holder="someone-else")
        deadline = time.monotonic() + 30
        while not center.engine.stopping.is_set() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert center.engine.stopping.is_set()
        assert "taken over" in (center.engine.failure or "")
    finally:
        center.engine.stop()
