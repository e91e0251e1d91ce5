"""Per-box health: last successful sync, last error, backlog; and the watchdog on them.

Each watcher reports its passes here (`synced`, `failed`); the engine's supervisor thread
runs `watchdog` (every `watchdog_every`: a tenth of the alert's delay, 10 s at most), which
raises a "box not synced" alert for a box whose last successful sync is older than
`Site.sync_alert_after` and clears it once the box syncs again (field bug B-8: a fetcher
that stops silently). The figures are shown at /api/boxes and on the
supervisor console.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from django.db.models import F

from postroom.core.alerts import AlertKind
from postroom.engine.alerts import clear_alert, raise_alert
from postroom.engine.site import Site
from postroom.store.models import Alert, BoxHealth, Mailbox

log = logging.getLogger(__name__)


def synced(box: Mailbox, now: datetime, *, backlog: int | None = None, messages: int | None = None) -> None:
    values: dict[str, object] = {"last_sync_at": now, "failures": 0}
    if backlog is not None:
        values["backlog"] = backlog
    if messages is not None:
        values["messages"] = messages
    _update(box.pk, **values)


def failed(box_pk: int, error: str, now: datetime) -> None:
    _update(box_pk, last_error=error[:500], last_error_at=now, failures=F("failures") + 1)


def _update(box_pk: int, **values: object) -> None:
    if not BoxHealth.objects.filter(mailbox_id=box_pk).update(**values):
        BoxHealth.objects.get_or_create(mailbox_id=box_pk)
        BoxHealth.objects.filter(mailbox_id=box_pk).update(**values)


# The watchdog looks at most this often, and at least ten times within the alert's delay
# (`Site.sync_alert_after`, 30 s at least): an alert is raised or cleared at most a tenth
# of that delay late. It ran at every heartbeat (each second), a round of queries and an
# UPDATE per box that found nothing to change almost every time (decision 0058).
WATCHDOG_EVERY = 10.0


def watchdog_every(site: Site) -> float:
    """Seconds between two looks of the watchdog on `site`."""
    return min(WATCHDOG_EVERY, site.sync_alert_after.total_seconds() / 10)


class Pace:
    """Due at the first ask, then once per `every` seconds (the supervisor's watchdog)."""

    def __init__(self, every: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.every, self.clock = every, clock
        self._last: float | None = None

    def due(self) -> bool:
        now = self.clock()
        if self._last is not None and now - self._last < self.every:
            return False
        self._last = now
        return True


def watchdog(site: Site, now: datetime, since: datetime) -> None:
    """Alert on every watched box not synced within `site.sync_alert_after`; clear the
    alert of one that synced again. `since`: when the engine started (a box it has not
    reached yet is late only after the same grace)."""
    health = {h.mailbox_id: h for h in BoxHealth.objects.all()}
    # Only an open alert is cleared: one read instead of an UPDATE per box and look.
    raised = set(
        Alert.objects.filter(kind=AlertKind.BOX_NOT_SYNCED, cleared_at=None).values_list("key", flat=True)
    )
    for box in Mailbox.watched():
        h = health.get(box.pk)
        last = h.last_sync_at if h and h.last_sync_at else None
        reference = max(last, since) if last else since
        if now - reference > site.sync_alert_after:
            error = f"; last error: {h.last_error}" if h and h.last_error else ""
            when = f"{last:%Y-%m-%d %H:%M:%S} UTC" if last else "never since the engine started"
            raise_alert(AlertKind.BOX_NOT_SYNCED, box.address, f"{box.address} has not synced since {when}{error}", now)
        elif last and now - last <= site.sync_alert_after and box.address[:300] in raised:
            clear_alert(AlertKind.BOX_NOT_SYNCED, box.address, now)
