"""health.Pace and the watchdog's pace (decision 0058)."""

from __future__ import annotations

from datetime import timedelta

from postroom.engine.health import WATCHDOG_EVERY, Pace, watchdog_every
from postroom.engine.site import Site
from tests.sites import offline_site


def test_due_at_once_then_once_per_interval() -> None:
    t = [100.0]
    pace = Pace(10.0, lambda: t[0])
    assert pace.due()
    t[0] += 9.9
    assert not pace.due()
    t[0] += 0.1
    assert pace.due()
    assert not pace.due()


def site(after: timedelta) -> Site:
    return offline_site(sync_alert_after=after)


def test_the_watchdog_looks_ten_times_within_the_alerts_delay_at_least() -> None:
    assert watchdog_every(site(timedelta(seconds=30))) == 3.0
    assert watchdog_every(site(timedelta(minutes=5))) == WATCHDOG_EVERY == 10.0
