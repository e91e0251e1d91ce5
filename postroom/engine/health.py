"""Per-box health: last successful sync, last error, backlog; and the watchdog on them.

Each watcher reports its passes here (`synced`, `failed`); the engine's supervisor thread
runs `watchdog`, which raises a "box not synced" alert for a box whose last successful
sync is older than `Site.sync_alert_after` and clears it once the box syncs again (field
bug B-8: a fetcher that stops silently). The figures are shown at /api/boxes and on the
supervisor console.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db.models import F

from postroom.core.alerts import AlertKind
from postroom.engine.alerts import clear_alert, raise_alert
from postroom.engine.site import Site
from postroom.store.models import BoxHealth, Mailbox

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


def watchdog(site: Site, now: datetime, since: datetime) -> None:
    """Alert on every watched box not synced within `site.sync_alert_after`; clear the
    alert of one that synced again. `since`: when the engine started (a box it has not
    reached yet is late only after the same grace)."""
    health = {h.mailbox_id: h for h in BoxHealth.objects.all()}
    for box in Mailbox.objects.filter(kind__in=[Mailbox.INCOMING, Mailbox.OUTBOUND]):
        h = health.get(box.pk)
        last = h.last_sync_at if h and h.last_sync_at else None
        reference = max(last, since) if last else since
        if now - reference > site.sync_alert_after:
            error = f"; last error: {h.last_error}" if h and h.last_error else ""
            when = f"{last:%Y-%m-%d %H:%M:%S} UTC" if last else "never since the engine started"
            raise_alert(AlertKind.BOX_NOT_SYNCED, box.address, f"{box.address} has not synced since {when}{error}", now)
        elif last and now - last <= site.sync_alert_after:
            clear_alert(AlertKind.BOX_NOT_SYNCED, box.address, now)
